import test, { type ExecutionContext } from 'ava'
import fs from 'node:fs'
import path from 'node:path'
import { ChunkStore } from '../../src/cache/chunk-store.js'
import { fsck } from '../../src/cache/fsck.js'
import { DataDir } from '../../src/datadir.js'
import { openDb } from '../../src/index/db.js'
import { ManifestBuilder } from '../../src/manifests/manifest.js'
import { importImage } from '../../src/manifests/import.js'
import { blake3Hex } from '../../src/util/hash.js'
import { listFiles, openDataDir, sleep, tmpDir } from '../helpers/tmp.js'
import { randomBuffer } from '../helpers/random.js'

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

const pinnedFlag = (dd: DataDir, hex: string): number | undefined =>
  dd.db.prepare('SELECT pinned FROM cache_entries WHERE hash = ?').pluck().get(Buffer.from(hex, 'hex')) as
    number | undefined

test('put stores verified bytes atomically; tmp/ is empty afterwards', async t => {
  const dd = openDataDir(t)
  const data = randomBuffer(5000, 1)
  const hex = blake3Hex(data)
  t.true(await dd.store.put(hex, data))
  t.true(dd.store.has(hex))
  t.true(fs.readFileSync(dd.store.pathOf(hex)).equals(data))
  t.deepEqual(listFiles(dd.store.tmpDir), [])
  t.deepEqual(listFiles(dd.store.chunkDir), [path.join(hex.slice(0, 2), hex)])
  t.is(dd.store.sizeBytes, 5000)
  t.true((await dd.store.read(hex)).equals(data))
  // a second put of the same chunk is not new and changes nothing
  t.false(await dd.store.put(hex, data))
  t.is(dd.store.sizeBytes, 5000)
  t.deepEqual(listFiles(dd.store.tmpDir), [])
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
  t.deepEqual(listFiles(dd.store.chunkDir), [])
  t.deepEqual(listFiles(dd.store.tmpDir), [])
  t.is(errCode(await t.throwsAsync(dd.store.read(hex))), 'CHUNK_MISSING')
  // the right bytes are still accepted afterwards
  t.true(await dd.store.put(hex, good))
})

test('open() removes temp files of dead writers and keeps those of live ones', t => {
  const dir = tmpDir(t, 'vmifs-dd-')
  fs.mkdirSync(path.join(dir, 'tmp'))
  let dead = 999999
  const alive = (pid: number): boolean => {
    try {
      process.kill(pid, 0)
      return true
    } catch (err) {
      return (err as NodeJS.ErrnoException).code === 'EPERM'
    }
  }
  while (alive(dead)) dead++
  t.false(alive(dead))
  fs.writeFileSync(path.join(dir, 'tmp', `${dead}-abc`), 'half a chunk')
  fs.writeFileSync(path.join(dir, 'tmp', 'junk'), 'no pid')
  fs.writeFileSync(path.join(dir, 'tmp', `${process.ppid}-def`), 'a live writer')
  const dd = DataDir.open(dir, { capacityBytes: 1 << 30 })
  t.teardown(() => {
    dd.close()
  })
  t.is(dd.leftovers, 2)
  t.deepEqual(listFiles(path.join(dir, 'tmp')), [`${process.ppid}-def`])
})

test('reading a corrupted chunk fails and drops it', async t => {
  const dd = openDataDir(t)
  const a = await putChunk(dd, 3, 3000)
  const b = await putChunk(dd, 4, 2000)
  const file = dd.store.pathOf(a)
  const data = fs.readFileSync(file)
  data[0] = data[0]! ^ 0xff
  fs.writeFileSync(file, data)
  t.is(errCode(await t.throwsAsync(dd.store.read(a))), 'CHUNK_HASH_MISMATCH')
  t.false(dd.store.has(a))
  t.false(fs.existsSync(file))
  t.is(dd.store.sizeBytes, 2000)
  // now it is simply missing
  t.is(errCode(await t.throwsAsync(dd.store.read(a))), 'CHUNK_MISSING')
  // a truncated file is corrupt too
  fs.truncateSync(dd.store.pathOf(b), 10)
  t.is(errCode(await t.throwsAsync(dd.store.read(b))), 'CHUNK_HASH_MISMATCH')
  t.false(dd.store.has(b))
  t.is(dd.store.sizeBytes, 0)
})

test('reading a deleted chunk fails with CHUNK_MISSING and forgets it', async t => {
  const dd = openDataDir(t)
  const a = await putChunk(dd, 5, 3000)
  await putChunk(dd, 6, 1000)
  fs.rmSync(dd.store.pathOf(a))
  t.is(errCode(await t.throwsAsync(dd.store.read(a))), 'CHUNK_MISSING')
  t.false(dd.store.has(a))
  t.is(dd.store.sizeBytes, 1000)
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
  t.false(fs.existsSync(dd.store.pathOf(b)))
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
  t.deepEqual(listFiles(dd.store.chunkDir), [])
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
  const [corrupt, vanished, unrecorded] = hs as [string, string, string]
  const before = dd.store.sizeBytes
  // a corrupted chunk
  const cf = dd.store.pathOf(corrupt)
  fs.writeFileSync(cf, Buffer.alloc(4096, 1))
  // a vanished chunk
  fs.rmSync(dd.store.pathOf(vanished))
  // a sound file the index forgot (of a pinned image)
  dd.db.prepare('DELETE FROM cache_entries WHERE hash = ?').run(Buffer.from(unrecorded, 'hex'))
  // a sound file nobody knows about
  const extra = randomBuffer(3000, 52)
  const extraHex = blake3Hex(extra)
  fs.mkdirSync(path.dirname(dd.store.pathOf(extraHex)), { recursive: true })
  fs.writeFileSync(dd.store.pathOf(extraHex), extra)
  // strays: a file with a hash name but other content, a file with no hash name, a file in chunks/
  const liar = blake3Hex(Buffer.from('liar'))
  fs.mkdirSync(path.dirname(dd.store.pathOf(liar)), { recursive: true })
  fs.writeFileSync(dd.store.pathOf(liar), 'not what the name says')
  fs.writeFileSync(path.join(path.dirname(cf), 'notes.txt'), 'stray')
  fs.writeFileSync(path.join(dd.store.chunkDir, 'stray'), 'stray')

  const r = fsck(dd)
  t.deepEqual(r.corrupt, [corrupt])
  t.deepEqual(r.missing, [vanished])
  t.is(r.adopted, 2)
  t.is(r.strays, 3)
  t.is(r.checked, hs.length + ok.length - 2) // all recorded entries but the vanished and the forgotten one
  t.deepEqual(r.incompleteImages, [{ name: 'broken', missingChunks: 2 }])

  t.false(dd.store.has(corrupt))
  t.false(fs.existsSync(cf))
  t.false(dd.store.has(vanished))
  t.true(dd.store.has(unrecorded))
  t.is(pinnedFlag(dd, unrecorded), 1) // adopted and pinned again: its image is local
  t.true(dd.store.has(extraHex))
  t.is(pinnedFlag(dd, extraHex), 0)
  t.true((await dd.store.read(extraHex)).equals(extra))
  t.false(fs.existsSync(dd.store.pathOf(liar)))
  t.false(fs.existsSync(path.join(dd.store.chunkDir, 'stray')))
  t.false(fs.existsSync(path.join(path.dirname(cf), 'notes.txt')))
  t.is(dd.store.sizeBytes, before - 2 * 4096 + 3000)

  // a second run finds nothing to repair
  const again = fsck(dd)
  t.deepEqual([again.corrupt, again.missing, again.adopted, again.strays], [[], [], 0, 0])
  t.deepEqual(again.incompleteImages, [{ name: 'broken', missingChunks: 2 }])
})
