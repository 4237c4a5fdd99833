import test from 'ava'
import fs from 'node:fs'
import path from 'node:path'
import type { Chunking } from '../../src/manifests/chunking.js'
import { exportImage } from '../../src/manifests/export.js'
import { importImage } from '../../src/manifests/import.js'
import { damageChunk, chunkFile } from '../helpers/chunks.js'
import { listFiles, openDataDir, tmpDir } from '../helpers/tmp.js'
import { randomBuffer } from '../helpers/random.js'

const KiB = 1024
const MiB = 1024 * KiB

/** Random, zero (long, short, unaligned) and repeated regions, and an odd tail. */
function makeImage(seed: number): Buffer {
  const rnd = randomBuffer(1 * MiB + 333, seed)
  return Buffer.concat([
    rnd,
    Buffer.alloc(768 * KiB), // long zero run
    rnd.subarray(12_345, 12_345 + 600 * KiB), // repeated, unaligned
    Buffer.alloc(8192), // short zero run inside data
    randomBuffer(300 * KiB, seed + 1),
    rnd.subarray(0, 256 * KiB), // repeated, aligned to the image start
    Buffer.alloc(64 * KiB + 17),
    randomBuffer(77_777, seed + 2) // odd tail
  ])
}

function codeOf(err: unknown): string | undefined {
  return (err as { code?: string } | undefined)?.code
}

const CHUNKINGS: Chunking[] = [
  { kind: 'cdc', min: 16384, avg: 65536, max: 262144 },
  { kind: 'fixed', chunkSize: 65536 }
]

for (const chunking of CHUNKINGS) {
  test(`import then export reproduces the image (${chunking.kind})`, async t => {
    const dd = openDataDir(t)
    const work = tmpDir(t)
    const img = makeImage(1)
    const file = path.join(work, 'disk.raw')
    fs.writeFileSync(file, img)
    const progress: number[] = []
    const r = await importImage(dd, file, {
      name: 'disk',
      chunking,
      onProgress: done => {
        progress.push(done)
      }
    })
    t.is(r.name, 'disk')
    t.is(r.size, img.length)
    t.is(r.manifest.size, img.length)
    t.is(r.digest, r.manifest.digest())
    t.true(r.zeroBytes >= 512 * KiB, `zero bytes ${r.zeroBytes}`)
    t.is(
      r.zeroBytes,
      r.manifest
        .entries()
        .filter(e => e.zero)
        .reduce((a, e) => a + e.length, 0)
    )
    t.is(r.dataChunks, r.manifest.entries().filter(e => !e.zero).length)
    t.true(r.chunks > r.dataChunks)
    t.is(r.newChunks, r.manifest.distinctChunks().size)
    t.is(
      r.newBytes,
      [...r.manifest.distinctChunks().values()].reduce((a, b) => a + b, 0)
    )
    if (chunking.kind === 'cdc')
      t.true(r.newBytes < img.length - r.zeroBytes - 300 * KiB, 'the repeated regions are mostly stored once')
    t.is(progress.at(-1), img.length)
    // the catalog and the cache know it
    const row = dd.catalog.requireImage('disk')
    t.is(row.digest, r.digest)
    t.true(row.pinned)
    t.deepEqual(row.chunking, chunking)
    for (const h of r.manifest.distinctChunks().keys()) t.true(dd.store.has(h))

    const out = path.join(work, 'out.raw')
    const e = await exportImage(dd, 'disk', out)
    t.is(e.size, img.length)
    t.is(e.digest, r.digest)
    t.true(fs.readFileSync(out).equals(img))
    t.deepEqual(listFiles(work).sort(), ['disk.raw', 'out.raw'])
  })
}

test('an image that ends in zeros is exported at its full size', async t => {
  const dd = openDataDir(t)
  const work = tmpDir(t)
  const img = Buffer.concat([randomBuffer(100_000, 7), Buffer.alloc(1 * MiB + 5)])
  const file = path.join(work, 'in.raw')
  fs.writeFileSync(file, img)
  const r = await importImage(dd, file, { name: 'tail' })
  t.true(r.manifest.entries().at(-1)!.zero)
  const out = path.join(work, 'out.raw')
  await exportImage(dd, 'tail', out)
  t.is(fs.statSync(out).size, img.length)
  t.true(fs.readFileSync(out).equals(img))
})

test('an all-zero image stores no chunk at all', async t => {
  const dd = openDataDir(t)
  const work = tmpDir(t)
  const file = path.join(work, 'zero.raw')
  fs.writeFileSync(file, Buffer.alloc(2 * MiB + 1))
  const r = await importImage(dd, file, { name: 'zero' })
  t.deepEqual([r.chunks, r.dataChunks, r.newChunks, r.zeroBytes], [1, 0, 0, 2 * MiB + 1])
  t.is(dd.store.sizeBytes, 0)
  const out = path.join(work, 'out.raw')
  await exportImage(dd, 'zero', out)
  t.true(fs.readFileSync(out).equals(Buffer.alloc(2 * MiB + 1)))
})

test('re-importing the same content stores no new chunks and gives the same digest', async t => {
  const dd = openDataDir(t)
  const work = tmpDir(t)
  const img = makeImage(2)
  const a = path.join(work, 'a.raw')
  const b = path.join(work, 'b.raw')
  fs.writeFileSync(a, img)
  fs.writeFileSync(b, img)
  const r1 = await importImage(dd, a, { name: 'first' })
  t.true(r1.newChunks > 0)
  const size = dd.store.sizeBytes
  const packBytes = listFiles(dd.store.packDir).map(f => fs.statSync(path.join(dd.store.packDir, f)).size)
  const r2 = await importImage(dd, b, { name: 'second' })
  t.is(r2.newChunks, 0)
  t.is(r2.newBytes, 0)
  t.is(r2.digest, r1.digest)
  t.is(dd.store.sizeBytes, size)
  t.deepEqual(
    listFiles(dd.store.packDir).map(f => fs.statSync(path.join(dd.store.packDir, f)).size),
    packBytes,
    'nothing was appended'
  )
  t.deepEqual(
    dd.catalog.listImages().map(i => [i.name, i.digest]),
    [
      ['first', r1.digest],
      ['second', r1.digest]
    ]
  )
  // another chunking is another manifest
  const r3 = await importImage(dd, b, { name: 'third', chunking: { kind: 'fixed', chunkSize: 65536 } })
  t.not(r3.digest, r1.digest)
  // exporting either gives the same bytes
  const out = path.join(work, 'second.raw')
  await exportImage(dd, 'second', out)
  t.true(fs.readFileSync(out).equals(img))
})

test('import input errors', async t => {
  const dd = openDataDir(t)
  const work = tmpDir(t)
  const missing = await t.throwsAsync(importImage(dd, path.join(work, 'nope.raw'), { name: 'x' }))
  t.is(codeOf(missing), 'INPUT_NOT_FOUND')
  t.is(codeOf(await t.throwsAsync(importImage(dd, work, { name: 'x' }))), 'INPUT_IS_DIRECTORY')
  const empty = path.join(work, 'empty.raw')
  fs.writeFileSync(empty, '')
  t.is(codeOf(await t.throwsAsync(importImage(dd, empty, { name: 'x' }))), 'INPUT_EMPTY')
  const ok = path.join(work, 'ok.raw')
  fs.writeFileSync(ok, randomBuffer(100_000, 3))
  t.is(codeOf(await t.throwsAsync(importImage(dd, ok, { name: 'bad name' }))), 'NAME_INVALID')
  t.deepEqual(dd.catalog.listImages(), [])
  t.is(dd.store.sizeBytes, 0)

  const r = await importImage(dd, ok, { name: 'x' })
  const other = path.join(work, 'other.raw')
  fs.writeFileSync(other, randomBuffer(50_000, 4))
  t.is(codeOf(await t.throwsAsync(importImage(dd, other, { name: 'x' }))), 'NAME_TAKEN')
  t.is(dd.catalog.requireImage('x').digest, r.digest)
  t.is(dd.store.sizeBytes, r.newBytes, 'the refused import stored nothing')
  // with replace it goes through, and the old chunks are collected
  const r2 = await importImage(dd, other, { name: 'x', replace: true })
  t.is(dd.catalog.requireImage('x').digest, r2.digest)
  t.is(dd.store.sizeBytes, r2.newBytes)
  for (const h of r.manifest.distinctChunks().keys()) t.false(dd.store.has(h))
})

test('export refuses to overwrite unless forced', async t => {
  const dd = openDataDir(t)
  const work = tmpDir(t)
  const img = randomBuffer(200_000, 5)
  const file = path.join(work, 'in.raw')
  fs.writeFileSync(file, img)
  await importImage(dd, file, { name: 'img' })
  const out = path.join(work, 'out.raw')
  fs.writeFileSync(out, 'precious')
  t.is(codeOf(await t.throwsAsync(exportImage(dd, 'img', out))), 'OUTPUT_EXISTS')
  t.is(fs.readFileSync(out, 'utf8'), 'precious')
  await exportImage(dd, 'img', out, { force: true })
  t.true(fs.readFileSync(out).equals(img))
  t.is(codeOf(await t.throwsAsync(exportImage(dd, 'nope', path.join(work, 'nope.raw')))), 'IMAGE_NOT_FOUND')
  t.deepEqual(listFiles(work).sort(), ['in.raw', 'out.raw'])
})

test('export of an image with a corrupted chunk fails and leaves no output', async t => {
  const dd = openDataDir(t)
  const work = tmpDir(t)
  const img = makeImage(6)
  const file = path.join(work, 'in.raw')
  fs.writeFileSync(file, img)
  const r = await importImage(dd, file, { name: 'img' })
  // corrupt a chunk in the middle of the image (not the first one written)
  const hashes = r.manifest
    .entries()
    .filter(e => !e.zero)
    .map(e => e.hash!)
  const victim = hashes[Math.floor(hashes.length / 2)]!
  damageChunk(dd, victim, undefined, chunkFile(dd, victim).size - 1)

  const out = path.join(work, 'out.raw')
  t.is(codeOf(await t.throwsAsync(exportImage(dd, 'img', out))), 'CHUNK_HASH_MISMATCH')
  t.false(fs.existsSync(out))
  t.deepEqual(listFiles(work), ['in.raw'], 'no temp file left behind')
  t.false(dd.store.has(victim))
  // the chunk is gone now: a second export reports it missing
  t.is(codeOf(await t.throwsAsync(exportImage(dd, 'img', out))), 'CHUNK_MISSING')
  t.false(fs.existsSync(out))
  // an existing output is left alone too when forced over
  fs.writeFileSync(out, 'keep me')
  t.is(codeOf(await t.throwsAsync(exportImage(dd, 'img', out, { force: true }))), 'CHUNK_MISSING')
  t.is(fs.readFileSync(out, 'utf8'), 'keep me')
  t.deepEqual(listFiles(work).sort(), ['in.raw', 'out.raw'])
})
