// What a command (`vmifs plan`, `place`, `policy`) reads of the Redis engine beyond this host's
// copy of the table: that copy holds holdings only of the images this host follows, and no other
// host's status. For the images a command asks about, every host's holdings are read from the
// engine, with every host's live key (its status; a host without one is dead), each fact checked
// against its origin's key as the agent checks it. They go into a scratch copy of this host's table
// in memory (the data dir's table is not written: a host keeps only what it follows), which the
// planner's view then reads. An engine that does not answer in time leaves the command on this
// host's copy, with a warning.
import { Redis } from 'ioredis'
import type { Config } from '../config.js'
import type { DataDir } from '../datadir.js'
import { type Db, openDb } from '../index/db.js'
import { type Fact, FactStore } from '../index/facts.js'
import { keyOf } from '../index/schema.js'
import {
  CERT_FIELD,
  decodeCert,
  decodeFact,
  globalKey,
  liveKey,
  metadataPassword,
  redisOptions,
  scanHostIds,
  scopedKey
} from './redis.js'

const ANSWER_MS = 5000
/** the tables a FactStore reads and writes */
const FACT_TABLES = ['facts', 'cursors', 'heads', 'origin_keys', 'revocations']

export interface EngineFacts {
  /** a scratch copy of this host's table with what the engine says of the asked images */
  facts: FactStore
  /** hosts with followed facts in the engine but no live key */
  dead: ReadonlySet<string>
  close: () => void
}

/** An in-memory table with the data dir's facts (not its manifests and chunks: they stay on disk). */
function factsCopy(db: Db): Db {
  const copy = openDb(':memory:')
  copy.prepare('ATTACH DATABASE ? AS src').run(db.name)
  copy.transaction(() => {
    for (const t of FACT_TABLES) {
      copy.exec(`DELETE FROM main.${t}`)
      copy.exec(`INSERT INTO main.${t} SELECT * FROM src.${t}`)
    }
  })()
  copy.exec('DETACH DATABASE src')
  return copy
}

/**
 * On the Redis backend, this host's table plus every host's holdings of `digests` and every
 * host's status, read from the engine; undefined on the peers backend. An engine that does not
 * answer within ANSWER_MS: undefined, and `warn` says so.
 */
export async function readEngine(
  cfg: Config,
  dd: DataDir,
  self: string,
  digests: string[],
  warn: (msg: string) => void = m => process.stderr.write(`vmifs: ${m}\n`)
): Promise<EngineFacts | undefined> {
  const url = cfg.fleet.metadata
  if (url === undefined) return undefined
  const cmd = new Redis({
    ...redisOptions(url, metadataPassword(cfg.fleet.metadataPasswordFile)),
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    retryStrategy: () => null,
    connectTimeout: ANSWER_MS
  })
  cmd.on('error', () => undefined)
  let timer: NodeJS.Timeout | undefined
  const copy = factsCopy(dd.db)
  const facts = new FactStore(copy, self, { trust: cfg.trust })
  try {
    const read = async (): Promise<EngineFacts> => {
      await cmd.connect()
      const hosts = (await scanHostIds(cmd)).filter(h => h !== self)
      const fields = [...new Set(digests)].map(d => keyOf('hold', d))
      const p = cmd.pipeline()
      for (const h of hosts) {
        p.hget(globalKey(h), CERT_FIELD).get(liveKey(h))
        if (fields.length > 0) p.hmget(scopedKey(h), ...fields)
      }
      const res = (await p.exec()) ?? []
      const per = fields.length > 0 ? 3 : 2
      const dead = new Set<string>()
      hosts.forEach((h, i) => {
        const answer = (j: number): unknown => {
          const [err, v] = res[per * i + j] ?? [new Error('no answer'), null]
          if (err) throw err
          return v
        }
        const certText = answer(0)
        const live = answer(1)
        const list: Fact[] = []
        if (typeof live === 'string') {
          const f = decodeFact(h, keyOf('status'), live)
          if (f) list.push(f)
        } else dead.add(h)
        if (fields.length > 0)
          (answer(2) as Array<string | null>).forEach((v, j) => {
            const f = v === null ? undefined : decodeFact(h, fields[j]!, v)
            if (f) list.push(f)
          })
        const cert = typeof certText === 'string' ? decodeCert(certText) : undefined
        // what is not signed by its origin is refused here as the agent refuses it
        if (list.length > 0) facts.applySigned(h, list, cert ?? undefined)
      })
      return { facts, dead, close: () => copy.close() }
    }
    return await Promise.race([
      read(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer in ${ANSWER_MS / 1000} s`)), ANSWER_MS)
      })
    ])
  } catch (err) {
    const where = url.replace(/\/\/[^@/]*@/, '//') // no credentials in the message
    warn(
      `the metadata engine (${where}) did not answer (METADATA_UNREACHABLE: ${(err as Error).message}): ` +
        "from this host's copy of the table (holdings of the images it follows only; no host judged dead)"
    )
    copy.close()
    return undefined
  } finally {
    clearTimeout(timer)
    cmd.disconnect()
  }
}
