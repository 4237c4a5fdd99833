// Executing a transfer plan on the target host (`vmifs replicate`): the agent of the target
// plans the copy of an image onto itself (planTransfer over the chunks it lacks, grouped by the
// donors holding them), then pulls every donor's share in parallel — per donor a few concurrent
// streams of batched requests (`POST /v1/chunks`, up to 64 chunks each: the seed's write
// coalescing), brotli-compressed on the wire when that pays; the origin store's share as range
// requests over its packs (compressed where they are stored so) — verifies every chunk against its
// BLAKE3 name, stores it pinned, pins the image in the catalog (eviction never drops a replica)
// and announces the holdings at once. It reports per donor the bytes, wire bytes and time, and
// the makespan against the plan's prediction.
//
// Contract: replicate() resolves with a report once every chunk of the image is in the local
// cache, or rejects with CHUNK_UNAVAILABLE naming what no holder gave. A chunk a donor fails to
// give (error, "not held", wrong bytes) is not fatal: it is fetched through the chunk source, which
// tries every other holder in cost order. The chunk source is told what each batch brings
// (expect): a read of such a chunk on this host joins the batch instead of fetching it again,
// and hedges through the holders if the batch is slow. One replication per image runs at a time; a second
// request for the same image joins the running one.
import type { DataDir } from '../datadir.js'
import { VmifsError } from '../errors.js'
import type { HolderDirectory } from '../holders/directory.js'
import { ORIGIN_ID } from '../holders/directory.js'
import type { PeerClient } from '../peer/client.js'
import type { Expected } from '../fetcher/source.js'
import { MAX_RANGE, gapBytes, timedRequest } from '../fetcher/holder-batcher.js'
import type { OriginClient } from '../peer/origin-client.js'
import { MAX_BATCH, brotliQualityFor } from '../peer/wire.js'
import type { Stats } from '../stats/stats.js'
import { blake3 } from '../util/hash.js'
import type { Logger } from '../util/log.js'
import { FleetView } from './fleet-view.js'
import {
  type Donor,
  type TransferPlan,
  greedyPlan,
  planTransfer,
  singleSourcePlan,
  validateParams
} from './transfer-plan.js'

export type PlanMethod = 'lp' | 'greedy' | 'single-source'

export interface ReplicateRequest {
  image: string
  alpha?: number
  sigma?: number
  method?: PlanMethod
  /** concurrent batch requests per donor (default 4) */
  streams?: number
  /** ask donors for compressed batches (default true; they compress only when it pays) */
  compress?: boolean
  /** pin the image here (default true) */
  pin?: boolean
}

export interface DonorReport {
  donor: string
  chunks: number
  /** chunk bytes received and verified */
  bytes: number
  /** bytes off the wire (compressed when it paid) */
  wireBytes: number
  requests: number
  /** from the start until this donor's last batch was stored */
  seconds: number
  /** the plan's figure for this donor: bytes / bandwidth */
  predictedSeconds: number
  /** chunks this donor did not give (fetched from other holders) */
  failed: number
}

export interface ReplicateReport {
  image: string
  digest: string
  target: string
  method: PlanMethod
  alpha: number
  sigma: number
  /** distinct data chunks and bytes of the image */
  chunks: number
  bytes: number
  /** what the target held before */
  heldChunks: number
  heldBytes: number
  /** what it fetched */
  fetchedChunks: number
  fetchedBytes: number
  wireBytes: number
  /** wireBytes / fetchedBytes (1 when nothing compressed) */
  wireRatio: number
  perDonor: DonorReport[]
  /** seconds from the first request until every chunk was stored */
  makespan: number
  predicted: {
    seconds: number
    price: number
    objective: number
    shares: Array<{ donor: string; bytes: number; seconds: number }>
  }
  /** seconds spent planning (reading the table, the LP) */
  planSeconds: number
  /** chunks no donor delivered that the fetcher got from another holder */
  fallbackChunks: number
  pinned: boolean
}

export interface ReplicatorDeps {
  dd: DataDir
  self: string
  directory: HolderDirectory
  client: (endpoint: string) => PeerClient
  /** fetch one chunk from any holder (the chunk source), for chunks a donor failed to give */
  ensure: (hash: string, size: number) => Promise<void>
  /**
   * tell the chunk source what a batch request to a donor is bringing, so that a read of one of
   * them joins it (src/fetcher/source.ts expect()); every chunk is settled once its batch is stored
   */
  expect?: (wants: Array<{ hash: string; size: number }>, donor: string) => Expected
  stats: Stats
  log: Logger
  links: Record<string, { price?: number; bandwidthBps?: number; rttMs?: number }>
  origin?: string
  /** the origin store's client, when the fleet has one: its share travels as range requests */
  originClient?: OriginClient
  alpha: number
  sigma: number
  timeoutMs: number
  /** holdings changed: announce them now */
  announce: () => void
}

/** A replicate request from JSON (local API or peer protocol); PARAM_INVALID when malformed. */
export function parseReplicateRequest(body: unknown): ReplicateRequest {
  if (typeof body !== 'object' || body === null || Array.isArray(body))
    throw VmifsError.param('request', 'must be a JSON object')
  const b = body as Record<string, unknown>
  if (typeof b.image !== 'string') throw VmifsError.param('image', 'must be an image name')
  const num = (k: string): number | undefined => {
    if (b[k] === undefined) return undefined
    if (typeof b[k] !== 'number') throw VmifsError.param(k, 'must be a number')
    return b[k]
  }
  const out: ReplicateRequest = { image: b.image }
  const alpha = num('alpha')
  if (alpha !== undefined) out.alpha = alpha
  const sigma = num('sigma')
  if (sigma !== undefined) out.sigma = sigma
  const streams = num('streams')
  if (streams !== undefined) out.streams = streams
  if (b.method !== undefined) out.method = b.method as PlanMethod
  if (b.compress !== undefined) out.compress = b.compress === true
  if (b.pin !== undefined) out.pin = b.pin !== false
  return out
}

export class Replicator {
  private readonly running = new Map<string, Promise<ReplicateReport>>()

  constructor(private readonly d: ReplicatorDeps) {}

  replicate(req: ReplicateRequest): Promise<ReplicateReport> {
    const cur = this.running.get(req.image)
    if (cur) return cur
    const p = this.run(req).finally(() => this.running.delete(req.image))
    this.running.set(req.image, p)
    return p
  }

  /** The donors as this host sees them now: its link measurements (seeded from config) and prices. */
  private donors(view: FleetView): Donor[] {
    return view
      .donors()
      .filter(d => d.id !== this.d.self)
      .map(d => ({
        ...d,
        bandwidthBps: this.d.directory.link(d.id).bandwidthBps,
        pricePerByte: this.d.directory.host(d.id)?.price ?? d.pricePerByte
      }))
  }

  private async run(req: ReplicateRequest): Promise<ReplicateReport> {
    const d = this.d
    const alpha = req.alpha ?? d.alpha
    const sigma = req.sigma ?? d.sigma
    validateParams(alpha, sigma)
    const method = req.method ?? 'lp'
    if (!['lp', 'greedy', 'single-source'].includes(method))
      throw VmifsError.param('method', `must be lp, greedy or single-source, not ${JSON.stringify(method)}`)
    const streams = req.streams ?? 4
    if (!Number.isInteger(streams) || streams < 1 || streams > 64)
      throw VmifsError.param('streams', `must be an integer in 1..64, not ${String(streams)}`)
    const t0 = performance.now()
    const row = d.dd.catalog.requireImage(req.image)
    const pin = req.pin ?? true
    // pinned before fetching: every chunk stored from now on enters the cache pinned
    if (pin) d.dd.catalog.setPinned(row.name, true)
    const view = new FleetView(d.dd, { self: d.self, links: d.links, origin: d.origin, dead: d.directory.dead })
    const donors = this.donors(view)
    const need = view.need(row.name, d.self, donors)
    const input = { groups: need.groups, donors, alpha, sigma }
    let plan: TransferPlan
    if (method === 'lp') plan = await planTransfer(input)
    else if (method === 'greedy') plan = greedyPlan(input)
    else {
      const s = need.groups.length === 0 ? await planTransfer(input) : singleSourcePlan(input)
      if (!s)
        throw new VmifsError('PLAN_INFEASIBLE', `no single donor holds every chunk ${d.self} lacks of ${row.name}`, {
          image: row.name
        })
      plan = s
    }
    const planSeconds = (performance.now() - t0) / 1000
    const sizes = new Map<string, number>()
    for (const g of need.groups) for (const c of g.chunks) sizes.set(c.hash, c.size)
    for (const c of need.unavailable) sizes.set(c.hash, c.size)

    const start = performance.now()
    const leftovers: string[] = need.unavailable.map(c => c.hash)
    const perDonor = await Promise.all(
      plan.shares.map(async share => {
        const r: DonorReport = {
          donor: share.donor,
          chunks: 0,
          bytes: 0,
          wireBytes: 0,
          requests: 0,
          seconds: 0,
          predictedSeconds: share.seconds,
          failed: 0
        }
        const info = d.directory.host(share.donor)
        const origin = share.donor === ORIGIN_ID ? d.originClient : undefined
        if (!info || (share.donor === ORIGIN_ID && !origin)) {
          // nobody to ask: the fetcher does it (it may pick another holder)
          leftovers.push(...share.chunks)
          r.failed = share.chunks.length
          return r
        }
        const link = d.directory.link(share.donor)
        const hs = d.stats.holder(share.donor)
        // each batch: the chunks of one request and how to make it. To a host: MAX_BATCH chunks,
        // brotli-compressed by the donor; to the origin: one range request over a pack
        let batches: Array<{ chunks: string[]; get: (onBytes: (n: number) => void) => Promise<Array<Buffer | null>> }>
        const signal = (): AbortSignal => AbortSignal.timeout(Math.max(d.timeoutMs, 30_000))
        if (origin) {
          const { ranges, unknown } = origin.plan(share.chunks, gapBytes(link), MAX_RANGE)
          leftovers.push(...unknown)
          r.failed += unknown.length
          batches = ranges.map(rg => ({
            chunks: rg.chunks.map(c => c.hash),
            get: async onBytes => {
              const got = await origin.fetchRange(rg, signal(), onBytes)
              return rg.chunks.map(c => got.get(c.hash) ?? null)
            }
          }))
        } else {
          const client = d.client(info.endpoint)
          // more compression costs the donor's CPU and time for fewer bytes: worth it when price
          // weighs more than time (α < 0.5) and the link is thin enough for it to outrun the link
          const quality =
            alpha >= 0.5
              ? 1
              : brotliQualityFor(donors.find(x => x.id === share.donor)?.bandwidthBps ?? link.bandwidthBps)
          batches = []
          for (let i = 0; i < share.chunks.length; i += MAX_BATCH) {
            const chunks = share.chunks.slice(i, i + MAX_BATCH)
            batches.push({
              chunks,
              get: async onBytes =>
                await client.chunks(chunks, signal(), onBytes, { compress: req.compress ?? true, quality })
            })
          }
        }
        let next = 0
        const worker = async (): Promise<void> => {
          while (next < batches.length) {
            const batch = batches[next++]!
            r.requests++
            const expected = d.expect?.(
              batch.chunks.map(h => ({ hash: h, size: sizes.get(h) ?? 0 })),
              share.donor
            )
            const given = new Map<string, Buffer>()
            try {
              await fetchBatch(batch, given)
            } finally {
              for (const h of batch.chunks) expected?.settle(h, given.get(h) ?? null)
            }
          }
        }
        const fetchBatch = async (b: (typeof batches)[number], given: Map<string, Buffer>): Promise<void> => {
          const batch = b.chunks
          let got: Array<Buffer | null>
          let wire: number
          try {
            ;({ value: got, wire } = await timedRequest(link, hs, b.get))
          } catch (err) {
            d.log.warn(
              { donor: share.donor, chunks: batch.length, err: (err as Error).message },
              'replicate: a batch failed; its chunks go to other holders'
            )
            leftovers.push(...batch)
            r.failed += batch.length
            return
          }
          r.wireBytes += wire
          const fresh: Array<{ hash: Buffer; data: Buffer }> = []
          const held: Buffer[] = []
          const ok: Array<[string, Buffer]> = []
          let stored = 0
          batch.forEach((h, i) => {
            const data = got[i]
            if (!data || blake3(data).toString('hex') !== h) {
              if (data)
                d.log.warn({ donor: share.donor, hash: h }, 'replicate: donor sent bytes that do not match the hash')
              hs.errors++
              leftovers.push(h)
              r.failed++
              return
            }
            if (d.dd.store.has(h)) held.push(Buffer.from(h, 'hex'))
            else fresh.push({ hash: Buffer.from(h, 'hex'), data })
            ok.push([h, data])
            stored += data.length
            r.chunks++
            r.bytes += data.length
          })
          // one write and one transaction per batch; pinned
          const locs = d.dd.store.append(fresh, { bulk: true })
          d.dd.store.record(fresh, locs, pin)
          if (pin) d.dd.store.pinMany(held)
          for (const [h, data] of ok) given.set(h, data) // stored: reads that joined them get them now
          d.stats.fetchBytes += stored
          r.seconds = (performance.now() - start) / 1000
        }
        await Promise.all(Array.from({ length: Math.min(streams, batches.length) }, worker))
        hs.bytes += r.bytes
        return r
      })
    )
    let fallbackChunks = 0
    if (leftovers.length > 0) {
      const failures: string[] = []
      let k = 0
      const worker = async (): Promise<void> => {
        while (k < leftovers.length) {
          const h = leftovers[k++]!
          try {
            await d.ensure(h, sizes.get(h) ?? 0)
            fallbackChunks++
          } catch {
            failures.push(h)
          }
        }
      }
      await Promise.all(Array.from({ length: Math.min(8, leftovers.length) }, worker))
      if (failures.length > 0) {
        d.announce()
        throw new VmifsError(
          'CHUNK_UNAVAILABLE',
          `${failures.length} chunks of ${row.name} could not be fetched from any holder`,
          { image: row.name, chunks: failures.slice(0, 16) }
        )
      }
    }
    const makespan = (performance.now() - start) / 1000
    d.announce()
    const fetchedBytes = perDonor.reduce((n, x) => n + x.bytes, 0)
    const wireBytes = perDonor.reduce((n, x) => n + x.wireBytes, 0)
    const report: ReplicateReport = {
      image: row.name,
      digest: row.digest,
      target: d.self,
      method,
      alpha,
      sigma,
      chunks: need.chunks,
      bytes: need.bytes,
      heldChunks: need.heldChunks,
      heldBytes: need.heldBytes,
      fetchedChunks: perDonor.reduce((n, x) => n + x.chunks, 0) + fallbackChunks,
      fetchedBytes,
      wireBytes,
      wireRatio: fetchedBytes > 0 ? wireBytes / fetchedBytes : 1,
      perDonor,
      makespan,
      predicted: {
        seconds: plan.seconds,
        price: plan.price,
        objective: plan.objective,
        shares: plan.shares.map(s => ({ donor: s.donor, bytes: s.bytes, seconds: s.seconds }))
      },
      planSeconds,
      fallbackChunks,
      pinned: pin
    }
    d.log.info({ image: row.name, fetchedBytes, wireBytes, makespan, predicted: plan.seconds }, 'replicated')
    return report
  }
}
