import test, { type ExecutionContext } from 'ava'
import path from 'node:path'
import { Catalog, validateName } from '../../src/index/catalog.js'
import { ChunkStore } from '../../src/cache/chunk-store.js'
import { openDb, type Db } from '../../src/index/db.js'
import { type Manifest, ManifestBuilder } from '../../src/manifests/manifest.js'
import { blake3 } from '../../src/util/hash.js'
import type { VmifsError } from '../../src/errors.js'
import { tmpDir } from '../helpers/tmp.js'

const CDC = { kind: 'cdc', min: 16384, avg: 65536, max: 262144 } as const

const hash = (n: number): Buffer => blake3(Buffer.from(`chunk ${n}`))
const hex = (n: number): string => hash(n).toString('hex')

/** A manifest over chunks n (1000 + n bytes each), with a zero run in the middle. */
function manifest(ns: number[]): Manifest {
  const b = new ManifestBuilder(CDC)
  ns.forEach((n, i) => {
    b.add(1000 + n, hash(n))
    if (i === 0) b.add(50_000, null)
  })
  return b.build()
}

function setup(t: ExecutionContext): {
  db: Db
  cat: Catalog
  store: ChunkStore
  entry: (n: number) => Promise<void>
  pinnedOf: (n: number) => number
} {
  const dir = tmpDir(t)
  const db = openDb(path.join(dir, 'index.sqlite'))
  const store = new ChunkStore(dir, db, { capacityBytes: 1 << 30 })
  store.open()
  t.teardown(() => {
    store.close()
    db.close()
  })
  return {
    db,
    cat: new Catalog(db, store),
    store,
    // a cache entry for chunk n (its bytes do not matter here)
    entry: async n => {
      await store.put(hex(n), Buffer.alloc(1000 + n, n), { verified: true })
    },
    pinnedOf: n => (store.isPinned(hex(n)) === true ? 1 : 0)
  }
}

/** The counts of chunks 1..9 (those the tests use) that some image refers to: [refs, pins]. */
const chunkRows = (store: ChunkStore): Record<string, [number, number]> => {
  const out: Record<string, [number, number]> = {}
  const c = store.refCounts(Buffer.concat([1, 2, 3, 4, 5, 6, 7, 8, 9].map(hash)))
  for (let n = 1; n <= 9; n++) if (c[3 * (n - 1) + 1]! > 0) out[hex(n)] = [c[3 * (n - 1) + 1]!, c[3 * (n - 1) + 2]!]
  return out
}

const manifestCount = (db: Db): number => db.prepare('SELECT count(*) FROM manifests').pluck().get() as number

const sortedHex = (hs: Buffer[]): string[] => hs.map(h => h.toString('hex')).sort()

function codeOf(err: unknown): string | undefined {
  return (err as { code?: string } | undefined)?.code
}

test('addImage records the image, its manifest and chunk counts', t => {
  const { db, cat, store } = setup(t)
  const m = manifest([1, 2, 2, 3]) // chunk 2 twice: counted once per image
  const { collectable } = cat.addImage('debian-12', m, { pinned: true, replace: false, source: '/x.raw' })
  t.deepEqual(collectable, [])
  const img = cat.requireImage('debian-12')
  t.is(img.digest, m.digest())
  t.is(img.size, m.size)
  t.true(img.pinned)
  t.is(img.chunkCount, m.count)
  t.is(img.dataBytes, 1001 + 1002 + 1002 + 1003)
  t.deepEqual(img.chunking, CDC)
  t.deepEqual(
    cat.listImages().map(i => i.name),
    ['debian-12']
  )
  t.deepEqual(chunkRows(store), { [hex(1)]: [1, 1], [hex(2)]: [1, 1], [hex(3)]: [1, 1] })
  t.is(cat.manifest(m.digest())!.digest(), m.digest())
  // a second catalog on the same db reads it back from the stored body
  t.true(new Catalog(db, store).manifest(m.digest())!.encode().equals(m.encode()))
})

test('addImage with an existing name fails with NAME_TAKEN and changes nothing', t => {
  const { db, cat, store } = setup(t)
  const m1 = manifest([1, 2])
  cat.addImage('img', m1, { pinned: false, replace: false })
  const err = t.throws(() => cat.addImage('img', manifest([3]), { pinned: true, replace: false }))
  t.is(codeOf(err), 'NAME_TAKEN')
  t.is(cat.requireImage('img').digest, m1.digest())
  t.false(cat.requireImage('img').pinned)
  t.deepEqual(chunkRows(store), { [hex(1)]: [1, 0], [hex(2)]: [1, 0] })
  t.is(manifestCount(db), 1)
})

test('replace swaps the image and returns the chunks that became collectable', t => {
  const { db, cat, store } = setup(t)
  cat.addImage('img', manifest([1, 2, 3]), { pinned: true, replace: false })
  cat.addImage('other', manifest([2, 9]), { pinned: false, replace: false })
  const old = cat.requireImage('img').digest
  const m2 = manifest([3, 4])
  const { collectable } = cat.addImage('img', m2, { pinned: true, replace: true })
  // 1 is unused now; 2 is still used by "other"; 3 is used by the new version
  t.deepEqual(sortedHex(collectable), [hex(1)])
  t.is(cat.requireImage('img').digest, m2.digest())
  t.deepEqual(chunkRows(store), { [hex(2)]: [1, 0], [hex(3)]: [1, 1], [hex(4)]: [1, 1], [hex(9)]: [1, 0] })
  t.is(cat.manifest(old), undefined)
  t.is(manifestCount(db), 2)
  // replacing with the same manifest keeps everything
  t.deepEqual(cat.addImage('img', m2, { pinned: true, replace: true }).collectable, [])
  t.deepEqual(chunkRows(store)[hex(3)], [1, 1])
  // replace of a name that does not exist simply adds it
  t.deepEqual(cat.addImage('new', manifest([5]), { pinned: false, replace: true }).collectable, [])
  t.truthy(cat.getImage('new'))
})

test('removeImage decrements refs and pins and unpins cache entries', async t => {
  const { db, cat, store, entry, pinnedOf } = setup(t)
  for (const n of [1, 2, 3]) await entry(n)
  cat.addImage('a', manifest([1, 2]), { pinned: true, replace: false })
  cat.addImage('b', manifest([2, 3]), { pinned: false, replace: false })
  t.deepEqual(chunkRows(store), { [hex(1)]: [1, 1], [hex(2)]: [2, 1], [hex(3)]: [1, 0] })
  t.deepEqual([1, 2, 3].map(pinnedOf), [1, 1, 0])

  const r = cat.removeImage('a')
  t.is(r.image.name, 'a')
  t.true(r.image.pinned)
  t.deepEqual(sortedHex(r.collectable), [hex(1)])
  t.deepEqual(chunkRows(store), { [hex(2)]: [1, 0], [hex(3)]: [1, 0] })
  t.deepEqual([1, 2, 3].map(pinnedOf), [0, 0, 0])
  t.is(cat.getImage('a'), undefined)

  const r2 = cat.removeImage('b')
  t.deepEqual(sortedHex(r2.collectable), [hex(2), hex(3)].sort())
  t.deepEqual(chunkRows(store), {})
  t.is(manifestCount(db), 0)
})

test('removeImage keeps a pinned chunk pinned while another pinned image uses it', async t => {
  const { cat, store, entry, pinnedOf } = setup(t)
  await entry(1)
  cat.addImage('a', manifest([1]), { pinned: true, replace: false })
  cat.addImage('b', manifest([1, 2]), { pinned: true, replace: false })
  t.deepEqual(chunkRows(store)[hex(1)], [2, 2])
  t.deepEqual(cat.removeImage('a').collectable, [])
  t.deepEqual(chunkRows(store)[hex(1)], [1, 1])
  t.is(pinnedOf(1), 1)
})

test('a manifest is deleted when its last image goes', t => {
  const { db, cat, store } = setup(t)
  const m = manifest([1, 2])
  cat.addImage('c', m, { pinned: false, replace: false })
  cat.addImage('d', m, { pinned: false, replace: false })
  t.is(manifestCount(db), 1)
  t.deepEqual(chunkRows(store)[hex(1)], [2, 0])
  t.deepEqual(cat.removeImage('c').collectable, [])
  t.is(manifestCount(db), 1)
  t.truthy(cat.manifest(m.digest()))
  t.deepEqual(sortedHex(cat.removeImage('d').collectable), [hex(1), hex(2)].sort())
  t.is(manifestCount(db), 0)
  t.is(cat.manifest(m.digest()), undefined)
})

test('unknown names: IMAGE_NOT_FOUND', t => {
  const { cat } = setup(t)
  cat.addImage('known', manifest([1]), { pinned: false, replace: false })
  t.is(cat.getImage('nope'), undefined)
  t.is(codeOf(t.throws(() => cat.requireImage('nope'))), 'IMAGE_NOT_FOUND')
  t.is(codeOf(t.throws(() => cat.removeImage('nope'))), 'IMAGE_NOT_FOUND')
  t.is(codeOf(t.throws(() => cat.removeImage('Known'))), 'IMAGE_NOT_FOUND') // names are case-sensitive
  t.truthy(cat.getImage('known'))
})

test('bad names: NAME_INVALID', t => {
  const { db, cat, store } = setup(t)
  const bad = ['', '-x', '.hidden', '_x', 'a b', 'a/b', '../etc', 'x'.repeat(129), 'tab\t', 'ümlaut', 'a\n']
  for (const name of bad) {
    t.is(
      codeOf(
        t.throws(
          () => cat.addImage(name, manifest([1]), { pinned: false, replace: false }),
          undefined,
          JSON.stringify(name)
        )
      ),
      'NAME_INVALID',
      JSON.stringify(name)
    )
    t.is(codeOf(t.throws(() => validateName(name))), 'NAME_INVALID')
  }
  t.is(manifestCount(db), 0)
  t.deepEqual(chunkRows(store), {})
  for (const name of ['a', '0', 'x'.repeat(128), 'ubuntu-24.04+lts_v2', 'A.B-c']) {
    t.is(validateName(name), name)
    t.notThrows(() => cat.addImage(name, manifest([1]), { pinned: false, replace: false }))
  }
  t.is(cat.listImages().length, 5)
})

test('setPinned pins an adopted image (chunks and cache entries) and unpins it again, keeping other pins', async t => {
  const { cat, entry, pinnedOf } = setup(t)
  cat.addImage('mine', manifest([1, 2]), { pinned: true, replace: false })
  cat.addImage('theirs', manifest([2, 3]), { pinned: false, replace: false, origin: 'b' })
  // fetched after the images were added: pinned where a pinned image holds them
  for (const n of [1, 2, 3]) await entry(n)
  const pinned = (): number[] => [1, 2, 3].filter(n => pinnedOf(n) === 1)
  t.deepEqual(pinned(), [1, 2])
  t.true(cat.setPinned('theirs', true))
  t.false(cat.setPinned('theirs', true), 'already pinned')
  t.true(cat.getImage('theirs')!.pinned)
  t.deepEqual(pinned(), [1, 2, 3])
  t.true(cat.setPinned('theirs', false))
  t.deepEqual(pinned(), [1, 2], 'chunk 2 stays pinned by the image imported here')
  const err = t.throws<VmifsError>(() => cat.setPinned('nope', true))
  t.is(err.code, 'IMAGE_NOT_FOUND')
})

test('images() is the same object until the images change, here or through another connection', t => {
  const { db, cat, store } = setup(t)
  const first = cat.images()
  t.is(cat.images(), first)
  cat.addImage('a', manifest([1, 2]), { pinned: true, replace: false })
  const second = cat.images()
  t.not(second, first, 'a change through this connection')
  t.deepEqual([...second.byName.keys()], ['a'])
  t.is(second.byDigest.get(manifest([1, 2]).digest())?.name, 'a')
  t.is(cat.images(), second)
  // another process (a CLI command) on the same database file
  const other = openDb(db.name)
  t.teardown(() => {
    other.close()
  })
  new Catalog(other, store).addImage('b', manifest([3]), { pinned: true, replace: false })
  const third = cat.images()
  t.not(third, second, 'a change through another connection')
  t.deepEqual([...third.byName.keys()].sort(), ['a', 'b'])
  cat.setPinned('b', false)
  t.not(cat.images(), third, 'unpinning changes the rows')
})
