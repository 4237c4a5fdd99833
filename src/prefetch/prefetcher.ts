// The prefetcher: when a read session of an image starts, the chunks the fleet's usage model
// expects it to read (probability at least `threshold`) and that are not cached are fetched in
// the background, in order of expected need time (by half seconds, in image order within one),
// through the same fetcher as demand reads (single flight, verification, holder choice) but with
// the lower prefetch α (more weight on price). A migration hint (hint()) queues its chunks ahead
// of the model's, in the hint's order. Prefetches go out in groups (see PrefetchOptions).
// Demand reads come first: while any demand fetch is under way the prefetch queue keeps at most
// `demandConcurrency` chunks in flight, otherwise `concurrency`. A session's queue is dropped when
// it ends; a hint that no session follows is dropped after `hintTtlMs`. Prefetch never makes room
// by evicting a chunk used or cached since its session began (deps.room), and pinned chunks are
// never evicted at all.
// Counters: issued (chunks prefetched), used (read by a demand read of the session, `late` of
// them while their prefetch was still under way), wasted (prefetched and never read by the
// session they were fetched for), and the same in bytes.
import PQueue from 'p-queue'
import type { Manifest } from '../manifests/manifest.js'
import { type ModelDonor, type UsageModel, inheritModel } from './usage-model.js'
import type { PrefetchStats } from '../stats/stats.js'

export interface PrefetchDeps {
  model(digest: string): UsageModel
  /** other images' models (with their manifests), for an image that has none yet */
  donors?: (digest: string) => ModelDonor[]
  /** told when an image's session starts with a model inherited from another image */
  inherited?: (digest: string, from: string, share: number) => void
  manifest(digest: string): Manifest | undefined
  has(hash: string): boolean
  /** `digest`: the image whose session asks for it */
  fetch(hash: string, size: number, digest: string): Promise<void>
  demandActive(): boolean
  /** Whether `size` more bytes fit without evicting anything used or cached since `since` (ms epoch). */
  room(size: number, since: number): boolean
  stats: PrefetchStats
  /** the image's own counters (the same counts as `stats`, of its sessions only) */
  imageStats?: (digest: string) => PrefetchStats
}

/**
 * concurrency: chunks in flight while no demand fetch is under way; demandConcurrency: while one
 * is. Chunks asked for in the same tick travel as one request (a peer's batch, the origin's
 * ranges), so prefetches go out in groups: a new group once no more than half the window is under
 * way, as many chunks as fill it. Chunks land one by one (a range is read as it arrives); without
 * the groups each landing would start one chunk, and one request (measured in the boot benchmark
 * at 100 ms RTT from the origin store: 1,559 requests a boot with a profile, nbdkit 700). 128
 * chunks (~2 MiB at the default chunk size) keep a 100 Mbit/s link with 100 ms of RTT busy where
 * chunks compress to a third; what is in flight when a demand read starts is what it may wait
 * behind (256 made a 1 MiB read over 40 Mbit/s take 4× its time alone, in fleet-shaped.test.ts).
 */
export interface PrefetchOptions {
  threshold: number
  concurrency: number
  demandConcurrency: number
  hintTtlMs: number
}

/**
 * Chunks the model expects within the same half second go in image order: a prefetch group then
 * covers runs of neighbours, fewer range requests (the prefetch runs seconds ahead of the reads).
 */
const NEED_QUANTUM_MS = 500

const HINT_PRIORITY = 1
const MODEL_PRIORITY = 0

interface State {
  digest: string
  queue: PQueue
  since: number
  /** chunks this state fetched, with their sizes */
  prefetched: Map<string, number>
  /** chunks queued and not yet fetched or skipped */
  queued: Set<string>
  used: Set<string>
  /** chunks demand reads of this session touched */
  demanded: Set<string>
  cancelled: boolean
  session: boolean
  /** the session started with no model to follow: one that arrives later is followed (modelArrived) */
  awaitingModel?: boolean
  noRoom: boolean
  expiry?: NodeJS.Timeout
  /** the counters it counts into: the prefetcher's, and its image's */
  counts: PrefetchStats[]
}

export class Prefetcher {
  private readonly states = new Map<string, State>()
  /** bytes of prefetches under way (not in the cache yet, but they will need room) */
  private inflightBytes = 0
  /** chunks whose fetch is under way, and the started prefetches waiting for their group to go */
  private fetching = 0
  private waiting: Array<() => void> = []
  private releaseDue = false
  private readonly timer: NodeJS.Timeout
  private readonly opts: PrefetchOptions

  constructor(
    private readonly deps: PrefetchDeps,
    opts: Partial<PrefetchOptions> = {}
  ) {
    this.opts = { threshold: 0.3, concurrency: 128, demandConcurrency: 4, hintTtlMs: 600_000, ...opts }
    this.timer = setInterval(() => this.tune(), 20)
    this.timer.unref()
  }

  /** Chunks queued and not yet fetched, over every image. */
  get pending(): number {
    let n = 0
    for (const st of this.states.values()) n += st.queued.size
    return n
  }

  private state(digest: string): State {
    let st = this.states.get(digest)
    if (!st) {
      st = {
        digest,
        queue: new PQueue({ concurrency: this.opts.concurrency }),
        since: Date.now(),
        prefetched: new Map(),
        queued: new Set(),
        used: new Set(),
        demanded: new Set(),
        cancelled: false,
        session: false,
        noRoom: false,
        counts: [this.deps.stats, ...(this.deps.imageStats ? [this.deps.imageStats(digest)] : [])]
      }
      this.states.set(digest, st)
    }
    return st
  }

  private count(st: State, key: keyof PrefetchStats, n = 1): void {
    for (const c of st.counts) c[key] += n
  }

  private enqueue(st: State, hash: string, size: number, priority: number): boolean {
    if (this.deps.has(hash) || st.prefetched.has(hash) || st.queued.has(hash)) return false
    st.queued.add(hash)
    void st.queue.add(
      async () => {
        st.queued.delete(hash)
        // cached meanwhile, or a demand read already asked for it (its fetch is the demand's)
        if (st.cancelled || this.deps.has(hash) || st.demanded.has(hash)) return
        if (!this.deps.room(size + this.inflightBytes, st.since)) {
          // the cache is full of what this session uses: stop rather than evict it for guesses
          this.count(st, 'skippedNoRoom')
          if (!st.noRoom) {
            st.noRoom = true
            st.queue.clear()
            st.queued.clear()
          }
          return
        }
        this.inflightBytes += size
        try {
          await this.grouped()
          if (st.cancelled) return
          await this.deps.fetch(hash, size, st.digest)
        } catch {
          this.count(st, 'failed')
          return
        } finally {
          this.inflightBytes -= size
          this.fetching--
          this.release()
        }
        if (st.prefetched.has(hash)) return
        st.prefetched.set(hash, size)
        this.count(st, 'issued')
        this.count(st, 'bytes', size)
        // a demand read arrived while this fetch was under way: used, but late
        if (st.demanded.has(hash)) {
          this.markUsed(st, hash, size)
          this.count(st, 'late')
        } else if (st.cancelled) {
          // it finished after its session ended: that session never read it
          this.count(st, 'wasted')
          this.count(st, 'wastedBytes', size)
        }
      },
      { priority }
    )
    return true
  }

  /** Resolves when this prefetch's group goes out (see PrefetchOptions); counts it as fetching. */
  private grouped(): Promise<void> {
    return new Promise(resolve => {
      this.waiting.push(() => {
        this.fetching++
        resolve()
      })
      this.release()
    })
  }

  /**
   * Sends the waiting prefetches together, at the end of this tick (the queue starts all it can in
   * it), once no more than half the window is fetching: their fetches then begin in one tick.
   */
  private release(): void {
    if (this.releaseDue || this.waiting.length === 0) return
    this.releaseDue = true
    setImmediate(() => {
      this.releaseDue = false
      const window = this.deps.demandActive() ? this.opts.demandConcurrency : this.opts.concurrency
      if (this.fetching > window / 2) return
      const go = this.waiting
      this.waiting = []
      for (const f of go) f()
    })
  }

  /** A read session of the image started: queue what it will likely need, after any hint. */
  start(digest: string): void {
    const existing = this.states.get(digest)
    if (existing?.session) return
    const m = this.deps.manifest(digest)
    if (!m) return
    const st = this.state(digest)
    st.session = true
    if (st.expiry) {
      clearTimeout(st.expiry)
      st.expiry = undefined
    }
    this.queueModel(digest, m, st)
  }

  /**
   * A model of the image arrived from the fleet (a metadata backend that looks an image's models
   * up when it is first used, src/metadata/redis.ts): a session that started without one follows it.
   */
  modelArrived(digest: string): void {
    const st = this.states.get(digest)
    if (!st?.session || !st.awaitingModel) return
    const m = this.deps.manifest(digest)
    if (m) this.queueModel(digest, m, st)
  }

  private queueModel(digest: string, m: Manifest, st: State): void {
    let model = this.deps.model(digest)
    if (model.n === 0 && this.deps.donors) {
      // no session of this image yet: a new version or a sibling may have taught the fleet
      const got = inheritModel(m, this.deps.donors(digest), this.opts.threshold)
      if (got) {
        model = got.model
        this.count(st, 'inherited')
        this.deps.inherited?.(digest, got.from, got.share)
      }
    }
    st.awaitingModel = model.n === 0
    for (const i of model.likely(this.opts.threshold, NEED_QUANTUM_MS)) {
      if (i >= m.count || m.zero[i] === 1) continue
      this.enqueue(st, m.hashHexAt(i), m.lengthAt(i), MODEL_PRIORITY)
    }
  }

  /**
   * A migration hint for the image: fetch these chunks first, in this order. Chunks the manifest
   * does not hold are ignored. Returns how many were queued (the rest are cached or queued).
   */
  hint(digest: string, chunks: Array<{ hash: string }>): { queued: number; cached: number; unknown: number } {
    const m = this.deps.manifest(digest)
    if (!m) return { queued: 0, cached: 0, unknown: chunks.length }
    const sizes = m.distinctChunks()
    const st = this.state(digest)
    if (!st.session && !st.expiry) {
      st.expiry = setTimeout(() => this.end(digest), this.opts.hintTtlMs)
      st.expiry.unref()
    }
    let queued = 0
    let cached = 0
    let unknown = 0
    for (const c of chunks) {
      const size = sizes.get(c.hash)
      if (size === undefined) {
        unknown++
        continue
      }
      if (this.deps.has(c.hash)) {
        cached++
        continue
      }
      if (this.enqueue(st, c.hash, size, HINT_PRIORITY)) queued++
    }
    this.count(st, 'hinted', queued)
    return { queued, cached, unknown }
  }

  /** A demand read reached entries first..last of the image (nothing to do without a session). */
  demandRange(m: Manifest, first: number, last: number): void {
    const digest = m.digest()
    if (!this.states.has(digest)) return
    for (let i = first; i <= last; i++) if (m.zero[i] === 0) this.demand(digest, m.hashHexAt(i))
  }

  /** A demand read touched this chunk (counts prefetches that were used). */
  demand(digest: string, hash: string): void {
    const st = this.states.get(digest)
    if (!st || st.demanded.has(hash)) return
    st.demanded.add(hash)
    const size = st.prefetched.get(hash)
    if (size !== undefined) this.markUsed(st, hash, size)
  }

  private markUsed(st: State, hash: string, size: number): void {
    if (st.used.has(hash)) return
    st.used.add(hash)
    this.count(st, 'used')
    this.count(st, 'usedBytes', size)
  }

  /** The session ended: drop what is still queued; count what was prefetched and never read. */
  end(digest: string): void {
    const st = this.states.get(digest)
    if (!st) return
    this.states.delete(digest)
    if (st.expiry) clearTimeout(st.expiry)
    st.cancelled = true
    st.queue.clear()
    st.queued.clear()
    for (const [h, size] of st.prefetched) {
      if (st.used.has(h)) continue
      this.count(st, 'wasted')
      this.count(st, 'wastedBytes', size)
    }
  }

  /** Demand first: fewer prefetches in flight while demand fetches are under way. Called by the
   * agent when a demand fetch starts, and every 20 ms. */
  tune(): void {
    const c = this.deps.demandActive() ? this.opts.demandConcurrency : this.opts.concurrency
    for (const st of this.states.values()) if (st.queue.concurrency !== c) st.queue.concurrency = c
    this.release()
  }

  close(): void {
    clearInterval(this.timer)
    for (const d of [...this.states.keys()]) this.end(d)
    // every session is cancelled: what waits for its group returns without fetching
    const go = this.waiting
    this.waiting = []
    for (const f of go) f()
  }
}
