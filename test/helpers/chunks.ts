// Reaching into a data dir's pack files, for tests that damage or inspect stored chunks.
import fs from 'node:fs'
import type { DataDir } from '../../src/datadir.js'

/** Where a stored chunk's bytes are: its pack file, the offset of its bytes, their length. */
export function chunkFile(dd: DataDir, hex: string): { file: string; pos: number; size: number } {
  const loc = dd.store.locate(hex)
  if (!loc) throw new Error(`chunk ${hex} is not stored`)
  return { file: dd.store.packPath(loc.pack), pos: loc.off, size: loc.size }
}

/** The stored bytes of a chunk, as they are on disk (unverified). */
export function chunkBytes(dd: DataDir, hex: string): Buffer {
  const { file, pos, size } = chunkFile(dd, hex)
  const fd = fs.openSync(file, 'r')
  try {
    const b = Buffer.alloc(size)
    fs.readSync(fd, b, 0, size, pos)
    return b
  } finally {
    fs.closeSync(fd)
  }
}

/** Writes over a stored chunk's bytes at `at` (default: flips its first byte). */
export function damageChunk(dd: DataDir, hex: string, bytes?: Buffer, at = 0): void {
  const { file, pos } = chunkFile(dd, hex)
  const fd = fs.openSync(file, 'r+')
  try {
    const b = bytes ?? Buffer.from([chunkBytes(dd, hex)[at]! ^ 0xff])
    fs.writeSync(fd, b, 0, b.length, pos + at)
  } finally {
    fs.closeSync(fd)
  }
}

/** Whether every byte of [pos, pos + size) of a file reads as zero (a punched hole does). */
export function zeroAt(file: string, pos: number, size: number): boolean {
  const fd = fs.openSync(file, 'r')
  try {
    const b = Buffer.alloc(size)
    const n = fs.readSync(fd, b, 0, size, pos)
    return b.subarray(0, n).every(x => x === 0)
  } finally {
    fs.closeSync(fd)
  }
}

/** Bytes of disk a file takes (holes take none). */
export function allocated(file: string): number {
  return fs.statSync(file).blocks * 512
}
