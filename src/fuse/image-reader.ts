// Serves byte ranges of an image from its manifest: zero extents as zeros, data chunks from the
// chunk cache (verified on every load from disk) through a small in-memory LRU of verified chunks,
// so that the kernel's 128 KiB reads of one chunk load and hash it once.
// Contract: read() either fills the whole range with the image's bytes or rejects (with
// CHUNK_MISSING when a chunk is not local, CHUNK_HASH_MISMATCH when it was corrupt and has been
// dropped). It never returns wrong bytes. Concurrent loads of one chunk share one promise.
import type { ChunkStore } from '../cache/chunk-store.js'
import type { Manifest } from '../manifests/manifest.js'
import type { Stats } from '../stats/stats.js'
import { isVmifsError } from '../errors.js'

const READ_AHEAD_AFTER = 2 * 1024 * 1024
const READ_AHEAD_MAX = 8 * 1024 * 1024
const READ_AHEAD_SLACK = 256 * 1024 // the kernel's concurrent requests of one stream arrive out of order, both ways
/**
 * The default of `missAheadBytes`: a read that has to go to the network also asks for the uncached
 * chunks within this many bytes after it, in the same batch request. Reads of an image's files
 * cluster (a boot reads many small files, laid out next to each other), and with file cuts each
 * small file is a chunk of its own: without this each neighbour costs a round trip of its own
 * (measured in the boot benchmark at 100 ms RTT with no model: 66.5 s without, 53.3 s with).
 */
export const MISS_AHEAD = 64 * 1024

export class ImageReader {
  private readonly mem = new Map<string, Buffer>() // insertion order = LRU order
  private memBytes = 0
  private readonly loading = new Map<string, Promise<Buffer>>()
  private readonly aheadLoads = new Set<Promise<Buffer>>()
  /** per open file (or per image without one): where the last read ended, run length, fetched-ahead mark */
  private readonly streams = new WeakMap<object, { end: number; run: number; ahead: number }>()

  /**
   * `fetch` (fleet mode) brings a chunk the cache lacks into it, resolving with its verified bytes
   * when it fetched them (else they are loaded from the cache), or rejects (CHUNK_UNAVAILABLE);
   * without it a missing chunk fails the read with CHUNK_MISSING.
   */
  constructor(
    private readonly store: ChunkStore,
    private readonly stats: Stats,
    private readonly memLimit = 64 * 1024 * 1024,
    private readonly fetch?: (hash: string, size: number, readAhead: boolean) => Promise<Buffer | undefined>,
    private readonly missAheadBytes = MISS_AHEAD
  ) {}

  /** Called with the first and last entry index each read touches (usage traces). */
  onAccess: ((m: Manifest, first: number, last: number) => void) | undefined

  /** `stream` identifies the open file the read comes from (read-ahead follows each one). */
  async read(name: string, m: Manifest, dst: Buffer, pos: number, len: number, stream: object = m): Promise<number> {
    const r = this.begin(name, m, pos, len, stream)
    if (!r) return 0
    const { img, end } = r
    len = r.len
    let missed = false
    let hitBytes = 0
    let missBytes = 0
    const jobs: Array<Promise<void>> = []
    let i = r.first
    for (; i < m.count && m.offsets[i]! < end; i++) {
      const a = Math.max(pos, m.offsets[i]!)
      const b = Math.min(end, m.offsets[i + 1]!)
      if (m.zero[i] === 1) {
        dst.fill(0, a - pos, b - pos)
        hitBytes += b - a
        this.stats.zeroBytes += b - a
        continue
      }
      const hex = m.hashHexAt(i)
      const start = m.offsets[i]!
      const cached = this.mem.get(hex)
      if (cached) {
        this.mem.delete(hex)
        this.mem.set(hex, cached)
        this.stats.memHits++
        cached.copy(dst, a - pos, a - start, b - start)
        hitBytes += b - a
        continue
      }
      const local = this.store.has(hex)
      if (!local) {
        missed = true
        missBytes += b - a
      } else hitBytes += b - a
      jobs.push(
        this.load(hex, m.lengthAt(i), local).then(buf => {
          buf.copy(dst, a - pos, a - start, b - start)
        })
      )
    }
    // a read that has to fetch takes the chunks right after it along, in the same batch request
    if (missed && this.fetch && this.missAheadBytes > 0)
      this.stats.missAheadChunks += this.fetchAhead(m, i, end + this.missAheadBytes)
    try {
      await Promise.all(jobs)
    } catch (err) {
      if (isVmifsError(err, 'CHUNK_HASH_MISMATCH')) this.stats.corruptChunks++
      throw err
    } finally {
      if (missed) this.stats.missOps++
      else this.stats.hitOps++
      this.stats.hitBytes += hitBytes
      this.stats.missBytes += missBytes
      img.hitBytes += hitBytes
      img.missBytes += missBytes
    }
    return len
  }

  /**
   * Accounts for a read the native side served from cached, verified chunks (zero extents
   * included): the same statistics, usage trace, read-ahead and access times as read() gives a
   * read it serves, without touching the bytes. Returns the bytes it accounted for (0 at the end).
   */
  served(name: string, m: Manifest, pos: number, len: number, stream: object = m): number {
    const r = len === 0 ? undefined : this.begin(name, m, pos, len, stream)
    if (!r) return 0
    let i = r.first
    for (; i < m.count && m.offsets[i]! < r.end; i++)
      if (m.zero[i] === 1) this.stats.zeroBytes += Math.min(r.end, m.offsets[i + 1]!) - Math.max(pos, m.offsets[i]!)
    this.store.touchRun(m.hashes, m.zero, r.first, i - 1)
    this.stats.hitOps++
    this.stats.hitBytes += r.len
    r.img.hitBytes += r.len
    return r.len
  }

  /**
   * What every read of an image starts with, whoever serves its bytes: the range clamped to the
   * image, read-ahead, the per-image count and the usage trace. Undefined at or past the end.
   */
  private begin(
    name: string,
    m: Manifest,
    pos: number,
    len: number,
    stream: object
  ): { img: ReturnType<Stats['image']>; len: number; end: number; first: number } | undefined {
    if (pos >= m.size) return undefined
    len = Math.min(len, m.size - pos)
    const end = pos + len
    if (this.fetch) this.readAhead(m, stream, pos, end)
    const img = this.stats.image(name)
    img.readOps++
    const first = m.find(pos)
    this.onAccess?.(m, first, m.find(end - 1))
    return { img, len, end, first }
  }

  /**
   * Streams (reads that continue where the last read of this image ended, for at least
   * READ_AHEAD_AFTER bytes): fetch the chunks ahead in the background, at most half as many bytes
   * as the stream has read so far and at most READ_AHEAD_MAX, so the link stays busy across round
   * trips. Reading a file (a boot reads hundreds, mostly small) never triggers it, and a stream
   * that stops wastes at most a third of what it fetched. Any other read starts a new stream.
   */
  private readAhead(m: Manifest, stream: object, pos: number, end: number): void {
    const st = this.streams.get(stream)
    if (!st || pos < st.end - READ_AHEAD_SLACK || pos > Math.max(st.end, st.ahead) + READ_AHEAD_SLACK) {
      this.streams.set(stream, { end, run: end - pos, ahead: end })
      return
    }
    st.run += Math.max(0, end - st.end)
    st.end = Math.max(st.end, end)
    if (st.run < READ_AHEAD_AFTER) return
    const window = Math.min(READ_AHEAD_MAX, st.run / 2)
    // refill in bulk once less than half the window is left (the chunks asked for in one go
    // travel as one batch request), not one chunk per read
    if (st.ahead - st.end > window / 2) return
    const to = Math.min(m.size, st.end + window)
    this.stats.readAheadChunks += this.fetchAhead(m, m.find(Math.max(st.ahead, st.end)), to)
    st.ahead = Math.max(st.ahead, to)
  }

  /**
   * Fetches, in the background, the data chunks from entry `from` up to offset `to` that are not
   * in memory, loading or cached; returns how many. Chunks asked for in one tick travel as one
   * batch request. Through load(): a read of one joins its fetch, and its bytes stay in memory.
   */
  private fetchAhead(m: Manifest, from: number, to: number): number {
    let n = 0
    for (let i = from; i < m.count && m.offsets[i]! < to; i++) {
      if (m.zero[i] === 1) continue
      const hex = m.hashHexAt(i)
      if (this.mem.has(hex) || this.loading.has(hex) || this.store.has(hex)) continue
      n++
      this.load(hex, m.lengthAt(i), false, true).catch(() => {}) // a read of it will report any failure
    }
    return n
  }

  private load(hex: string, size: number, local: boolean, readAhead = false): Promise<Buffer> {
    let p = this.loading.get(hex)
    if (p) {
      // a read that joins a read-ahead's fetch gets a fetch of its own if that one failed (the
      // read-ahead may have given up on a slow link the read should still try)
      if (!readAhead && this.aheadLoads.has(p))
        return p.catch(async () => await this.load(hex, size, this.store.has(hex)))
      return p
    }
    const fetched = local || !this.fetch ? Promise.resolve(undefined) : this.fetch(hex, size, readAhead)
    p = fetched
      .then(async got => got ?? (await this.store.read(hex)))
      .then(buf => {
        this.remember(hex, buf)
        return buf
      })
      .finally(() => {
        if (this.loading.get(hex) === p) this.loading.delete(hex)
        this.aheadLoads.delete(p!)
      })
    this.loading.set(hex, p)
    if (readAhead) this.aheadLoads.add(p)
    return p
  }

  private remember(hex: string, buf: Buffer): void {
    if (buf.length > this.memLimit) return
    this.mem.set(hex, buf)
    this.memBytes += buf.length
    while (this.memBytes > this.memLimit) {
      const [k, v] = this.mem.entries().next().value as [string, Buffer]
      this.mem.delete(k)
      this.memBytes -= v.length
    }
  }

  /** Forget a chunk held in memory (it was dropped or evicted). */
  forget(hex: string): void {
    const v = this.mem.get(hex)
    if (v) {
      this.mem.delete(hex)
      this.memBytes -= v.length
    }
  }
}
