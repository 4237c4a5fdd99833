// A live-migration hint: the chunks a VM read of an image on the source host, most recent first.
// `vmifs hint export` writes it from the source agent; `vmifs hint import` hands it to the target
// agent, whose prefetcher fetches those chunks ahead of anything else. JSON:
//   { "format": "vmifs-hint", "version": 1, "image": "<name>", "digest": "<manifest digest>",
//     "host": "<source host id>", "createdAt": "<ISO time>",
//     "chunks": [ { "hash": "<64 hex>", "size": <bytes> }, ... ] }
// parseHint() rejects anything else with HINT_INVALID. Hints (below) writes and takes them for the
// agent's local API.
import { VmifsError } from '../errors.js'
import type { ImageIndex } from '../index/catalog.js'
import type { Logger } from '../util/log.js'
import type { Prefetcher } from './prefetcher.js'
import type { HintChunk, RecencyTracker } from './recency.js'

export interface Hint {
  format: 'vmifs-hint'
  version: 1
  image: string
  digest: string
  host: string
  createdAt: string
  chunks: HintChunk[]
}

const HEX64 = /^[0-9a-f]{64}$/
const MAX_CHUNK = 64 * 1024 * 1024

function bad(why: string): VmifsError {
  return new VmifsError('HINT_INVALID', `not a valid vmifs hint: ${why}`)
}

export function parseHint(v: unknown): Hint {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw bad('expected a JSON object')
  const o = v as Record<string, unknown>
  if (o.format !== 'vmifs-hint') throw bad('"format" is not "vmifs-hint"')
  if (o.version !== 1) throw bad(`unsupported version ${JSON.stringify(o.version)}`)
  if (typeof o.digest !== 'string' || !HEX64.test(o.digest)) throw bad('"digest" must be 64 lowercase hex digits')
  if (typeof o.image !== 'string') throw bad('"image" must be a string')
  if (!Array.isArray(o.chunks)) throw bad('"chunks" must be an array')
  const chunks: HintChunk[] = []
  o.chunks.forEach((c: unknown, i) => {
    const e = c as Record<string, unknown> | null
    if (e === null || typeof e !== 'object' || typeof e.hash !== 'string' || !HEX64.test(e.hash))
      throw bad(`chunks[${i}].hash must be 64 lowercase hex digits`)
    if (!Number.isInteger(e.size) || (e.size as number) <= 0 || (e.size as number) > MAX_CHUNK)
      throw bad(`chunks[${i}].size must be a positive integer up to ${MAX_CHUNK}`)
    chunks.push({ hash: e.hash, size: e.size as number })
  })
  return {
    format: 'vmifs-hint',
    version: 1,
    image: o.image,
    digest: o.digest,
    host: typeof o.host === 'string' ? o.host : '',
    createdAt: typeof o.createdAt === 'string' ? o.createdAt : '',
    chunks
  }
}

export interface HintsDeps {
  /** the images known here, up to date */
  images: () => ImageIndex
  recency: RecencyTracker
  hostId: string
  /** the prefetcher that takes hints: none when the agent runs alone */
  prefetcher: () => Prefetcher | undefined
  log: Logger
}

/** Migration hints of an agent: written from what its VMs read, taken into its prefetcher. */
export class Hints {
  constructor(private readonly d: HintsDeps) {}

  /** The hint for an image: the chunks VMs on this host read, most recent first (at most `max`). */
  export(name: string, max?: number): Hint {
    if (max !== undefined && (!Number.isInteger(max) || max <= 0))
      throw new VmifsError('USAGE', `max must be a positive integer, not ${String(max)}`)
    const e = this.d.images().byName.get(name)
    if (!e) throw VmifsError.imageNotFound(name)
    return {
      format: 'vmifs-hint',
      version: 1,
      image: e.name,
      digest: e.digest,
      host: this.d.hostId,
      createdAt: new Date().toISOString(),
      chunks: this.d.recency.recent(e.digest, max)
    }
  }

  /** Takes a hint: its chunks are prefetched first, in its order. */
  take(body: unknown): { image: string; queued: number; cached: number; unknown: number } {
    const h = parseHint(body)
    const prefetcher = this.d.prefetcher()
    if (!prefetcher)
      throw new VmifsError(
        'NOT_FLEET_MODE',
        'this agent runs alone (no --listen, --peer or origin): there is nothing to prefetch from'
      )
    const e = this.d.images().byDigest.get(h.digest)
    if (!e)
      throw new VmifsError(
        'IMAGE_NOT_FOUND',
        `no image with digest ${h.digest} (the hint's "${h.image}") is known here yet`,
        { digest: h.digest }
      )
    const r = prefetcher.hint(h.digest, h.chunks)
    this.d.log.info({ image: e.name, ...r, from: h.host }, 'migration hint taken')
    return { image: e.name, ...r }
  }
}
