// Requests to one holder. Chunks asked for in the same tick go out as one batch request (so the
// adjacent chunks of one read, or of the kernel's readahead, cost one round trip), each handed on
// as soon as its bytes are in; a lone chunk is a plain GET (a batch of one when the link is slow
// enough to ask for compression). To the origin store they go out as range requests over its
// packs (originChunks). Every request is bounded by a timeout and recorded in the link stats.
// Contract: get() resolves with the bytes as received (unverified), null when the holder said it
// does not hold the chunk, or rejects with the request's error. It never hashes.
import { PeerClient } from '../peer/client.js'
import type { OriginClient } from '../peer/origin-client.js'
import { MAX_BATCH, brotliQualityFor } from '../peer/wire.js'
import type { LinkStats } from '../holders/link-stats.js'
import type { HolderStats } from '../stats/stats.js'

/**
 * Below this measured throughput (50 MB/s, 400 Mbit/s) chunk requests ask for brotli: quality 1
 * compresses at ~250 MB/s and keeps ~0.35 of VM image data, so the time it costs is less than the
 * transfer time it saves.
 */
export const COMPRESS_BELOW_BPS = 50e6

/**
 * Quality for reads: 1 (~250 MB/s a core) unless the link is under 20 Mbit/s, where the higher
 * qualities' ~17 % fewer bytes save more time than their 5× CPU costs. A VM's reads wait on
 * both the holder's and this host's CPU, which the VM itself may need (measured in the boot
 * benchmark, where quality 5 over 100 Mbit/s slowed boots).
 */
export function fetchQuality(bandwidthBps: number): number {
  return bandwidthBps < 2.5e6 ? brotliQualityFor(bandwidthBps) : 1
}

interface Pending {
  hash: string
  size: number
  resolve: (b: Buffer | null) => void
  reject: (e: unknown) => void
}

/**
 * One request to a holder, accounted the same way wherever it is made (reads, prefetch,
 * replicate): a request, the bytes as they arrive on the wire, its latency or an error, and the
 * link's busy period and RTT. Resolves with what `run` resolves with; rethrows its error.
 */
export async function timedRequest<T>(
  link: LinkStats,
  hs: HolderStats,
  run: (onBytes: (n: number) => void) => Promise<T>
): Promise<{ value: T; wire: number }> {
  const t0 = performance.now()
  hs.requests++
  link.start()
  let wire = 0
  try {
    const value = await run(n => {
      wire += n
      link.received(n)
      hs.wireBytes += n
    })
    const ms = performance.now() - t0
    link.finish(wire, ms, true)
    hs.latency.record(ms)
    return { value, wire }
  } catch (err) {
    link.finish(0, performance.now() - t0, false)
    hs.errors++
    throw err
  }
}

/** A range request to the origin is at most this long (4 MiB: 0.3 s at 100 Mbit/s). */
export const MAX_RANGE = 4 * 1024 * 1024
/** Chunks asked of the origin in one tick are planned together up to this many (~16 MiB). */
const ORIGIN_BATCH = 1024
/** Gaps fetched through are at most this long, whatever the link. */
const MAX_GAP = 1024 * 1024

/**
 * The gap between two wanted chunks of a pack worth fetching through rather than asking for in
 * a request of its own: what the link carries in one round trip.
 */
export function gapBytes(link: LinkStats): number {
  return Math.min(MAX_GAP, Math.max(0, Math.floor((link.bandwidthBps * link.rttMs) / 1000)))
}

/**
 * Chunks from the origin store: its range requests (planned by the link's gap and MAX_RANGE)
 * in parallel, each timed on the link. Resolves with the bytes of each hash (unverified), null
 * for one the store has not or that came back wrong; a range that fails rejects its chunks
 * through `fail` and the others still arrive. The requests share one deadline: `timeoutMs`
 * plus the time the link takes to carry all of them (they queue for its connections).
 */
export async function originChunks(
  client: OriginClient,
  link: LinkStats,
  hs: HolderStats,
  hashes: string[],
  timeoutMs: number,
  give: (hash: string, data: Buffer | null) => void,
  fail: (hashes: string[], err: unknown) => void,
  maxBytes = MAX_RANGE
): Promise<void> {
  const { ranges, unknown } = client.plan(hashes, gapBytes(link), maxBytes)
  for (const h of unknown) give(h, null)
  const total = ranges.reduce((n, r) => n + r.end - r.start, 0)
  const signal = AbortSignal.timeout(timeoutMs + Math.ceil((total / Math.max(1, link.bandwidthBps)) * 1000))
  await Promise.all(
    ranges.map(async r => {
      // each chunk is given as it arrives; any the answer left out, at its end
      const given = new Set<string>()
      try {
        await timedRequest(link, hs, onBytes =>
          client.fetchRange(r, signal, onBytes, (h, data) => {
            given.add(h)
            give(h, data)
          })
        )
        for (const c of r.chunks) if (!given.has(c.hash)) give(c.hash, null)
      } catch (err) {
        link.demote()
        fail(
          r.chunks.map(c => c.hash).filter(h => !given.has(h)),
          err
        )
      }
    })
  )
}

export class HolderBatcher {
  private queue: Pending[] = []
  private scheduled = false

  constructor(
    readonly holderId: string,
    private readonly client: PeerClient | OriginClient,
    private readonly link: LinkStats,
    private readonly stats: HolderStats,
    private readonly timeoutMs: number
  ) {}

  get(hash: string, size: number): Promise<Buffer | null> {
    return new Promise((resolve, reject) => {
      this.queue.push({ hash, size, resolve, reject })
      this.link.inflightBytes += size
      if (this.queue.length >= (this.client instanceof PeerClient ? MAX_BATCH : ORIGIN_BATCH)) this.flush()
      else if (!this.scheduled) {
        this.scheduled = true
        setImmediate(() => {
          this.scheduled = false
          this.flush()
        })
      }
    })
  }

  private flush(): void {
    if (!(this.client instanceof PeerClient)) {
      // the origin: one plan over everything asked for in this tick
      const all = this.queue
      this.queue = []
      if (all.length > 0) void this.sendOrigin(this.client, all)
      return
    }
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0, MAX_BATCH)
      void this.send(batch)
    }
  }

  private async sendOrigin(client: OriginClient, batch: Pending[]): Promise<void> {
    const byHash = new Map<string, Pending[]>()
    for (const p of batch) byHash.set(p.hash, [...(byHash.get(p.hash) ?? []), p])
    const expected = batch.reduce((n, p) => n + p.size, 0)
    try {
      await originChunks(
        client,
        this.link,
        this.stats,
        [...byHash.keys()],
        this.timeoutMs,
        (h, data) => {
          for (const p of byHash.get(h) ?? []) p.resolve(data)
        },
        (hs, err) => {
          for (const h of hs) for (const p of byHash.get(h) ?? []) p.reject(err)
        }
      )
    } finally {
      this.link.inflightBytes -= expected
    }
  }

  private async send(batch: Pending[]): Promise<void> {
    const signal = AbortSignal.timeout(this.timeoutMs)
    const expected = batch.reduce((n, p) => n + p.size, 0)
    // over a link slower than COMPRESS_BELOW_BPS (as measured) the holder is asked for brotli,
    // at the quality the link leaves time for: it answers compressed when that pays
    const compress = this.link.bandwidthBps <= COMPRESS_BELOW_BPS
    const client = this.client as PeerClient
    try {
      const { value: results } = await timedRequest(this.link, this.stats, async onBytes =>
        batch.length === 1 && !compress
          ? await Promise.all(batch.map(p => client.chunk(p.hash, signal, onBytes)))
          : await client.chunks(
              batch.map(p => p.hash),
              signal,
              onBytes,
              compress ? { compress, quality: fetchQuality(this.link.bandwidthBps) } : {},
              // each chunk goes on as it arrives, not when the whole batch has
              (i, data) => batch[i]!.resolve(data)
            )
      )
      batch.forEach((p, i) => p.resolve(results[i] ?? null))
    } catch (err) {
      this.link.demote()
      for (const p of batch) p.reject(err)
    } finally {
      this.link.inflightBytes -= expected
    }
  }
}
