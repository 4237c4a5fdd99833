// The manifest: an image as an ordered list of extents, each a data chunk (by BLAKE3 hash) or a
// zero run. The canonical binary form is specified in manifests/SPEC.md; the image digest is the
// BLAKE3 of that binary. decode() and fromJson() refuse anything malformed with a MANIFEST_* code.
import { VmifsError } from '../errors.js'
import { HASH_SIZE, blake3, isHashHex, roomForHashes } from '../util/hash.js'
import { type Chunking, MAX_CHUNK, validateChunking, maxChunkSize } from './chunking.js'
import { CHUNK_ZERO, type ChunkRun } from './chunker.js'

export const MAGIC = Buffer.from('VMIM')
export const VERSION = 1
const HEADER = 32
const TAG_DATA = 0
const TAG_ZERO = 1
const CHUNKING_CODE = { fixed: 1, cdc: 2 } as const
/** header byte 7, cdc only: cut also at the files of the image's filesystems */
const FLAG_FILE_CUTS = 1

export interface ManifestEntry {
  offset: number
  length: number
  zero: boolean
  hash?: string
}

export class Manifest {
  /** offsets[i] is where entry i starts; offsets[count] === size. */
  readonly offsets: Float64Array
  readonly zero: Uint8Array
  /** count * 32 bytes; zero entries hold 32 zero bytes. */
  readonly hashes: Buffer
  private encoded: Buffer | undefined
  private digestHex: string | undefined
  private distinct: Map<string, number> | undefined

  constructor(
    readonly size: number,
    readonly chunking: Chunking,
    offsets: Float64Array,
    zero: Uint8Array,
    hashes: Buffer
  ) {
    this.offsets = offsets
    this.zero = zero
    this.hashes = hashes
  }

  get count(): number {
    return this.zero.length
  }

  hashAt(i: number): Buffer {
    return this.hashes.subarray(i * HASH_SIZE, (i + 1) * HASH_SIZE)
  }
  hashHexAt(i: number): string {
    return this.hashAt(i).toString('hex')
  }
  lengthAt(i: number): number {
    return this.offsets[i + 1]! - this.offsets[i]!
  }

  /** Index of the entry holding byte `pos` (0 <= pos < size). */
  find(pos: number): number {
    let lo = 0
    let hi = this.count - 1
    const o = this.offsets
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1
      if (o[mid]! <= pos) lo = mid
      else hi = mid - 1
    }
    return lo
  }

  /** Distinct data chunks: hex hash -> length (computed once: a manifest never changes). */
  distinctChunks(): ReadonlyMap<string, number> {
    if (this.distinct) return this.distinct
    const m = new Map<string, number>()
    for (let i = 0; i < this.count; i++) if (this.zero[i] === 0) m.set(this.hashHexAt(i), this.lengthAt(i))
    this.distinct = m
    return m
  }

  dataBytes(): number {
    let n = 0
    for (let i = 0; i < this.count; i++) if (this.zero[i] === 0) n += this.lengthAt(i)
    return n
  }

  encode(): Buffer {
    if (this.encoded) return this.encoded
    const parts: Buffer[] = []
    const head = Buffer.alloc(HEADER)
    MAGIC.copy(head, 0)
    head[4] = VERSION
    head[5] = HASH_SIZE
    head[6] = CHUNKING_CODE[this.chunking.kind]
    head[7] = this.chunking.kind === 'cdc' && this.chunking.fileCuts === true ? FLAG_FILE_CUTS : 0
    head.writeBigUInt64LE(BigInt(this.size), 8)
    head.writeUInt32LE(this.count, 16)
    if (this.chunking.kind === 'fixed') {
      head.writeUInt32LE(this.chunking.chunkSize, 20)
    } else {
      head.writeUInt32LE(this.chunking.min, 20)
      head.writeUInt32LE(this.chunking.avg, 24)
      head.writeUInt32LE(this.chunking.max, 28)
    }
    parts.push(head)
    const body = Buffer.alloc(this.count * (1 + 8 + HASH_SIZE))
    let p = 0
    for (let i = 0; i < this.count; i++) {
      const z = this.zero[i] === 1
      body[p++] = z ? TAG_ZERO : TAG_DATA
      p = writeVarint(body, p, this.lengthAt(i))
      if (!z) {
        this.hashAt(i).copy(body, p)
        p += HASH_SIZE
      }
    }
    parts.push(body.subarray(0, p))
    this.encoded = Buffer.concat(parts)
    return this.encoded
  }

  /** Hex BLAKE3 of the canonical binary form: the image's identity. */
  digest(): string {
    this.digestHex ??= blake3(this.encode()).toString('hex')
    return this.digestHex
  }

  entries(): ManifestEntry[] {
    const out: ManifestEntry[] = []
    for (let i = 0; i < this.count; i++) {
      const e: ManifestEntry = { offset: this.offsets[i]!, length: this.lengthAt(i), zero: this.zero[i] === 1 }
      if (!e.zero) e.hash = this.hashHexAt(i)
      out.push(e)
    }
    return out
  }

  toJson(): ManifestJson {
    return {
      format: 'vmifs-manifest',
      version: VERSION,
      hash: 'blake3-256',
      size: this.size,
      digest: this.digest(),
      chunking: this.chunking,
      chunks: this.entries().map(e =>
        e.zero
          ? { offset: e.offset, length: e.length, zero: true }
          : { offset: e.offset, length: e.length, hash: e.hash! }
      )
    }
  }
}

export interface ManifestJson {
  format: 'vmifs-manifest'
  version: number
  hash: 'blake3-256'
  size: number
  digest?: string
  chunking: Chunking
  chunks: Array<{ offset: number; length: number; hash: string } | { offset: number; length: number; zero: true }>
}

/** Accumulates entries in image order; merges adjacent zero entries (canonical form). */
export class ManifestBuilder {
  private offsets: number[] = [0]
  private zero: number[] = []
  // every entry's hash, 32 bytes each (zeros for a zero run): one buffer, not an object a chunk
  private table: Buffer = Buffer.alloc(1024 * HASH_SIZE)
  private pos = 0

  constructor(private readonly chunking: Chunking) {}

  add(length: number, hash: Buffer | null): void {
    this.entry(length, hash, 0)
  }

  /** A chunker's run, in order: the hashes of each stretch of entries between merges copied at once. */
  addRun(run: ChunkRun): void {
    this.table = roomForHashes(this.table, this.zero.length + run.n)
    let from = 0 // the run's first entry not copied yet, and its slot in the table
    let to = this.zero.length
    for (let i = 0; i < run.n; i++) {
      const length = run.lengths[i]!
      const zero = (run.flags[i]! & CHUNK_ZERO) !== 0
      this.pos += length
      if (zero && this.zero.length > 0 && this.zero[this.zero.length - 1] === 1) {
        // merged into the zero entry before it: it takes no slot
        run.hashes.copy(this.table, to * HASH_SIZE, from * HASH_SIZE, i * HASH_SIZE)
        this.offsets[this.offsets.length - 1] = this.pos
        from = i + 1
        to = this.zero.length
        continue
      }
      this.offsets.push(this.pos)
      this.zero.push(zero ? 1 : 0)
    }
    run.hashes.copy(this.table, to * HASH_SIZE, from * HASH_SIZE, run.n * HASH_SIZE)
  }

  /** An entry of `length` bytes, a zero run without a hash, else hashed by h[at..at+32]. */
  private entry(length: number, h: Buffer | null, at: number): void {
    if (h === null && this.zero.length > 0 && this.zero[this.zero.length - 1] === 1) {
      this.pos += length
      this.offsets[this.offsets.length - 1] = this.pos
      return
    }
    const i = this.zero.length
    this.pos += length
    this.offsets.push(this.pos)
    this.zero.push(h === null ? 1 : 0)
    this.table = roomForHashes(this.table, i + 1)
    if (h !== null) h.copy(this.table, i * HASH_SIZE, at, at + HASH_SIZE)
  }

  build(): Manifest {
    const n = this.zero.length
    const m = new Manifest(
      this.pos,
      this.chunking,
      Float64Array.from(this.offsets),
      Uint8Array.from(this.zero),
      Buffer.from(this.table.subarray(0, n * HASH_SIZE))
    )
    validate(m)
    return m
  }
}

function writeVarint(buf: Buffer, p: number, v: number): number {
  while (v >= 0x80) {
    buf[p++] = (v % 0x80) | 0x80
    v = Math.floor(v / 0x80)
  }
  buf[p++] = v
  return p
}

function readVarint(buf: Buffer, p: number): [number, number] {
  let v = 0
  let mul = 1
  for (let k = 0; k < 8; k++) {
    if (p >= buf.length) throw VmifsError.manifest('MANIFEST_TRUNCATED', 'ends inside a length')
    const b = buf[p++]!
    v += (b & 0x7f) * mul
    if ((b & 0x80) === 0) {
      if (b === 0 && k > 0) throw VmifsError.manifest('MANIFEST_NOT_CANONICAL', 'length has a redundant varint byte')
      return [v, p]
    }
    mul *= 0x80
  }
  throw VmifsError.manifest('MANIFEST_BAD_LENGTH', 'length varint longer than 8 bytes')
}

/** Parse and validate the canonical binary form. */
export function decode(buf: Buffer): Manifest {
  if (buf.length < 4 || !buf.subarray(0, 4).equals(MAGIC))
    throw VmifsError.manifest('MANIFEST_BAD_MAGIC', 'not a vmifs manifest (bad magic)')
  if (buf.length < HEADER)
    throw VmifsError.manifest('MANIFEST_TRUNCATED', `header needs ${HEADER} bytes, got ${buf.length}`)
  if (buf[4] !== VERSION)
    throw VmifsError.manifest(
      'MANIFEST_BAD_VERSION',
      `version ${buf[4]} is not supported (this build reads ${VERSION})`
    )
  if (buf[5] !== HASH_SIZE)
    throw VmifsError.manifest('MANIFEST_BAD_HASH_SIZE', `hash size ${buf[5]}, expected ${HASH_SIZE}`)
  if ((buf[7]! & ~FLAG_FILE_CUTS) !== 0 || (buf[7] !== 0 && buf[6] !== CHUNKING_CODE.cdc))
    throw VmifsError.manifest('MANIFEST_NOT_CANONICAL', 'unknown chunking flags')
  const size = Number(buf.readBigUInt64LE(8))
  if (!Number.isSafeInteger(size)) throw VmifsError.manifest('MANIFEST_BAD_LENGTH', 'image size too large')
  const count = buf.readUInt32LE(16)
  let chunking: Chunking
  if (buf[6] === CHUNKING_CODE.fixed) {
    if (buf.readUInt32LE(24) !== 0 || buf.readUInt32LE(28) !== 0)
      throw VmifsError.manifest('MANIFEST_NOT_CANONICAL', 'unused chunking fields are not zero')
    chunking = validateChunking({ kind: 'fixed', chunkSize: buf.readUInt32LE(20) })
  } else if (buf[6] === CHUNKING_CODE.cdc) {
    chunking = validateChunking({
      kind: 'cdc',
      min: buf.readUInt32LE(20),
      avg: buf.readUInt32LE(24),
      max: buf.readUInt32LE(28),
      fileCuts: buf[7] === FLAG_FILE_CUTS
    })
  } else {
    throw VmifsError.manifest('MANIFEST_BAD_CHUNKING', `unknown chunking code ${buf[6]}`)
  }
  if (count > (buf.length - HEADER) / 2)
    throw VmifsError.manifest(
      'MANIFEST_TRUNCATED',
      `declares ${count} entries but has ${buf.length - HEADER} bytes of them`
    )
  const offsets = new Float64Array(count + 1)
  const zero = new Uint8Array(count)
  const hashes = Buffer.alloc(count * HASH_SIZE)
  let p = HEADER
  let pos = 0
  for (let i = 0; i < count; i++) {
    if (p >= buf.length) throw VmifsError.manifest('MANIFEST_TRUNCATED', `ends after ${i} of ${count} entries`)
    const tag = buf[p++]
    if (tag !== TAG_DATA && tag !== TAG_ZERO)
      throw VmifsError.manifest('MANIFEST_BAD_LENGTH', `entry ${i} has unknown tag ${tag}`)
    let len: number
    ;[len, p] = readVarint(buf, p)
    offsets[i] = pos
    pos += len
    if (tag === TAG_ZERO) {
      zero[i] = 1
    } else {
      if (p + HASH_SIZE > buf.length) throw VmifsError.manifest('MANIFEST_TRUNCATED', `entry ${i} ends inside its hash`)
      buf.copy(hashes, i * HASH_SIZE, p, p + HASH_SIZE)
      p += HASH_SIZE
    }
  }
  offsets[count] = pos
  if (p !== buf.length) throw VmifsError.manifest('MANIFEST_BAD_LENGTH', `${buf.length - p} bytes after the last entry`)
  const m = new Manifest(size, chunking, offsets, zero, hashes)
  validate(m)
  return m
}

/** Checks that hold for every manifest, whichever form it came from. */
function validate(m: Manifest): void {
  const max = maxChunkSize(m.chunking)
  const n = m.count
  if (m.size > 0 && n === 0) throw VmifsError.manifest('MANIFEST_RANGE_GAP', 'no entries for a non-empty image')
  if (m.offsets[n] !== m.size)
    throw VmifsError.manifest('MANIFEST_SIZE_MISMATCH', `entries cover ${m.offsets[n]} bytes, image size is ${m.size}`)
  for (let i = 0; i < n; i++) {
    const len = m.lengthAt(i)
    if (!(len > 0)) throw VmifsError.manifest('MANIFEST_BAD_LENGTH', `entry ${i} has length ${len}`, { entry: i })
    const isZero = m.zero[i] === 1
    if (isZero && i > 0 && m.zero[i - 1] === 1)
      throw VmifsError.manifest('MANIFEST_NOT_CANONICAL', `entries ${i - 1} and ${i} are adjacent zero runs`, {
        entry: i
      })
    if (!isZero && len > Math.min(max, MAX_CHUNK))
      throw VmifsError.manifest(
        'MANIFEST_BAD_LENGTH',
        `data entry ${i} is ${len} bytes, more than the chunking's maximum ${max}`,
        { entry: i }
      )
    if (m.chunking.kind === 'fixed') {
      const cs = m.chunking.chunkSize
      const last = i === n - 1
      if (m.offsets[i]! % cs !== 0)
        throw VmifsError.manifest('MANIFEST_BAD_LENGTH', `entry ${i} is not aligned to the ${cs}-byte chunk size`, {
          entry: i
        })
      if (!isZero && len !== cs && !last)
        throw VmifsError.manifest(
          'MANIFEST_BAD_LENGTH',
          `data entry ${i} is ${len} bytes in a fixed ${cs}-byte manifest`,
          { entry: i }
        )
    }
  }
}

/** Parse the JSON form (see manifests/manifest.schema.json); explicit offsets are checked. */
export function fromJson(input: unknown): Manifest {
  const bad = (msg: string): never => {
    throw VmifsError.manifest('MANIFEST_BAD_JSON', msg)
  }
  if (typeof input !== 'object' || input === null) return bad('not a JSON object')
  const j = input as Record<string, unknown>
  if (j.format !== 'vmifs-manifest') bad('format must be "vmifs-manifest"')
  if (j.version !== VERSION)
    throw VmifsError.manifest('MANIFEST_BAD_VERSION', `version ${String(j.version)} is not supported`)
  if (j.hash !== 'blake3-256')
    throw VmifsError.manifest('MANIFEST_BAD_HASH_SIZE', `hash must be "blake3-256", got ${JSON.stringify(j.hash)}`)
  if (!Number.isSafeInteger(j.size) || (j.size as number) < 0) bad('size must be a non-negative integer')
  if (typeof j.chunking !== 'object' || j.chunking === null) bad('chunking missing')
  const chunking = validateChunking(j.chunking as Chunking)
  if (!Array.isArray(j.chunks)) return bad('chunks must be an array')
  const b = new ManifestBuilder(chunking)
  let expect = 0
  let prevZero = false
  for (let i = 0; i < j.chunks.length; i++) {
    const c = j.chunks[i] as Record<string, unknown>
    if (typeof c !== 'object' || c === null) bad(`chunk ${i} is not an object`)
    if (!Number.isSafeInteger(c.offset) || !Number.isSafeInteger(c.length))
      bad(`chunk ${i} needs integer offset and length`)
    const off = c.offset as number
    const len = c.length as number
    if (off < expect)
      throw VmifsError.manifest(
        'MANIFEST_RANGE_OVERLAP',
        `chunk ${i} at ${off} overlaps the previous one (ends at ${expect})`,
        { entry: i }
      )
    if (off > expect)
      throw VmifsError.manifest('MANIFEST_RANGE_GAP', `bytes ${expect}..${off} are not covered (before chunk ${i})`, {
        entry: i
      })
    if (len <= 0) throw VmifsError.manifest('MANIFEST_BAD_LENGTH', `chunk ${i} has length ${len}`, { entry: i })
    if (c.zero === true) {
      if (c.hash !== undefined) bad(`chunk ${i} is zero and has a hash`)
      if (prevZero)
        throw VmifsError.manifest('MANIFEST_NOT_CANONICAL', `chunks ${i - 1} and ${i} are adjacent zero runs`, {
          entry: i
        })
      b.add(len, null)
      prevZero = true
    } else {
      if (typeof c.hash !== 'string' || !/^[0-9a-fA-F]*$/.test(c.hash)) bad(`chunk ${i} needs a hex hash`)
      if (!isHashHex((c.hash as string).toLowerCase()))
        throw VmifsError.manifest(
          'MANIFEST_BAD_HASH_SIZE',
          `chunk ${i} hash has ${(c.hash as string).length / 2} bytes, expected ${HASH_SIZE}`,
          { entry: i }
        )
      b.add(len, Buffer.from(c.hash as string, 'hex'))
      prevZero = false
    }
    expect = off + len
  }
  if (expect < (j.size as number))
    throw VmifsError.manifest('MANIFEST_RANGE_GAP', `bytes ${expect}..${j.size as number} are not covered`)
  if (expect > (j.size as number))
    throw VmifsError.manifest('MANIFEST_SIZE_MISMATCH', `chunks cover ${expect} bytes, size is ${j.size as number}`)
  const m = b.build()
  if (j.digest !== undefined && j.digest !== m.digest()) {
    const given = typeof j.digest === 'string' ? j.digest : JSON.stringify(j.digest)
    throw VmifsError.manifest('MANIFEST_DIGEST_MISMATCH', `digest ${given} does not match the chunks (${m.digest()})`)
  }
  return m
}
