// The origin store: static files written by `vmifs publish-store DIR` (format 2,
// manifests/STORE.md) and served by any web server with single-range answers (nginx in the tests):
// <base>/store.json, <base>/images.json, <base>/manifests/<digest>, <base>/indexes/<digest>,
// <base>/packs/<id>.pack, <base>/models/<digest>.json. The holder of last resort: it has every
// chunk of the images it lists. It is not a fleet member (often a CDN or a bucket): it gets the
// headers the config names for it (originHeaders), never the fleet token.
// Contract: refresh() reads the signed statement and loads the indexes it names (only from a
// signer the caller accepts); plan() turns chunks into range requests; fetchRange() gives each
// chunk of a range decompressed (never more than its indexed size) but unverified: the caller
// hashes every chunk, as it does a peer's.
import zlib from 'node:zlib'
import { Pool } from 'undici'
import { VmifsError } from '../errors.js'
import {
  CODEC_BROTLI,
  type ChunkLoc,
  type RangeRequest,
  type StoreStatement,
  checkStatement,
  decodeIndex,
  oldFormat,
  planRanges
} from '../origin/store.js'
import { blake3 } from '../util/hash.js'

/**
 * A chunk's brotli, decoded to at most `size` bytes (null if it is more, or not brotli). In this
 * thread: 16 KiB chunks decode in ~90 µs, where zlib's threadpool form costs ~300 µs a chunk from
 * call to callback and more of this thread's time in its stream machinery than the decoding.
 */
function unbrotli(stored: Buffer, size: number): Buffer | null {
  try {
    const data = zlib.brotliDecompressSync(stored, { maxOutputLength: size })
    return data.length === size ? data : null
  } catch {
    return null // more than its size, or not brotli: the caller counts it as a bad answer
  }
}

/** What refresh() found. */
export interface OriginState {
  format: 1 | 2 | undefined
  images: number
  chunks: number
  /** why the store serves nothing (undefined when it serves) */
  problem?: string
}

export class OriginClient {
  private readonly pool: Pool
  private readonly base: string
  private locs = new Map<string, ChunkLoc>()
  /** manifest digest → the index digest loaded for it */
  private loaded = new Map<string, string>()
  private models = new Map<string, string>()
  state: OriginState = { format: undefined, images: 0, chunks: 0 }

  constructor(
    private readonly url: string,
    private readonly headers: Record<string, string> = {}
  ) {
    const u = new URL(url)
    this.base = u.pathname.replace(/\/$/, '')
    this.pool = new Pool(u.origin, { connections: 8, keepAliveTimeout: 30_000, connect: { timeout: 3000 } })
  }

  /** A GET of `path` under the store's base, with the origin's headers (and `extra`). */
  private async request(path: string, signal: AbortSignal, extra: Record<string, string> = {}) {
    try {
      return await this.pool.request({
        method: 'GET',
        path: this.base + path,
        signal,
        headers: { ...this.headers, ...extra }
      })
    } catch (err) {
      throw new VmifsError('HOLDER_UNREACHABLE', `origin ${path}: ${(err as Error).message}`, {}, { cause: err })
    }
  }

  private async get(path: string, signal: AbortSignal): Promise<{ status: number; body: Buffer }> {
    const res = await this.request(path, signal)
    const parts: Buffer[] = []
    for await (const c of res.body) parts.push(c as Buffer)
    return { status: res.statusCode, body: Buffer.concat(parts) }
  }

  private async file(path: string, signal: AbortSignal): Promise<Buffer | null> {
    const r = await this.get(path, signal)
    if (r.status === 404) return null
    if (r.status !== 200) throw new VmifsError('HOLDER_BAD_RESPONSE', `origin answered ${r.status} for ${path}`)
    return r.body
  }

  manifest(digest: string, signal: AbortSignal): Promise<Buffer | null> {
    return this.file(`/manifests/${digest}`, signal)
  }

  /** images.json: image name → its signed publication (checked by the caller); {} when there is none. */
  async images(signal: AbortSignal): Promise<Record<string, unknown>> {
    const b = await this.file('/images.json', signal)
    if (b === null) return {}
    let v: unknown
    try {
      v = JSON.parse(b.toString())
    } catch {
      throw new VmifsError('HOLDER_BAD_RESPONSE', 'origin images.json is not JSON')
    }
    if (typeof v !== 'object' || v === null || Array.isArray(v))
      throw new VmifsError('HOLDER_BAD_RESPONSE', 'origin images.json is not an object of images')
    return v as Record<string, unknown>
  }

  /**
   * Reads store.json and loads the indexes it names that are not loaded yet. A statement whose
   * signer `accepts` refuses (it returns why) loads nothing. Calls `onModel` for each published
   * usage model that is new. Throws ORIGIN_FORMAT_OLD for a store of format 1; otherwise the
   * problem is kept in `state` and the store serves what it served before.
   */
  async refresh(
    signal: AbortSignal,
    accepts: (s: StoreStatement) => string | undefined,
    onModel?: (digest: string, model: unknown) => void
  ): Promise<OriginState> {
    const b = await this.file('/store.json', signal)
    if (b === null) {
      if ((await this.file('/images.json', signal)) !== null) {
        this.state = { format: 1, images: 0, chunks: 0, problem: 'format 1' }
        throw oldFormat(this.url)
      }
      this.state = { format: undefined, images: 0, chunks: 0, problem: 'no store.json' }
      return this.state
    }
    let s: StoreStatement
    try {
      s = checkStatement(JSON.parse(b.toString()) as unknown)
    } catch (err) {
      this.state = { ...this.state, problem: (err as Error).message }
      throw err instanceof VmifsError ? err : new VmifsError('ORIGIN_STORE_INVALID', 'origin store.json is not JSON')
    }
    const why = accepts(s)
    if (why !== undefined) {
      this.state = { ...this.state, problem: why }
      throw new VmifsError('ORIGIN_STORE_INVALID', `origin store.json is signed by ${s.signer}: ${why}`)
    }
    // copied only when an index is new (every 5 s nothing is), and kept only if all of them load
    let locs: Map<string, ChunkLoc> | undefined
    const loaded = new Map<string, string>()
    for (const [digest, img] of Object.entries(s.images)) {
      if (this.loaded.get(digest) === img.index) {
        loaded.set(digest, img.index)
        continue
      }
      const ib = await this.file(`/indexes/${digest}`, signal)
      if (ib === null || blake3(ib).toString('hex') !== img.index)
        throw new VmifsError(
          'ORIGIN_INDEX_INVALID',
          `origin index of ${digest} is missing or does not match store.json`
        )
      const ix = decodeIndex(ib)
      if (ix.manifest !== digest)
        throw new VmifsError('ORIGIN_INDEX_INVALID', `origin index of ${digest} names manifest ${ix.manifest}`)
      locs ??= new Map(this.locs)
      for (const e of ix.entries) locs.set(e.hash, e)
      loaded.set(digest, img.index)
    }
    if (locs) this.locs = locs
    this.loaded = loaded
    for (const [digest, img] of Object.entries(s.images)) {
      if (img.model === undefined || this.models.get(digest) === img.model || !onModel) continue
      const mb = await this.file(`/models/${digest}.json`, signal)
      if (mb === null || blake3(mb).toString('hex') !== img.model) continue
      try {
        onModel(digest, JSON.parse(mb.toString()) as unknown)
        this.models.set(digest, img.model)
      } catch {
        // a model that is not JSON is left out
      }
    }
    this.state = { format: 2, images: loaded.size, chunks: this.locs.size }
    return this.state
  }

  /** Where the store keeps a chunk, if any index names it. */
  locate(hash: string): ChunkLoc | undefined {
    return this.locs.get(hash)
  }

  /** The range requests that bring `hashes` (planRanges), and the hashes no index names. */
  plan(hashes: Iterable<string>, gapBytes: number, maxBytes: number): { ranges: RangeRequest[]; unknown: string[] } {
    const known: Array<{ hash: string; loc: ChunkLoc }> = []
    const unknown: string[] = []
    for (const hash of hashes) {
      const loc = this.locs.get(hash)
      if (loc) known.push({ hash, loc })
      else unknown.push(hash)
    }
    return { ranges: planRanges(known, gapBytes, maxBytes), unknown }
  }

  /**
   * One range request: each chunk of the range as its bytes (decompressed, at most its indexed
   * size, unverified); a chunk that does not decompress to its size is left out. Chunks are
   * handed to `onChunk` as soon as their bytes have arrived, before the rest of the range (a
   * reader waiting on the first chunk of a 4 MiB range does not wait for the whole of it).
   */
  async fetchRange(
    r: RangeRequest,
    signal: AbortSignal,
    onBytes?: (n: number) => void,
    onChunk?: (hash: string, data: Buffer | null) => void
  ): Promise<Map<string, Buffer>> {
    const path = `/packs/${r.pack}.pack`
    const res = await this.request(path, signal, { range: `bytes=${r.start}-${r.end - 1}` })
    const header = (k: string): string | undefined => {
      const v = res.headers[k]
      return Array.isArray(v) ? v[0] : v
    }
    const refuse = async (why: string): Promise<never> => {
      await res.body.dump().catch(() => {})
      throw new VmifsError('HOLDER_BAD_RESPONSE', `origin answered ${path} ${why}`)
    }
    if (res.statusCode === 404) {
      await res.body.dump().catch(() => {})
      return new Map()
    }
    if (res.statusCode !== 206)
      await refuse(
        `with ${res.statusCode} to a range request` +
          (res.statusCode === 200 ? ' (the server ignores Range: it must answer single ranges)' : '')
      )
    const encoding = header('content-encoding')
    if (encoding !== undefined && encoding !== 'identity') await refuse(`with content-encoding ${encoding}`)
    const m = /^bytes (\d+)-(\d+)\//.exec(header('content-range') ?? '')
    if (!m || Number(m[1]) !== r.start || Number(m[2]) !== r.end - 1)
      await refuse(`with another range (${header('content-range')})`)
    const len = r.end - r.start
    const body = Buffer.allocUnsafe(len)
    let got = 0
    let next = 0 // r.chunks is in offset order (planRanges)
    const out = new Map<string, Buffer>()
    const emit = (hash: string, data: Buffer | null): void => {
      if (data) out.set(hash, data)
      onChunk?.(hash, data)
    }
    const complete = (): void => {
      while (next < r.chunks.length) {
        const { hash, loc } = r.chunks[next]!
        const to = loc.offset - r.start + loc.stored
        if (to > got) return
        next++
        const stored = body.subarray(loc.offset - r.start, to)
        // raw: a copy, so that the range's buffer is not kept alive by one chunk
        emit(hash, loc.codec === CODEC_BROTLI ? unbrotli(stored, loc.size) : Buffer.from(stored))
      }
    }
    for await (const c of res.body) {
      const b = c as Buffer
      if (got + b.length > len) {
        res.body.destroy()
        throw new VmifsError('HOLDER_BAD_RESPONSE', `origin sent more than the ${len} bytes asked of ${path}`)
      }
      b.copy(body, got)
      got += b.length
      onBytes?.(b.length)
      complete()
    }
    if (got !== len)
      throw new VmifsError('HOLDER_BAD_RESPONSE', `origin sent ${got} of the ${len} bytes asked of ${path}`)
    return out
  }

  async close(): Promise<void> {
    await this.pool.close().catch(() => {})
  }
}
