// Loader for the C addon in native/ (built by node-gyp into build/Release).
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
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
  zeroBlocks(buf: Buffer, blockSize: number): Uint8Array

  // The FUSE session (native/fuse_session.c): see src/fuse/native-mount.ts for the contract.
  fuseMount(
    mountpoint: string,
    chunkDir: string,
    opts: { allowOther: boolean; maxReadahead: number; workers: number },
    onRequest: (kind: number, unique: bigint, ino: bigint, fh: number, off: number, size: number, flags: number) => void
  ): FuseSession
  fuseUnmount(s: FuseSession): void
  fuseSetImages(
    s: FuseSession,
    names: string[],
    digests: string[],
    sizes: number[],
    mtimesMs: number[],
    statsSize: number
  ): void
  fuseSetManifest(s: FuseSession, digest: string, offsets: Float64Array, zero: Uint8Array, hashes: Buffer): void
  fuseMarkCached(s: FuseSession, hashes: Buffer): void
  fuseMarkUncached(s: FuseSession, hashes: Buffer): void
  fuseReply(s: FuseSession, unique: bigint, errno: number): void
  fuseReplyData(s: FuseSession, unique: bigint, data: Buffer, length: number): void
  fuseReplyOpen(s: FuseSession, unique: bigint, ino: bigint, fh: number): void
  fuseReplyOpenStats(s: FuseSession, unique: bigint, fh: number, snapshot: Buffer): void
  fuseResubmit(s: FuseSession, unique: bigint): void
  fuseDrainEvents(s: FuseSession): Buffer
  fuseSessionInfo(s: FuseSession): { openImages: number; droppedEvents: number; workers: number }
}

/** An opaque handle to a mounted FUSE session. */
export type FuseSession = { readonly __fuseSession: unique symbol }

const here = path.dirname(fileURLToPath(import.meta.url))
// src/native -> project root is two levels up; dist/src/native -> three.
const candidates = [
  path.resolve(here, '../../build/Release/vmifs_native.node'),
  path.resolve(here, '../../../build/Release/vmifs_native.node')
]

let addon: NativeAddon | undefined

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
