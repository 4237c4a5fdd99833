// Loader for the C addon in native/ (built by node-gyp into build/Release).
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import fs from 'node:fs'
import path from 'node:path'
import { VmifsError } from '../errors.js'

export interface NativeAddon {
  fastcdcCut(
    buf: Buffer,
    start: number,
    end: number,
    minSize: number,
    normalSize: number,
    maxSize: number,
    maskS: bigint,
    maskL: bigint
  ): number
  setGear(table: Buffer): void
  /** an image's pass (native/chunker.c; src/manifests/chunker.ts is its contract) */
  chunkerNew(
    kind: number,
    a: number,
    b: number,
    c: number,
    maskS: bigint,
    maskL: bigint,
    zmin: number,
    cuts: Float64Array,
    opts: number
  ): unknown
  chunkerPush(
    chunker: unknown,
    buf: Buffer,
    final: boolean
  ): {
    n: number
    lengths: Float64Array
    offs: Float64Array
    flags: Uint8Array
    hashes: Buffer
    crcs: Uint32Array
    spill: Buffer | undefined
  }
  zeroBlocks(buf: Buffer, blockSize: number): Uint8Array
  blake3(buf: Buffer): Buffer
  crc32c(buf: Buffer): number
  /** the 32-byte hashes src[idx[k]], one after the other */
  gatherHashes(src: Buffer, idx: Uint32Array): Buffer
  /** a manifest's distinct data chunks in the order of their bytes, and their sizes */
  distinctHashes(hashes: Buffer, zero: Uint8Array, offsets: Float64Array): [Buffer, Float64Array]
  /** frees the blocks of [offset, offset + length) of an open file (fallocate PUNCH_HOLE) */
  punchHole(fd: number, offset: number, length: number): void
  /** flock(2): how 0 shared, 1 exclusive, 2 exclusive unless someone holds it (then false), 3 unlock */
  flock(fd: number, how: number): boolean
  /** one datagram to the service manager's notification socket ("@name": abstract namespace) */
  sdNotify(socket: string, message: string): boolean

  // The chunk store's index (native/chunk_index.c, LMDB); hashes: 32 bytes each, concatenated.
  ixOpen(path: string): unknown
  ixClose(ix: unknown): void
  ixHolds(ix: unknown, hashes: Buffer): Uint8Array
  /** 56-byte records (LOCATION_BYTES) of the entries of hashes[from..to) the index has */
  ixLocate(ix: unknown, hashes: Buffer, from?: number, to?: number): Buffer
  /** locs: pack, off, size, crc a chunk; pins: 1 to pin; returns 1 a chunk that was new */
  ixRecord(ix: unknown, hashes: Buffer, locs: Float64Array, pins: Uint8Array, now: number): Uint8Array
  /** the records of the entries deleted, and the sealed packs left empty */
  ixForget(ix: unknown, hashes: Buffer): [Buffer, Uint32Array]
  ixTouch(ix: unknown, hashes: Buffer, ats: Float64Array): number
  ixSetPinned(ix: unknown, hashes: Buffer, pinned: boolean): number
  /** unpinned entries, least recently used first, after the place `after` (atime in bytes 48..56); where it stopped */
  ixLru(ix: unknown, after: Buffer | undefined, limit: number, unreferenced: boolean): [Buffer, Buffer | undefined]
  /** entries in hash order after the hash `after` */
  ixEntries(ix: unknown, after: Buffer | undefined, limit: number): Buffer
  /** [bytes, count, pinned bytes] */
  ixTotals(ix: unknown): Float64Array
  /** moves an entry whose pack is onlyPack (-1: any) to pack/off with crc; false if there was none */
  ixSetEntry(ix: unknown, hash: Buffer, pack: number, off: number, crc: number, onlyPack: number): boolean
  /** 64-byte records: hash, pack, size, off u64, atime f64, crc, flags; then a recount */
  ixLoad(ix: unknown, records: Buffer): number
  ixRecount(ix: unknown): void
  ixPackNew(ix: unknown, writerTag: string): number
  /** what: 0 seal, 1 make a sealed empty row if none, 2 delete, 3 name its writer (tag); returns [live, sealed] */
  ixPackSet(ix: unknown, id: number, what: number, tag?: string): [number, boolean]
  /** [id, size, live, writer tag or null] a pack */
  ixPacks(ix: unknown): Array<[number, number, number, string | null]>
  /** the counts of chunks change; returns 1 a chunk no image refers to any more, 2 no pinned one holds */
  ixRefs(
    ix: unknown,
    hashes: Buffer,
    sizes: Float64Array | undefined,
    refs: number,
    pins: number,
    entries: boolean
  ): Uint8Array
  /** size, refs, pins a chunk */
  ixRefsGet(ix: unknown, hashes: Buffer): Float64Array
  ixRefsRebuild(ix: unknown, hashes: Buffer, sizes: Float64Array, pinned: Uint8Array): number
  ixReconcilePins(ix: unknown): number
  /** 44-byte records: hash, size u32, refs u32, pins u32 */
  ixLoadRefs(ix: unknown, records: Buffer): void

  // Appending to a pack file (native/pack_writer.c): direct writes skip the page cache.
  packCreate(path: string): PackWriter
  /**
   * the chunks' bytes, in order; at most 2048 a call; returns [offset, CRC32C] a chunk. Direct:
   * runs of chunks back to back in an alignedBuffer are written from it, each run's span at the
   * next 4 KiB-aligned offset (see native/pack_writer.c). crcs: the chunks' CRC32Cs where the
   * caller took them (else they are taken here)
   */
  packAppend(w: PackWriter, chunks: Buffer[], direct: boolean, crcs?: Uint32Array): Float64Array
  /** packAppend for chunks idx[k] of a chunker's run: in piece, or in spill where flags has CHUNK_SPILLED */
  packAppendRun(
    w: PackWriter,
    piece: Buffer,
    spill: Buffer | undefined,
    offs: Float64Array,
    lens: Float64Array,
    flags: Uint8Array,
    idx: Uint32Array,
    direct: boolean,
    crcs: Uint32Array
  ): Float64Array
  /** `size` bytes (rounded up to 4 KiB) of 2 MiB-aligned memory, in huge pages where the kernel gives them */
  alignedBuffer(size: number): Buffer
  packSync(w: PackWriter): void
  /** cuts the file to what was appended, syncs it, closes it */
  packClose(w: PackWriter): void

  // The FUSE session (native/fuse_session.c): see src/fuse/mount.ts for the contract.
  fuseMount(
    mountpoint: string,
    packDir: string,
    opts: { allowOther: boolean; maxReadahead: number; workers: number },
    onRequest: (kind: number, unique: bigint, ino: bigint, fh: number, off: number, size: number) => void
  ): FuseSession
  fuseUnmount(s: FuseSession): void
  /** a session on a live connection whose descriptor came from the holder */
  fuseAdopt(
    fd: number,
    mountpoint: string,
    packDir: string,
    opts: { maxReadahead: number; workers: number },
    onRequest: (kind: number, unique: bigint, ino: bigint, fh: number, off: number, size: number) => void
  ): FuseSession
  /** start serving, once the image list is set (resend: ask the kernel for what a dead daemon left) */
  fuseStart(s: FuseSession, resend: boolean): void
  /** stop reading requests (a successor takes over); answers to requests already handed out still go */
  fuseStopWorkers(s: FuseSession): void
  /** after fuseStopWorkers: close this descriptor, leaving the mount to the successor */
  fuseDetach(s: FuseSession): void
  fuseFd(s: FuseSession): number
  holderTake(socketPath: string): number
  holderQuit(socketPath: string): boolean
  fuseSetImages(
    s: FuseSession,
    names: string[],
    digests: string[],
    sizes: number[],
    mtimesMs: number[],
    statsSize: number
  ): void
  fuseSetManifest(s: FuseSession, digest: string, offsets: Float64Array, zero: Uint8Array, hashes: Buffer): void
  /** records of 48 bytes: hash[32], pack u32, length u32, offset u64 (little-endian) */
  fuseMarkCached(s: FuseSession, records: Buffer): void
  fuseMarkUncached(s: FuseSession, hashes: Buffer): void
  /** these packs were deleted: descriptors to them are closed (and reopened if they come back) */
  fusePacksChanged(s: FuseSession, ids: number[]): void
  fuseReply(s: FuseSession, unique: bigint, errno: number): void
  fuseReplyData(s: FuseSession, unique: bigint, data: Buffer, length: number): void
  fuseReplyOpen(s: FuseSession, unique: bigint, ino: bigint, fh: number): void
  /** with off and size: a read of a .stats handle opened under the previous agent, answered from this snapshot */
  fuseReplyOpenStats(s: FuseSession, unique: bigint, fh: number, snapshot: Buffer, off?: number, size?: number): void
  fuseResubmit(s: FuseSession, unique: bigint): void
  /** the mount's read-ahead: its bdi's read_ahead_kb file, written once INIT is answered */
  fuseSetReadahead(s: FuseSession, path: string, kb: number): void
  fuseDrainEvents(s: FuseSession): Buffer
}

/** An opaque handle to a pack file being appended to. */
export type PackWriter = { readonly __packWriter: unique symbol }

/** An opaque handle to a mounted FUSE session. */
export type FuseSession = { readonly __fuseSession: unique symbol }

const here = path.dirname(fileURLToPath(import.meta.url))
// src/native -> project root is two levels up; dist/src/native -> three.
const candidates = [
  path.resolve(here, '../../build/Release/vmifs_native.node'),
  path.resolve(here, '../../../build/Release/vmifs_native.node')
]

let addon: NativeAddon | undefined

/** The holder executable built beside the addon (native/fuse_holder.c). */
export function holderPath(): string {
  for (const c of candidates) {
    const p = path.join(path.dirname(c), 'vmifs-fuse-holder')
    if (fs.existsSync(p)) return p
  }
  throw new VmifsError('NATIVE_MISSING', 'the FUSE holder is not built: run `npm run build`', { candidates })
}

export function native(): NativeAddon {
  if (addon) return addon
  const require = createRequire(import.meta.url)
  for (const c of candidates) {
    try {
      addon = require(c) as NativeAddon
      return addon
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'MODULE_NOT_FOUND') throw err
    }
  }
  throw new VmifsError('NATIVE_MISSING', 'the native addon is not built: run `npm run build`', { candidates })
}
