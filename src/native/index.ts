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
}

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
