// Serves byte ranges of an image from its manifest: zero extents as zeros, data chunks from the
// chunk source (memory, the chunk store, the fleet: src/fetcher/source.ts), read-ahead for
// streams and miss-ahead for reads that go to the network.
// Contract: read() either fills the whole range with the image's bytes or rejects (with
// CHUNK_MISSING when a chunk is not local on a single host, CHUNK_HASH_MISMATCH when it was
// corrupt and has been dropped, CHUNK_UNAVAILABLE when no holder gave it). It never returns
// wrong bytes.
import type { ChunkStore } from '../cache/chunk-store.js'
import type { Manifest } from '../manifests/manifest.js'
import type { Stats } from '../stats/stats.js'
import type { ChunkSource } from '../fetcher/source.js'
import { isVmifsError } from '../errors.js'

const READ_AHEAD_AFTER = 2 * 1024 * 1024
// 16 MiB: at 100 Mbit/s and 100 ms RTT a sequential read from the origin store took 1.23× the
// link-rate bound with 8 MiB, 1.16× with 16 (`npm run bench -- cold-read --rtt-ms 100`)
const READ_AHEAD_MAX = 16 * 1024 * 1024
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
  /** per open file (or per image without one): where the last read ended, run length, fetched-ahead mark */
  private readonly streams = new WeakMap<object, { end: number; run: number; ahead: number }>()

  /** `fleet`: chunks the store lacks can be fetched (read-ahead and miss-ahead then run). */
  constructor(
    private readonly store: ChunkStore,
    private readonly source: ChunkSource,
    private readonly stats: Stats,
    private readonly fleet: boolean,
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
      if (this.source.holds(hex)) hitBytes += b - a
      else {
        missed = true
        missBytes += b - a
      }
      jobs.push(
        this.source.get({ hash: hex, size: m.lengthAt(i), image: m.digest() }, 'demand').then(buf => {
          buf.copy(dst, a - pos, a - start, b - start)
        })
      )
    }
    // a read that has to fetch takes the chunks right after it along, in the same batch request
    if (missed && this.fleet && this.missAheadBytes > 0)
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
    if (this.fleet) this.readAhead(m, stream, pos, end)
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
   * here or on their way; returns how many. Chunks asked for in one tick travel as one batch
   * request. A read of one joins its flight (and raises it), and its bytes stay in memory.
   */
  private fetchAhead(m: Manifest, from: number, to: number): number {
    let n = 0
    for (let i = from; i < m.count && m.offsets[i]! < to; i++) {
      if (m.zero[i] === 1) continue
      const hex = m.hashHexAt(i)
      if (this.source.has(hex)) continue
      n++
      // a read of it reports any failure
      this.source.get({ hash: hex, size: m.lengthAt(i), image: m.digest() }, 'ahead').catch(() => {})
    }
    return n
  }
}
