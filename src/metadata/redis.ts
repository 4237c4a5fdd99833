// The metadata table kept in Redis, for fleets too large for every host to hold every host's facts
// (docs/metadata.md). The local table (FactStore, SQLite) stays this host's copy: what it reads,
// and what it serves from while Redis is away. Contract:
// - this host writes only its own keys: vmifs:g:<host> (a hash of the facts every host follows:
//   host record, publications, policies, replica states, inventory; its certificate in `@cert`),
//   vmifs:s:<host> (holdings and usage models, per image: read only by hosts that use the image)
//   and vmifs:live:<host> (its status, set every heartbeat with a TTL: a host whose key expired is
//   dead). Each value is a fact its origin signed ("<seq> <sig> <json>"); the engine's ACLs limit
//   what a host can overwrite, the signatures say what is true: every fact read or received is
//   checked with its origin's key (FactStore.applySigned) and an older one changes nothing;
// - changes go out on channels, each message one signed fact: vmifs:c:g for the followed facts,
//   vmifs:c:s:<digest>:<host> for one host's holdings and model of one image;
// - every host follows every host's followed facts (a scan of vmifs:g:* on each connect, then the
//   channel); holdings and models only of the images it uses (opened, read, replicated here in the
//   last FOLLOW_IDLE_MS), and of those only from the FOLLOW_K cheapest live hosts whose inventory
//   lists the image: they are looked up when the image is first used and followed from then on;
// - the liveness of followed holders is polled every heartbeat: one whose key has expired is
//   forgotten here (its holdings of the followed images go) and another holder takes its place.
import fs from 'node:fs'
import { Redis, type RedisOptions } from 'ioredis'
import { VmifsError } from '../errors.js'
import { blake3Hex } from '../util/hash.js'
import type { Fact, FactStore } from '../index/facts.js'
import { decodeAs, keyOf, kindOf } from '../index/schema.js'
import type { Logger } from '../util/log.js'
import { guard, logFault } from '../util/guard.js'
import { DEAD_BEATS, HEARTBEAT_MS, type Live } from './hosts.js'

/** the holders of an image this host follows: the cheapest live ones */
export const FOLLOW_K = 8
/** an image not used for this long is no longer followed */
export const FOLLOW_IDLE_MS = 60 * 60_000
/** a host's keys go from the engine a week after its last heartbeat */
const FORGET_S = 7 * 24 * 3600
/** how long the first use of an image waits for its holders to be looked up */
const LOOKUP_WAIT_MS = 3000
const SCAN_COUNT = 1000

export const globalKey = (host: string): string => `vmifs:g:${host}`
export const scopedKey = (host: string): string => `vmifs:s:${host}`
export const liveKey = (host: string): string => `vmifs:live:${host}`
export const GLOBAL_CHANNEL = 'vmifs:c:g'
/** fleet admins' revocations of host keys, by key (any host adds one it learnt; each is signed) */
export const REVOKED_KEY = 'vmifs:revoked'
export const REVOKED_CHANNEL = 'vmifs:c:r'
export const scopedChannel = (digest: string, host: string): string => `vmifs:c:s:${digest}:${host}`
/** a host says it is alive again (its live key was gone): the others stop skipping it */
export const LIVE_CHANNEL = 'vmifs:c:live'
/** the engine's keyspace event of an expired key (notify-keyspace-events Ex): a host is dead */
export const expiredChannel = (db = 0): string => `__keyevent@${db}__:expired`
/** the field of a host's followed-facts hash that holds its certificate */
export const CERT_FIELD = '@cert'

/** A host's `@cert` field: its certificate, null for a host admitted by key alone, undefined if unreadable. */
export function decodeCert(text: string): unknown {
  try {
    return JSON.parse(text) as unknown
  } catch {
    return undefined
  }
}

/**
 * The order in which this host takes holders of equal cost: a hash of both ids, its own for each
 * host, so that the users of a popular image spread over its holders instead of all following
 * (and fetching from) the same few.
 */
export function tieOrder(self: string): (host: string) => string {
  return host => blake3Hex(Buffer.from(`${self}\n${host}`))
}

/** The image a key is scoped to (holdings and models are), or undefined for a followed key. */
export function scopeOf(key: string): string | undefined {
  const k = kindOf(key)
  return k && (k.kind === 'hold' || k.kind === 'model') ? k.name : undefined
}

/** A signed fact as the engine keeps it: "<seq> <sig> <json>" (the json empty for a retraction). */
export function encodeFact(f: Fact): string {
  return `${f.seq} ${f.sig ?? ''} ${f.value === null || f.value === undefined ? '' : JSON.stringify(f.value)}`
}

export function decodeFact(origin: string, key: string, text: string): Fact | undefined {
  const a = text.indexOf(' ')
  const b = a < 0 ? -1 : text.indexOf(' ', a + 1)
  if (b < 0) return undefined
  const seq = Number(text.slice(0, a))
  const sig = text.slice(a + 1, b)
  const json = text.slice(b + 1)
  let value: unknown = null
  if (json !== '') {
    try {
      value = JSON.parse(json)
    } catch {
      return undefined
    }
  }
  return { origin, seq, key, value, ...(sig === '' ? {} : { sig }) }
}

/** One fact on a channel: "<origin>\n<key>\n<encoded fact>". */
function encodeMessage(f: Fact, encoded = encodeFact(f)): string {
  return `${f.origin}\n${f.key}\n${encoded}`
}

function decodeMessage(text: string): Fact | undefined {
  const a = text.indexOf('\n')
  const b = a < 0 ? -1 : text.indexOf('\n', a + 1)
  return b < 0 ? undefined : decodeFact(text.slice(0, a), text.slice(a + 1, b), text.slice(b + 1))
}

/** The metadata engine password: VMIFS_METADATA_PASSWORD, or the file the config names (trimmed). */
export function metadataPassword(file: string | undefined): string | undefined {
  if (process.env.VMIFS_METADATA_PASSWORD !== undefined) return process.env.VMIFS_METADATA_PASSWORD
  if (file === undefined) return undefined
  try {
    return fs.readFileSync(file, 'utf8').trim()
  } catch (err) {
    throw new VmifsError('CONFIG_INVALID', `metadataPasswordFile ${file}: ${(err as Error).message}`)
  }
}

/** The ids of every host with followed facts in the engine (a SCAN of vmifs:g:*), sorted. */
export async function scanHostIds(cmd: Redis): Promise<string[]> {
  const hosts: string[] = []
  let cursor = '0'
  for (let i = 0; i < 100_000; i++) {
    const [next, keys] = await cmd.scan(cursor, 'MATCH', 'vmifs:g:*', 'COUNT', SCAN_COUNT)
    for (const k of keys) hosts.push(k.slice('vmifs:g:'.length))
    cursor = next
    if (cursor === '0') break
  }
  return [...new Set(hosts)].sort()
}

export interface RedisMetadataOptions {
  /** redis://[user@]host:port, or redis+sentinel://host:port[,host:port…]/<primary name> */
  url: string
  password?: string
  facts: FactStore
  log: Logger
  /** this host's certificate, as installed (stored with its facts) */
  cert: () => unknown
  /** cheapest first, of these hosts (the holder directory's cost model; equal costs in tieOrder(self)) */
  rank?: (hosts: string[]) => string[]
  /** how often the live key is set (its TTL: DEAD_BEATS of them) */
  heartbeatMs?: number
  followK?: number
}

interface Follow {
  usedAt: number
  /** the holders whose holdings and model of the image this host follows */
  holders: Set<string>
  /** the first lookup, awaited by the first read */
  ready: Promise<void>
}

/** Parses the metadata URL into ioredis options (METADATA_INVALID on anything else). */
export function redisOptions(url: string, password?: string): RedisOptions {
  const m = /^(redis|redis\+sentinel):\/\/(?:([^:@/]*)(?::([^@/]*))?@)?([^/?#]+)(?:\/([^?#]*))?$/.exec(url)
  if (!m) throw new Error(`not a redis:// or redis+sentinel:// URL: ${url}`)
  const [, scheme, user, pass, hostPart, path] = m
  const common = {
    ...(user ? { username: decodeURIComponent(user) } : {}),
    ...(password !== undefined ? { password } : pass ? { password: decodeURIComponent(pass) } : {}),
    lazyConnect: true,
    // CLIENT SETINFO is 7.2's: Debian 12 ships 7.0
    disableClientInfo: true,
    // commands wait for a reconnect only briefly: a host keeps serving from its copy meanwhile
    maxRetriesPerRequest: 2,
    enableOfflineQueue: true,
    retryStrategy: (n: number) => Math.min(2000, 100 * n)
  }
  const hosts = hostPart!.split(',').map(hp => {
    const b = /^\[([0-9a-fA-F:]+)\](?::(\d{1,5}))?$/.exec(hp) ?? /^([^:[\]]+)(?::(\d{1,5}))?$/.exec(hp)
    if (!b) throw new Error(`not a host[:port] in ${url}: ${hp}`)
    return { host: b[1]!, port: Number(b[2] ?? (scheme === 'redis' ? 6379 : 26379)) }
  })
  if (scheme === 'redis+sentinel') {
    const name = path ?? ''
    if (name === '') throw new Error(`redis+sentinel:// wants host:port[,host:port…]/<primary name>: ${url}`)
    return { ...common, sentinels: hosts, name, sentinelRetryStrategy: (n: number) => Math.min(2000, 100 * n) }
  }
  if (hosts.length !== 1) throw new Error(`redis:// names one server (use redis+sentinel:// for several): ${url}`)
  if (path !== undefined && path !== '' && !/^\d+$/.test(path)) throw new Error(`redis:// database is a number: ${url}`)
  return { ...common, host: hosts[0]!.host, port: hosts[0]!.port, ...(path ? { db: Number(path) } : {}) }
}

export class RedisMetadata {
  private readonly cmd: Redis
  private readonly sub: Redis
  private readonly follows = new Map<string, Follow>()
  /**
   * hosts seen dead (their live key gone): read whole on each connect, then kept by the engine's
   * expiry events and the hosts' own word when they are back; they are not chosen meanwhile
   */
  private readonly dead = new Set<string>()
  /** whether the engine sends expiry events (else only followed holders' liveness is polled) */
  expiryEvents = false
  private warnedNoEvents = false
  private readonly certs = new Map<string, unknown>()
  private timer: NodeJS.Timeout | undefined
  private unsubscribe: (() => void) | undefined
  private writing: Promise<unknown> = Promise.resolve()
  private catchingUp: Promise<void> | undefined
  private closed = false
  private readonly heartbeatMs: number
  private readonly liveTtlMs: number
  private readonly followK: number
  private readonly expired: string
  readonly counters = {
    /** own facts written */
    written: 0,
    /** facts taken from the engine (reads and messages) that changed this host's table */
    applied: 0,
    /** facts refused (not signed by their origin, or older than what is here) */
    refused: 0,
    /** image holder lookups */
    lookups: 0,
    /** times the connection came (back) and the table was caught up */
    catchUps: 0,
    /** followed holders forgotten because their live key expired */
    expired: 0,
    /** bytes of facts in and out (values and messages) */
    bytesIn: 0,
    bytesOut: 0
  }
  connected = false

  constructor(private readonly opts: RedisMetadataOptions) {
    const o = redisOptions(opts.url, opts.password)
    this.cmd = new Redis(o)
    this.sub = new Redis({ ...o, maxRetriesPerRequest: null })
    this.expired = expiredChannel(o.db ?? 0)
    this.heartbeatMs = opts.heartbeatMs ?? HEARTBEAT_MS
    this.liveTtlMs = DEAD_BEATS * this.heartbeatMs
    this.followK = opts.followK ?? FOLLOW_K
    for (const c of [this.cmd, this.sub])
      c.on('error', (err: Error) => {
        if (this.connected) opts.log.warn({ code: 'METADATA_UNREACHABLE', err: err.message }, 'metadata engine error')
      })
    this.cmd.on('close', () => {
      if (this.connected && !this.closed)
        opts.log.warn({ code: 'METADATA_UNREACHABLE' }, 'lost the metadata engine: serving from the local copy')
      this.connected = false
    })
    // caught up once both connections are back (the subscriber's channels subscribed again): what
    // changed while away is read from the engine, and what was sent meanwhile is not missed
    const onReady = (): void => this.maybeCatchUp()
    this.cmd.on('ready', onReady)
    this.sub.on('ready', onReady)
    this.sub.on('close', () => {
      this.connected = false
    })
    this.sub.on('messageBuffer', (ch: Buffer, msg: Buffer) =>
      guard(opts.log, 'a metadata message', () => this.onMessage(ch.toString(), msg.toString()))
    )
  }

  private maybeCatchUp(): void {
    if (this.closed || this.catchingUp || this.cmd.status !== 'ready' || this.sub.status !== 'ready') return
    this.catchingUp = this.catchUp()
      .then(() => {
        this.connected = this.cmd.status === 'ready' && this.sub.status === 'ready'
      })
      .catch((err: unknown) => logFault(this.opts.log, 'catching up with the metadata engine', err))
      .finally(() => {
        this.catchingUp = undefined
      })
  }

  get self(): string {
    return this.opts.facts.self
  }

  /** Connects (in the background: the agent serves from its copy until the engine answers). */
  start(): void {
    this.unsubscribe = this.opts.facts.onChange(changed => {
      const own = changed.filter(f => f.origin === this.self)
      if (own.length > 0) this.write(own)
    })
    void this.sub.subscribe(GLOBAL_CHANNEL, REVOKED_CHANNEL, LIVE_CHANNEL, this.expired).catch(() => undefined)
    void this.sub.connect().catch(() => undefined)
    void this.cmd.connect().catch(() => undefined)
    this.timer = setInterval(
      () => void this.heartbeat().catch((err: unknown) => this.faulted('a metadata heartbeat', err)),
      this.heartbeatMs
    )
    this.timer.unref()
  }

  async stop(): Promise<void> {
    this.closed = true
    if (this.timer) clearInterval(this.timer)
    this.unsubscribe?.()
    // what is being written gets a moment; an engine away gets none (it is written again on connect)
    if (this.connected)
      await Promise.race([this.writing.catch(() => undefined), new Promise(r => setTimeout(r, 2000).unref())])
    this.cmd.disconnect()
    this.sub.disconnect()
  }

  /** Resolves once connected and caught up (for tests and commands), or rejects after `ms`. */
  async ready(ms = 10_000): Promise<void> {
    const t0 = Date.now()
    while (!this.connected) {
      if (Date.now() - t0 > ms) throw new Error('the metadata engine did not answer')
      await new Promise(r => setTimeout(r, 20))
    }
  }

  private faulted(what: string, err: unknown): void {
    if (this.connected) logFault(this.opts.log, what, err)
  }

  /**
   * The image is used here (opened, read, replicated): its holders are looked up if they are not
   * followed yet. The first use waits for that lookup (bounded), so that its first read knows them.
   */
  async use(digest: string): Promise<void> {
    const f = this.follows.get(digest)
    if (f) {
      f.usedAt = Date.now()
      return await f.ready
    }
    const follow: Follow = { usedAt: Date.now(), holders: new Set(), ready: Promise.resolve() }
    follow.ready = this.connected
      ? this.lookup(digest, follow).catch((err: unknown) => this.faulted('looking up the holders of an image', err))
      : Promise.resolve()
    this.follows.set(digest, follow)
    await Promise.race([follow.ready, new Promise(r => setTimeout(r, LOOKUP_WAIT_MS).unref())])
  }

  /** Hosts whose live key is gone (dead): placement, replication and holder choice skip them. */
  deadHosts(): ReadonlySet<string> {
    return this.dead
  }

  /** The images followed here and their followed holders (for .stats). */
  followed(): Record<string, string[]> {
    return Object.fromEntries([...this.follows].map(([d, f]) => [d, [...f.holders].sort()]))
  }

  /** Live other hosts whose inventory lists the image, cheapest first. */
  private holdersOf(digest: string): string[] {
    const prefix = digest.slice(0, 16)
    const hosts: string[] = []
    for (const f of this.opts.facts.allAs('inv')) {
      if (f.origin === this.self || this.dead.has(f.origin)) continue
      if (f.value.images[prefix] !== undefined) hosts.push(f.origin)
    }
    const tie = tieOrder(this.self)
    const ranked = this.opts.rank
      ? this.opts.rank(hosts)
      : hosts
          .map(h => ({ h, key: tie(h) }))
          .sort((a, b) => (a.key < b.key ? -1 : 1))
          .map(x => x.h)
    // a host holding all of the image before one holding some, within the cost order
    const full = ranked.filter(h => (this.opts.facts.getAs('inv', h)?.images[prefix] ?? 0) >= 10)
    const some = ranked.filter(h => !full.includes(h))
    return [...full.slice(0, Math.ceil(this.followK / 2)), ...some, ...full.slice(Math.ceil(this.followK / 2))]
  }

  /** (Re)chooses the holders followed for an image, reads their facts of it and follows them. */
  private async lookup(digest: string, follow: Follow): Promise<void> {
    this.counters.lookups++
    const want = this.holdersOf(digest).slice(0, this.followK)
    const alive = await this.alive(want)
    // a holder whose liveness is not known now (no answer) stays if it was followed
    const next = new Set(want.filter(h => alive.has(h) || (follow.holders.has(h) && !this.dead.has(h))))
    const gone = [...follow.holders].filter(h => !next.has(h))
    const added = [...next].filter(h => !follow.holders.has(h))
    follow.holders = next
    if (gone.length > 0) {
      await this.sub.unsubscribe(...gone.map(h => scopedChannel(digest, h)))
      this.forgetScoped(gone, [digest])
    }
    if (added.length === 0) return
    await this.sub.subscribe(...added.map(h => scopedChannel(digest, h)))
    const fields = [keyOf('hold', digest), keyOf('model', digest)]
    const p = this.cmd.pipeline()
    for (const h of added) p.hmget(scopedKey(h), ...fields)
    const res = (await p.exec()) ?? []
    added.forEach((h, i) => {
      const [err, values] = res[i] ?? [null, []]
      if (err) return
      const facts: Fact[] = []
      ;(values as Array<string | null>).forEach((v, j) => {
        if (v === null) return
        this.counters.bytesIn += v.length
        const f = decodeFact(h, fields[j]!, v)
        if (f) facts.push(f)
      })
      this.apply(h, facts)
    })
  }

  private forgetScoped(hosts: string[], digests: string[]): void {
    const which = hosts.flatMap(origin =>
      digests.flatMap(d => [
        { origin, key: keyOf('hold', d) },
        { origin, key: keyOf('model', d) }
      ])
    )
    this.opts.facts.forget(which)
  }

  /** Last seen (ms since the epoch) of each host whose live key is there. */
  private async alive(hosts: string[]): Promise<Map<string, number>> {
    const out = new Map<string, number>()
    if (hosts.length === 0) return out
    const p = this.cmd.pipeline()
    for (const h of hosts) p.pttl(liveKey(h))
    const res = (await p.exec()) ?? []
    const now = Date.now()
    hosts.forEach((h, i) => {
      const [err, ttl] = res[i] ?? [new Error('no answer'), null]
      if (err || typeof ttl !== 'number') return // not known now: neither alive nor dead
      if (ttl === -2) {
        this.dead.add(h) // the key is gone: expired
        return
      }
      this.dead.delete(h)
      out.set(h, ttl < 0 ? now : now - (this.liveTtlMs - ttl))
    })
    return out
  }

  /** Every host whose live key is there: its last heartbeat and the status it carried (`vmifs hosts`). */
  async liveness(): Promise<Map<string, Live>> {
    const hosts = await scanHostIds(this.cmd)
    const p = this.cmd.pipeline()
    for (const h of hosts) p.pttl(liveKey(h)).get(liveKey(h))
    const res = (await p.exec()) ?? []
    const now = Date.now()
    const out = new Map<string, Live>()
    hosts.forEach((host, i) => {
      const ttl = res[2 * i]?.[1]
      const text = res[2 * i + 1]?.[1]
      if (typeof ttl !== 'number' || ttl < 0) return
      const f = typeof text === 'string' ? decodeFact(host, keyOf('status'), text) : undefined
      const status = f ? decodeAs('status', f.value) : undefined
      out.set(host, { lastSeen: now - (this.liveTtlMs - ttl), ...(status ? { status } : {}) })
    })
    return out
  }

  /**
   * On each connect: this host's seq is raised past what the engine holds of it (a restored data
   * dir), its facts are written whole, every host's followed facts are read, and the followed
   * images' holders are looked up again (the channels are subscribed again by the client).
   */
  private async catchUp(): Promise<void> {
    const facts = this.opts.facts
    await this.sub.ping() // answered after the subscriber's SUBSCRIBE again: from here on nothing is missed
    const [g, s] = await Promise.all([this.cmd.hgetall(globalKey(this.self)), this.cmd.hgetall(scopedKey(this.self))])
    const mine: Fact[] = []
    const stored = new Map<string, string>()
    for (const [k, v] of Object.entries({ ...g, ...s })) {
      stored.set(k, v)
      if (k === CERT_FIELD) continue
      const f = decodeFact(this.self, k, v)
      if (f) mine.push(f)
    }
    if (mine.length > 0) facts.applySigned(this.self, mine)
    for (const text of Object.values(await this.cmd.hgetall(REVOKED_KEY))) this.takeRevocation(text)
    await this.writeAll(stored)
    const hosts = (await scanHostIds(this.cmd)).filter(h => h !== this.self)
    this.dead.clear()
    await this.alive(hosts)
    await this.checkExpiryEvents()
    const p = this.cmd.pipeline()
    for (const h of hosts) p.hgetall(globalKey(h))
    const res = (await p.exec()) ?? []
    hosts.forEach((h, i) => {
      const [err, hash] = res[i] ?? [null, {}]
      if (err) return
      const entries = Object.entries(hash as Record<string, string>)
      const cert = (hash as Record<string, string>)[CERT_FIELD]
      if (cert !== undefined) this.keepCert(h, cert)
      const list: Fact[] = []
      for (const [k, v] of entries) {
        if (k === CERT_FIELD) continue
        this.counters.bytesIn += v.length
        const f = decodeFact(h, k, v)
        if (f) list.push(f)
      }
      this.apply(h, list)
    })
    for (const [d, f] of this.follows) {
      f.holders = new Set() // read again whole: what changed while away is in the engine
      await this.lookup(d, f)
    }
    await this.cmd.publish(LIVE_CHANNEL, this.self)
    this.counters.catchUps++
  }

  private async checkExpiryEvents(): Promise<void> {
    let flags = ''
    try {
      const r = await this.cmd.config('GET', 'notify-keyspace-events')
      flags = r[1] ?? ''
    } catch {
      /* not allowed to ask: taken as off */
    }
    const on = flags.includes('E') && (flags.includes('x') || flags.includes('A'))
    if (!on && !this.warnedNoEvents) {
      this.warnedNoEvents = true
      this.opts.log.warn(
        { code: 'METADATA_NO_EXPIRY_EVENTS', flags },
        'the metadata engine sends no expiry events (set notify-keyspace-events Ex): ' +
          'dead hosts are noticed only among followed holders'
      )
    }
    this.expiryEvents = on
  }

  private keepCert(host: string, text: string): void {
    const cert = decodeCert(text)
    if (cert === undefined) this.certs.delete(host)
    else this.certs.set(host, cert)
  }

  private apply(origin: string, facts: Fact[]): void {
    if (facts.length === 0) return
    // a host the config admits by key alone has no certificate (`@cert` is null)
    const r = this.opts.facts.applySigned(origin, facts, this.certs.get(origin) ?? undefined)
    this.counters.applied += r.changed.length
    const refused = Object.values(r.refused).reduce((a, b) => a + b, 0)
    this.counters.refused += refused
    if (r.blame)
      this.opts.log.warn(
        { origin, code: 'FACTS_REFUSED', refused: r.refused },
        'refused facts from the metadata engine'
      )
  }

  /** A revocation recorded here (checked already): it goes to the engine, for every host. */
  revoked(v: unknown): void {
    const key = (v as { key?: unknown }).key
    if (typeof key !== 'string') return
    const text = JSON.stringify(v)
    this.writing = this.writing
      .then(async () => {
        await this.cmd.pipeline().hset(REVOKED_KEY, key, text).publish(REVOKED_CHANNEL, text).exec()
      })
      .catch((err: unknown) => this.faulted('writing a revocation to the metadata engine', err))
  }

  /** A revocation from the engine: recorded here if a fleet admin of this host signed it. */
  private takeRevocation(text: string): void {
    let v: unknown
    try {
      v = JSON.parse(text)
    } catch {
      return
    }
    const key = (v as { key?: unknown } | null)?.key
    if (typeof key !== 'string' || this.opts.facts.isRevoked(key)) return
    try {
      const dropped = this.opts.facts.revoke(v)
      this.opts.log.warn({ key, dropped }, 'recorded a revocation of a host key from the metadata engine')
    } catch {
      this.counters.refused++ // not signed by an admin of this host
    }
  }

  private onMessage(channel: string, text: string): void {
    this.counters.bytesIn += text.length
    if (channel === REVOKED_CHANNEL) return this.takeRevocation(text)
    if (channel === LIVE_CHANNEL) {
      if (text !== this.self) this.dead.delete(text)
      return
    }
    if (channel === this.expired) {
      if (text.startsWith(liveKey('')) && text !== liveKey(this.self)) this.hostExpired(text.slice(liveKey('').length))
      return
    }
    const f = decodeMessage(text)
    if (!f || f.origin === this.self) return
    if (channel === GLOBAL_CHANNEL) {
      if (scopeOf(f.key) !== undefined) return
      if (!this.certs.has(f.origin)) {
        // a host new to this one: its certificate first
        void this.cmd
          .hget(globalKey(f.origin), CERT_FIELD)
          .then(c => {
            if (c !== null) this.keepCert(f.origin, c)
            this.apply(f.origin, [f])
            this.inventoryChanged(f)
          })
          .catch((err: unknown) => this.faulted('reading a host certificate', err))
        return
      }
      this.apply(f.origin, [f])
      this.inventoryChanged(f)
      return
    }
    const d = scopeOf(f.key)
    if (d === undefined || channel !== scopedChannel(d, f.origin)) return
    if (!this.follows.get(d)?.holders.has(f.origin)) return
    this.apply(f.origin, [f])
  }

  /** A host's inventory changed: the followed images it lists (or no longer lists) choose holders again. */
  private inventoryChanged(f: Fact): void {
    if (f.key !== keyOf('inv')) return
    for (const [d, follow] of this.follows) {
      const listed = decodeAs('inv', f.value)?.images[d.slice(0, 16)] !== undefined
      if (listed !== follow.holders.has(f.origin) && (listed ? follow.holders.size < this.followK : true))
        void this.lookup(d, follow).catch((err: unknown) => this.faulted('looking up the holders of an image', err))
    }
  }

  /** Writes own facts (in order, one pipeline per batch) and sends each on its channel. */
  private write(own: Fact[]): void {
    if (!this.connected && !this.catchingUp) return // written whole on connect
    this.writing = this.writing
      .then(async () => {
        const p = this.cmd.pipeline()
        for (const f of own) this.queueWrite(p, f)
        await p.exec()
      })
      .catch((err: unknown) => this.faulted('writing facts to the metadata engine', err))
  }

  private queueWrite(p: ReturnType<Redis['pipeline']>, f: Fact): void {
    const text = encodeFact(f)
    this.counters.written++
    if (f.key === keyOf('status')) {
      p.set(liveKey(this.self), text, 'PX', this.liveTtlMs)
      this.counters.bytesOut += text.length
      return
    }
    const d = scopeOf(f.key)
    p.hset(d === undefined ? globalKey(this.self) : scopedKey(this.self), f.key, text)
    const msg = encodeMessage(f, text)
    p.publish(d === undefined ? GLOBAL_CHANNEL : scopedChannel(d, this.self), msg)
    this.counters.bytesOut += text.length + msg.length
  }

  /**
   * This host's certificate, its live key, and those of its facts the engine does not hold as
   * they are here (`stored`, read on connect): after a short outage or a failover that is nothing
   * or little, and only that goes out on the channels.
   */
  private async writeAll(stored: Map<string, string>): Promise<void> {
    const p = this.cmd.pipeline()
    const cert = this.opts.cert()
    const certText = cert !== undefined && cert !== null ? JSON.stringify(cert) : 'null'
    if (stored.get(CERT_FIELD) !== certText) p.hset(globalKey(this.self), CERT_FIELD, certText)
    for (const f of this.opts.facts.ownRows())
      if (f.key === keyOf('status') || stored.get(f.key) !== encodeFact(f)) this.queueWrite(p, f)
    this.expireAll(p)
    await p.exec()
  }

  private expireAll(p: ReturnType<Redis['pipeline']>): void {
    p.expire(globalKey(this.self), FORGET_S).expire(scopedKey(this.self), FORGET_S)
  }

  /**
   * Every heartbeat: the live key again (with the latest status), the keys' week of grace, the
   * followed holders' liveness (the dead are forgotten and replaced), idle images unfollowed.
   */
  private async heartbeat(): Promise<void> {
    if (!this.connected) return this.maybeCatchUp() // a catch-up that failed is tried again
    const status = this.opts.facts.get(this.self, keyOf('status'))
    const p = this.cmd.pipeline()
    if (status) p.set(liveKey(this.self), encodeFact(status), 'PX', this.liveTtlMs, 'GET')
    this.expireAll(p)
    const res = (await p.exec()) ?? []
    // this host's own key had expired (a long stall): the others took it for dead, it says it is back
    if (status && res[0] && res[0][0] === null && res[0][1] === null) await this.cmd.publish(LIVE_CHANNEL, this.self)
    const now = Date.now()
    for (const [d, f] of [...this.follows]) {
      if (now - f.usedAt > FOLLOW_IDLE_MS) {
        this.follows.delete(d)
        if (f.holders.size > 0) await this.sub.unsubscribe(...[...f.holders].map(h => scopedChannel(d, h)))
        this.forgetScoped([...f.holders], [d])
      }
    }
    // polled as well as told: without expiry events this is how a dead holder is noticed
    const followed = [...new Set([...this.follows.values()].flatMap(f => [...f.holders]))]
    await this.alive(followed)
    for (const h of followed) if (this.dead.has(h)) this.hostExpired(h)
  }

  /** A host's live key expired: it is skipped, and where it was a followed holder, another takes its place. */
  private hostExpired(host: string): void {
    this.dead.add(host)
    const affected = [...this.follows].filter(([, f]) => f.holders.has(host))
    if (affected.length === 0) return
    this.counters.expired++
    this.opts.log.info({ host }, 'a followed holder expired (no heartbeat): choosing others')
    for (const [d, f] of affected)
      void this.lookup(d, f).catch((err: unknown) => this.faulted('looking up the holders of an image', err))
  }
}
