// The chunkers vmifs had in TypeScript before the pass moved into the addon (native/chunker.c):
// kept as the reference the native one is tested against (test/manifests/chunker.test.ts), with
// FastCDC's cut both ways (the addon's single cut, and a BigInt one that follows the spec's words).
import { native } from '../../src/native/index.js'
import {
  type Chunking,
  ZERO_BLOCK,
  cdcMasks,
  gearTable,
  validateChunking,
  zeroRunMin
} from '../../src/manifests/chunking.js'

export interface CdcParams {
  min: number
  avg: number
  max: number
}

let gearLoaded = false

/** The addon's FastCDC cut (absolute offset). */
export function makeCutter(p: CdcParams): (buf: Buffer, start: number, end: number) => number {
  const n = native()
  if (!gearLoaded) {
    n.setGear(gearTable().table)
    gearLoaded = true
  }
  const { maskS, maskL } = cdcMasks(p.avg)
  return (buf, start, end) => n.fastcdcCut(buf, start, end, p.min, p.avg, p.max, maskS, maskL)
}

const M64 = (1n << 64n) - 1n

/** Reference implementation: same contract as the native cut (absolute offset). */
export function referenceCut(buf: Buffer, start: number, end: number, p: CdcParams): number {
  const G = gearTable().values
  const { maskS, maskL } = cdcMasks(p.avg)
  let n = end - start
  if (n <= p.min) return end
  if (n > p.max) n = p.max
  const normal = Math.min(p.avg, n)
  let h = 0n
  let i = p.min
  for (; i < normal; i++) {
    h = ((h << 1n) + G[buf[start + i]!]!) & M64
    if ((h & maskS) === 0n) return start + i + 1
  }
  for (; i < n; i++) {
    h = ((h << 1n) + G[buf[start + i]!]!) & M64
    if ((h & maskL) === 0n) return start + i + 1
  }
  return start + n
}

export interface ChunkOut {
  offset: number
  length: number
  zero: boolean
  data?: Buffer
}

export interface ReferenceChunker {
  push(buf: Buffer): ChunkOut[]
  finish(): ChunkOut[]
}

/**
 * `cuts`: sorted image offsets, multiples of 4 KiB, where a CDC chunk must end (fixed chunking
 * ignores them).
 */
export function referenceChunker(c: Chunking, cuts?: Float64Array): ReferenceChunker {
  const v = validateChunking(c)
  return v.kind === 'fixed'
    ? new FixedChunker(v.chunkSize)
    : new CdcChunker(v.min, v.avg, v.max, cuts ?? new Float64Array(0))
}

class FixedChunker implements ReferenceChunker {
  private carry: Buffer = Buffer.alloc(0)
  private pos = 0

  constructor(private readonly size: number) {}

  push(buf: Buffer): ChunkOut[] {
    const w = this.carry.length > 0 ? Buffer.concat([this.carry, buf]) : buf
    const whole = Math.floor(w.length / this.size) * this.size
    const out = this.emit(w, whole)
    this.carry = Buffer.from(w.subarray(whole)) // copy: the caller may reuse buf
    return out
  }

  finish(): ChunkOut[] {
    const out = this.emit(this.carry, this.carry.length)
    this.carry = Buffer.alloc(0)
    return out
  }

  private emit(w: Buffer, end: number): ChunkOut[] {
    const out: ChunkOut[] = []
    if (end === 0) return out
    const blocksPerChunk = this.size / ZERO_BLOCK
    const z = native().zeroBlocks(w.subarray(0, end), ZERO_BLOCK)
    for (let s = 0, b = 0; s < end; s += this.size, b += blocksPerChunk) {
      const len = Math.min(this.size, end - s)
      let zero = true
      for (let k = b; k < b + Math.ceil(len / ZERO_BLOCK); k++)
        if (z[k] === 0) {
          zero = false
          break
        }
      out.push(
        zero
          ? { offset: this.pos, length: len, zero }
          : { offset: this.pos, length: len, zero, data: w.subarray(s, s + len) }
      )
      this.pos += len
    }
    return out
  }
}

class CdcChunker implements ReferenceChunker {
  private readonly cut: (buf: Buffer, start: number, end: number) => number
  private readonly zmin: number
  private readonly zeros: Buffer
  private tail: Buffer = Buffer.alloc(0) // < ZERO_BLOCK bytes not yet classified
  private data: Buffer = Buffer.alloc(0) // data not yet cut (< max bytes), starts at dataPos
  private dataPos = 0
  private zeroLen = 0 // pending zero run, right after `data`
  private out: ChunkOut[] = []
  private nextCut = 0 // index into cuts of the first cut not yet passed

  constructor(
    min: number,
    avg: number,
    private readonly max: number,
    private readonly cuts: Float64Array
  ) {
    this.cut = makeCutter({ min, avg, max })
    this.zmin = zeroRunMin({ kind: 'cdc', min, avg, max })
    this.zeros = Buffer.alloc(this.zmin)
  }

  push(buf: Buffer): ChunkOut[] {
    const w = this.tail.length > 0 ? Buffer.concat([this.tail, buf]) : buf
    const whole = w.length - (w.length % ZERO_BLOCK)
    this.classify(w, whole)
    this.tail = Buffer.from(w.subarray(whole))
    if (this.data.length > 0) this.data = Buffer.from(this.data) // keep no view of the caller's buffer
    return this.take()
  }

  finish(): ChunkOut[] {
    if (this.tail.length > 0) {
      this.classify(this.tail, this.tail.length)
      this.tail = Buffer.alloc(0)
    }
    this.endZeroRun()
    this.feed(Buffer.alloc(0), true)
    return this.take()
  }

  private take(): ChunkOut[] {
    const o = this.out
    this.out = []
    return o
  }

  private classify(w: Buffer, end: number): void {
    if (end === 0) return
    const z = native().zeroBlocks(w.subarray(0, end), ZERO_BLOCK)
    const nb = z.length
    // w starts on a block boundary: everything before it is cut, pending or a zero run
    const base = this.dataPos + this.data.length + this.zeroLen
    const cuts = this.cuts
    while (this.nextCut < cuts.length && cuts[this.nextCut]! <= base) this.nextCut++
    let k = 0
    while (k < nb) {
      const isZero = z[k] === 1
      let j = k + 1
      // the block index of the next forced cut in w, if any
      const cutAt = this.nextCut < cuts.length ? (cuts[this.nextCut]! - base) / ZERO_BLOCK : Infinity
      while (j < nb && (z[j] === 1) === isZero && j !== cutAt) j++
      if (j === cutAt) this.nextCut++
      const a = k * ZERO_BLOCK
      const b = Math.min(j * ZERO_BLOCK, end)
      if (isZero) {
        this.zeroLen += b - a
      } else {
        this.endZeroRun()
        this.feed(w.subarray(a, b), false)
      }
      // a forced cut after data: the pending data ends here however short. After zeros nothing is
      // needed: a zero run of at least zmin cuts anyway (a shorter one becomes data and the cut is lost)
      if (j === cutAt && !isZero) this.feed(Buffer.alloc(0), true)
      k = j
    }
  }

  /** A data block follows (or the image ends): decide what the pending zero run is. */
  private endZeroRun(): void {
    if (this.zeroLen === 0) return
    if (this.zeroLen >= this.zmin) {
      this.feed(Buffer.alloc(0), true)
      this.out.push({ offset: this.dataPos, length: this.zeroLen, zero: true })
      this.dataPos += this.zeroLen
    } else {
      // a short zero run is ordinary data
      this.feed(this.zeros.subarray(0, this.zeroLen), false)
    }
    this.zeroLen = 0
  }

  /** Append data and emit every chunk whose end is decided (all of them when final). */
  private feed(view: Buffer, final: boolean): void {
    let w: Buffer
    let s = 0
    let rest: Buffer | undefined // part of view not in w (taken up once w is consumed)
    if (this.data.length === 0) {
      w = view
    } else {
      const head = view.subarray(0, Math.min(view.length, this.max))
      w = Buffer.concat([this.data, head])
      if (head.length < view.length) rest = view.subarray(head.length)
      // positions in w past data.length map onto view
    }
    const dataLen = this.data.length
    for (;;) {
      if (s === w.length) break
      const c = this.cut(w, s, w.length)
      if (c === w.length && w.length - s < this.max && !(final && rest === undefined)) break
      this.out.push({ offset: this.dataPos, length: c - s, zero: false, data: w.subarray(s, c) })
      this.dataPos += c - s
      s = c
    }
    if (rest !== undefined) {
      // w held data + the first `max` bytes of view; continue on the view itself without copying
      const consumedOfView = s - dataLen
      this.data = Buffer.alloc(0)
      this.feed(view.subarray(consumedOfView), final)
      return
    }
    this.data = w.subarray(s)
  }
}
