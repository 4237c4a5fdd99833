// Miss -> single flight by hash -> holders in cost order -> download -> verify -> cache put ->
// announce. Contract: ensure() resolves with the chunk's verified bytes when it fetched them (so a
// reader need not load and hash them again; they reach the cache right after, off the event
// loop), with undefined when the chunk was already cached, or rejects with
// CHUNK_UNAVAILABLE when no holder gave the right bytes before the deadline. A holder that
// answers 404, fails, times out or sends bytes that do not hash to the name is skipped for that
// chunk and demoted for a while; wrong bytes never reach the cache. On-demand fetches (high α)
// hedge: when the first holder has not answered within its recent p95, the next one is asked too
// and the first right answer wins.
import { VmifsError } from '../errors.js'
import type { ChunkStore } from '../cache/chunk-store.js'
import { type HolderDirectory, ORIGIN_ID } from '../holders/directory.js'
import { PeerClient } from '../peer/client.js'
import { OriginClient } from '../peer/origin-client.js'
import type { Stats } from '../stats/stats.js'
import { blake3 } from '../util/hash.js'
import type { Logger } from '../util/log.js'
import { HolderBatcher } from './holder-batcher.js'

export interface Want {
  hash: string
  size: number
}
export interface FetchOptions {
  alpha: number
  deadlineMs?: number
  hedge?: boolean
}

export interface FetcherOptions {
  token: string
  sigma: number
  timeoutMs: number
  deadlineMs: number
  tls?: { ca?: string; rejectUnauthorized?: boolean }
  onCached?: (hash: string, size: number) => void
}

const NO_HOLDER_POLL_MS = 200

type Outcome = { holder: string; ok: true; data: Buffer } | { holder: string; ok: false; why: string }

export class Fetcher {
  private readonly flights = new Map<string, Promise<Buffer>>()
  /** fetched chunks still being written to the cache (close() waits for them) */
  private readonly persisting = new Map<string, Promise<void>>()
  private readonly batchers = new Map<string, HolderBatcher>()
  private readonly clients = new Map<string, PeerClient>()
  private origin: OriginClient | undefined
  private closed = false

  constructor(
    private readonly store: ChunkStore,
    private readonly dir: HolderDirectory,
    private readonly stats: Stats,
    private readonly log: Logger,
    private readonly opts: FetcherOptions
  ) {}

  get inFlight(): number {
    return this.flights.size
  }

  ensure(want: Want, o: FetchOptions): Promise<Buffer | undefined> {
    if (this.store.has(want.hash)) return Promise.resolve(undefined)
    let p = this.flights.get(want.hash)
    if (!p) {
      // callers get the verified bytes at once; the flight stays open (later callers join it and
      // get the same bytes) until the chunk is written and recorded in the cache
      p = this.fetchOne(want, o)
      this.flights.set(want.hash, p)
      const persisted = p
        .then(
          async data => {
            try {
              await this.store.putAsync(want.hash, data, { verified: true })
              this.opts.onCached?.(want.hash, data.length)
            } catch (err) {
              this.log.warn({ hash: want.hash, err: (err as Error).message }, 'caching a fetched chunk failed')
            }
          },
          () => {}
        )
        .finally(() => {
          this.flights.delete(want.hash)
          this.persisting.delete(want.hash)
        })
      this.persisting.set(want.hash, persisted)
    }
    return p
  }

  /** ensure(), resolving only once the chunk is written and recorded in the cache. */
  async ensureCached(want: Want, o: FetchOptions): Promise<void> {
    await this.ensure(want, o)
    await this.persisting.get(want.hash)
    if (!this.store.has(want.hash))
      throw new VmifsError('CHUNK_UNAVAILABLE', `chunk ${want.hash} was fetched but could not be cached`, {
        hash: want.hash
      })
  }

  private batcher(holder: string): HolderBatcher | undefined {
    let b = this.batchers.get(holder)
    const info = this.dir.host(holder)
    if (!info) return undefined
    if (b) return b
    let client: PeerClient | OriginClient
    if (holder === ORIGIN_ID) {
      this.origin ??= new OriginClient(info.endpoint, this.opts.token)
      client = this.origin
    } else {
      client = this.client(info.endpoint)
    }
    b = new HolderBatcher(holder, client, this.dir.link(holder), this.stats.holder(holder), this.opts.timeoutMs)
    this.batchers.set(holder, b)
    return b
  }

  /** One keep-alive pool per endpoint, shared with metadata sync. */
  client(endpoint: string): PeerClient {
    let c = this.clients.get(endpoint)
    if (!c) {
      c = new PeerClient(endpoint, { token: this.opts.token, tls: this.opts.tls })
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
    if (data === null) {
      this.dir.link(holder).demote()
      hs.errors++
      return { holder, ok: false, why: 'not held (404)' }
    }
    const got = blake3(data).toString('hex')
    if (got !== want.hash) {
      this.dir.link(holder).demote()
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

  private async fetchOne(want: Want, o: FetchOptions): Promise<Buffer> {
    if (this.closed) throw VmifsError.closed('Fetcher')
    const deadline = Date.now() + (o.deadlineMs ?? this.opts.deadlineMs)
    let order = this.dir.rank(this.dir.candidates(want.hash), want.size, { alpha: o.alpha, sigma: this.opts.sigma })
    // nobody announced it (yet): holdings may still be on their way through the metadata sync
    while (order.length === 0 && Date.now() + NO_HOLDER_POLL_MS < deadline && !this.closed) {
      await new Promise(resolve => setTimeout(resolve, NO_HOLDER_POLL_MS))
      order = this.dir.rank(this.dir.candidates(want.hash), want.size, { alpha: o.alpha, sigma: this.opts.sigma })
    }
    const hedge = o.hedge ?? o.alpha >= 0.5
    const running = new Map<string, Promise<Outcome>>()
    const tried: string[] = []
    const failures: string[] = []
    let next = 0
    let hedgeDue = false
    for (;;) {
      if ((running.size === 0 || hedgeDue) && next < order.length) {
        const h = order[next++]!
        if (running.size > 0) this.stats.hedges++
        running.set(h, this.attempt(h, want))
        tried.push(h)
        hedgeDue = false
      }
      if (running.size === 0) break
      const left = deadline - Date.now()
      if (left <= 0) {
        failures.push('deadline passed')
        break
      }
      const last = tried[tried.length - 1]!
      const wait = hedge && next < order.length ? Math.min(left, this.dir.link(last).hedgeDelayMs()) : left
      let timer: NodeJS.Timeout | undefined
      const tick = new Promise<'tick'>(resolve => {
        timer = setTimeout(() => resolve('tick'), wait)
      })
      const r = await Promise.race([...running.values(), tick])
      clearTimeout(timer)
      if (r === 'tick') {
        if (Date.now() < deadline) hedgeDue = true
        continue
      }
      running.delete(r.holder)
      if (r.ok) {
        this.stats.fetchBytes += r.data.length
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
    await Promise.allSettled([...this.persisting.values()])
    await Promise.all([...this.clients.values()].map(c => c.destroy()))
    await this.origin?.close()
  }
}
