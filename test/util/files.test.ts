import fs from 'node:fs'
import fsp from 'node:fs/promises'
import path from 'node:path'
import test from 'ava'
import { readPieces } from '../../src/util/files.js'
import { randomBuffer } from '../helpers/random.js'
import { tmpDir } from '../helpers/tmp.js'

/** Reads `file` with readPieces, copying each piece out (the buffers are read into again). */
async function readAll(
  file: string,
  size: number,
  piece: number
): Promise<{ got: number; data: Buffer; pieces: number[] }> {
  const fh = await fsp.open(file, 'r')
  const parts: Buffer[] = []
  const pieces: number[] = []
  try {
    const got = await readPieces(fh, size, piece, buf => {
      parts.push(Buffer.from(buf))
      pieces.push(buf.length)
    })
    return { got, data: Buffer.concat(parts), pieces }
  } finally {
    await fh.close()
  }
}

test('readPieces gives the file in order, in pieces of the size asked, the last one short', async t => {
  const file = path.join(tmpDir(t), 'f')
  const bytes = randomBuffer(10 * 4096 + 123, 1)
  fs.writeFileSync(file, bytes)
  for (const piece of [4096, 3 * 4096, 7, bytes.length, bytes.length * 2]) {
    const r = await readAll(file, bytes.length, piece)
    t.is(r.got, bytes.length)
    t.true(r.data.equals(bytes), `piece ${piece}`)
    t.true(r.pieces.slice(0, -1).every(n => n === Math.min(piece, bytes.length)))
    t.is(r.pieces.at(-1), bytes.length - Math.min(piece, bytes.length) * (r.pieces.length - 1))
  }
})

test('readPieces stops where a file shrank and says how much it read', async t => {
  const file = path.join(tmpDir(t), 'f')
  const bytes = randomBuffer(5000, 2)
  fs.writeFileSync(file, bytes)
  const r = await readAll(file, 8192, 1024)
  t.is(r.got, 5000)
  t.true(r.data.equals(bytes))
  t.deepEqual(r.pieces, [1024, 1024, 1024, 1024, 904])
  t.is((await readAll(file, 0, 1024)).got, 0)
})

test('readPieces passes on what its callback throws, after the read ahead has settled', async t => {
  const file = path.join(tmpDir(t), 'f')
  fs.writeFileSync(file, randomBuffer(8192, 3))
  const fh = await fsp.open(file, 'r')
  try {
    let calls = 0
    await t.throwsAsync(
      readPieces(fh, 8192, 1024, () => {
        if (++calls === 2) throw new Error('stop here')
      }),
      { message: 'stop here' }
    )
    t.is(calls, 2)
  } finally {
    await fh.close()
  }
})
