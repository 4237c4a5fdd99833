// The one way chunks reach whoever needs them on this host — demand reads, read-ahead and
// miss-ahead, prefetch, replication's fallback: a memory cache of verified chunks, then the chunk
// store, then (fleet mode) the holders the metadata table names, cheapest first.
// Contract:
// - get() resolves with a chunk's verified bytes, or rejects with CHUNK_MISSING (not local, and
//   no fleet to fetch from), CHUNK_HASH_MISMATCH (the local copy was corrupt and has been dropped)
//   or CHUNK_UNAVAILABLE (no holder gave the right bytes before the deadline). ensure() resolves
//   once the chunk is in the chunk store. Wrong bytes never reach a caller or the store.
// - One flight per chunk, whoever asks. Every request carries a priority (demand > ahead >
//   prefetch, replicate); one that joins a flight of lower priority raises it: from then on the
//   flight weighs holders and hedges as the higher priority does (fetch.raised counts them). A
//   demand read that joins a prefetch's fetch from a slow holder hedges to the next one instead
//   of waiting behind it. A flight that fails is tried again, once, by a joiner of higher
//   priority than the flight began with.
// - Chunks a replication brings in batches of its own are flights too (expect()): a read joins
//   them, and hedges through the holders when the batch is slow.
// - Remote fetches resolve their waiters with the verified bytes at once; the chunk reaches the
//   store right after (putAsync, batched); close() waits for those writes.
// - A holder that answers 404, fails, times out or sends bytes that do not hash to the name is
//   skipped for that chunk and demoted for a while.
import { VmifsError } from '../errors.js'
import type { ChunkStore } from '../cache/chunk-store.js'
import { type HolderDirectory, ORIGIN_ID } from '../holders/directory.js'
import { PeerClient } from '../peer/client.js'
import type { OriginClient } from '../peer/origin-client.js'
import type { Stats } from '../stats/stats.js'
import { blake3 } from '../util/hash.js'
import type { Logger } from '../util/log.js'
import { HolderBatcher } from './holder-batcher.js'

export interface Want {
  hash: string
  size: number
  /** the digest of the image it is fetched for (its per-image counters); a chunk fetched for
   * several counts for the one whose request began the fetch */
  image?: string
}

/** Who asks: a read that waits (demand), reads ahead of one (ahead), the prefetcher, replication. */
export type Priority = 'demand' | 'ahead' | 'prefetch' | 'replicate'
const RANK: Record<Priority, number> = { replicate: 0, prefetch: 1, ahead: 2, demand: 3 }

/** How a priority fetches: the cost model's weight of time (alpha) and whether it hedges. */
export interface FetchPolicy {
  alpha: number
  hedge: boolean
}

export interface RemoteOptions {
  directory: HolderDirectory
  token: string
  sigma: number
  timeoutMs: number
  deadlineMs: number
  policies: Record<Priority, FetchPolicy>
  tls?: { ca?: string; rejectUnauthorized?: boolean }
  /** the origin store's client, when the fleet has one (its owner closes it) */
  origin?: OriginClient
  /** a fetched chunk is in the store now */
  onCached?: (hash: string, size: number) => void
  /** reads began fetching (none were) */
  onDemand?: () => void
}

const NO_HOLDER_POLL_MS = 200

type Outcome = { holder: string; ok: true; data: Buffer } | { holder: string; ok: false; why: string }

interface Flight {
  bytes: Promise<Buffer>
  /** settles once the chunk is written and recorded (or failed) */
  persisted: Promise<void>
  /** the priority it began with, and the highest that joined it */
  began: number
  rank: number
  policy: FetchPolicy
  /** wakes the flight's holder loop (its policy changed) */
  wake: () => void
}

/** Chunks on their way by other means (expect()): settle each with its verified bytes, stored, or null. */
export interface Expected {
  settle(hash: string, data: Buffer | null): void
}

export class ChunkSource {
  private readonly mem = new Map<string, Buffer>() // insertion order = LRU order
  private memBytes = 0
  private readonly loading = new Map<string, Promise<Buffer>>()
  private readonly flights = new Map<string, Flight>()
  private readonly batchers = new Map<string, HolderBatcher>()
  private readonly clients = new Map<string, PeerClient>()
  private closed = false
  private demandFetches = 0
  /** expect()ed chunks not settled yet (close() gives up on them) */
  private readonly unsettled = new Set<(data: Buffer | null) => void>()
  private lastDemandEnd = 0

  constructor(
    private readonly store: ChunkStore,
    private readonly stats: Stats,
    private readonly log: Logger,
    private readonly memLimit: number,
    private readonly remote?: RemoteOptions
  ) {}

  /** Fetches under way. */
  get inFlight(): number {
    return this.flights.size
  }

  /** Whether the chunk is here or on its way: in memory, being loaded, fetched, or in the store. */
  has(hash: string): boolean {
    return this.mem.has(hash) || this.loading.has(hash) || this.flights.has(hash) || this.store.has(hash)
  }

  /** Whether the chunk is here: in memory or in the store (a read of it is a hit). */
  holds(hash: string): boolean {
    return this.mem.has(hash) || this.store.has(hash)
  }

  /**
   * Whether reads are fetching now, or did within the last `graceMs` (a reader's next miss usually
   * follows within a round trip or two): the prefetcher holds back then.
   */
  demandActive(graceMs: number): boolean {
    return this.demandFetches > 0 || Date.now() - this.lastDemandEnd < graceMs
  }

  /** The chunk's verified bytes (see the contract). */
  async get(want: Want, prio: Priority): Promise<Buffer> {
    const m = this.mem.get(want.hash)
    if (m) {
      this.mem.delete(want.hash)
      this.mem.set(want.hash, m)
      this.stats.memHits++
      return m
    }
    const loading = this.loading.get(want.hash)
    if (loading) return await loading
    if (!this.flights.has(want.hash) && this.store.has(want.hash)) return await this.loadLocal(want.hash)
    if (!this.remote) throw VmifsError.chunkMissing(want.hash)
    // each chunk fetched for reads counts once: by the read-ahead or the read that began its
    // flight; a read that joins a prefetch under way counts too (a late prefetch)
    const joined = this.flights.get(want.hash)
    if (!joined || joined.began < RANK.ahead) {
      this.stats.demandFetchedChunks++
      if (want.image !== undefined) this.stats.digest(want.image).demandFetchedChunks++
    }
    this.demandFetches++
    if (this.demandFetches === 1) this.remote.onDemand?.()
    try {
      const f = this.flight(want, prio)
      try {
        const data = await f.bytes
        this.remember(want.hash, data)
        return data
      } catch (err) {
        // a flight begun for less (a read-ahead, a prefetch, a replication) may have given up
        // where this one should still try: once, on a flight of its own
        if (f.began >= RANK[prio] || this.closed) throw err
        if (this.flights.get(want.hash) === f) this.flights.delete(want.hash)
        const data = await this.flight(want, prio).bytes
        this.remember(want.hash, data)
        return data
      }
    } finally {
      this.demandFetches--
      this.lastDemandEnd = Date.now()
    }
  }

  /** Resolves once the chunk is in the chunk store (fetching it if it is not). */
  async ensure(want: Want, prio: Priority): Promise<void> {
    if (this.store.has(want.hash)) return
    if (!this.remote) throw VmifsError.chunkMissing(want.hash)
    const f = this.flight(want, prio)
    await f.bytes
    await f.persisted
    if (!this.store.has(want.hash))
      throw new VmifsError('CHUNK_UNAVAILABLE', `chunk ${want.hash} was fetched but could not be cached`, {
        hash: want.hash
      })
  }

  private loadLocal(hash: string): Promise<Buffer> {
    let p = this.loading.get(hash)
    if (!p) {
      p = this.store
        .read(hash)
        .then(buf => {
          this.remember(hash, buf)
          return buf
        })
        .finally(() => this.loading.delete(hash))
      this.loading.set(hash, p)
    }
    return p
  }

  private remember(hash: string, buf: Buffer): void {
    if (buf.length > this.memLimit || this.mem.has(hash)) return
    this.mem.set(hash, buf)
    this.memBytes += buf.length
    while (this.memBytes > this.memLimit) {
      const [k, v] = this.mem.entries().next().value as [string, Buffer]
      this.mem.delete(k)
      this.memBytes -= v.length
    }
  }

  /**
   * Chunks a replication is bringing in a batch request of its own to `donor`: each becomes a
   * flight of priority replicate that requests here join. One that is raised (a read needs it) is
   * also fetched through the holders once the donor has taken longer than its hedge delay;
   * whichever bytes come first serve the read. The caller settles every chunk once its batch is
   * stored: with the bytes, or null when the donor did not give them (joiners of higher priority
   * then fetch it on a flight of their own). Chunks already in flight or stored are left alone.
   */
  expect(wants: Want[], donor: string): Expected {
    const settlers = new Map<string, (data: Buffer | null) => void>()
    for (const want of wants) {
      if (!this.remote || this.flights.has(want.hash) || this.store.has(want.hash)) continue
      let byBatch = false
      const f = this.begin(want, RANK.replicate, this.remote.policies.replicate)
      let settled = false
      let batchFailed = false
      let hedged: Promise<Buffer> | undefined
      let hedgeWake = (): void => {}
      let timer: NodeJS.Timeout | undefined
      let resolve: (data: Buffer) => void = () => {}
      let reject: (err: unknown) => void = () => {}
      f.bytes = new Promise<Buffer>((res, rej) => {
        resolve = res
        reject = rej
      })
      const finish = (data: Buffer | undefined, err?: unknown): void => {
        if (settled) return
        settled = true
        if (timer) clearTimeout(timer)
        if (data) resolve(data)
        else reject(err)
      }
      f.wake = () => {
        if (settled) return
        if (hedged) return hedgeWake()
        // raised: the donor gets its hedge delay, then the holders are asked too
        timer ??= setTimeout(() => {
          if (settled) return
          hedged = this.fetchOne(want, f, w => {
            hedgeWake = w
          })
          hedged.then(
            data => finish(data),
            err => {
              if (batchFailed) finish(undefined, err)
            }
          )
        }, this.remote!.directory.link(donor).hedgeDelayMs())
      }
      const settle = (data: Buffer | null): void => {
        this.unsettled.delete(settle)
        if (data) {
          byBatch = !settled
          finish(data)
        } else {
          batchFailed = true
          if (!hedged)
            finish(
              undefined,
              new VmifsError('CHUNK_UNAVAILABLE', `chunk ${want.hash}: ${donor} did not give it`, { hash: want.hash })
            )
        }
      }
      settlers.set(want.hash, settle)
      this.unsettled.add(settle)
      this.persist(want, f, () => byBatch)
    }
    return { settle: (hash, data) => settlers.get(hash)?.(data) }
  }

  /** The chunk's flight: joined (and raised, if this priority is higher) or begun. */
  private flight(want: Want, prio: Priority): Flight {
    const rank = RANK[prio]
    const policy = this.remote!.policies[prio]
    const f = this.flights.get(want.hash)
    if (f) {
      if (rank > f.rank) {
        f.rank = rank
        f.policy = { alpha: Math.max(f.policy.alpha, policy.alpha), hedge: f.policy.hedge || policy.hedge }
        this.stats.raisedFlights++
        f.wake()
      }
      return f
    }
    let wake = (): void => {}
    const flight = this.begin(want, rank, policy)
    flight.wake = () => wake()
    flight.bytes = this.fetchOne(want, flight, w => {
      wake = w
    })
    this.persist(want, flight, () => false)
    return flight
  }

  /** A new flight of the chunk, its bytes and persistence still to be set. */
  private begin(want: Want, rank: number, policy: FetchPolicy): Flight {
    const flight: Flight = {
      bytes: Promise.resolve(Buffer.alloc(0)),
      persisted: Promise.resolve(),
      began: rank,
      rank,
      policy: { ...policy },
      wake: () => {}
    }
    this.flights.set(want.hash, flight)
    return flight
  }

  /**
   * Callers get the verified bytes at once; the flight stays open (later callers join it and get
   * the same bytes) until the chunk is written and recorded in the store (by the store here, or
   * by whoever brought it, when `stored()` says so).
   */
  private persist(want: Want, flight: Flight, stored: () => boolean): void {
    flight.persisted = flight.bytes
      .then(
        async data => {
          if (stored()) return
          try {
            await this.store.putAsync(want.hash, data, { verified: true })
            this.remote!.onCached?.(want.hash, data.length)
          } catch (err) {
            this.log.warn({ hash: want.hash, err: (err as Error).message }, 'caching a fetched chunk failed')
          }
        },
        () => {}
      )
      .finally(() => {
        if (this.flights.get(want.hash) === flight) this.flights.delete(want.hash)
      })
  }

  private batcher(holder: string): HolderBatcher | undefined {
    const dir = this.remote!.directory
    let b = this.batchers.get(holder)
    const info = dir.host(holder)
    if (!info) return undefined
    if (b) return b
    let client: PeerClient | OriginClient
    if (holder === ORIGIN_ID) {
      if (!this.remote!.origin) return undefined
      client = this.remote!.origin
    } else {
      client = this.client(info.endpoint)
    }
    b = new HolderBatcher(holder, client, dir.link(holder), this.stats.holder(holder), this.remote!.timeoutMs)
    this.batchers.set(holder, b)
    return b
  }

  /** One keep-alive pool per endpoint, shared with metadata sync. */
  client(endpoint: string): PeerClient {
    let c = this.clients.get(endpoint)
    if (!c) {
      c = new PeerClient(endpoint, { token: this.remote?.token ?? '', tls: this.remote?.tls })
      this.clients.set(endpoint, c)
    }
    return c
  }

  private async attempt(holder: string, want: Want): Promise<Outcome> {
    const b = this.batcher(holder)
    if (!b) return { holder, ok: false, why: 'unknown holder' }
    let data: Buffer | null
    try {
      data = await b.get(want.hash, want.size)
    } catch (err) {
      this.log.debug({ holder, hash: want.hash, err: (err as Error).message }, 'holder request failed')
      return { holder, ok: false, why: (err as Error).message }
    }
    const hs = this.stats.holder(holder)
    const link = this.remote!.directory.link(holder)
    if (data === null) {
      link.demote()
      hs.errors++
      return { holder, ok: false, why: 'not held (404)' }
    }
    const got = blake3(data).toString('hex')
    if (got !== want.hash) {
      link.demote()
      hs.errors++
      this.log.warn(
        { holder, hash: want.hash, got, bytes: data.length },
        'holder sent bytes that do not match the hash: demoted'
      )
      return { holder, ok: false, why: 'hash mismatch' }
    }
    hs.bytes += data.length
    return { holder, ok: true, data }
  }

  /**
   * Asks the holders in cost order, under the flight's policy as it is at each step: a raise
   * re-ranks the holders not asked yet and may start hedging at once.
   */
  private async fetchOne(want: Want, f: Flight, onWake: (wake: () => void) => void): Promise<Buffer> {
    if (this.closed) throw VmifsError.closed('ChunkSource')
    const { directory: dir, sigma, deadlineMs } = this.remote!
    const deadline = Date.now() + deadlineMs
    const rank = (exclude: string[]): string[] =>
      dir.rank(
        dir.candidates(want.hash).filter(h => !exclude.includes(h)),
        want.size,
        { alpha: f.policy.alpha, sigma }
      )
    let order = rank([])
    // nobody announced it (yet): holdings may still be on their way through the metadata sync
    while (order.length === 0 && Date.now() + NO_HOLDER_POLL_MS < deadline && !this.closed) {
      await new Promise(resolve => setTimeout(resolve, NO_HOLDER_POLL_MS))
      order = rank([])
    }
    const running = new Map<string, Promise<Outcome>>()
    const tried: string[] = []
    const failures: string[] = []
    let next = 0
    let hedgeDue = false
    let lastStart = 0
    let woken: Promise<'woken'> = new Promise(resolve => onWake(() => resolve('woken')))
    let policy = f.policy
    for (;;) {
      if (f.policy !== policy) {
        // raised: the holders not asked yet in the new order
        policy = f.policy
        order = [...tried, ...rank(tried)]
      }
      const hedge = policy.hedge || policy.alpha >= 0.5
      if ((running.size === 0 || hedgeDue) && next < order.length) {
        const h = order[next++]!
        if (running.size > 0) this.stats.hedges++
        running.set(h, this.attempt(h, want))
        tried.push(h)
        lastStart = Date.now()
        hedgeDue = false
      }
      if (running.size === 0) break
      const left = deadline - Date.now()
      if (left <= 0) {
        failures.push('deadline passed')
        break
      }
      const last = tried[tried.length - 1]!
      const untilHedge = lastStart + dir.link(last).hedgeDelayMs() - Date.now()
      const wait = hedge && next < order.length ? Math.max(0, Math.min(left, untilHedge)) : left
      let timer: NodeJS.Timeout | undefined
      const tick = new Promise<'tick'>(resolve => {
        timer = setTimeout(() => resolve('tick'), wait)
      })
      const r = await Promise.race([...running.values(), tick, woken])
      clearTimeout(timer)
      if (r === 'woken') {
        woken = new Promise(resolve => onWake(() => resolve('woken')))
        continue
      }
      if (r === 'tick') {
        if (Date.now() < deadline && hedge) hedgeDue = true
        continue
      }
      running.delete(r.holder)
      if (r.ok) {
        this.stats.fetchBytes += r.data.length
        if (want.image !== undefined) this.stats.digest(want.image).fetched(r.holder, r.data.length)
        return r.data
      }
      failures.push(`${r.holder}: ${r.why}`)
    }
    this.stats.fetchFailures++
    throw new VmifsError(
      'CHUNK_UNAVAILABLE',
      `chunk ${want.hash}: no holder gave it (${order.length === 0 ? 'nobody announced it' : failures.join('; ')})`,
      { hash: want.hash, tried }
    )
  }

  async close(): Promise<void> {
    this.closed = true
    for (const settle of [...this.unsettled]) settle(null)
    await Promise.allSettled([...this.flights.values()].map(f => f.persisted))
    await Promise.all([...this.clients.values()].map(c => c.destroy()))
  }
}
