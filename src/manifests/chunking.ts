// Chunking parameters and the deterministic pieces every vmifs host must agree on
// (the gear table and the masks), so that equal content gives equal chunks fleet-wide.
import { blake3 } from '../util/hash.js'
import { VmifsError } from '../errors.js'

export const ZERO_BLOCK = 4096 // granularity at which zero runs are found
export const MAX_CHUNK = 16 * 1024 * 1024

export type Chunking =
  | { kind: 'fixed'; chunkSize: number }
  /**
   * fileCuts: also cut where the files of the image's filesystems start and end
   * (manifests/fs-layout.ts). A manifest says true only when a filesystem's files were found.
   */
  | { kind: 'cdc'; min: number; avg: number; max: number; fileCuts?: boolean }

/** The measured default (see docs/chunking.md). */
export const DEFAULT_CHUNKING: Chunking = { kind: 'cdc', min: 4096, avg: 16384, max: 65536, fileCuts: true }

const isPow2 = (n: number): boolean => Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0

export function validateChunking(c: Chunking): Chunking {
  if (c.kind === 'fixed') {
    if (!isPow2(c.chunkSize) || c.chunkSize < ZERO_BLOCK || c.chunkSize > MAX_CHUNK) {
      throw VmifsError.manifest(
        'MANIFEST_BAD_CHUNKING',
        `fixed chunk size must be a power of two from ${ZERO_BLOCK} to ${MAX_CHUNK}, got ${c.chunkSize}`
      )
    }
    return { kind: 'fixed', chunkSize: c.chunkSize }
  }
  if (c.kind === 'cdc') {
    const { min, avg, max } = c
    if (
      !isPow2(avg) ||
      !Number.isInteger(min) ||
      !Number.isInteger(max) ||
      min < 1024 ||
      !(min < avg && avg < max) ||
      max > MAX_CHUNK ||
      avg < 4096
    ) {
      throw VmifsError.manifest(
        'MANIFEST_BAD_CHUNKING',
        `cdc needs 1024 <= min < avg < max <= ${MAX_CHUNK}, avg a power of two >= 4096; got ${min}/${avg}/${max}`
      )
    }
    if (c.fileCuts !== undefined && typeof c.fileCuts !== 'boolean') {
      throw VmifsError.manifest(
        'MANIFEST_BAD_CHUNKING',
        `cdc fileCuts must be true or false, got ${JSON.stringify(c.fileCuts)}`
      )
    }
    return c.fileCuts === true ? { kind: 'cdc', min, avg, max, fileCuts: true } : { kind: 'cdc', min, avg, max }
  }
  throw VmifsError.manifest(
    'MANIFEST_BAD_CHUNKING',
    `unknown chunking ${JSON.stringify((c as { kind?: unknown }).kind)}`
  )
}

/** Largest data chunk a manifest with this chunking may hold. */
export function maxChunkSize(c: Chunking): number {
  return c.kind === 'fixed' ? c.chunkSize : c.max
}

/** Zero runs shorter than this stay inside data chunks (CDC only). */
export function zeroRunMin(c: Chunking): number {
  return c.kind === 'fixed' ? c.chunkSize : Math.max(ZERO_BLOCK, c.min)
}

let gearCache: { table: Buffer; values: BigUint64Array } | undefined

/** G[i] = first 8 bytes (little endian) of BLAKE3("vmifs-gear-v1" || i), i = 0..255. */
export function gearTable(): { table: Buffer; values: BigUint64Array } {
  if (gearCache) return gearCache
  const table = Buffer.alloc(256 * 8)
  const values = new BigUint64Array(256)
  for (let i = 0; i < 256; i++) {
    const h = blake3(Buffer.concat([Buffer.from('vmifs-gear-v1'), Buffer.from([i])]))
    h.copy(table, i * 8, 0, 8)
    values[i] = h.readBigUInt64LE(0)
  }
  gearCache = { table, values }
  return gearCache
}

/**
 * `bits` bits set just below bit 63: a cut is where (h & mask) == 0. High bits depend on the last
 * 63 bytes; bit 63 stays clear so the native loop can test two bytes per step.
 */
export function topMask(bits: number): bigint {
  return ((1n << BigInt(bits)) - 1n) << BigInt(63 - bits)
}

/** FastCDC normalization level 2: stricter mask before avg, looser after. */
export function cdcMasks(avg: number): { maskS: bigint; maskL: bigint } {
  const bits = Math.round(Math.log2(avg))
  return { maskS: topMask(bits + 2), maskL: topMask(bits - 2) }
}
