// Writes an origin store of format 2 (manifests/STORE.md) in a directory any static web server
// serves: the chunks an image brings that the store lacks, packed in image order and compressed
// where it pays; an index per manifest; published usage models; and store.json, signed last (a
// host reads only what the statement names, so a writer stopped half-way leaves a store that is
// still whole: unnamed packs are only garbage). Every chunk is hashed before it is packed.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import zlib from 'node:zlib'
import { promisify } from 'node:util'
import { VmifsError } from '../errors.js'
import type { Manifest } from '../manifests/manifest.js'
import { decode as decodeManifest } from '../manifests/manifest.js'
import type { SigningKey } from '../trust/keys.js'
import { blake3 } from '../util/hash.js'
import { writeFileAtomic } from '../util/files.js'
import {
  CODEC_BROTLI,
  CODEC_RAW,
  type ChunkLoc,
  type Codec,
  type IndexEntry,
  type StoredImage,
  checkStatement,
  decodeIndex,
  encodeIndex,
  oldFormat,
  packId,
  signStatement
} from './store.js'

const brotli = promisify(zlib.brotliCompress)

/** A pack is closed once it holds this many bytes (packs are read by range: their size only bounds the file count). */
export const PACK_TARGET = 64 * 1024 * 1024
/**
 * Brotli quality 5, chosen with `npm run bench -- origin-compress` (docs/benchmarks/origin-compress.md):
 * single 16 KiB chunks of a Debian image keep 30.3 % of their bytes at 43 MB/s a core; quality 11
 * keeps 28.5 % at 0.7 MB/s, which makes publishing a GiB take 25 minutes a core.
 */
export const PACK_QUALITY = 5
/** A chunk is stored raw unless compressing it saves at least this share of it. */
export const MIN_SAVING = 1 / 16

export interface WriteReport {
  chunks: number
  /** bytes of the chunks written */
  bytes: number
  /** bytes they take in packs */
  storedBytes: number
  packs: number
}

export class StoreWriter {
  /** every chunk the store holds (from the indexes its statement names) */
  private readonly locs = new Map<string, ChunkLoc>()
  private readonly images: Record<string, StoredImage> = {}
  private pending: Buffer[] = []
  private pendingBytes = 0
  /** entries of chunks in the open pack (their pack id is known when it closes) */
  private open: IndexEntry[] = []
  readonly report: WriteReport = { chunks: 0, bytes: 0, storedBytes: 0, packs: 0 }

  /** The store in `dir` (a new one if there is none); ORIGIN_FORMAT_OLD for a store of format 1. */
  constructor(readonly dir: string) {
    const stmt = path.join(dir, 'store.json')
    if (fs.existsSync(stmt)) {
      const s = checkStatement(JSON.parse(fs.readFileSync(stmt, 'utf8')) as unknown)
      for (const [digest, img] of Object.entries(s.images)) {
        const b = fs.readFileSync(this.indexFile(digest))
        if (blake3(b).toString('hex') !== img.index)
          throw new VmifsError('ORIGIN_STORE_INVALID', `${this.indexFile(digest)} does not match store.json`)
        for (const e of decodeIndex(b).entries) this.locs.set(e.hash, e)
        this.images[digest] = img
      }
    } else if (fs.existsSync(path.join(dir, 'chunks'))) throw oldFormat(dir)
    for (const d of ['packs', 'indexes', 'manifests', 'models']) fs.mkdirSync(path.join(dir, d), { recursive: true })
  }

  private indexFile(digest: string): string {
    return path.join(this.dir, 'indexes', digest)
  }

  has(digest: string): boolean {
    return this.images[digest] !== undefined
  }

  /**
   * Adds the manifest's image: its chunks the store lacks (read through `read`, which must give
   * verified bytes: they are hashed again here), its manifest and its index.
   */
  async addImage(m: Manifest, read: (hash: string) => Promise<Buffer>): Promise<void> {
    const digest = m.digest()
    const entries: IndexEntry[] = []
    const fresh: Array<{ hash: string; entry: IndexEntry }> = []
    for (const [hash, size] of m.distinctChunks()) {
      const loc = this.locs.get(hash)
      if (loc) entries.push({ hash, ...loc })
      else {
        const entry: IndexEntry = { hash, pack: '', offset: 0, stored: 0, size, codec: CODEC_RAW }
        entries.push(entry)
        fresh.push({ hash, entry })
      }
    }
    // compressed on the thread pool, a window at a time, packed in image order
    const window = Math.max(2, os.availableParallelism() * 2)
    const work: Array<Promise<{ data: Buffer; packed: Buffer; codec: Codec }> | undefined> = []
    const start = (i: number): void => {
      const { hash, entry } = fresh[i]!
      const p = read(hash).then(async (data): Promise<{ data: Buffer; packed: Buffer; codec: Codec }> => {
        const got = blake3(data).toString('hex')
        if (data.length !== entry.size || got !== hash) throw VmifsError.hashMismatch(hash, got)
        const z = await brotli(data, {
          params: {
            [zlib.constants.BROTLI_PARAM_QUALITY]: PACK_QUALITY,
            [zlib.constants.BROTLI_PARAM_SIZE_HINT]: data.length
          }
        })
        return z.length <= data.length * (1 - MIN_SAVING)
          ? { data, packed: z, codec: CODEC_BROTLI }
          : { data, packed: data, codec: CODEC_RAW }
      })
      p.catch(() => {}) // awaited in order below: a failure is thrown there
      work[i] = p
    }
    for (let i = 0; i < Math.min(window, fresh.length); i++) start(i)
    for (let i = 0; i < fresh.length; i++) {
      const r = await work[i]!
      work[i] = undefined
      if (i + window < fresh.length) start(i + window)
      const e = fresh[i]!.entry
      e.offset = this.pendingBytes
      e.stored = r.packed.length
      e.codec = r.codec
      this.pending.push(r.packed)
      this.pendingBytes += r.packed.length
      this.open.push(e)
      this.locs.set(e.hash, e)
      this.report.chunks++
      this.report.bytes += r.data.length
      this.report.storedBytes += r.packed.length
      if (this.pendingBytes >= PACK_TARGET) this.closePack()
    }
    this.closePack()
    const mf = path.join(this.dir, 'manifests', digest)
    if (!fs.existsSync(mf)) writeFileAtomic(mf, m.encode())
    const index = encodeIndex({ manifest: digest, entries })
    writeFileAtomic(this.indexFile(digest), index)
    this.images[digest] = { ...this.images[digest], index: blake3(index).toString('hex') }
  }

  /** Publishes `model` (a usage model's JSON) as the manifest's boot profile. */
  addModel(digest: string, model: unknown): void {
    const img = this.images[digest]
    if (!img) throw new VmifsError('IMAGE_NOT_FOUND', `the store has no image of manifest ${digest}`, { digest })
    const text = Buffer.from(JSON.stringify(model))
    writeFileAtomic(path.join(this.dir, 'models', `${digest}.json`), text)
    img.model = blake3(text).toString('hex')
  }

  private closePack(): void {
    if (this.pending.length === 0) return
    const bytes = Buffer.concat(this.pending)
    const id = packId(bytes)
    writeFileAtomic(path.join(this.dir, 'packs', `${id}.pack`), bytes)
    for (const e of this.open) e.pack = id
    this.pending = []
    this.pendingBytes = 0
    this.open = []
    this.report.packs++
  }

  /** Writes store.json, signed by `key` (with its host certificate, if any). */
  finish(key: SigningKey, cert?: unknown): void {
    this.closePack()
    const s = signStatement(key, this.images, cert)
    writeFileAtomic(path.join(this.dir, 'store.json'), JSON.stringify(s, null, 1) + '\n')
  }
}

/**
 * Converts the store of format 1 in `dir` (chunks/<h[0:2]>/<h>) to format 2 in place: every
 * image of its images.json is packed (each chunk checked against its name on the way), the
 * statement signed by `key`; chunks/ is removed last. Returns what was written.
 */
export async function convertV1(
  dir: string,
  key: SigningKey,
  cert?: unknown
): Promise<WriteReport & { images: number }> {
  const chunkDir = path.join(dir, 'chunks')
  if (!fs.existsSync(chunkDir))
    throw new VmifsError('ORIGIN_STORE_INVALID', `${dir} is not a store of format 1 (it has no chunks/)`)
  const listFile = path.join(dir, 'images.json')
  const list = fs.existsSync(listFile)
    ? (JSON.parse(fs.readFileSync(listFile, 'utf8')) as Record<string, { digest?: unknown }>)
    : {}
  fs.renameSync(chunkDir, `${chunkDir}.v1`) // so that the writer sees no format-1 store
  const v1 = `${chunkDir}.v1`
  try {
    const w = new StoreWriter(dir)
    let images = 0
    for (const e of Object.values(list)) {
      if (typeof e.digest !== 'string' || w.has(e.digest)) continue
      const m = decodeManifest(fs.readFileSync(path.join(dir, 'manifests', e.digest)))
      await w.addImage(m, async h => fs.promises.readFile(path.join(v1, h.slice(0, 2), h)))
      images++
    }
    w.finish(key, cert)
    fs.rmSync(v1, { recursive: true, force: true })
    return { ...w.report, images }
  } catch (err) {
    if (!fs.existsSync(chunkDir)) fs.renameSync(v1, chunkDir)
    throw err
  }
}
