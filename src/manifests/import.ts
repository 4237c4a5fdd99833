// Import: read an image file once, chunk it, hash each chunk, store the new ones in the cache
// (pinned), then record manifest and image in one transaction after the pack is synced.
import fsp from 'node:fs/promises'
import { VmifsError } from '../errors.js'
import type { DataDir } from '../datadir.js'
import type { ChunkStore } from '../cache/chunk-store.js'
import { validateName } from '../index/catalog.js'
import { native } from '../native/index.js'
import { readAt, readPieces } from '../util/files.js'
import { type Chunking, DEFAULT_CHUNKING, ZERO_BLOCK, validateChunking } from './chunking.js'
import { type FileLayout, type FsFound, findFileLayout } from './fs-layout.js'
import { CHUNK_FRESH, CHUNK_ZERO, type ChunkRun, createChunker } from './chunker.js'
import { type Manifest, ManifestBuilder } from './manifest.js'
import { type SigningKey, hostKey } from '../trust/keys.js'
import { signPublication } from '../trust/publications.js'

export interface ImportOptions {
  name: string
  chunking?: Chunking
  replace?: boolean
  pin?: boolean
  /** the publisher key that signs the image's publication (default: the data dir's host key) */
  signKey?: SigningKey
  /** called after each read with bytes done and total */
  onProgress?: (done: number, total: number) => void
}

export interface ImportResult {
  name: string
  digest: string
  size: number
  chunks: number
  dataChunks: number
  zeroBytes: number
  newChunks: number
  newBytes: number
  seconds: number
  manifest: Manifest
  /** the filesystems whose files the chunks were cut at (empty for fixed chunking or none found) */
  filesystems: FsFound[]
}

/** The image is read in pieces of this many bytes (the compute path of the import benchmark reads so too). */
export const READ_SIZE = 16 * 1024 * 1024
/**
 * A write to the pack: about this many bytes of chunks (or BATCH chunks), so that the bytes hashed
 * last are still in the CPU's last-level cache when they are copied into the pack.
 */
const BATCH_BYTES = 4 * 1024 * 1024
const BATCH = 512
/**
 * New chunks are recorded in a transaction once this many bytes of them are appended (or
 * RECORD_BATCH chunks). A transaction's cost is the index's leaf pages it dirties (random keys:
 * about one a chunk), each written to the WAL once a transaction: an import of 512 MiB of new data
 * (28,610 chunks) took 0.3-0.4 CPU s less in transactions of 256 MiB than of 4096 chunks. What is
 * appended and not recorded yet is cut back after a crash: a killed import loses at most this much.
 */
const RECORD_BYTES = 256 * 1024 * 1024
const RECORD_BATCH = 65536

/** Opens and checks an input image, mapping OS errors onto stable codes. */
export async function openInput(file: string): Promise<{ fh: fsp.FileHandle; size: number; mtimeMs: number }> {
  const fail = (err: unknown): never => {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'ENOTDIR')
      throw new VmifsError('INPUT_NOT_FOUND', `${file}: no such file`, { file })
    if (code === 'EISDIR')
      throw new VmifsError('INPUT_IS_DIRECTORY', `${file} is a directory, not an image file`, { file })
    throw new VmifsError(
      'INPUT_UNREADABLE',
      `${file}: cannot read (${code ?? (err as Error).message})`,
      { file },
      { cause: err }
    )
  }
  // stat first: opening a FIFO or a device could block or have side effects
  const pre = await fsp.stat(file).catch(fail)
  if (pre.isDirectory())
    throw new VmifsError('INPUT_IS_DIRECTORY', `${file} is a directory, not an image file`, { file })
  if (!pre.isFile()) throw new VmifsError('INPUT_UNREADABLE', `${file} is not a regular file`, { file })
  const fh = await fsp.open(file, 'r').catch(fail)
  const st = await fh.stat()
  if (!st.isFile()) {
    await fh.close()
    throw new VmifsError('INPUT_UNREADABLE', `${file} is not a regular file`, { file })
  }
  if (st.size === 0) {
    await fh.close()
    throw new VmifsError('INPUT_EMPTY', `${file} is empty`, { file })
  }
  return { fh, size: st.size, mtimeMs: st.mtimeMs }
}

/**
 * With file cuts asked for (cdc), the image's file layout; the chunking as the manifest will say
 * it: fileCuts only when files were found to cut at.
 */
export async function planCuts(
  fh: fsp.FileHandle,
  size: number,
  chunking: Chunking
): Promise<{ chunking: Chunking; layout?: FileLayout }> {
  if (chunking.kind !== 'cdc' || chunking.fileCuts !== true) return { chunking }
  const layout = await findFileLayout(async (pos, len) => await readAt(fh, pos, len), size, ZERO_BLOCK)
  if (layout.cuts.length === 0)
    return { chunking: { kind: 'cdc', min: chunking.min, avg: chunking.avg, max: chunking.max }, layout }
  return { chunking, layout }
}

export async function importImage(dd: DataDir, file: string, opts: ImportOptions): Promise<ImportResult> {
  const t0 = process.hrtime.bigint()
  validateName(opts.name)
  let chunking = validateChunking(opts.chunking ?? DEFAULT_CHUNKING)
  if (!(opts.replace ?? false) && dd.catalog.getImage(opts.name)) {
    throw new VmifsError(
      'NAME_TAKEN',
      `an image named ${JSON.stringify(opts.name)} exists (use --replace to replace it)`,
      { name: opts.name }
    )
  }
  const pin = opts.pin ?? true
  const { fh, size, mtimeMs } = await openInput(file)
  let layout: FileLayout | undefined
  try {
    ;({ chunking, layout } = await planCuts(fh, size, chunking))
  } catch (err) {
    await fh.close()
    throw new VmifsError(
      'INPUT_UNREADABLE',
      `${file}: cannot read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
      { file },
      { cause: err }
    )
  }
  // fresh and crc: the chunks new to this image are told apart, and their CRCs taken, in the pass
  const chunker = createChunker(chunking, layout?.cuts, { fresh: true, crc: true })
  const w = new ChunkWriter(dd.store, new ManifestBuilder(chunking), pin)
  let done = 0

  try {
    const got = await readPieces(fh, size, READ_SIZE, buf => {
      w.take(chunker.push(buf), buf) // all of buf's new chunks are written before it is read into again
      done += buf.length
      opts.onProgress?.(done, size)
    })
    if (got < size) throw new VmifsError('INPUT_CHANGED', `${file} shrank while it was imported`, { file })
    w.take(chunker.finish(), Buffer.alloc(0))
    w.record()
    const st = await fh.stat()
    if (st.size !== size || st.mtimeMs !== mtimeMs)
      throw new VmifsError('INPUT_CHANGED', `${file} changed while it was imported`, { file })
  } catch (err) {
    try {
      w.record()
    } catch {
      // the original error is the one to report; chunks appended but not recorded are bytes no entry points to
    }
    if (pin) dd.store.reconcilePins()
    throw err
  } finally {
    await fh.close()
  }
  const manifest = w.builder.build()
  dd.store.sync()
  const { collectable } = dd.catalog.addImage(opts.name, manifest, {
    pinned: pin,
    entriesPinned: pin,
    replace: opts.replace ?? false,
    source: file,
    publication: signPublication(
      opts.signKey ?? hostKey(dd.dir),
      { name: opts.name, digest: manifest.digest(), size: manifest.size },
      { byHost: opts.signKey === undefined }
    )
  })
  if (collectable.length > 0) dd.collect(collectable)
  if (dd.store.sizeBytes > dd.store.capacityBytes) dd.store.evict()
  dd.counters.add('import.images')
  dd.counters.add('import.bytes', size)
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9
  return {
    name: opts.name,
    digest: manifest.digest(),
    size,
    chunks: manifest.count,
    dataChunks: w.dataChunks,
    zeroBytes: w.zeroBytes,
    newChunks: w.newChunks,
    newBytes: w.newBytes,
    seconds,
    manifest,
    filesystems: layout?.filesystems ?? []
  }
}

/**
 * The import's chunks on their way into the manifest and the store. The chunks new to the image
 * (the pass tells them apart) go in batches: the cache is asked which of them it holds in one
 * read transaction, the rest are appended to this process's pack (one write), and those already
 * held are pinned, so that eviction cannot take them before the image row exists. The new ones
 * are recorded (and pinned) in transactions of RECORD_BYTES: until then nothing reads them, and a
 * crash cuts them back. Chunks travel as indexes into the pass's arrays, not as objects.
 * A class, not closures of importImage: its methods are compiled once for every import.
 */
class ChunkWriter {
  dataChunks = 0
  zeroBytes = 0
  newChunks = 0
  newBytes = 0
  // appended (their bytes written) and not recorded yet: hashes, and pack, offset, size, CRC a chunk
  private hashes = Buffer.allocUnsafe(RECORD_BATCH * 32)
  private locs = new Float64Array(RECORD_BATCH * 4)
  private appended = 0
  private appendedBytes = 0

  constructor(
    private readonly store: ChunkStore,
    readonly builder: ManifestBuilder,
    private readonly pin: boolean
  ) {}

  /** The chunker's run, in order: each chunk into the manifest, the new ones into the store. */
  take(run: ChunkRun, piece: Buffer): void {
    this.builder.addRun(run)
    const fresh = new Uint32Array(run.n)
    let n = 0
    for (let i = 0; i < run.n; i++) {
      const f = run.flags[i]!
      if ((f & CHUNK_ZERO) !== 0) this.zeroBytes += run.lengths[i]!
      else {
        this.dataChunks++
        if ((f & CHUNK_FRESH) !== 0) fresh[n++] = i
      }
    }
    for (let a = 0; a < n;) {
      let b = a
      let bytes = 0
      while (b < n && b - a < BATCH && bytes < BATCH_BYTES) bytes += run.lengths[fresh[b++]!]!
      this.write(run, piece, fresh.subarray(a, b))
      a = b
    }
  }

  /** One batch: those the store holds are pinned, the rest appended; records once there is enough. */
  private write(run: ChunkRun, piece: Buffer, idx: Uint32Array): void {
    const { store } = this
    const holds = store.holdsMany(native().gatherHashes(run.hashes, idx))
    let m = 0
    for (let k = 0; k < idx.length; k++) if (holds[k] !== 1) m++
    const pick = new Uint32Array(m)
    const held = new Uint32Array(idx.length - m)
    for (let k = 0, a = 0, b = 0; k < idx.length; k++)
      if (holds[k] === 1) held[b++] = idx[k]!
      else pick[a++] = idx[k]!
    if (m > 0) {
      const { pack, places } = store.appendRun(run, piece, pick)
      if (this.appended + m > this.locs.length / 4) this.record()
      native()
        .gatherHashes(run.hashes, pick)
        .copy(this.hashes, this.appended * 32)
      for (let j = 0; j < m; j++) {
        const at = this.appended++
        const size = run.lengths[pick[j]!]!
        this.locs[4 * at] = pack
        this.locs[4 * at + 1] = places[2 * j]!
        this.locs[4 * at + 2] = size
        this.locs[4 * at + 3] = places[2 * j + 1]!
        this.appendedBytes += size
      }
    }
    // those held are pinned at once: eviction must not take them before the image row exists
    if (this.pin && held.length > 0) store.pinMany(native().gatherHashes(run.hashes, held))
    if (this.appended >= RECORD_BATCH || this.appendedBytes >= RECORD_BYTES) this.record()
  }

  /** Records what was appended (all of it: the import ends, or fails). */
  record(): void {
    if (this.appended === 0) return
    const n = this.appended
    const r = this.store.recordMany(this.hashes.subarray(0, n * 32), this.locs.subarray(0, n * 4), this.pin)
    for (let i = 0; i < n; i++) if (r.fresh[i] === 1) this.newChunks++
    this.newBytes += r.bytes
    this.appended = 0
    this.appendedBytes = 0
  }
}
