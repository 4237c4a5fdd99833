// File helpers for the benchmarks (whole-file reads: src/util/files.ts readWholeSync).
import fs from 'node:fs'

const PIECE = 16 * 1024 * 1024

/** Reads a file once and drops the bytes (warms the page cache); returns its size. */
export function readThrough(file: string): number {
  const fd = fs.openSync(file, 'r')
  try {
    const buf = Buffer.allocUnsafe(PIECE)
    let total = 0
    for (;;) {
      const n = fs.readSync(fd, buf, 0, PIECE, total)
      if (n === 0) return total
      total += n
    }
  } finally {
    fs.closeSync(fd)
  }
}
