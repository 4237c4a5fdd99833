// Whole and partial file reads shared by import, the chunk cache and the benchmarks.
import fs from 'node:fs'
import type fsp from 'node:fs/promises'
import { native } from '../native/index.js'

const PIECE = 16 * 1024 * 1024

/** Reads up to `len` bytes at `pos` into a fresh buffer (shorter only at end of file). */
export async function readAt(fh: fsp.FileHandle, pos: number, len: number): Promise<Buffer> {
  return await fill(fh, Buffer.allocUnsafe(len), pos)
}

/** Reads into `buf` from `pos` until it is full or the file ends; the part filled. */
async function fill(fh: fsp.FileHandle, buf: Buffer, pos: number): Promise<Buffer> {
  let off = 0
  while (off < buf.length) {
    const { bytesRead } = await fh.read(buf, off, buf.length - off, pos + off)
    if (bytesRead === 0) break
    off += bytesRead
  }
  return off === buf.length ? buf : buf.subarray(0, off)
}

/**
 * Reads the first `size` bytes of a file in pieces of `piece` bytes, one read ahead of `each`,
 * into two buffers taken in turns: `each` must keep no view of the piece it is given after it
 * returns (the buffer is read into again). Returns the bytes read: less than `size` when the file
 * ended first. Reusing the buffers spares the garbage collector a large allocation a piece; they
 * are the addon's aligned buffers, so that the chunk store writes chunks from them without a copy.
 */
export async function readPieces(
  fh: fsp.FileHandle,
  size: number,
  piece: number,
  each: (buf: Buffer) => void
): Promise<number> {
  const n = Math.min(piece, size)
  if (n <= 0) return 0
  const bufs = [native().alignedBuffer(n), native().alignedBuffer(n)]
  const part = (k: number, pos: number): Promise<Buffer> => fill(fh, bufs[k]!.subarray(0, Math.min(n, size - pos)), pos)
  let pos = 0
  let k = 0
  let next: Promise<Buffer> | undefined = part(0, 0)
  while (next !== undefined) {
    const buf = await next
    if (buf.length === 0) break
    pos += buf.length
    k ^= 1
    next = pos < size ? part(k, pos) : undefined
    try {
      each(buf)
    } catch (err) {
      await next?.catch(() => {})
      throw err
    }
  }
  return pos
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
