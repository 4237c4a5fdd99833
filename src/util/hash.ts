import { blake3 as b3 } from '@napi-rs/blake-hash'

export const HASH_SIZE = 32
const HEX64 = /^[0-9a-f]{64}$/

/** BLAKE3-256 of a buffer, as a 32-byte Buffer. */
export function blake3(data: Uint8Array): Buffer {
  return b3(Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength))
}

export function blake3Hex(data: Uint8Array): string {
  return blake3(data).toString('hex')
}

export function isHashHex(s: unknown): s is string {
  return typeof s === 'string' && HEX64.test(s)
}
