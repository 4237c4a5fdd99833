import test from 'ava'
import fs from 'node:fs'
import path from 'node:path'
import Database from 'better-sqlite3'
import { MIGRATIONS, SCHEMA_VERSION, migrate, openDb, type Db } from '../../src/index/db.js'
import * as m0001 from '../../src/index/migrations/0001-initial.js'
import { tmpDir } from '../helpers/tmp.js'

const TABLES_V1 = ['cache_entries', 'chunks', 'counters', 'images', 'manifests']
// 0002: the metadata table; 0003: pack files (AUTOINCREMENT ids: sqlite_sequence)
const TABLES = [
  ...TABLES_V1,
  'cursors',
  'facts',
  'heads',
  'name_owners',
  'origin_keys',
  'packs',
  'revocations',
  'sqlite_sequence'
].sort()

const tables = (db: Database.Database): string[] =>
  db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").pluck().all() as string[]

const userVersion = (db: Database.Database): number => db.pragma('user_version', { simple: true }) as number

/** Opens a database file without vmifs (no pragmas, no migrations). */
function raw(file: string): Database.Database {
  return new Database(file)
}

function codeOf(err: unknown): string | undefined {
  return (err as { code?: string } | undefined)?.code
}

test('openDb on a fresh file creates the schema', t => {
  const file = path.join(tmpDir(t), 'index.sqlite')
  t.is(SCHEMA_VERSION, MIGRATIONS[MIGRATIONS.length - 1]!.version)
  t.true(SCHEMA_VERSION >= 1)
  const db = openDb(file)
  t.teardown(() => {
    if (db.open) db.close()
  })
  t.is(userVersion(db), SCHEMA_VERSION)
  t.deepEqual(tables(db), TABLES)
  t.is(db.pragma('journal_mode', { simple: true }), 'wal')
  t.is(db.pragma('foreign_keys', { simple: true }), 1)
  // 0002 adds the publishing host of an image
  t.true((db.prepare('PRAGMA table_info(images)').all() as Array<{ name: string }>).some(c => c.name === 'origin'))
  db.close()
  const r = raw(file)
  t.is(userVersion(r), SCHEMA_VERSION)
  r.close()
})

test('reopening is idempotent and keeps the data', t => {
  const file = path.join(tmpDir(t), 'index.sqlite')
  const db = openDb(file)
  db.prepare('INSERT INTO counters (key, value) VALUES (?, ?)').run('x', 42)
  migrate(db) // again on the open db: nothing to do
  t.is(userVersion(db), SCHEMA_VERSION)
  db.close()
  for (let i = 0; i < 2; i++) {
    const again = openDb(file)
    t.is(userVersion(again), SCHEMA_VERSION)
    t.deepEqual(tables(again), TABLES)
    t.is(again.prepare('SELECT value FROM counters WHERE key = ?').pluck().get('x'), 42)
    again.close()
  }
})

test('a database newer than the code is refused and left as it was', t => {
  const file = path.join(tmpDir(t), 'index.sqlite')
  const w = raw(file)
  w.exec('CREATE TABLE future (x INTEGER); INSERT INTO future VALUES (7)')
  w.pragma(`user_version = ${SCHEMA_VERSION + 1}`)
  w.close()
  const err = t.throws(() => openDb(file))
  t.is(codeOf(err), 'DB_NEWER_SCHEMA')
  const r = raw(file)
  t.is(userVersion(r), SCHEMA_VERSION + 1)
  t.deepEqual(tables(r), ['future'])
  t.deepEqual(r.prepare('SELECT x FROM future').pluck().all(), [7])
  r.close()
  // migrate() on an open connection refuses as well
  const c = raw(file)
  t.teardown(() => {
    if (c.open) c.close()
  })
  t.is(
    codeOf(
      t.throws(() => {
        migrate(c)
      })
    ),
    'DB_NEWER_SCHEMA'
  )
  t.deepEqual(tables(c), ['future'])
})

// Known bug: openDb() sets journal_mode = WAL before migrate() checks the version, so a refused
// newer database is rewritten (header bytes 18-19 go from 1 to 2). Remove `.failing` once fixed.
test('a refused newer database file is byte for byte unchanged', t => {
  const file = path.join(tmpDir(t), 'index.sqlite')
  const w = raw(file)
  w.exec('CREATE TABLE future (x INTEGER)')
  w.pragma(`user_version = ${SCHEMA_VERSION + 1}`)
  w.close()
  const before = fs.readFileSync(file)
  t.is(codeOf(t.throws(() => openDb(file))), 'DB_NEWER_SCHEMA')
  t.true(fs.readFileSync(file).equals(before))
  t.false(fs.existsSync(`${file}-wal`))
})

test('a migration that throws rolls back', t => {
  const dir = tmpDir(t)
  const boom = new Error('boom')
  const bad = (version: number): { version: number; up: (db: Db) => void } => ({
    version,
    up: db => {
      db.exec('CREATE TABLE partial (x INTEGER); INSERT INTO partial VALUES (1)')
      throw boom
    }
  })

  // first migration fails: nothing at all
  const fresh = path.join(dir, 'fresh.sqlite')
  t.is(
    t.throws(() => openDb(fresh, [bad(1)])),
    boom
  )
  let r = raw(fresh)
  t.is(userVersion(r), 0)
  t.deepEqual(tables(r), [])
  r.close()

  // a later migration fails: the earlier ones stay, the failed one leaves nothing
  const file = path.join(dir, 'index.sqlite')
  openDb(file).close()
  t.is(
    t.throws(() => openDb(file, [m0001, bad(SCHEMA_VERSION + 1)])),
    boom
  )
  r = raw(file)
  t.is(userVersion(r), SCHEMA_VERSION)
  t.deepEqual(tables(r), TABLES)
  r.close()

  // failing in the middle of a list: the ones before it are kept
  const mid = path.join(dir, 'mid.sqlite')
  t.is(
    t.throws(() =>
      openDb(mid, [
        m0001,
        bad(2),
        {
          version: 3,
          up: db => {
            db.exec('CREATE TABLE never (x)')
          }
        }
      ])
    ),
    boom
  )
  r = raw(mid)
  t.is(userVersion(r), 1)
  t.deepEqual(tables(r), TABLES_V1)
  r.close()

  // and the data dir still opens normally afterwards
  const db = openDb(file)
  t.is(userVersion(db), SCHEMA_VERSION)
  db.close()
})

test('only migrations newer than the database run, in order', t => {
  const file = path.join(tmpDir(t), 'index.sqlite')
  openDb(file).close()
  const ran: number[] = []
  const next = (version: number): { version: number; up: (db: Db) => void } => ({
    version,
    up: db => {
      ran.push(version)
      db.exec(`CREATE TABLE t${version} (x)`)
    }
  })
  // m0001 runs again only if the version is ignored, and would fail (its tables exist)
  const db = openDb(file, [m0001, next(SCHEMA_VERSION + 1), next(SCHEMA_VERSION + 2)])
  t.deepEqual(ran, [SCHEMA_VERSION + 1, SCHEMA_VERSION + 2])
  t.is(userVersion(db), SCHEMA_VERSION + 2)
  db.close()
  // now the standard code sees a newer schema
  t.is(codeOf(t.throws(() => openDb(file))), 'DB_NEWER_SCHEMA')
  t.true(fs.existsSync(file))
})
