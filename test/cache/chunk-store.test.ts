import test, { type ExecutionContext } from 'ava'
import fs from 'node:fs'
import path from 'node:path'
import { ChunkStore } from '../../src/cache/chunk-store.js'
import { fsck } from '../../src/cache/fsck.js'
import { DataDir } from '../../src/datadir.js'
import { ManifestBuilder } from '../../src/manifests/manifest.js'
import { importImage } from '../../src/manifests/import.js'
import { blake3Hex } from '../../src/util/hash.js'
import { MIGRATIONS, openDb } from '../../src/index/db.js'
import { processTag } from '../../src/cache/chunk-store.js'
import { native } from '../../src/native/index.js'
import { listFiles, openDataDir, sleep, tmpDir } from '../helpers/tmp.js'
import { randomBuffer } from '../helpers/random.js'
import { allocated, chunkBytes, chunkFile, damageChunk, zeroAt } from '../helpers/chunks.js'

const crc32c = (b: Buffer): number => native().crc32c(b)

function errCode(err: unknown): string | undefined {
  return (err as { code?: string } | undefined)?.code
}

async function putChunk(dd: DataDir, seed: number, size = 1000, opts?: { pin?: boolean }): Promise<string> {
  const data = randomBuffer(size, seed)
  const hex = blake3Hex(data)
  if (!(await dd.store.put(hex, data, opts))) throw new Error('chunk was expected to be new')
  return hex
}

/** Records an image over the given (already stored) chunks without importing a file. */
function recordImage(dd: DataDir, name: string, hexes: string[], pinned: boolean, size = 1000): void {
  const b = new ManifestBuilder({ kind: 'cdc', min: 1024, avg: 4096, max: 16384 })
  for (const h of hexes) b.add(size, Buffer.from(h, 'hex'))
  dd.catalog.addImage(name, b.build(), { pinned, replace: false })
}

/** Imports a random file (fixed 4 KiB chunks) and returns its distinct chunk hashes. */
async function importRandom(
  t: ExecutionContext,
  dd: DataDir,
  name: string,
  bytes: number,
  seed: number
): Promise<string[]> {
  const file = path.join(tmpDir(t, 'vmifs-img-'), 'img.raw')
  fs.writeFileSync(file, randomBuffer(bytes, seed))
  const r = await importImage(dd, file, { name, chunking: { kind: 'fixed', chunkSize: 4096 } })
  return [...r.manifest.distinctChunks().keys()]
}

const pinnedFlag = (dd: DataDir, hex: string): number | undefined => {
  const p = dd.store.isPinned(hex)
  return p === undefined ? undefined : p ? 1 : 0
}

const writerOf = (dd: DataDir, id: number): string | null | undefined => dd.store.packs().find(p => p.id === id)?.writer

/** An unpinned entry's access time (ms epoch), from the index's least-recently-used order. */
function atimeOf(dd: DataDir, hex: string): number | undefined {
  let after: Buffer | undefined
  do {
    const [page, next] = native().ixLru(dd.store.index, after, 1024, false)
    for (let at = 0; at < page.length; at += 56)
      if (page.toString('hex', at, at + 32) === hex) return page.readDoubleLE(at + 48)
    after = next
  } while (after !== undefined)
  return undefined
}

/** Gives an entry another CRC in the index (bit rot of the index, not of the bytes). */
function damageCrc(dd: DataDir, hex: string, crc: number): void {
  const loc = dd.store.locate(hex)!
  native().ixSetEntry(dd.store.index, Buffer.from(hex, 'hex'), loc.pack, loc.off, crc, -1)
}

test('put appends verified bytes to a pack, nothing but them, and their CRC to the entry', async t => {
  const dd = openDataDir(t)
  const data = randomBuffer(5000, 1)
  const hex = blake3Hex(data)
  t.true(await dd.store.put(hex, data))
  t.true(dd.store.has(hex))
  const { file, pos, size } = chunkFile(dd, hex)
  t.deepEqual(listFiles(dd.store.packDir), [path.basename(file)])
  t.is(pos, 0)
  t.is(size, 5000)
  t.true(fs.readFileSync(file).equals(data))
  t.is(dd.store.locate(hex)!.crc, crc32c(data))
  t.is(dd.store.sizeBytes, 5000)
  t.true((await dd.store.read(hex)).equals(data))
  // a second put of the same chunk is not new and changes nothing
  t.false(await dd.store.put(hex, data))
  t.is(dd.store.sizeBytes, 5000)
  t.is(fs.statSync(file).size, 5000)
})

test('direct and buffered appends mix on one pack: every chunk is whole, also past a stage of 8 MiB', async t => {
  const dd = openDataDir(t)
  const items = (n: number, seed: number, size: (i: number) => number): Array<{ hash: Buffer; data: Buffer }> =>
    Array.from({ length: n }, (_, i) => {
      const data = randomBuffer(size(i), seed * 1000 + i)
      return { hash: Buffer.from(blake3Hex(data), 'hex'), data }
    })
  const batches = [
    { items: items(3, 1, i => 1000 + i), bulk: false }, // a partial block for the direct write to take up
    { items: items(200, 2, i => 65536 - 7 * i), bulk: true }, // ~12.6 MiB in one call: more than a stage
    { items: items(5, 3, i => 333 * (i + 1)), bulk: false },
    { items: items(2, 4, () => 9 * 1024 * 1024 + 5), bulk: true }, // chunks larger than the stage
    { items: items(50, 5, i => 4096 * ((i % 3) + 1)), bulk: true }
  ]
  let end = 0
  for (const b of batches) {
    const locs = dd.store.append(b.items, { bulk: b.bulk })
    t.is(locs[0]!.off, end) // chunks follow each other, whatever the way of writing
    end = locs.at(-1)!.off + locs.at(-1)!.size
    t.is(dd.store.record(b.items, locs, false).chunks, b.items.length)
  }
  dd.store.seal()
  const [pack] = listFiles(dd.store.packDir)
  t.is(fs.statSync(path.join(dd.store.packDir, pack!)).size, end) // the direct writes' padding is cut
  const bytes = fs.readFileSync(path.join(dd.store.packDir, pack!))
  for (const b of batches)
    for (const it of b.items) {
      const hex = it.hash.toString('hex')
      const { pos } = chunkFile(dd, hex)
      t.true(bytes.subarray(pos, pos + it.data.length).equals(it.data))
      t.is(dd.store.locate(hex)!.crc, crc32c(it.data))
      t.true((await dd.store.read(hex)).equals(it.data))
    }
})

test('direct appends write runs of chunks in an aligned buffer from it, each at the next aligned offset', async t => {
  const dd = openDataDir(t)
  const buf = native().alignedBuffer(4 * 1024 * 1024)
  buf.set(randomBuffer(buf.length, 80))
  // views of buf, back to back from an unaligned start: a run of 600 KiB, then, after a gap, one of 8 KiB
  const view = (from: number, len: number): { hash: Buffer; data: Buffer } => {
    const data = buf.subarray(from, from + len)
    return { hash: Buffer.from(blake3Hex(data), 'hex'), data }
  }
  const run = Array.from({ length: 60 }, (_, i) => view(1000 + i * 10240, 10240))
  const short = [view(700_000, 5000), view(705_000, 3000)]
  const first = { hash: Buffer.from(blake3Hex(randomBuffer(1234, 81)), 'hex'), data: randomBuffer(1234, 81) }
  const items = [first, ...run, ...short]
  const locs = dd.store.append(items, { bulk: true })
  t.is(locs[0]!.off, 0)
  // the run's span starts at the block after the first chunk's: its chunks keep their places in their blocks
  t.is(locs[1]!.off, 4096 + 1000)
  for (let i = 2; i <= 60; i++) t.is(locs[i]!.off, locs[i - 1]!.off + 10240)
  // too short to be written in place: packed after the run
  const runEnd = locs[60]!.off + 10240
  t.is(locs[61]!.off, runEnd)
  t.is(locs[62]!.off, runEnd + 5000)
  t.is(dd.store.record(items, locs, false).chunks, items.length)
  for (const [i, it] of items.entries()) {
    t.is(locs[i]!.crc, crc32c(it.data))
    t.true((await dd.store.read(it.hash.toString('hex'))).equals(it.data))
  }
  dd.store.seal()
  t.is(fs.statSync(dd.store.packPath(locs[0]!.pack)).size, runEnd + 8000)
})

test('record() tells new chunks from held ones: one twice in a call, or one held, counts once', async t => {
  const dd = openDataDir(t)
  const held = await putChunk(dd, 900, 1000)
  const items = Array.from({ length: 150 }, (_, i) => {
    const data = randomBuffer(1000 + i, 901 + i)
    return { hash: Buffer.from(blake3Hex(data), 'hex'), data }
  })
  const heldData = chunkBytes(dd, held)
  const all = [...items, items[3]!, { hash: Buffer.from(held, 'hex'), data: heldData }, items[140]!]
  const locs = dd.store.append(all, { bulk: true })
  const r = dd.store.record(all, locs, true)
  t.is(r.chunks, 150)
  t.is(
    r.bytes,
    items.reduce((n, it) => n + it.data.length, 0)
  )
  t.is(dd.store.sizeBytes, 1000 + r.bytes)
  // every one is recorded where its first copy went, pinned; the held chunk is now pinned too
  for (const [i, it] of items.entries()) {
    t.deepEqual(dd.store.locate(it.hash.toString('hex')), locs[i])
    t.is(pinnedFlag(dd, it.hash.toString('hex')), 1)
    t.true((await dd.store.read(it.hash.toString('hex'))).equals(it.data))
  }
  t.is(pinnedFlag(dd, held), 1)
  t.deepEqual(dd.store.holds([items[0]!.hash, Buffer.alloc(32), Buffer.from(held, 'hex')]), [true, false, true])
})

test('put rejects bytes that do not hash to the name', async t => {
  const dd = openDataDir(t)
  const good = randomBuffer(4096, 2)
  const hex = blake3Hex(good)
  const bad = Buffer.from(good)
  bad[100] = bad[100]! ^ 1
  const err = await t.throwsAsync(dd.store.put(hex, bad))
  t.is(errCode(err), 'CHUNK_HASH_MISMATCH')
  t.false(dd.store.has(hex))
  t.is(dd.store.sizeBytes, 0)
  t.deepEqual(listFiles(dd.store.packDir), [], 'nothing was written')
  t.is(errCode(await t.throwsAsync(dd.store.read(hex))), 'CHUNK_MISSING')
  // the right bytes are still accepted afterwards
  t.true(await dd.store.put(hex, good))
})

test("open() cuts back a dead writer's pack to its last recorded chunk, and leaves a live writer alone", async t => {
  const dir = tmpDir(t, 'vmifs-dd-')
  let dd = DataDir.open(dir, { capacityBytes: 1 << 30 })
  const a = await putChunk(dd, 1, 3000)
  const { file } = chunkFile(dd, a)
  const id = dd.store.locate(a)!.pack
  // a writer killed after appending but before recording: bytes past the last recorded chunk
  fs.appendFileSync(file, randomBuffer(777, 2))
  native().ixPackSet(dd.store.index, id, 3, '999999:1')
  // a live writer's pack (the parent process) with bytes it has not recorded yet
  const other = native().ixPackNew(dd.store.index, processTag(process.ppid))
  const otherFile = dd.store.packPath(other)
  fs.writeFileSync(otherFile, randomBuffer(500, 3))
  dd.db.close() // as after kill -9: the pack is not sealed
  dd = DataDir.open(dir, { capacityBytes: 1 << 30 })
  t.teardown(() => {
    dd.close()
  })
  t.is(dd.leftovers, 1)
  t.is(fs.statSync(file).size, 3000)
  t.is(writerOf(dd, id), null)
  t.true((await dd.store.read(a)).equals(randomBuffer(3000, 1)))
  t.is(fs.statSync(otherFile).size, 500)
  t.is(writerOf(dd, other), processTag(process.ppid))
  // new chunks go to a pack of this process's own
  const b = await putChunk(dd, 4, 1000)
  t.not(dd.store.locate(b)!.pack, id)
  t.not(dd.store.locate(b)!.pack, other)
})

test('a data dir of the old layout (a file per chunk) is refused until fsck converts it', async t => {
  const dir = tmpDir(t, 'vmifs-dd-')
  // what the previous version left: schema 2, chunk files under chunks/<xx>/<hash>
  const db = openDb(path.join(dir, 'index.sqlite'), MIGRATIONS.slice(0, 2))
  const chunks = [randomBuffer(3000, 60), randomBuffer(5000, 61), randomBuffer(100, 62)]
  const hexes = chunks.map(c => blake3Hex(c))
  chunks.forEach((c, i) => {
    const f = path.join(dir, 'chunks', hexes[i]!.slice(0, 2), hexes[i]!)
    fs.mkdirSync(path.dirname(f), { recursive: true })
    if (i < 2) fs.writeFileSync(f, c) // the third one's file is gone
    db.prepare('INSERT INTO cache_entries (hash, size, atime, pinned) VALUES (?, ?, ?, ?)').run(
      Buffer.from(hexes[i]!, 'hex'),
      c.length,
      1000 + i,
      i === 0 ? 1 : 0
    )
  })
  // the first chunk belongs to an image imported here: pinned
  db.prepare('INSERT INTO chunks (hash, size, refs, pins) VALUES (?, ?, 1, 1)').run(Buffer.from(hexes[0]!, 'hex'), 3000)
  const mb = new ManifestBuilder({ kind: 'fixed', chunkSize: 4096 })
  mb.add(3000, Buffer.from(hexes[0]!, 'hex'))
  const m = mb.build()
  db.prepare(
    'INSERT INTO manifests (digest, size, chunk_count, data_bytes, chunking, body, created_at) ' +
      'VALUES (?, ?, ?, ?, ?, ?, 0)'
  ).run(m.digest(), m.size, m.count, m.dataBytes(), JSON.stringify(m.chunking), m.encode())
  db.prepare('INSERT INTO images (name, digest, pinned, created_at) VALUES (?, ?, 1, 0)').run('mine', m.digest())
  // a sound chunk file the index never recorded, and a file that is not what its name says
  const extra = randomBuffer(700, 63)
  const extraHex = blake3Hex(extra)
  fs.mkdirSync(path.join(dir, 'chunks', extraHex.slice(0, 2)), { recursive: true })
  fs.writeFileSync(path.join(dir, 'chunks', extraHex.slice(0, 2), extraHex), extra)
  fs.writeFileSync(path.join(dir, 'chunks', hexes[0]!.slice(0, 2), blake3Hex(Buffer.from('x'))), 'liar')
  db.close()

  const err = t.throws(() => DataDir.open(dir, { capacityBytes: 1 << 30 }))
  t.is(errCode(err), 'DATA_DIR_OLD_LAYOUT')
  t.regex(err.message, /vmifs fsck --data-dir/)
  t.true(fs.existsSync(path.join(dir, 'chunks', hexes[0]!.slice(0, 2), hexes[0]!)), 'nothing was touched')

  const dd = DataDir.open(dir, { capacityBytes: 1 << 30, convert: true })
  const r = fsck(dd)
  t.is(r.converted, 3)
  t.deepEqual(r.missing, [hexes[2]])
  t.is(r.strays, 1)
  t.deepEqual(r.corrupt, [])
  dd.close()
  t.false(fs.existsSync(path.join(dir, 'chunks')))
  const again = DataDir.open(dir, { capacityBytes: 1 << 30 })
  t.teardown(() => {
    again.close()
  })
  for (const [i, h] of hexes.slice(0, 2).entries()) t.true((await again.store.read(h)).equals(chunks[i]!))
  t.true((await again.store.read(extraHex)).equals(extra))
  t.is(pinnedFlag(again, hexes[0]!), 1, 'the pin survives')
  t.is(atimeOf(again, hexes[1]!), 1001)
  t.is(again.store.sizeBytes, 3000 + 5000 + 700)
  const clean = fsck(again)
  t.deepEqual([clean.corrupt, clean.missing, clean.crcsRepaired, clean.converted, clean.strays], [[], [], 0, 0, 0])
})

test('reading a corrupted chunk fails, drops it and frees its bytes', async t => {
  const dd = openDataDir(t)
  const a = await putChunk(dd, 3, 8192 * 2)
  const b = await putChunk(dd, 4, 2000)
  const { file, pos, size } = chunkFile(dd, a)
  damageChunk(dd, a)
  const before = allocated(file)
  t.is(errCode(await t.throwsAsync(dd.store.read(a))), 'CHUNK_HASH_MISMATCH')
  t.false(dd.store.has(a))
  t.true(zeroAt(file, pos, size), 'a hole where it was')
  t.true(allocated(file) < before)
  t.is(dd.store.sizeBytes, 2000)
  // now it is simply missing
  t.is(errCode(await t.throwsAsync(dd.store.read(a))), 'CHUNK_MISSING')
  // bytes changed at the end are caught too
  damageChunk(dd, b, Buffer.from('xx'), 1998)
  t.is(errCode(await t.throwsAsync(dd.store.read(b))), 'CHUNK_HASH_MISMATCH')
  t.false(dd.store.has(b))
  t.is(dd.store.sizeBytes, 0)
})

test('CRC32C is the Castagnoli CRC', t => {
  t.is(crc32c(Buffer.from('123456789')), 0xe3069283)
  t.is(crc32c(Buffer.alloc(0)), 0)
  t.is(crc32c(Buffer.alloc(32)), 0x8a9136aa)
  // the table path and the instruction agree on lengths that are not a multiple of 8
  const b = randomBuffer(1000, 9)
  t.not(crc32c(b.subarray(0, 999)), crc32c(b.subarray(1, 1000)))
  // long inputs run as three streams joined by shifts: they agree with the CRC computed bit by bit,
  // at every length around the streams' edges and from unaligned starts
  const bitwise = (x: Buffer): number => {
    let c = 0xffffffff
    for (const byte of x) {
      c ^= byte
      for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1
    }
    return (c ^ 0xffffffff) >>> 0
  }
  // (and from 256 bytes on, where the CPU has VPCLMULQDQ, as eight folded lanes: around 128-byte steps)
  const long = randomBuffer(3 * 65536 + 100, 10)
  for (const n of [
    1,
    7,
    8,
    255,
    256,
    257,
    383,
    384,
    385,
    4095,
    12287,
    12288,
    12289,
    24583,
    36870,
    65536,
    3 * 65536 + 99
  ])
    for (const from of [0, 1, 5])
      t.is(crc32c(long.subarray(from, from + n)), bitwise(long.subarray(from, from + n)), `${n} from ${from}`)
})

test("a chunk whose entry's CRC is damaged is read (hashed, the CRC put right); damaged bytes are not", async t => {
  const dd = openDataDir(t)
  const a = await putChunk(dd, 7, 3000)
  const data = chunkBytes(dd, a)
  const crc = crc32c(data)
  damageCrc(dd, a, crc ^ 0x10)
  t.true((await dd.store.read(a)).equals(data))
  t.is(dd.store.locate(a)!.crc, crc)
  damageChunk(dd, a, Buffer.from('x'), 10)
  t.is(errCode(await t.throwsAsync(dd.store.read(a))), 'CHUNK_HASH_MISMATCH')
})

test('reading a chunk whose pack is gone fails with CHUNK_MISSING and forgets it', async t => {
  const dir = tmpDir(t, 'vmifs-dd-')
  let dd = DataDir.open(dir, { capacityBytes: 1 << 30 })
  const a = await putChunk(dd, 5, 3000)
  const { file } = chunkFile(dd, a)
  dd.close()
  const c = randomBuffer(1000, 6)
  dd = DataDir.open(dir, { capacityBytes: 1 << 30 })
  t.teardown(() => {
    dd.close()
  })
  await dd.store.put(blake3Hex(c), c) // in a pack of its own
  fs.rmSync(file)
  t.is(errCode(await t.throwsAsync(dd.store.read(a))), 'CHUNK_MISSING')
  t.false(dd.store.has(a))
  t.is(dd.store.sizeBytes, 1000)
  t.true((await dd.store.read(blake3Hex(c))).equals(c))
  t.is(errCode(await t.throwsAsync(dd.store.read(blake3Hex(Buffer.from('never stored'))))), 'CHUNK_MISSING')
})

test('LRU: the least recently read chunks are evicted first', async t => {
  const dd = openDataDir(t, 3500)
  const a = await putChunk(dd, 10)
  await sleep(5)
  const b = await putChunk(dd, 11)
  await sleep(5)
  const c = await putChunk(dd, 12)
  await sleep(5)
  await dd.store.read(a) // a is now the most recently used
  t.is(dd.store.flushAtimes(), 1)
  await sleep(5)
  const d = await putChunk(dd, 13) // over capacity: b goes
  t.deepEqual(
    [a, b, c, d].map(h => dd.store.has(h)),
    [true, false, true, true]
  )
  t.is(dd.store.sizeBytes, 3000)
  await sleep(5)
  await dd.store.read(c)
  dd.store.flushAtimes()
  await sleep(5)
  const e = await putChunk(dd, 14) // a (read before c, d and e) goes
  t.deepEqual(
    [a, c, d, e].map(h => dd.store.has(h)),
    [false, true, true, true]
  )
  await sleep(5)
  // a touch not yet flushed still counts: evict() flushes first
  await dd.store.read(d)
  await sleep(5)
  const f = await putChunk(dd, 15) // c goes, not d
  t.deepEqual(
    [c, d, e, f].map(h => dd.store.has(h)),
    [false, true, true, true]
  )
  t.true(dd.store.sizeBytes <= dd.store.capacityBytes)
  t.is(dd.counters.get('cache.evictions'), 3)
})

test('LRU: chunks no image refers to go before referenced ones', async t => {
  const dd = openDataDir(t, 3500)
  const x = await putChunk(dd, 20)
  await sleep(5) // the oldest, but referenced
  const y = await putChunk(dd, 21)
  await sleep(5)
  const z = await putChunk(dd, 22)
  await sleep(5)
  recordImage(dd, 'uses-x', [x], false)
  const w = await putChunk(dd, 23) // over capacity: y goes, not x
  t.deepEqual(
    [x, y, z, w].map(h => dd.store.has(h)),
    [true, false, true, true]
  )
  const r = dd.store.evict(1000) // down to one chunk: the referenced one stays longest
  t.deepEqual(r, { chunks: 2, bytes: 2000 })
  t.deepEqual(
    [x, z, w].map(h => dd.store.has(h)),
    [true, false, false]
  )
  t.deepEqual(dd.store.evict(0), { chunks: 1, bytes: 1000 })
  t.false(dd.store.has(x))
  t.is(dd.store.sizeBytes, 0)
})

test('eviction frees the bytes it evicts at once, and a pack nothing points into is deleted', async t => {
  const dir = tmpDir(t, 'vmifs-dd-')
  let dd = DataDir.open(dir, { capacityBytes: 1 << 30 })
  const hexes: string[] = []
  for (let i = 0; i < 64; i++) hexes.push(await putChunk(dd, 3000 + i, 16384))
  const { file } = chunkFile(dd, hexes[0]!)
  const full = allocated(file)
  t.true(full >= 64 * 16384)
  const locs = hexes.map(h => chunkFile(dd, h))
  t.deepEqual(dd.store.evict(32 * 16384), { chunks: 32, bytes: 32 * 16384 })
  // the 32 evicted (adjacent) chunks are one hole: nearly all their blocks are free
  t.true(allocated(file) <= full - 31 * 16384, `${allocated(file)} of ${full} still allocated`)
  for (const [i, l] of locs.entries()) t.is(zeroAt(l.file, l.pos, l.size), !dd.store.has(hexes[i]!))
  dd.store.evict(0)
  t.true(fs.existsSync(file), 'the pack this process writes to stays')
  dd.close()
  dd = DataDir.open(dir, { capacityBytes: 1 << 30 })
  t.teardown(() => {
    dd.close()
  })
  t.false(fs.existsSync(file), 'sealed and empty: deleted')
  t.deepEqual(listFiles(dd.store.packDir), [])
  t.is(dd.store.packs().length, 0)
})

// Known bug (src/cache/chunk-store.ts, evict()): the LRU query takes the 256 least recently used
// unpinned entries and only sorts *that page* by refs, so when more than 256 referenced chunks are
// older than an unreferenced one, referenced chunks are evicted first. Remove `.failing` once fixed.
test('LRU: unreferenced chunks go first even behind more than 256 older referenced ones', async t => {
  const dd = openDataDir(t)
  const old: string[] = []
  for (let i = 0; i < 300; i++) old.push(await putChunk(dd, 1000 + i, 100))
  recordImage(dd, 'many', old, false, 100)
  await sleep(5)
  const loose = await putChunk(dd, 2000, 100)
  t.deepEqual(dd.store.evict(dd.store.sizeBytes - 1), { chunks: 1, bytes: 100 })
  t.false(dd.store.has(loose), 'the unreferenced chunk should have gone')
  t.true(
    old.every(h => dd.store.has(h)),
    'a referenced chunk went instead'
  )
})

test('pinned chunks are never evicted, even over capacity', async t => {
  const dd = openDataDir(t, 50_000)
  const pinned = await importRandom(t, dd, 'local', 200_000, 30) // ~200 KB, all pinned
  t.true(pinned.length > 40)
  t.true(dd.store.sizeBytes > dd.store.capacityBytes)
  t.true(pinned.every(h => dd.store.has(h)))
  t.deepEqual(dd.store.evict(), { chunks: 0, bytes: 0 })
  t.deepEqual(dd.store.evict(0), { chunks: 0, bytes: 0 })
  // an unpinned chunk put now is the only candidate
  const u = await putChunk(dd, 31)
  t.false(dd.store.has(u))
  t.is(dd.counters.get('cache.evictions'), 1)
  for (const h of pinned) t.true((await dd.store.read(h)).length > 0)
  // pinning through put: also kept
  const p = await putChunk(dd, 32, 1000, { pin: true })
  t.true(dd.store.has(p))
  // once the image is gone the chunks may go
  const { collectable } = dd.catalog.removeImage('local')
  t.is(collectable.length, pinned.length)
  dd.store.reconcilePins() // p has no image: its pin was only provisional
  dd.store.evict()
  t.true(dd.store.sizeBytes <= dd.store.capacityBytes)
})

test('onEvict is told how many chunks and bytes went', async t => {
  const dir = tmpDir(t, 'vmifs-store-')
  const db = openDb(path.join(dir, 'index.sqlite'))
  t.teardown(() => {
    db.close()
  })
  const calls: Array<[number, number]> = []
  const store = new ChunkStore(dir, db, {
    capacityBytes: 2500,
    onEvict: (n, bytes) => {
      calls.push([n, bytes])
    }
  })
  store.open()
  const put = async (seed: number, size: number): Promise<string> => {
    const d = randomBuffer(size, seed)
    const h = blake3Hex(d)
    await store.put(h, d)
    await sleep(5)
    return h
  }
  await put(40, 1000)
  await put(41, 1000)
  t.deepEqual(calls, [])
  await put(42, 1000)
  t.deepEqual(calls, [[1, 1000]])
  await put(43, 2400) // two go
  t.deepEqual(calls, [
    [1, 1000],
    [2, 2000]
  ])
  t.deepEqual(store.evict(), { chunks: 0, bytes: 0 })
  t.is(calls.length, 2)
  t.deepEqual(store.evict(0), { chunks: 1, bytes: 2400 })
  t.deepEqual(calls, [
    [1, 1000],
    [2, 2000],
    [1, 2400]
  ])
})

test('fsck repairs the cache and reports incomplete images', async t => {
  const dd = openDataDir(t)
  const hs = await importRandom(t, dd, 'broken', 64 * 1024, 50)
  const ok = await importRandom(t, dd, 'fine', 16 * 1024, 51)
  t.is(hs.length, 16)
  const [corrupt, vanished, forgotten] = hs as [string, string, string]
  const before = dd.store.sizeBytes
  const { file, pos, size } = chunkFile(dd, corrupt)
  // a corrupted chunk
  damageChunk(dd, corrupt, Buffer.alloc(4096, 1))
  // a chunk whose pack is gone
  const v = dd.store.locate(vanished)!
  native().ixSetEntry(dd.store.index, Buffer.from(vanished, 'hex'), 9999, v.off, v.crc, -1)
  // an entry the index lost: its bytes are nobody's now, and its image lacks it
  native().ixForget(dd.store.index, Buffer.from(forgotten, 'hex'))
  // a sound chunk whose CRC in the index rotted
  const rotted = ok[0]!
  const crc = dd.store.locate(rotted)!.crc
  damageCrc(dd, rotted, crc ^ 0x100)
  // a pack file the index knows nothing of, and a stray in packs/
  dd.store.seal()
  const lost = path.join(dd.store.packDir, '777.pack')
  fs.writeFileSync(lost, randomBuffer(3000, 52))
  fs.writeFileSync(path.join(dd.store.packDir, 'notes.txt'), 'stray')

  const r = fsck(dd)
  t.deepEqual(r.corrupt, [corrupt])
  t.deepEqual(r.missing, [vanished])
  t.is(r.strays, 1)
  t.is(r.crcsRepaired, 1)
  // every recorded entry but the one whose pack is gone and the forgotten one
  t.is(r.checked, hs.length + ok.length - 2)
  t.deepEqual(r.incompleteImages, [{ name: 'broken', missingChunks: 3 }])

  t.false(dd.store.has(corrupt))
  t.true(zeroAt(file, pos, size), 'the corrupt chunk is a hole now')
  t.false(dd.store.has(vanished))
  t.false(dd.store.has(forgotten))
  t.is(dd.store.locate(rotted)!.crc, crc, 'the CRC corrected')
  t.true((await dd.store.read(rotted)).equals(chunkBytes(dd, rotted)))
  t.false(fs.existsSync(lost), 'a pack nothing points into is deleted')
  t.false(fs.existsSync(path.join(dd.store.packDir, 'notes.txt')))
  t.is(dd.store.sizeBytes, before - 3 * 4096)

  // a second run finds nothing to repair
  const again = fsck(dd)
  t.deepEqual([again.corrupt, again.missing, again.strays, again.crcsRepaired], [[], [], 0, 0])
  t.deepEqual(again.incompleteImages, [{ name: 'broken', missingChunks: 3 }])
})

test('a data dir whose packs put a header before each chunk is migrated on open: entries get their CRC', async t => {
  const dir = tmpDir(t, 'vmifs-dd-')
  // what the version before left: schema 4, packs of records (a 40-byte header, then the bytes)
  const db = openDb(path.join(dir, 'index.sqlite'), MIGRATIONS.slice(0, 4))
  const chunks = [randomBuffer(3000, 70), randomBuffer(5000, 71), randomBuffer(700, 72), randomBuffer(900, 73)]
  const hashes = chunks.map(c => Buffer.from(blake3Hex(c), 'hex'))
  const header = (i: number, v1 = false): Buffer => {
    const h = Buffer.alloc(40)
    h.writeUInt32LE(v1 ? 0x31434d56 : 0x32434d56, 0) // "VMC1", "VMC2"
    h.writeUInt32LE(chunks[i]!.length, 4)
    if (v1) hashes[i]!.copy(h, 8)
    else {
      h.writeUInt32LE(crc32c(chunks[i]!), 8)
      hashes[i]!.copy(h, 12, 0, 28)
    }
    return h
  }
  const rotten = Buffer.from(chunks[3]!)
  rotten[5] = rotten[5]! ^ 1
  const parts = [
    header(0),
    chunks[0]!, // a record of the second format: its CRC is taken from the header
    header(1, true),
    chunks[1]!, // of the first format (no CRC): the bytes are hashed, then their CRC taken
    Buffer.alloc(40, 0xee),
    chunks[2]!, // a damaged header, sound bytes: hashed too
    Buffer.alloc(40, 0xee),
    rotten // a damaged header and damaged bytes: dropped
  ]
  fs.mkdirSync(path.join(dir, 'packs'))
  fs.writeFileSync(path.join(dir, 'packs', '1.pack'), Buffer.concat(parts))
  db.prepare('INSERT INTO packs (id, writer, size, live) VALUES (1, NULL, ?, 4)').run(Buffer.concat(parts).length)
  let off = 0
  chunks.forEach((c, i) => {
    off += 40
    db.prepare('INSERT INTO cache_entries (hash, size, atime, pinned, pack, off) VALUES (?, ?, 1, 0, 1, ?)').run(
      hashes[i],
      c.length,
      off
    )
    off += c.length
  })
  db.close()

  const dd = DataDir.open(dir, { capacityBytes: 1 << 30 })
  t.teardown(() => {
    dd.close()
  })
  for (const i of [0, 1, 2]) {
    const hex = hashes[i]!.toString('hex')
    t.is(dd.store.locate(hex)!.crc, crc32c(chunks[i]!))
    t.true((await dd.store.read(hex)).equals(chunks[i]!))
  }
  t.false(dd.store.has(hashes[3]!.toString('hex')))
  t.is(dd.store.sizeBytes, 3000 + 5000 + 700)
  // the entries moved into store.mdb, and SQLite's tables of them are gone
  t.is(dd.db.prepare("SELECT count(*) FROM sqlite_master WHERE name IN ('cache_entries', 'packs')").pluck().get(), 0)
  const r = fsck(dd)
  t.deepEqual([r.corrupt, r.missing, r.crcsRepaired, r.checked], [[], [], 0, 3])
})

test("fsck counts the images' chunks again alone on the data dir, keeping them while another has it open", async t => {
  const dd = openDataDir(t)
  const hs = await importRandom(t, dd, 'mine', 8 * 4096, 80)
  const a = Buffer.from(hs[0]!, 'hex')
  // what a crash between the catalog's two transactions leaves: a count too high, and a fetched
  // chunk no image holds counted pinned
  dd.store.countRefs(a, undefined, 1, 1)
  const stray = await putChunk(dd, 81, 2000)
  dd.store.countRefs(Buffer.from(stray, 'hex'), Float64Array.of(2000), 1, 1)
  t.true(dd.store.isPinned(stray))
  const counts = (h: Buffer): number[] => [...dd.store.refCounts(h)].slice(1)

  const other = DataDir.open(dd.dir, { capacityBytes: 1 << 30 })
  const busy = fsck(dd)
  other.close()
  t.false(busy.countsRebuilt)
  t.deepEqual(counts(a), [2, 2], 'left as they were')

  const r = fsck(dd)
  t.true(r.countsRebuilt)
  t.deepEqual(counts(a), [1, 1])
  t.deepEqual(counts(Buffer.from(stray, 'hex')), [0, 0])
  t.false(dd.store.isPinned(stray), 'unpinned: no image holds it')
  t.true(dd.store.isPinned(hs[0]!))
})
