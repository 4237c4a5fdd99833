// Counters and latency histograms of a running agent, since it started. snapshot() is what the
// mount's .stats file and `vmifs stats` show; every key is documented in docs/stats.md.

/** The prefetcher's counters (src/prefetch/prefetcher.ts says what each counts). */
export interface PrefetchStats {
  issued: number
  used: number
  wasted: number
  failed: number
  bytes: number
  usedBytes: number
  wastedBytes: number
  late: number
  hinted: number
  skippedNoRoom: number
  /** sessions that started with a model inherited from another image (no model of their own) */
  inherited: number
}

export function newPrefetchStats(): PrefetchStats {
  return {
    issued: 0,
    used: 0,
    wasted: 0,
    failed: 0,
    bytes: 0,
    usedBytes: 0,
    wastedBytes: 0,
    late: 0,
    hinted: 0,
    skippedNoRoom: 0,
    inherited: 0
  }
}

/** One image's size and bytes in the data dir (DataDir.usage()). */
export interface ImageUsage {
  name: string
  digest: string
  size: number
  /** bytes of its data entries (zero runs left out) */
  dataBytes: number
  /** bytes of its distinct data chunks */
  uniqueBytes: number
  /** of those, the bytes held in the cache */
  cachedBytes: number
}

/** The share of an image's distinct chunk bytes held in the cache (1 for an image with no data). */
export function cachedShare(u: ImageUsage): number {
  return u.uniqueBytes === 0 ? 1 : u.cachedBytes / u.uniqueBytes
}

export interface ImageStats {
  hitBytes: number
  missBytes: number
  readOps: number
}
/** What was fetched for one image (by digest): by reads and its prefetch sessions. */
export class ImageFetchStats {
  /** chunk bytes by the holder that gave them */
  readonly byHolder = new Map<string, number>()
  demandFetchedChunks = 0
  readonly prefetch = newPrefetchStats()

  fetched(holder: string, bytes: number): void {
    this.byHolder.set(holder, (this.byHolder.get(holder) ?? 0) + bytes)
  }
}

export interface HolderStats {
  bytes: number
  wireBytes: number
  requests: number
  errors: number
  latency: Histogram
}

export class Histogram {
  // log-spaced buckets from 1 µs to ~17 min; enough resolution for p50/p99 (about 4% steps)
  private static readonly STEPS = 24 // buckets per doubling
  private readonly counts = new Map<number, number>()
  count = 0

  record(ms: number): void {
    const us = Math.max(1, ms * 1000)
    const b = Math.floor(Math.log2(us) * Histogram.STEPS)
    this.counts.set(b, (this.counts.get(b) ?? 0) + 1)
    this.count++
  }

  quantile(q: number): number {
    if (this.count === 0) return 0
    const rank = Math.ceil(q * this.count)
    let seen = 0
    for (const b of [...this.counts.keys()].sort((x, y) => x - y)) {
      seen += this.counts.get(b)!
      if (seen >= rank) return Math.round(2 ** ((b + 1) / Histogram.STEPS)) / 1000
    }
    return 0
  }
}

export class Stats {
  readonly startedAt = Date.now()
  hitOps = 0
  missOps = 0
  hitBytes = 0
  missBytes = 0
  zeroBytes = 0
  readErrors = 0
  corruptChunks = 0
  fuseReadOps = 0
  fuseReadBytes = 0
  /** of fuseReadOps, those the native threads answered from cached chunks (no JavaScript) */
  nativeReadOps = 0
  readLatency = new Histogram()
  memHits = 0
  readonly images = new Map<string, ImageStats>()
  /** per image digest: fetches and prefetch (an image's names share its digest's) */
  readonly digests = new Map<string, ImageFetchStats>()
  fetchBytes = 0
  readonly byHolder = new Map<string, HolderStats>()
  fetchFailures = 0
  readAheadChunks = 0
  missAheadChunks = 0
  demandFetchedChunks = 0
  hedges = 0
  /** flights a request of higher priority joined (a read joining a prefetch's fetch) */
  raisedFlights = 0
  served = { chunks: 0, bytes: 0, manifests: 0, factPages: 0, compressedRawBytes: 0, compressedWireBytes: 0 }
  prefetch = newPrefetchStats()

  /** Chunk bytes received off the wire from every holder (compressed where a holder compressed). */
  wireBytes(): number {
    let n = 0
    for (const h of this.byHolder.values()) n += h.wireBytes
    return n
  }

  holder(id: string): HolderStats {
    let h = this.byHolder.get(id)
    if (!h) {
      h = { bytes: 0, wireBytes: 0, requests: 0, errors: 0, latency: new Histogram() }
      this.byHolder.set(id, h)
    }
    return h
  }

  digest(d: string): ImageFetchStats {
    let s = this.digests.get(d)
    if (!s) {
      s = new ImageFetchStats()
      this.digests.set(d, s)
    }
    return s
  }

  image(name: string): ImageStats {
    let s = this.images.get(name)
    if (!s) {
      s = { hitBytes: 0, missBytes: 0, readOps: 0 }
      this.images.set(name, s)
    }
    return s
  }
}

const rate = (hit: number, miss: number): number => (hit + miss === 0 ? 0 : hit / (hit + miss))

export interface SnapshotInput {
  stats: Stats
  cache: {
    sizeBytes: number
    capacityBytes: number
    effectiveCapacityBytes: number
    evictions: number
    pinnedBytes: number
    chunks: number
  }
  images: ImageUsage[]
  mount: string
  hostId: string
  /** prefetches queued and not yet done */
  prefetchPending?: number
}

/** used / issued: the share of prefetched chunks that a read then used. */
export function prefetchPrecision(p: PrefetchStats): number {
  return p.issued === 0 ? 0 : p.used / p.issued
}

/**
 * Of the chunks reads needed from the network, the share prefetch had already brought: used
 * but not late, over that plus every demand fetch (a late prefetch's read waited, and counts as
 * a demand fetch).
 */
export function prefetchRecall(p: PrefetchStats, demandFetchedChunks: number): number {
  const early = p.used - p.late
  return early + demandFetchedChunks === 0 ? 0 : early / (early + demandFetchedChunks)
}

/** One image's entry of the snapshot (`images.<name>`, docs/stats.md), from its usage and counters. */
export function imageSnapshot(s: Stats, im: ImageUsage) {
  const st = s.images.get(im.name) ?? { hitBytes: 0, missBytes: 0, readOps: 0 }
  const f = s.digests.get(im.digest) ?? new ImageFetchStats()
  return {
    size: im.size,
    digest: im.digest,
    dataBytes: im.dataBytes,
    uniqueBytes: im.uniqueBytes,
    cachedBytes: im.cachedBytes,
    cachedShare: cachedShare(im),
    hitRate: rate(st.hitBytes, st.missBytes),
    hitBytes: st.hitBytes,
    missBytes: st.missBytes,
    readOps: st.readOps,
    fetch: {
      bytes: [...f.byHolder.values()].reduce((a, b) => a + b, 0),
      byHolder: Object.fromEntries(f.byHolder),
      demandFetchedChunks: f.demandFetchedChunks
    },
    prefetch: {
      issued: f.prefetch.issued,
      used: f.prefetch.used,
      late: f.prefetch.late,
      wasted: f.prefetch.wasted,
      bytes: f.prefetch.bytes,
      usedBytes: f.prefetch.usedBytes,
      precision: prefetchPrecision(f.prefetch),
      recall: prefetchRecall(f.prefetch, f.demandFetchedChunks)
    }
  }
}

export function snapshot(i: SnapshotInput): Record<string, unknown> {
  const s = i.stats
  const byHolder: Record<string, unknown> = {}
  for (const [id, h] of s.byHolder) {
    byHolder[id] = {
      bytes: h.bytes,
      wireBytes: h.wireBytes,
      requests: h.requests,
      errors: h.errors,
      p50Ms: h.latency.quantile(0.5),
      p99Ms: h.latency.quantile(0.99)
    }
  }
  const images: Record<string, ReturnType<typeof imageSnapshot>> = {}
  for (const im of i.images) images[im.name] = imageSnapshot(s, im)
  return {
    version: 1,
    hostId: i.hostId,
    mount: i.mount,
    time: new Date().toISOString(),
    uptimeSec: Math.round((Date.now() - s.startedAt) / 1000),
    cache: {
      hitOps: s.hitOps,
      missOps: s.missOps,
      hitBytes: s.hitBytes,
      missBytes: s.missBytes,
      hitRate: rate(s.hitBytes, s.missBytes),
      zeroBytes: s.zeroBytes,
      memoryHits: s.memHits,
      sizeBytes: i.cache.sizeBytes,
      capacityBytes: i.cache.capacityBytes,
      effectiveCapacityBytes: i.cache.effectiveCapacityBytes,
      pinnedBytes: i.cache.pinnedBytes,
      chunks: i.cache.chunks,
      evictions: i.cache.evictions,
      corruptChunks: s.corruptChunks
    },
    read: {
      ops: s.fuseReadOps,
      bytes: s.fuseReadBytes,
      nativeOps: s.nativeReadOps,
      errors: s.readErrors,
      p50Ms: s.readLatency.quantile(0.5),
      p99Ms: s.readLatency.quantile(0.99)
    },
    fetch: {
      bytes: s.fetchBytes,
      wireBytes: s.wireBytes(),
      failures: s.fetchFailures,
      hedges: s.hedges,
      raised: s.raisedFlights,
      readAheadChunks: s.readAheadChunks,
      missAheadChunks: s.missAheadChunks,
      byHolder
    },
    served: { ...s.served },
    prefetch: {
      ...s.prefetch,
      precision: prefetchPrecision(s.prefetch),
      recall: prefetchRecall(s.prefetch, s.demandFetchedChunks),
      pending: i.prefetchPending ?? 0,
      demandFetchedChunks: s.demandFetchedChunks
    },
    images
  }
}
