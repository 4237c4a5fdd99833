// /metrics in Prometheus text format, through prom-client. Values are read from the agent's
// stats snapshot and link measurements at scrape time.
import client from 'prom-client'
import { ImageFetchStats, type ImageUsage, type Stats, prefetchPrecision, prefetchRecall } from '../stats/stats.js'
import type { LinkStats } from '../holders/link-stats.js'

export interface MetricsSource {
  stats: Stats
  cache: () => { sizeBytes: number; capacityBytes: number; effectiveCapacityBytes: number; evictions: number }
  links: () => LinkStats[]
  images: () => number
  /** per image name: its digest, data bytes and the bytes of them cached here */
  imageUsage: () => ImageUsage[]
  /** per image name: the fleet model's (decayed) session count */
  modelSessions: () => Array<[string, number]>
  prefetchPending: () => number
  cursors: () => Record<string, number>
  /** facts refused from peers since start, per reason (index/facts.ts REFUSALS) */
  factsRefused: () => Record<string, number>
  /** origins dropped to be pulled again whole */
  factResets: () => number
  /** image publications not listed at the last look, per reason */
  imagesRefused: () => Record<string, number>
}

export function createMetrics(src: MetricsSource): () => Promise<{ contentType: string; body: string }> {
  const reg = new client.Registry()
  const counter = (name: string, help: string, get: () => number): void => {
    reg.registerMetric(
      new client.Counter({
        name,
        help,
        registers: [],
        collect() {
          this.reset()
          this.inc(get())
        }
      })
    )
  }
  const gauge = (name: string, help: string, get: () => number): void => {
    reg.registerMetric(
      new client.Gauge({
        name,
        help,
        registers: [],
        collect() {
          this.set(get())
        }
      })
    )
  }
  const s = src.stats
  counter('vmifs_cache_hit_ops_total', 'Image reads served from local data', () => s.hitOps)
  counter('vmifs_cache_miss_ops_total', 'Image reads that needed a chunk the cache lacked', () => s.missOps)
  counter('vmifs_cache_hit_bytes_total', 'Bytes of image reads served from local data', () => s.hitBytes)
  counter('vmifs_cache_miss_bytes_total', 'Bytes of image reads in chunks the cache lacked', () => s.missBytes)
  gauge('vmifs_cache_size_bytes', 'Bytes of chunk data in the cache', () => src.cache().sizeBytes)
  gauge('vmifs_cache_capacity_bytes', 'Configured cache capacity', () => src.cache().capacityBytes)
  gauge(
    'vmifs_cache_effective_capacity_bytes',
    'Cache capacity in force: the configured one, or what fits while the filesystem is full',
    () => src.cache().effectiveCapacityBytes
  )
  counter('vmifs_cache_evictions_total', 'Chunks evicted (lifetime of the data dir)', () => src.cache().evictions)
  counter('vmifs_read_ops_total', 'FUSE read requests answered with data', () => s.fuseReadOps)
  counter('vmifs_read_errors_total', 'FUSE read requests answered with an error', () => s.readErrors)
  counter('vmifs_fetch_bytes_total', 'Bytes fetched from other holders', () => s.fetchBytes)
  counter(
    'vmifs_fetch_wire_bytes_total',
    'Bytes received for chunks off the wire (compressed where the holder compressed)',
    () => s.wireBytes()
  )
  counter('vmifs_fetch_failures_total', 'Chunks no holder could provide before the deadline', () => s.fetchFailures)
  counter('vmifs_fetch_hedges_total', 'Hedged second requests', () => s.hedges)
  counter('vmifs_fetch_raised_total', 'Fetches a request of higher priority joined', () => s.raisedFlights)
  counter('vmifs_served_bytes_total', 'Chunk bytes served to peers', () => s.served.bytes)
  gauge('vmifs_images', 'Images in the catalog', () => src.images())
  counter('vmifs_prefetch_issued_total', 'Chunks fetched by the prefetcher', () => s.prefetch.issued)
  counter('vmifs_prefetch_used_total', 'Prefetched chunks a read of the same session then used', () => s.prefetch.used)
  counter(
    'vmifs_prefetch_late_total',
    'Prefetched chunks a read asked for while their prefetch was under way',
    () => s.prefetch.late
  )
  counter('vmifs_prefetch_wasted_total', 'Prefetched chunks their session never read', () => s.prefetch.wasted)
  counter('vmifs_prefetch_failed_total', 'Prefetches no holder could serve', () => s.prefetch.failed)
  counter('vmifs_prefetch_bytes_total', 'Bytes fetched by the prefetcher', () => s.prefetch.bytes)
  counter('vmifs_prefetch_used_bytes_total', 'Bytes of prefetched chunks a read then used', () => s.prefetch.usedBytes)
  counter(
    'vmifs_prefetch_wasted_bytes_total',
    'Bytes of prefetched chunks their session never read',
    () => s.prefetch.wastedBytes
  )
  counter('vmifs_prefetch_hinted_total', 'Chunks queued by migration hints', () => s.prefetch.hinted)
  counter(
    'vmifs_prefetch_inherited_models_total',
    'Read sessions that started with a usage model inherited from a related image',
    () => s.prefetch.inherited
  )
  counter(
    'vmifs_prefetch_skipped_no_room_total',
    'Prefetches skipped because the cache is full of what the session uses',
    () => s.prefetch.skippedNoRoom
  )
  counter(
    'vmifs_demand_fetched_chunks_total',
    'Chunks fetched for reads (by a read, or by the read-ahead), each once',
    () => s.demandFetchedChunks
  )
  gauge('vmifs_prefetch_precision_ratio', 'Prefetch precision: used / issued', () => prefetchPrecision(s.prefetch))
  gauge(
    'vmifs_prefetch_recall_ratio',
    'Prefetch recall: chunks prefetch brought before a read needed them / chunks reads needed from the network',
    () => prefetchRecall(s.prefetch, s.demandFetchedChunks)
  )
  gauge('vmifs_prefetch_pending', 'Prefetches queued and not yet done', () => src.prefetchPending())
  const labelled = (
    name: string,
    help: string,
    kind: 'counter' | 'gauge',
    rows: () => Array<[string | string[], number]>,
    label: string | string[] = 'holder'
  ): void => {
    const labelNames = typeof label === 'string' ? [label] : label
    const at = (l: string | string[]): Record<string, string> =>
      Object.fromEntries(labelNames.map((k, i) => [k, typeof l === 'string' ? l : l[i]!]))
    const opts = { name, help, labelNames, registers: [] as client.Registry[] }
    if (kind === 'counter') {
      reg.registerMetric(
        new client.Counter({
          ...opts,
          collect() {
            this.reset()
            for (const [l, v] of rows()) this.inc(at(l), v)
          }
        })
      )
    } else {
      reg.registerMetric(
        new client.Gauge({
          ...opts,
          collect() {
            this.reset()
            for (const [l, v] of rows()) this.set(at(l), v)
          }
        })
      )
    }
  }
  labelled('vmifs_fetch_holder_bytes_total', 'Bytes fetched per holder', 'counter', () =>
    [...s.byHolder].map(([h, v]) => [h, v.bytes])
  )
  labelled('vmifs_fetch_holder_requests_total', 'Requests per holder', 'counter', () =>
    [...s.byHolder].map(([h, v]) => [h, v.requests])
  )
  labelled('vmifs_fetch_holder_errors_total', 'Failed or rejected requests per holder', 'counter', () =>
    [...s.byHolder].map(([h, v]) => [h, v.errors])
  )
  labelled('vmifs_holder_rtt_seconds', 'Measured RTT to a holder (EWMA)', 'gauge', () =>
    src.links().map(l => [l.hostId, l.rttMs / 1000])
  )
  labelled('vmifs_holder_bandwidth_bytes_per_second', 'Measured throughput from a holder (EWMA)', 'gauge', () =>
    src.links().map(l => [l.hostId, l.bandwidthBps])
  )
  labelled(
    'vmifs_image_model_sessions',
    "Sessions in the fleet's usage model of an image (decayed)",
    'gauge',
    () => src.modelSessions(),
    'image'
  )
  // per image (by name): its reads, what of it is cached, what was fetched for it and its prefetch
  const imageRows = (get: (u: ImageUsage) => number): Array<[string, number]> =>
    src.imageUsage().map(u => [u.name, get(u)])
  const fetched = (d: string): ImageFetchStats => s.digests.get(d) ?? new ImageFetchStats()
  labelled(
    'vmifs_image_hit_bytes_total',
    'Bytes of reads of an image served from local data',
    'counter',
    () => imageRows(u => s.images.get(u.name)?.hitBytes ?? 0),
    'image'
  )
  labelled(
    'vmifs_image_miss_bytes_total',
    'Bytes of reads of an image in chunks the cache lacked',
    'counter',
    () => imageRows(u => s.images.get(u.name)?.missBytes ?? 0),
    'image'
  )
  const dataBytes = (): Array<[string, number]> => imageRows(u => u.dataBytes)
  const cachedBytes = (): Array<[string, number]> => imageRows(u => u.cachedBytes)
  labelled('vmifs_image_data_bytes', 'Bytes of an image that are not zero runs', 'gauge', dataBytes, 'image')
  labelled(
    'vmifs_image_cached_bytes',
    "Bytes of an image's distinct chunks held in the cache",
    'gauge',
    cachedBytes,
    'image'
  )
  labelled(
    'vmifs_image_unique_bytes',
    "Bytes of an image's distinct data chunks",
    'gauge',
    () => imageRows(u => u.uniqueBytes),
    'image'
  )
  labelled(
    'vmifs_image_fetch_holder_bytes_total',
    'Bytes fetched for reads and prefetch of an image, per holder that gave them',
    'counter',
    () =>
      src
        .imageUsage()
        .flatMap(u => [...fetched(u.digest).byHolder].map(([h, v]): [string[], number] => [[u.name, h], v])),
    ['image', 'holder']
  )
  labelled(
    'vmifs_image_prefetch_precision_ratio',
    "Prefetch precision of an image's sessions: used / issued",
    'gauge',
    () => imageRows(u => prefetchPrecision(fetched(u.digest).prefetch)),
    'image'
  )
  labelled(
    'vmifs_image_prefetch_recall_ratio',
    "Prefetch recall of an image's reads: chunks prefetch brought before a read needed them / chunks needed",
    'gauge',
    () => imageRows(u => prefetchRecall(fetched(u.digest).prefetch, fetched(u.digest).demandFetchedChunks)),
    'image'
  )
  labelled(
    'vmifs_metadata_cursor',
    'Last fact sequence number held per origin',
    'gauge',
    () => Object.entries(src.cursors()),
    'origin'
  )
  labelled(
    'vmifs_facts_refused_total',
    'Facts from peers refused (not signed by their origin, an origin not admitted, …), per reason',
    'counter',
    () => Object.entries(src.factsRefused()),
    'reason'
  )
  labelled(
    'vmifs_images_refused',
    'Image publications not listed here (unsigned, badly signed, a publisher not accepted for the name…), per reason',
    'gauge',
    () => Object.entries(src.imagesRefused()),
    'reason'
  )
  counter(
    'vmifs_fact_resets_total',
    "Origins dropped to be pulled again whole: a complete page did not hash to the origin's head, or its key rotated",
    () => src.factResets()
  )
  return async () => ({ contentType: reg.contentType, body: await reg.metrics() })
}
