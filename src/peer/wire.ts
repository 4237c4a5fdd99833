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

/** Parses a batch body; throws on a malformed or truncated body. */
export function decodeBatch(body: Buffer, count: number): Array<Buffer | null> {
  const out: Array<Buffer | null> = []
  let p = 0
  for (let i = 0; i < count; i++) {
    if (p + 4 > body.length) throw new Error(`batch body truncated at entry ${i}`)
    const len = body.readUInt32BE(p)
    p += 4
    if (len === MISSING) {
      out.push(null)
      continue
    }
    if (p + len > body.length) throw new Error(`batch body truncated inside entry ${i}`)
    out.push(body.subarray(p, p + len))
    p += len
  }
  if (p !== body.length) throw new Error('batch body has trailing bytes')
  return out
}
