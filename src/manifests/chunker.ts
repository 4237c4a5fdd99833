// The chunker: feed the image in order with push(); each call returns the chunks whose ends are
// decided, as a ChunkRun (arrays with a slot a chunk, not an object a chunk). The pass is native
// (native/chunker.c): cutting, zero runs, BLAKE3 of every data chunk and, when asked, which chunks
// are new to this image and their CRC32C.
//
// Both kinds find zero runs on 4 KiB-aligned blocks: a zero run becomes a zero entry (never
// stored, never fetched). Fixed chunking marks whole chunks that are all zero. CDC marks zero runs
// of at least zeroRunMin bytes and cuts the data between them with FastCDC, so that cut points
// also resynchronise at every zero run. CDC can also be given forced cuts (the file boundaries of
// fs-layout.ts): the data on either side of a cut is chunked as if the other side were not there.
import { native } from '../native/index.js'
import { type Chunking, cdcMasks, gearTable, validateChunking, zeroRunMin } from './chunking.js'

/** A zero entry: no bytes, no hash. */
export const CHUNK_ZERO = 1
/** The chunk's bytes are in the run's spill, not in the piece pushed. */
export const CHUNK_SPILLED = 2
/** The first chunk of its hash in this image (only with `fresh`). */
export const CHUNK_FRESH = 4

/** The chunks one push (or finish) decided, in image order: slot i is chunk i. */
export interface ChunkRun {
  readonly n: number
  /** image offset of the first chunk */
  readonly at: number
  readonly lengths: Float64Array
  /** where a data chunk's bytes are: in the piece pushed, or in spill (CHUNK_SPILLED) */
  readonly offs: Float64Array
  readonly flags: Uint8Array
  /** BLAKE3-256 of each data chunk, 32 bytes a slot (zeros for a zero entry) */
  readonly hashes: Buffer
  /** CRC32C of each fresh chunk (with `crc`), 0 otherwise */
  readonly crcs: Uint32Array
  /** the bytes of the chunks not lying whole in the piece (they began in an earlier one) */
  readonly spill: Buffer | undefined
}

export interface ChunkerOptions {
  /** tell the first chunk of each hash apart (CHUNK_FRESH) */
  fresh?: boolean
  /** take each fresh chunk's CRC32C (the chunk store's check), while its bytes are in the CPU's caches */
  crc?: boolean
}

/** A chunk as one object (tests and benchmarks that look at chunks one at a time). */
export interface ChunkOut {
  offset: number
  length: number
  zero: boolean
  data?: Buffer
}

let gearLoaded = false

export class Chunker {
  private readonly handle: unknown
  private at = 0

  /** `cuts`: sorted image offsets, multiples of 4 KiB, where a CDC chunk must end (fixed ignores them). */
  constructor(c: Chunking, cuts?: Float64Array, opts: ChunkerOptions = {}) {
    const v = validateChunking(c)
    const n = native()
    if (!gearLoaded) {
      n.setGear(gearTable().table)
      gearLoaded = true
    }
    const flags = (opts.fresh === true ? 1 : 0) | (opts.crc === true ? 2 : 0)
    if (v.kind === 'fixed') {
      this.handle = n.chunkerNew(0, v.chunkSize, 0, 0, 0n, 0n, zeroRunMin(v), new Float64Array(0), flags)
    } else {
      const { maskS, maskL } = cdcMasks(v.avg)
      const forced = cuts ?? new Float64Array(0)
      this.handle = n.chunkerNew(1, v.min, v.avg, v.max, maskS, maskL, zeroRunMin(v), forced, flags)
    }
  }

  /** The chunks decided once `buf` (the image's next bytes) is in. Data views of buf stay valid as long as buf does. */
  push(buf: Buffer): ChunkRun {
    return this.run(native().chunkerPush(this.handle, buf, false))
  }

  /** The rest: the image ends here. */
  finish(): ChunkRun {
    return this.run(native().chunkerPush(this.handle, Buffer.alloc(0), true))
  }

  private run(r: Omit<ChunkRun, 'at'>): ChunkRun {
    const run = { ...r, at: this.at }
    for (let i = 0; i < r.n; i++) this.at += r.lengths[i]!
    return run
  }
}

export function createChunker(c: Chunking, cuts?: Float64Array, opts?: ChunkerOptions): Chunker {
  return new Chunker(c, cuts, opts)
}

/** Chunk i's bytes: a view of the piece it was pushed with, or of the run's spill. */
export function chunkData(run: ChunkRun, i: number, piece: Buffer): Buffer {
  const off = run.offs[i]!
  const src = (run.flags[i]! & CHUNK_SPILLED) !== 0 ? run.spill! : piece
  return src.subarray(off, off + run.lengths[i]!)
}

/** The run's chunks as objects, data as views (valid as long as the piece and the run are). */
export function chunksOf(run: ChunkRun, piece: Buffer): ChunkOut[] {
  const out: ChunkOut[] = []
  let offset = run.at
  for (let i = 0; i < run.n; i++) {
    const length = run.lengths[i]!
    if ((run.flags[i]! & CHUNK_ZERO) !== 0) out.push({ offset, length, zero: true })
    else out.push({ offset, length, zero: false, data: chunkData(run, i, piece) })
    offset += length
  }
  return out
}
