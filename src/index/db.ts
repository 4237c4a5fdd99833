// Opens the SQLite index (WAL) and brings its schema up to date with numbered migrations, each in
// one transaction that sets PRAGMA user_version. A database newer than this code is refused.
import Database from 'better-sqlite3'
import { VmifsError } from '../errors.js'
import * as m0001 from './migrations/0001-initial.js'
import * as m0002 from './migrations/0002-fleet.js'
import * as m0003 from './migrations/0003-packs.js'
import * as m0004 from './migrations/0004-lru-unpinned.js'
import * as m0005 from './migrations/0005-entry-crc.js'
import * as m0006 from './migrations/0006-store-index.js'
import * as m0007 from './migrations/0007-signed-facts.js'
import * as m0008 from './migrations/0008-publications.js'

export type Db = Database.Database

interface Migration {
  version: number
  up: (db: Db) => void
}
export const MIGRATIONS: Migration[] = [m0001, m0002, m0003, m0004, m0005, m0006, m0007, m0008]
export const SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1]!.version

export function openDb(file: string, migrations: Migration[] = MIGRATIONS): Db {
  let db: Db
  try {
    db = new Database(file)
  } catch (err) {
    throw new VmifsError(
      'DATA_DIR_UNUSABLE',
      `cannot open the index ${file}: ${(err as Error).message}`,
      { file },
      { cause: err }
    )
  }
  try {
    db.pragma('busy_timeout = 10000')
    checkVersion(db, migrations) // before anything writes to the file
    db.pragma('journal_mode = WAL')
    db.pragma('synchronous = NORMAL')
    db.pragma('foreign_keys = ON')
    migrate(db, migrations)
    return db
  } catch (err) {
    db.close()
    throw err
  }
}

function checkVersion(db: Db, migrations: Migration[]): number {
  const latest = migrations[migrations.length - 1]!.version
  const current = db.pragma('user_version', { simple: true }) as number
  if (current > latest) {
    throw new VmifsError(
      'DB_NEWER_SCHEMA',
      `the data dir has schema version ${current}, newer than this vmifs understands (${latest}); upgrade vmifs`,
      { current, latest }
    )
  }
  return current
}

export function migrate(db: Db, migrations: Migration[] = MIGRATIONS): void {
  const current = checkVersion(db, migrations)
  for (const m of migrations) {
    if (m.version <= current) continue
    db.transaction(() => {
      m.up(db)
      db.pragma(`user_version = ${m.version}`)
    }).immediate()
  }
}
