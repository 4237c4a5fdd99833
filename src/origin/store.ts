// The origin store's format, version 2 (manifests/STORE.md): chunks packed in large files in the
// order of the image that first brought them, each stored raw or brotli-compressed; one binary
// index per manifest (chunk → pack, offset, stored length, size, codec), so a run of missing
// chunks is one HTTP range request; a store statement (store.json) signed by the host that wrote
// the store, naming each manifest's index and published usage model by BLAKE3 digest.
// Everything here is pure: encoding, decoding (with the error codes of the spec), signing,
// checking, and planning the range requests for a set of chunks.
import { VmifsError } from '../errors.js'
import { HASH_SIZE, blake3, isHashHex } from '../util/hash.js'
import { type SigningKey, isPublicKeyText, isSignatureText, verifySignature } from '../trust/keys.js'
import { MAX_CHUNK } from '../manifests/chunking.js'

export const STORE_FORMAT = 2
export const INDEX_MAGIC = Buffer.from('VMIX')
export const INDEX_VERSION = 1
const INDEX_HEADER = 48
const PACK_ID_BYTES = 16
const ENTRY_BYTES = HASH_SIZE + 4 + 8 + 4 + 4 + 1

export const CODEC_RAW = 0
export const CODEC_BROTLI = 1
export type Codec = typeof CODEC_RAW | typeof CODEC_BROTLI

/** A pack file's name: the first 16 bytes of the BLAKE3 of its bytes, in hex (packs/<id>.pack). */
export const PACK_ID = /^[0-9a-f]{32}$/

/** Where one chunk lives in the store. */
export interface ChunkLoc {
  pack: string
  offset: number
  /** bytes in the pack */
  stored: number
  /** bytes of the chunk (after decompression) */
  size: number
  codec: Codec
}

export interface IndexEntry extends ChunkLoc {
  hash: string
}

/** The index of one manifest: every distinct data chunk of the image, in image order. */
export interface PackIndex {
  manifest: string
  entries: IndexEntry[]
}

const bad = (msg: string): VmifsError => new VmifsError('ORIGIN_INDEX_INVALID', `origin index: ${msg}`)

export function encodeIndex(ix: PackIndex): Buffer {
  const packs: string[] = []
  const packNo = new Map<string, number>()
  for (const e of ix.entries)
    if (!packNo.has(e.pack)) {
      packNo.set(e.pack, packs.length)
      packs.push(e.pack)
    }
  const out = Buffer.alloc(INDEX_HEADER + packs.length * PACK_ID_BYTES + ix.entries.length * ENTRY_BYTES)
  INDEX_MAGIC.copy(out, 0)
  out[4] = INDEX_VERSION
  Buffer.from(ix.manifest, 'hex').copy(out, 8)
  out.writeUInt32LE(packs.length, 40)
  out.writeUInt32LE(ix.entries.length, 44)
  let p = INDEX_HEADER
  for (const id of packs) p += Buffer.from(id, 'hex').copy(out, p)
  for (const e of ix.entries) {
    p += Buffer.from(e.hash, 'hex').copy(out, p)
    p = out.writeUInt32LE(packNo.get(e.pack)!, p)
    p = out.writeBigUInt64LE(BigInt(e.offset), p)
    p = out.writeUInt32LE(e.stored, p)
    p = out.writeUInt32LE(e.size, p)
    p = out.writeUInt8(e.codec, p)
  }
  return out
}

/** The index in `b` (ORIGIN_INDEX_INVALID when it breaks a rule of the spec). */
export function decodeIndex(b: Buffer): PackIndex {
  if (b.length < INDEX_HEADER || !b.subarray(0, 4).equals(INDEX_MAGIC)) throw bad('not an index (magic)')
  if (b[4] !== INDEX_VERSION) throw bad(`version ${b[4]} is not ${INDEX_VERSION}`)
  if (b[5] !== 0 || b[6] !== 0 || b[7] !== 0) throw bad('reserved bytes are not 0')
  const manifest = b.subarray(8, 40).toString('hex')
  const nPacks = b.readUInt32LE(40)
  const n = b.readUInt32LE(44)
  if (b.length !== INDEX_HEADER + nPacks * PACK_ID_BYTES + n * ENTRY_BYTES)
    throw bad('length does not match its counts')
  const packs: string[] = []
  let p = INDEX_HEADER
  for (let i = 0; i < nPacks; i++, p += PACK_ID_BYTES) packs.push(b.subarray(p, p + PACK_ID_BYTES).toString('hex'))
  const entries: IndexEntry[] = []
  for (let i = 0; i < n; i++, p += ENTRY_BYTES) {
    const pk = b.readUInt32LE(p + HASH_SIZE)
    const offset = Number(b.readBigUInt64LE(p + HASH_SIZE + 4))
    const stored = b.readUInt32LE(p + HASH_SIZE + 12)
    const size = b.readUInt32LE(p + HASH_SIZE + 16)
    const codec = b[p + HASH_SIZE + 20]!
    if (pk >= nPacks) throw bad(`entry ${i} names pack ${pk} of ${nPacks}`)
    if (codec !== CODEC_RAW && codec !== CODEC_BROTLI) throw bad(`entry ${i} has codec ${codec}`)
    if (size < 1 || size > MAX_CHUNK) throw bad(`entry ${i} is ${size} bytes (1..${MAX_CHUNK})`)
    if (stored < 1 || (codec === CODEC_RAW ? stored !== size : stored > size))
      throw bad(`entry ${i} stores ${stored} bytes of ${size}`)
    if (!Number.isSafeInteger(offset + stored)) throw bad(`entry ${i} lies past 2^53`)
    entries.push({ hash: b.subarray(p, p + HASH_SIZE).toString('hex'), pack: packs[pk]!, offset, stored, size, codec })
  }
  return { manifest, entries }
}

/** What the store offers for one manifest: its index, and its usage model if one was published. */
export interface StoredImage {
  /** BLAKE3 hex of indexes/<manifest digest> */
  index: string
  /** BLAKE3 hex of models/<manifest digest>.json, the published boot profile */
  model?: string
}

/** store.json: the store's format and, signed by the host that wrote it, what it offers per manifest. */
export interface StoreStatement {
  format: typeof STORE_FORMAT
  writtenAt: number
  images: Record<string, StoredImage>
  /** the writer's public key, and its host certificate when it has one */
  signer: string
  sig: string
  cert?: unknown
}

function statementMessage(writtenAt: number, images: Record<string, StoredImage>): string {
  const lines = Object.keys(images)
    .sort()
    .map(d => `${d} ${images[d]!.index} ${images[d]!.model ?? '-'}`)
  return `vmifs-store/2\n${writtenAt}\n${lines.join('\n')}`
}

export function signStatement(
  key: SigningKey,
  images: Record<string, StoredImage>,
  cert?: unknown,
  now = Date.now()
): StoreStatement {
  return {
    format: STORE_FORMAT,
    writtenAt: now,
    images,
    signer: key.publicKey,
    sig: key.sign(statementMessage(now, images)),
    ...(cert !== undefined ? { cert } : {})
  }
}

/**
 * store.json as parsed JSON, checked for shape and signature (not for whom the signer is: the
 * caller's). Throws ORIGIN_FORMAT_OLD for a store of format 1, ORIGIN_STORE_INVALID otherwise.
 */
export function checkStatement(v: unknown): StoreStatement {
  const invalid = (why: string): VmifsError => new VmifsError('ORIGIN_STORE_INVALID', `origin store.json: ${why}`)
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw invalid('not an object')
  const s = v as Record<string, unknown>
  if (s.format !== STORE_FORMAT) throw invalid(`format ${JSON.stringify(s.format)} is not ${STORE_FORMAT}`)
  if (typeof s.writtenAt !== 'number' || !Number.isSafeInteger(s.writtenAt)) throw invalid('no writtenAt')
  if (typeof s.images !== 'object' || s.images === null || Array.isArray(s.images)) throw invalid('no images')
  const images: Record<string, StoredImage> = {}
  for (const [d, e] of Object.entries(s.images as Record<string, unknown>)) {
    const x = e as Record<string, unknown> | null
    if (!isHashHex(d) || typeof x !== 'object' || x === null || !isHashHex(x.index))
      throw invalid(`entry ${JSON.stringify(d)} is not {index, model?}`)
    if (x.model !== undefined && !isHashHex(x.model)) throw invalid(`entry ${d}: model is not a digest`)
    images[d] = { index: x.index, ...(x.model !== undefined ? { model: x.model } : {}) }
  }
  if (!isPublicKeyText(s.signer) || !isSignatureText(s.sig)) throw invalid('not signed')
  if (!verifySignature(s.signer, statementMessage(s.writtenAt, images), s.sig))
    throw invalid('its signature does not verify')
  return {
    format: STORE_FORMAT,
    writtenAt: s.writtenAt,
    images,
    signer: s.signer,
    sig: s.sig,
    ...(s.cert !== undefined ? { cert: s.cert } : {})
  }
}

/** The error for a store of format 1 (one file per chunk), with the command that converts it. */
export function oldFormat(where: string): VmifsError {
  return new VmifsError(
    'ORIGIN_FORMAT_OLD',
    `the origin store at ${where} is of format 1 (one file per chunk), which this version does not read: ` +
      'convert it where its files are with `vmifs publish-store --convert <dir>`',
    { where }
  )
}

/** One range request: a stretch of a pack and the chunks it brings. */
export interface RangeRequest {
  pack: string
  start: number
  /** exclusive */
  end: number
  chunks: Array<{ hash: string; loc: ChunkLoc }>
}

/**
 * The range requests that bring `chunks`: those of a pack sorted by offset, merged while the gap
 * between two is at most `gapBytes` (fetched through: cheaper than another request) and the
 * range stays within `maxBytes` (a chunk larger than that is a range of its own).
 */
export function planRanges(
  chunks: Iterable<{ hash: string; loc: ChunkLoc }>,
  gapBytes: number,
  maxBytes: number
): RangeRequest[] {
  const byPack = new Map<string, Array<{ hash: string; loc: ChunkLoc }>>()
  const seen = new Set<string>()
  for (const c of chunks) {
    if (seen.has(c.hash)) continue
    seen.add(c.hash)
    const l = byPack.get(c.loc.pack)
    if (l) l.push(c)
    else byPack.set(c.loc.pack, [c])
  }
  const out: RangeRequest[] = []
  for (const [pack, list] of byPack) {
    list.sort((a, b) => a.loc.offset - b.loc.offset)
    let cur: RangeRequest | undefined
    for (const c of list) {
      const end = c.loc.offset + c.loc.stored
      if (cur && c.loc.offset - cur.end <= gapBytes && Math.max(cur.end, end) - cur.start <= maxBytes) {
        cur.end = Math.max(cur.end, end)
        cur.chunks.push(c)
      } else {
        cur = { pack, start: c.loc.offset, end, chunks: [c] }
        out.push(cur)
      }
    }
  }
  return out
}

/** The pack id of `bytes`. */
export function packId(bytes: Buffer): string {
  return blake3(bytes).subarray(0, PACK_ID_BYTES).toString('hex')
}
