// Publishes this host's facts: its host record, the images imported here, and for every manifest
// it knows the ranges of entries its cache holds, and its status (cache space, load) for placement. Holdings are recomputed after cache changes,
// debounced, and published only when they changed (evictions are announced the same way).
import os from 'node:os'
import type { Catalog } from '../index/catalog.js'
import type { FactStore } from '../index/facts.js'
import type { ChunkStore } from '../cache/chunk-store.js'
import { toRanges } from './holdings.js'
import type { Logger } from '../util/log.js'

export class Announcer {
  private timer: NodeJS.Timeout | undefined
  private closed = false

  constructor (
    private readonly facts: FactStore,
    private readonly catalog: Catalog,
    private readonly store: ChunkStore,
    private readonly log: Logger,
    private readonly debounceMs = 300
  ) {}

  publishHost (endpoint: string | undefined, price: number): void {
    this.facts.publish('host', endpoint === undefined ? null : { endpoint, price, version: 1 })
  }

  /** Images imported on this host are published; removed ones are retracted. */
  publishImages (): void {
    const mine = new Map<string, { digest: string, size: number }>()
    for (const r of this.catalog.listImages()) if (r.origin === null) mine.set(r.name, { digest: r.digest, size: r.size })
    for (const [name, v] of mine) {
      const cur = this.facts.get(this.facts.self, `image/${name}`)?.value as { digest?: string } | null | undefined
      if (cur?.digest !== v.digest) this.facts.publish(`image/${name}`, { ...v, publishedAt: Date.now() })
    }
    for (const f of this.facts.byPrefix('image/')) {
      if (f.origin === this.facts.self && !mine.has(f.key.slice(6))) this.facts.publish(f.key, null)
    }
  }

  /**
   * Cache space and load per CPU (`status`), read by `vmifs place`. Rounded (MiB, 0.05) so that
   * small changes publish nothing new.
   */
  publishStatus (): void {
    const MiB = 1024 * 1024
    this.facts.publish('status', {
      cacheCapacityBytes: this.store.capacityBytes,
      cacheSizeBytes: Math.round(this.store.sizeBytes / MiB) * MiB,
      load: Math.round(20 * os.loadavg()[0]! / Math.max(1, os.cpus().length)) / 20
    })
  }

  /** Something in the cache changed: republish holdings soon. */
  schedule (): void {
    if (this.closed || this.timer) return
    this.timer = setTimeout(() => {
      this.timer = undefined
      try { this.publishHoldings() } catch (err) { this.log.warn({ err }, 'publishing holdings failed') }
    }, this.debounceMs)
    this.timer.unref()
  }

  publishHoldings (): void {
    const digests = new Set(this.catalog.listImages().map(r => r.digest))
    for (const d of digests) {
      const m = this.catalog.manifest(d)
      if (!m) continue
      const ranges = toRanges(m.count, i => m.zero[i] === 0 && this.store.has(m.hashHexAt(i)))
      this.facts.publish(`hold/${d}`, ranges.length === 0 ? null : { ranges })
    }
    for (const f of this.facts.byPrefix('hold/')) {
      if (f.origin === this.facts.self && !digests.has(f.key.slice(5))) this.facts.publish(f.key, null)
    }
  }

  close (): void {
    this.closed = true
    if (this.timer) clearTimeout(this.timer)
  }
}
