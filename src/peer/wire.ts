// Wire types of the peer protocol (HTTP/1.1, bearer token on every request):
//   GET  /v1/health                 -> { ok, hostId }
//   GET  /v1/chunks/<hash>          -> chunk bytes | 404 | 400
//   POST /v1/chunks  {hashes:[…]}   -> batch body (below), at most MAX_BATCH hashes; with
//                                      `accept-encoding: br` the body may come brotli-compressed
//                                      (`content-encoding: br`) when that pays (COMPRESS_PAYS)
//   POST /v1/replicate {image, …}    -> replicate an image onto this host (see planner/replicate.ts)
//   GET  /v1/manifests/<digest>     -> canonical binary manifest | 404 | 400
//   POST /v1/facts   {cursors:{…}}  -> { facts:[…], complete:{…}, heads:{…} } (signed: see index/facts.ts)
//   GET  /metrics                   -> Prometheus text
// Batch body: for each requested hash in order, a u32 big-endian length then that many bytes;
// length 0xffffffff means "not held here" (no bytes follow).
import { MAX_CHUNK } from '../manifests/chunking.js'

export const MAX_BATCH = 64
export const MAX_BATCH_BYTES = 32 * 1024 * 1024
export const MAX_JSON_BODY = 1024 * 1024
export const MISSING = 0xffffffff
/** a compressed batch is sent only when at most this share of the raw body */
export const COMPRESS_PAYS = 0.9
/**
 * Brotli quality for batches. Measured on the Debian nginx image's data (1 MiB pieces, one core):
 * quality 1 keeps 0.35 of the bytes at ~250 MB/s; gzip -1 0.37 at 86 MB/s; brotli 4 0.31 at
 * 83 MB/s; brotli 5 0.29 at 44 MB/s; 6-9 gain under 1 % more at a third of that speed. Node 20
 * has no zstd. Quality 1 keeps a core ahead of a 1 Gbit/s link; a client on a thinner link asks
 * for more (BROTLI_QUALITY_HEADER), up to BROTLI_MAX_QUALITY.
 */
export const BROTLI_QUALITY = 1
export const BROTLI_MAX_QUALITY = 5
export const BROTLI_QUALITY_HEADER = 'x-vmifs-brotli-quality'

/** The quality worth asking for over a link of this many bytes per second: compression must outrun the link. */
export function brotliQualityFor(bandwidthBps: number): number {
  if (bandwidthBps <= 15e6) return 5 // up to ~120 Mbit/s: 44 MB/s a core is 3× the link
  if (bandwidthBps <= 40e6) return 3
  return 1
}

export function encodeBatch(parts: Array<Buffer | null>): Buffer[] {
  const out: Buffer[] = []
  for (const p of parts) {
    const head = Buffer.alloc(4)
    head.writeUInt32BE(p === null ? MISSING : p.length)
    out.push(head)
    if (p !== null) out.push(p)
  }
  return out
}

/**
 * Reads a batch body as it arrives: each entry is handed to `onEntry` (its index, its bytes or
 * null for "not held") once its bytes are in; push() and finish() throw on a malformed body.
 */
export class BatchDecoder {
  private buf = Buffer.alloc(0)
  private next = 0
  private total = 0

  constructor(
    private readonly count: number,
    private readonly onEntry: (i: number, data: Buffer | null) => void
  ) {}

  push(c: Buffer): void {
    this.total += c.length
    // a holder stops adding chunks once MAX_BATCH_BYTES are in: one more chunk at most
    if (this.total > MAX_BATCH_BYTES + MAX_CHUNK + 4 * this.count) throw new Error('batch body over its bound')
    let buf = this.buf.length === 0 ? c : Buffer.concat([this.buf, c])
    let p = 0
    while (this.next < this.count && p + 4 <= buf.length) {
      const len = buf.readUInt32BE(p)
      if (len === MISSING) {
        p += 4
        this.onEntry(this.next++, null)
        continue
      }
      if (p + 4 + len > buf.length) break
      // a copy, so that an entry does not keep the rest of the body alive
      const data = Buffer.from(buf.subarray(p + 4, p + 4 + len))
      p += 4 + len
      this.onEntry(this.next++, data)
    }
    buf = buf.subarray(p)
    if (this.next === this.count && buf.length > 0) throw new Error('batch body has trailing bytes')
    this.buf = buf.length === 0 ? Buffer.alloc(0) : Buffer.from(buf)
  }

  /** The body ended: every entry must have come, and nothing after them. */
  finish(): void {
    if (this.next < this.count)
      throw new Error(`batch body truncated ${this.buf.length >= 4 ? 'inside' : 'at'} entry ${this.next}`)
  }
}
