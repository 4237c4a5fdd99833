// The prefetcher: when a read session of an image starts, the chunks the fleet's usage model
// expects it to read (probability at least `threshold`) and that are not cached are fetched in
// the background, in order of expected need time, through the same fetcher as demand reads
// (single flight, verification, holder choice) but with the lower prefetch α (more weight on
// price). Demand reads come first: while any demand fetch is under way the prefetch queue runs
// one fetch at a time, otherwise `concurrency`. A session's queue is dropped when it ends.
// Counters: issued (prefetched chunks), used (later read by a demand read), wasted (never read
// by the session that caused them).
import PQueue from 'p-queue'
import type { Manifest } from '../manifests/manifest.js'
import type { UsageModel } from './usage-model.js'

export interface PrefetchDeps {
  model (digest: string): UsageModel
  manifest (digest: string): Manifest | undefined
  has (hash: string): boolean
  fetch (hash: string, size: number): Promise<void>
  demandActive (): boolean
  stats: { issued: number, used: number, wasted: number }
}

interface SessionState { queue: PQueue, prefetched: Set<string>, used: Set<string>, cancelled: boolean }

export class Prefetcher {
  private readonly sessions = new Map<string, SessionState>()
  private timer: NodeJS.Timeout | undefined

  constructor (private readonly deps: PrefetchDeps, private readonly opts: { threshold: number, concurrency: number } = { threshold: 0.3, concurrency: 8 }) {
    this.timer = setInterval(() => this.tune(), 20)
    this.timer.unref()
  }

  /** A read session of the image started: queue what it will likely need. */
  start (digest: string): void {
    if (this.sessions.has(digest)) return
    const m = this.deps.manifest(digest)
    if (!m) return
    const model = this.deps.model(digest)
    const st: SessionState = { queue: new PQueue({ concurrency: this.opts.concurrency }), prefetched: new Set(), used: new Set(), cancelled: false }
    this.sessions.set(digest, st)
    for (const i of model.likely(this.opts.threshold)) {
      if (i >= m.count || m.zero[i] === 1) continue
      const hash = m.hashHexAt(i)
      if (this.deps.has(hash) || st.prefetched.has(hash)) continue
      st.prefetched.add(hash)
      const size = m.lengthAt(i)
      void st.queue.add(async () => {
        if (st.cancelled || this.deps.has(hash)) { st.prefetched.delete(hash); return }
        this.deps.stats.issued++
        await this.deps.fetch(hash, size).catch(() => { st.prefetched.delete(hash) })
      })
    }
  }

  /** A demand read touched this chunk (counts prefetches that were used). */
  demand (digest: string, hash: string): void {
    const st = this.sessions.get(digest)
    if (!st || !st.prefetched.has(hash) || st.used.has(hash)) return
    st.used.add(hash)
    this.deps.stats.used++
  }

  /** The session ended: drop what is still queued; count what was prefetched and never read. */
  end (digest: string): void {
    const st = this.sessions.get(digest)
    if (!st) return
    this.sessions.delete(digest)
    st.cancelled = true
    st.queue.clear()
    this.deps.stats.wasted += [...st.prefetched].filter(h => !st.used.has(h) && this.deps.has(h)).length
  }

  /** Demand first: one prefetch at a time while demand fetches are under way. */
  private tune (): void {
    const c = this.deps.demandActive() ? 1 : this.opts.concurrency
    for (const st of this.sessions.values()) if (st.queue.concurrency !== c) st.queue.concurrency = c
  }

  close (): void {
    if (this.timer) clearInterval(this.timer)
    for (const d of [...this.sessions.keys()]) this.end(d)
  }
}
