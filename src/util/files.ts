// Whole and partial file reads shared by import, the chunk cache and the benchmarks.
import fs from 'node:fs'
import type fsp from 'node:fs/promises'

const PIECE = 16 * 1024 * 1024

/** Reads up to `len` bytes at `pos` into a fresh buffer (shorter only at end of file). */
export async function readAt(fh: fsp.FileHandle, pos: number, len: number): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(len)
  let off = 0
  while (off < len) {
    const { bytesRead } = await fh.read(buf, off, len - off, pos + off)
    if (bytesRead === 0) break
    off += bytesRead
  }
  return off === len ? buf : buf.subarray(0, off)
}

/** Exactly `len` bytes at `pos` of an open file (into `into` if given); undefined when the file ends first. */
export function readExactlySync(fd: number, pos: number, len: number, into?: Buffer): Buffer | undefined {
  const buf = into ?? Buffer.allocUnsafe(len)
  for (let got = 0; got < len;) {
    const n = fs.readSync(fd, buf, got, len - got, pos + got)
    if (n === 0) return undefined
    got += n
  }
  return buf
}

/**
 * One open/fstat/read/close on the calling thread, in reads of at most 16 MiB (so files over
 * fs.readFile's 2 GiB limit work too). Returns what was there if the file shrank meanwhile.
 */
export function readWholeSync(file: string): Buffer {
  const fd = fs.openSync(file, 'r')
  try {
    const size = fs.fstatSync(fd).size
    const buf = Buffer.allocUnsafe(size)
    let off = 0
    while (off < size) {
      const n = fs.readSync(fd, buf, off, Math.min(PIECE, size - off), off)
      if (n === 0) break
      off += n
    }
    return off === size ? buf : buf.subarray(0, off)
  } finally {
    fs.closeSync(fd)
  }
}

/** Writes a small file under a temporary name beside it, then renames it into place. */
export function writeFileAtomic(file: string, data: string | Buffer): void {
  const tmp = `${file}.${process.pid}.tmp`
  try {
    fs.writeFileSync(tmp, data)
    fs.renameSync(tmp, file)
  } catch (err) {
    fs.rmSync(tmp, { force: true })
    throw err
  }
}
