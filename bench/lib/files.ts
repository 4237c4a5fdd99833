// File helpers for the benchmarks: whole-file reads without fs.readFile's 2 GiB limit.
import fs from 'node:fs'

const PIECE = 16 * 1024 * 1024

/** Reads a whole file into one Buffer, in 16 MiB reads. */
export function readWhole (file: string): Buffer {
  const fd = fs.openSync(file, 'r')
  try {
    const size = fs.fstatSync(fd).size
    const buf = Buffer.allocUnsafe(size)
    let off = 0
    while (off < size) {
      const n = fs.readSync(fd, buf, off, Math.min(PIECE, size - off), off)
      if (n === 0) throw new Error(`${file} shrank while it was read`)
      off += n
    }
    return buf
  } finally {
    fs.closeSync(fd)
  }
}

/** Reads a file once and drops the bytes (warms the page cache); returns its size. */
export function readThrough (file: string): number {
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
