import test from 'ava'
import {
  ClusterIndex,
  type ImageChunks,
  type Similarity,
  clusters,
  imageChunks,
  topClusters
} from '../../src/planner/clusters.js'
import { ManifestBuilder } from '../../src/manifests/manifest.js'
import { blake3 } from '../../src/util/hash.js'
import { isVmifsError } from '../../src/errors.js'
import { prng } from '../helpers/random.js'

// US9274818 FIG. 4-6. The text states: C appears twice in Image-1, once in Image-2 and three
// times in Image-3; {G} is only in Image-1 (bitset 001); {C, D} are in all three (111); {E, F}
// are cluster 4 (FIG. 6: bits 011, 376 MB); the 101 cluster is empty; FIG. 6 lists six clusters
// with bits (Image-3, Image-2, Image-1) and sizes 100: 631, 010: 352, 001: 85, 011: 376,
// 110: 128, 111: 473 MB; transferring Image-3 needs clusters 100, 110 and 111. The drawing of
// FIG. 4 itself is not in the text, so where A, B, H and I sit is read off FIG. 6: A and B are
// Image-3's own (100), H is Image-2's own (010), I is shared by Image-2 and Image-3 (110). Block
// sizes are chosen so that each cluster has FIG. 6's size.
const MB = 1024 * 1024
const SIZE: Record<string, number> = { A: 331, B: 300, C: 200, D: 273, E: 176, F: 200, G: 85, H: 352, I: 128 }
const FIG4: Record<string, string[]> = {
  'Image-1': ['C', 'C', 'D', 'E', 'F', 'G'],
  'Image-2': ['C', 'D', 'E', 'F', 'H', 'I'],
  'Image-3': ['A', 'B', 'C', 'C', 'C', 'D', 'I']
}
const FIG6: Array<{ bitset: string; mb: number }> = [
  { bitset: '100', mb: 631 },
  { bitset: '010', mb: 352 },
  { bitset: '001', mb: 85 },
  { bitset: '011', mb: 376 },
  { bitset: '110', mb: 128 },
  { bitset: '111', mb: 473 }
]

function blocksImage(name: string, blocks: string[]): ImageChunks {
  const chunks = new Map<string, { size: number; refs: number }>()
  for (const b of blocks) {
    const c = chunks.get(b)
    if (c) c.refs++
    else chunks.set(b, { size: SIZE[b]! * MB, refs: 1 })
  }
  return { name, chunks }
}
const fig4 = (): ImageChunks[] => Object.entries(FIG4).map(([n, b]) => blocksImage(n, b))

/** Which blocks a cluster holds: the blocks whose set of images is exactly the cluster's. */
function blocksOf(s: Similarity, bitset: string): string[] {
  return Object.keys(SIZE).filter(b => {
    const bits = s.images
      .map(n => (FIG4[n]!.includes(b) ? '1' : '0'))
      .reverse()
      .join('')
    return bits === bitset
  })
}

test('FIG. 4-6: the three images give the six clusters, bitsets and sizes of FIG. 6', t => {
  const s = clusters(fig4())
  t.deepEqual(s.images, ['Image-1', 'Image-2', 'Image-3'])
  t.deepEqual(
    s.clusters.map(c => ({ bitset: c.bitset, mb: c.bytes / MB })).sort((a, b) => (a.bitset < b.bitset ? -1 : 1)),
    [...FIG6].sort((a, b) => (a.bitset < b.bitset ? -1 : 1))
  )
  t.false(
    s.clusters.some(c => c.bitset === '101'),
    'cluster 507 (101) is empty and not listed'
  )
  const byBits = new Map(s.clusters.map(c => [c.bitset, c]))
  t.deepEqual(blocksOf(s, '001'), ['G'])
  t.deepEqual(blocksOf(s, '111'), ['C', 'D'])
  t.deepEqual(blocksOf(s, '011'), ['E', 'F'])
  t.is(byBits.get('001')!.chunks, 1)
  t.is(byBits.get('111')!.chunks, 2, 'internal redundancy adds no chunks to a cluster')
  // internal redundancy: C twice in Image-1, once in Image-2, three times in Image-3, D once each
  t.is(byBits.get('111')!.refs, 2 + 1 + (1 + 1) + (3 + 1))
  t.is(byBits.get('111')!.redundancy, 9 / 6)
  t.is(byBits.get('011')!.redundancy, 1)
  // Image-3 is reconstituted from clusters 100, 110 and 111
  t.deepEqual(
    s.clusters
      .filter(c => c.images.includes('Image-3'))
      .map(c => c.bitset)
      .sort(),
    ['100', '110', '111']
  )
  // the matrix: diagonal = distinct bytes of each image; off-diagonal = bytes shared
  const distinct = (n: string): number => [...new Set(FIG4[n])].reduce((a, b) => a + SIZE[b]! * MB, 0)
  s.images.forEach((a, i) => {
    t.is(s.matrix[i]![i], distinct(a))
    s.images.forEach((b, j) => {
      const shared = [...new Set(FIG4[a])].filter(x => FIG4[b]!.includes(x)).reduce((acc, x) => acc + SIZE[x]! * MB, 0)
      t.is(s.matrix[i]![j], shared, `${a} x ${b}`)
    })
  })
  t.is(s.matrix[0]![2], 473 * MB, 'Image-1 and Image-3 share only {C, D}')
})

test("FIG. 4-6 built the seed's way: each added image splits the clusters it touches", t => {
  const idx = new ClusterIndex()
  const [i1, i2, i3] = fig4()
  idx.add(i1!)
  t.deepEqual(
    idx.snapshot().clusters.map(c => [c.bitset, c.bytes / MB]),
    [['1', 200 + 273 + 176 + 200 + 85]]
  )
  idx.add(i2!)
  // Image-1's singleton cluster splits into "also in Image-2" {C, D, E, F} and "not" {G}
  t.deepEqual(
    idx.snapshot().clusters.map(c => [c.bitset, c.bytes / MB]),
    [
      ['11', 473 + 376],
      ['10', 352 + 128],
      ['01', 85]
    ]
  )
  idx.add(i3!)
  t.deepEqual(
    idx
      .snapshot()
      .clusters.map(c => [c.bitset, c.bytes / MB])
      .sort(),
    FIG6.map(f => [f.bitset, f.mb]).sort()
  )
  t.deepEqual(idx.snapshot(), clusters(fig4()))
  // removing Image-2 clears its bit: 011 merges into Image-1's own, 110 into Image-3's own
  idx.remove('Image-2')
  const after = idx.snapshot()
  t.deepEqual(after.images, ['Image-1', 'Image-3'])
  t.deepEqual(
    after.clusters.map(c => [c.bitset, c.bytes / MB]),
    [
      ['10', 631 + 128],
      ['11', 473],
      ['01', 85 + 376]
    ]
  )
  t.deepEqual(after, clusters([i1!, i3!]))
})

/** The same clusters whatever the image order or slot numbers: member names -> figures. */
function canonical(s: Similarity): {
  clusters: Record<string, [number, number, number]>
  matrix: Record<string, number>
} {
  const out: Record<string, [number, number, number]> = {}
  for (const c of s.clusters) {
    const key = [...c.images].sort().join('+')
    t0(!(key in out), `cluster ${key} listed once`)
    out[key] = [c.bytes, c.chunks, c.refs]
    // the bitset names exactly the members, the last image first
    t0(
      c.bitset ===
        s.images
          .map(n => (c.images.includes(n) ? '1' : '0'))
          .reverse()
          .join(''),
      `bitset of ${key}`
    )
  }
  const matrix: Record<string, number> = {}
  s.images.forEach((a, i) =>
    s.images.forEach((b, j) => {
      if (s.matrix[i]![j]! > 0) matrix[`${a}|${b}`] = s.matrix[i]![j]!
    })
  )
  return { clusters: out, matrix }
}
function t0(ok: boolean, what: string): void {
  if (!ok) throw new Error(what)
}

test('incremental clusters equal a full recomputation after every add and remove (random image sets)', t => {
  let steps = 0
  for (let seed = 1; seed <= 40; seed++) {
    const rnd = prng(seed)
    const pool = Array.from({ length: 12 + (rnd() % 30) }, (_, k) => ({
      hash: `c${seed}-${k}`,
      size: 1 + (rnd() % 100_000)
    }))
    const idx = new ClusterIndex()
    const live = new Map<string, ImageChunks>()
    let made = 0
    for (let op = 0; op < 30; op++) {
      if (live.size > 0 && (live.size >= 7 || rnd() % 3 === 0)) {
        const names = [...live.keys()]
        const victim = names[rnd() % names.length]!
        idx.remove(victim)
        live.delete(victim)
      } else {
        const chunks = new Map<string, { size: number; refs: number }>()
        const want = rnd() % pool.length
        for (let k = 0; k < want; k++) {
          const c = pool[rnd() % pool.length]!
          const cur = chunks.get(c.hash)
          if (cur) cur.refs++
          else chunks.set(c.hash, { size: c.size, refs: 1 })
        }
        const img = { name: `img${made++}`, chunks }
        idx.add(img)
        live.set(img.name, img)
      }
      const inc = idx.snapshot()
      const shuffled = [...live.values()].sort(() => (rnd() % 2) - 0.5)
      t.deepEqual(canonical(inc), canonical(clusters(shuffled)), `seed ${seed} step ${op}`)
      t.is(inc.images.length, live.size)
      steps++
    }
  }
  t.is(steps, 40 * 30)
})

test('a cluster index refuses a duplicate image and an unknown removal', t => {
  const idx = new ClusterIndex()
  idx.add(fig4()[0]!)
  t.true(
    isVmifsError(
      t.throws(() => idx.add(fig4()[0]!)),
      'NAME_TAKEN'
    )
  )
  t.true(
    isVmifsError(
      t.throws(() => idx.remove('nope')),
      'IMAGE_NOT_FOUND'
    )
  )
  t.true(
    isVmifsError(
      t.throws(() => clusters([fig4()[0]!, fig4()[0]!])),
      'PARAM_INVALID'
    )
  )
})

test('top clusters by bytes or by chunk count', t => {
  const s = clusters(fig4())
  const byBytes = topClusters(s, 3, 'bytes')
  t.is(byBytes.length, 3)
  const sizes = s.clusters.map(c => c.bytes).sort((a, b) => b - a)
  t.deepEqual(
    byBytes.map(c => c.bytes),
    sizes.slice(0, 3)
  )
  const byChunks = topClusters(s, 2, 'chunks')
  const counts = s.clusters.map(c => c.chunks).sort((a, b) => b - a)
  t.deepEqual(
    byChunks.map(c => c.chunks),
    counts.slice(0, 2)
  )
  t.is(topClusters(s, 0).length, 0)
})

test('imageChunks: distinct data chunks of a manifest with entry counts; zero runs left out', t => {
  const b = new ManifestBuilder({ kind: 'fixed', chunkSize: 4096 })
  const h = (k: number): Buffer => blake3(Buffer.from(`block ${k}`))
  for (const k of [1, 2, 1, -1, 3, 1, 2]) b.add(4096, k < 0 ? null : h(k))
  const ic = imageChunks('x', b.build())
  t.is(ic.chunks.size, 3)
  t.deepEqual(ic.chunks.get(h(1).toString('hex')), { size: 4096, refs: 3 })
  t.deepEqual(ic.chunks.get(h(2).toString('hex')), { size: 4096, refs: 2 })
  t.deepEqual(ic.chunks.get(h(3).toString('hex')), { size: 4096, refs: 1 })
})
