// Publishes this host's facts: its host record, the images imported here, and for every manifest
// it knows the ranges of entries its cache holds, and its status (cache space, load) for placement.
// Holdings are kept as a bitmap per manifest: a cached chunk marks its entries through a reverse
// index (no recount), evictions and catalog changes recount every manifest; either is published
// debounced, and only when a manifest's ranges changed (FactStore.publish skips equal values).
import os from 'node:os'
import type { Catalog } from '../index/catalog.js'
import type { FactStore } from '../index/facts.js'
import { ChunkPlaces, type PlacesSnapshot } from '../index/chunk-places.js'
import type { ChunkStore } from '../cache/chunk-store.js'
import { toRanges } from './holdings.js'
import type { Logger } from '../util/log.js'
import { guard } from '../util/guard.js'

export class Announcer {
  private timer: NodeJS.Timeout | undefined
  private closed = false
  /** per manifest digest: 1 where this host's cache holds the entry */
  private readonly held = new Map<string, Uint8Array>()
  /** per manifest digest: how many entries `held` marks, and how many are not zero extents */
  private readonly counts = new Map<string, { held: number; of: number }>()
  /** the chunk index the last full recount used: `held` has a bitmap for each of its digests */
  private counted: PlacesSnapshot | undefined
  private readonly dirty = new Set<string>()
  private full = true

  constructor(
    private readonly facts: FactStore,
    private readonly catalog: Catalog,
    private readonly store: ChunkStore,
    private readonly log: Logger,
    private readonly debounceMs = 300,
    private readonly places = new ChunkPlaces(catalog)
  ) {}

  publishHost(endpoint: string | undefined, price: number, site: { rttMs?: number; storagePrice?: number } = {}): void {
    this.facts.publishAs(
      'host',
      '',
      endpoint === undefined ? null : { endpoint, price, version: 1, ...(Object.keys(site).length > 0 ? { site } : {}) }
    )
  }

  /**
   * Images imported on this host are published with their signed publications (one the agent has
   * not signed yet waits for it); removed ones are retracted.
   */
  publishImages(): void {
    const mine = new Set<string>()
    for (const r of this.catalog.listImages()) {
      if (r.origin !== null) continue
      mine.add(r.name)
      const p = r.publication
      if (p === null) continue
      const cur = this.facts.getAs('image', this.facts.self, r.name)
      if (cur?.digest !== r.digest || cur.sig !== p.sig)
        this.facts.publishAs('image', r.name, {
          digest: r.digest,
          size: r.size,
          publishedAt: p.publishedAt,
          publisher: p.publisher,
          sig: p.sig
        })
    }
    for (const f of this.facts.allAs('image')) {
      if (f.origin === this.facts.self && !mine.has(f.name)) this.facts.publishAs('image', f.name, null)
    }
  }

  /**
   * Cache space and load per CPU (`status`), read by `vmifs place` and `vmifs hosts`, with the
   * time it was published: the agent publishes it every heartbeat, and a host whose status is
   * three heartbeats old is stale, four dead (src/metadata/hosts.ts).
   */
  publishStatus(): void {
    const MiB = 1024 * 1024
    this.facts.publishAs('status', '', {
      cacheCapacityBytes: this.store.capacityBytes,
      cacheSizeBytes: Math.round(this.store.sizeBytes / MiB) * MiB,
      load: Math.round((20 * os.loadavg()[0]!) / Math.max(1, os.cpus().length)) / 20,
      at: Date.now()
    })
  }

  /**
   * Something in the cache or the catalog changed in a way only a full recount sees (evictions,
   * an image added or removed): recount every manifest's holdings soon.
   */
  schedule(): void {
    this.full = true
    this.arm()
  }

  /**
   * One chunk was cached: mark its entries in every manifest that uses it and republish those
   * manifests' holdings soon, without asking the cache about every other entry again.
   */
  cached(hash: string): void {
    const snap = this.counted
    const places = snap?.byHash.get(hash)
    if (!snap || !places || this.full) {
      if (!snap) this.full = true
      this.arm()
      return
    }
    for (let k = 0; k < places.length; k += 2) {
      const d = snap.digests[places[k]!]!
      const h = this.held.get(d)
      if (!h) continue
      if (h[places[k + 1]!] === 0) {
        h[places[k + 1]!] = 1
        const c = this.counts.get(d)
        if (c) c.held++
      }
      this.dirty.add(d)
    }
    this.arm()
  }

  private arm(): void {
    if (this.closed || this.timer) return
    this.timer = setTimeout(() => {
      this.timer = undefined
      guard(this.log, 'publishing holdings', () => {
        if (this.full) this.publishHoldings()
        else this.publishDirty()
      })
    }, this.debounceMs)
    this.timer.unref()
  }

  /** Recounts every manifest's holdings from the cache, and publishes those that changed. */
  publishHoldings(): void {
    this.full = false
    this.dirty.clear()
    const snap = this.places.fresh()
    this.held.clear()
    this.counts.clear()
    for (const d of snap.digests) {
      const m = this.catalog.manifest(d)
      if (!m) continue
      const bits = new Uint8Array(m.count)
      let held = 0
      let of = 0
      for (let i = 0; i < m.count; i++) {
        if (m.zero[i] !== 0) continue
        of++
        if (this.store.has(m.hashHexAt(i))) {
          bits[i] = 1
          held++
        }
      }
      this.held.set(d, bits)
      this.counts.set(d, { held, of })
      this.publishOne(d, bits)
    }
    this.counted = snap
    for (const f of this.facts.allAs('hold')) {
      if (f.origin === this.facts.self && !this.held.has(f.name)) this.facts.publishAs('hold', f.name, null)
    }
    this.publishInventory()
  }

  private publishDirty(): void {
    for (const d of this.dirty) {
      const bits = this.held.get(d)
      if (bits) this.publishOne(d, bits)
    }
    this.dirty.clear()
    this.publishInventory()
  }

  /**
   * The images this host holds entries of, by the first 16 hex digits of their digests, with the
   * tenths of their (non-zero) entries held: it changes when an image comes or goes or crosses a
   * tenth, not with every chunk.
   */
  private publishInventory(): void {
    const images: Record<string, number> = {}
    for (const [d, c] of this.counts) {
      if (c.held === 0) continue
      images[d.slice(0, 16)] = Math.min(10, Math.floor((10 * c.held) / Math.max(1, c.of)))
    }
    this.facts.publishAs('inv', '', Object.keys(images).length === 0 ? null : { images })
  }

  private publishOne(digest: string, bits: Uint8Array): void {
    const ranges = toRanges(bits.length, i => bits[i] === 1)
    this.facts.publishAs('hold', digest, ranges.length === 0 ? null : { ranges })
  }

  close(): void {
    this.closed = true
    if (this.timer) clearTimeout(this.timer)
  }
}
