// The planner commands run as a user runs them, on a data dir made with `vmifs import` whose
// metadata table also holds other hosts' facts, applied the way a peer's page is applied.
import test from 'ava'
import fs from 'node:fs'
import path from 'node:path'
import { tmpdir, vmifs } from '../integration/harness.js'
import type { PlaceJson, PlanJson } from '../helpers/cli-json.js'
import { randomBuffer } from '../helpers/random.js'
import { DataDir } from '../../src/datadir.js'
import { FleetKeys, signedPage } from '../helpers/fleet-keys.js'
import { toRanges } from '../../src/holders/holdings.js'
import { blake3 } from '../../src/util/hash.js'

const BLOCK = 64 * 1024
const blk = (k: number): Buffer => randomBuffer(BLOCK, 1000 + k)
const range = (a: number, b: number): number[] => Array.from({ length: b - a }, (_, k) => a + k)
const IMAGES: Record<string, number[]> = {
  base: range(0, 24),
  web: [...range(0, 20), ...range(100, 110)],
  db: [...range(0, 16), ...range(200, 208), ...range(100, 104), 0, 1, 2]
}
const hex = (k: number): string => blake3(blk(k)).toString('hex')

interface Setup {
  data: string
  config: string
  dir: string
}

/** One data dir for all tests here: the commands only read it. */
function setup(): Setup {
  const dir = tmpdir('vmifs-plan-')
  const data = path.join(dir, 'data')
  for (const [name, blocks] of Object.entries(IMAGES)) {
    const file = path.join(dir, `${name}.raw`)
    fs.writeFileSync(file, Buffer.concat(blocks.map(blk)))
    const r = vmifs([
      'import',
      file,
      '--name',
      name,
      '--chunking',
      'fixed',
      '--chunk-size',
      '64KiB',
      '--quiet',
      '--data-dir',
      data
    ])
    if (r.code !== 0) throw new Error(`import ${name}: ${r.stderr}`)
  }
  const config = path.join(dir, 'a.json')
  fs.writeFileSync(
    config,
    JSON.stringify({
      hostId: 'a',
      links: { a: { bandwidth: '100Mbit', price: 1e-10 }, c: { bandwidth: '400Mbit', price: 0 } }
    })
  )
  // host a is this data dir (it published a host record, as its agent would); b holds base; c
  // holds web and db's first 16 entries and reports its status
  const dd = DataDir.open(data, { capacityBytes: 1 << 30 })
  try {
    const keys = new FleetKeys()
    keys.store(dd.db, 'a').publish('host', { endpoint: 'http://a.invalid:7070', price: 0, version: 1 })
    const digest = (n: string): string => dd.catalog.requireImage(n).digest
    const n = (x: string): number => IMAGES[x]!.length
    keys.store(dd.db, 'a').apply(
      signedPage(keys, [
        { origin: 'b', key: 'host', value: { endpoint: 'http://b.invalid:7070', price: 0, version: 1 } },
        { origin: 'b', key: `hold/${digest('base')}`, value: { ranges: toRanges(n('base'), () => true) } },
        { origin: 'c', key: 'host', value: { endpoint: 'http://c.invalid:7070', price: 0, version: 1 } },
        { origin: 'c', key: `hold/${digest('web')}`, value: { ranges: toRanges(n('web'), () => true) } },
        { origin: 'c', key: `hold/${digest('db')}`, value: { ranges: toRanges(n('db'), i => i < 16) } },
        { origin: 'c', key: 'status', value: { cacheCapacityBytes: 8e9, cacheSizeBytes: 1e9, load: 0.5 } }
      ])
    )
  } finally {
    dd.close()
  }
  return { data, config, dir }
}

let fixture: Setup | undefined
test.before(() => {
  fixture = setup()
})
test.after.always(() => {
  if (fixture) fs.rmSync(fixture.dir, { recursive: true, force: true })
})

const code = (r: { stderr: string }): string | undefined => /\[([A-Z_]+)\]\s*$/.exec(r.stderr)?.[1]

test("vmifs similarity: clusters and the matrix of shared bytes agree with the images' blocks", t => {
  const s = fixture!
  const r = vmifs(['similarity', '--json', '--top', '0', '--data-dir', s.data])
  t.is(r.code, 0, r.stderr)
  const j = JSON.parse(r.stdout) as {
    images: string[]
    clusters: Array<{ images: string[]; bitset: string; bytes: number; chunks: number; refs: number }>
    matrix: number[][]
  }
  t.deepEqual(j.images, ['base', 'db', 'web'])
  // from the blocks: bytes shared by each pair, and each block in the cluster of exactly its images
  j.images.forEach((a, i) =>
    j.images.forEach((b, k) => {
      const shared = new Set(IMAGES[a]!.filter(x => IMAGES[b]!.includes(x)))
      t.is(j.matrix[i]![k], shared.size * BLOCK, `${a} x ${b}`)
    })
  )
  const all = new Set(Object.values(IMAGES).flat())
  const expected = new Map<string, number>()
  for (const x of all) {
    const key = j.images.filter(n => IMAGES[n]!.includes(x)).join('+')
    expected.set(key, (expected.get(key) ?? 0) + 1)
  }
  t.deepEqual(
    Object.fromEntries(j.clusters.map(c => [c.images.join('+'), c.chunks]).sort()),
    Object.fromEntries([...expected].sort())
  )
  const shared = j.clusters.find(c => c.images.length === 3)!
  t.is(shared.bitset, '111')
  t.is(
    shared.refs,
    [...IMAGES.base!, ...IMAGES.web!, ...IMAGES.db!].filter(
      x => IMAGES.base!.includes(x) && IMAGES.web!.includes(x) && IMAGES.db!.includes(x)
    ).length,
    'db repeats blocks 0-2: refs count each entry'
  )
  // --csv is the same matrix; --top limits the list
  const csv = vmifs(['similarity', '--csv', '--data-dir', s.data])
    .stdout.trim()
    .split('\n')
    .map(l => l.split(','))
  t.deepEqual(csv[0], ['image', ...j.images])
  t.deepEqual(
    csv.slice(1).map(row => row.slice(1).map(Number)),
    j.matrix
  )
  const top2 = JSON.parse(
    vmifs(['similarity', '--json', '--top', '2', '--by', 'chunks', '--data-dir', s.data]).stdout
  ) as { clusters: Array<{ chunks: number }> }
  t.deepEqual(
    top2.clusters.map(c => c.chunks),
    j.clusters
      .map(c => c.chunks)
      .sort((a, b) => b - a)
      .slice(0, 2)
  )
  const text = vmifs(['similarity', '--data-dir', s.data])
  t.regex(text.stdout, /CL-01\s+\d{3}\s/)
  t.is(code(vmifs(['similarity', '--by', 'size', '--data-dir', s.data])), 'USAGE')
})

test('vmifs plan: the LP plan sends exactly the missing chunks, each from a holder, no worse than greedy', t => {
  const s = fixture!
  const r = vmifs(['plan', 'db', '--to', 'b', '--alpha', '0.5', '--json', '--config', s.config, '--data-dir', s.data])
  t.is(r.code, 0, r.stderr)
  const j = JSON.parse(r.stdout) as PlanJson
  const db = new Set(IMAGES.db)
  const missing = [...db].filter(x => !IMAGES.base!.includes(x))
  t.is(j.need.missingChunks, missing.length)
  t.is(j.need.heldChunks, db.size - missing.length)
  t.is(j.need.unavailableChunks, 0)
  const sent = j.plan.shares.flatMap(sh => sh.chunks.map(h => [h, sh.donor]))
  t.deepEqual(sent.map(([h]) => h).sort(), missing.map(hex).sort())
  const cHolds = new Set([...IMAGES.web!, ...IMAGES.db!.slice(0, 16)].map(hex))
  for (const [h, donor] of sent) t.true(donor === 'a' || (donor === 'c' && cHolds.has(h!)), `${h} from ${donor}`)
  t.deepEqual(
    j.donors.map(d => d.id),
    ['a', 'c']
  )
  t.is(j.donors[0]!.bandwidthBps, 100e6 / 8)
  t.is(j.donors[0]!.pricePerGB, 0.1)
  const greedy = j.compare.find(p => p.method === 'greedy')
  t.true(j.plan.fractional.objective <= greedy!.fractional.objective + 1e-12)
  // the local host holds everything: nothing to send to it
  const self = JSON.parse(
    vmifs(['plan', 'db', '--to', 'a', '--json', '--config', s.config, '--data-dir', s.data]).stdout
  ) as PlanJson
  t.is(self.need.missingChunks, 0)
  t.deepEqual(self.plan.shares, [])
  const text = vmifs(['plan', 'db', '--to', 'b', '--config', s.config, '--data-dir', s.data])
  t.regex(text.stdout, /^lp\s.*\ngreedy\s.*\nsingle-source\s/m)
})

test('vmifs place: the host holding the image ranks first; picks by load and free space', t => {
  const s = fixture!
  const r = vmifs(['place', 'web', '--candidates', 'b,c,a', '--json', '--config', s.config, '--data-dir', s.data])
  t.is(r.code, 0, r.stderr)
  const j = JSON.parse(r.stdout) as PlaceJson
  t.deepEqual(
    j.candidates.map(c => c.host),
    ['a', 'c', 'b'],
    'a and c hold web (a first by name at equal cost), b lacks its web-only blocks'
  )
  t.is(j.candidates[2]!.missingBytes, 10 * BLOCK)
  t.is(j.pick.host, 'a')
  t.deepEqual([j.candidates[1]!.freeBytes, j.candidates[1]!.load], [7e9, 0.5])
  t.is(j.candidates[2]!.load, null, 'b published no status')
  const bestOf = JSON.parse(
    vmifs([
      'place',
      'web',
      '--candidates',
      'a,b,c',
      '--pick',
      'best-of',
      '--x',
      '3',
      '--by',
      'free',
      '--json',
      '--config',
      s.config,
      '--data-dir',
      s.data
    ]).stdout
  ) as PlaceJson
  const free = (h: string): number => bestOf.candidates.find(c => c.host === h)!.freeBytes!
  t.is(bestOf.pick.host, free('a') >= free('c') ? 'a' : 'c')
})

test('planner commands: stable codes for bad input, and --help', t => {
  const s = fixture!
  const d = ['--data-dir', s.data]
  t.is(code(vmifs(['plan', 'nope', '--to', 'b', ...d])), 'IMAGE_NOT_FOUND')
  t.is(code(vmifs(['plan', 'db', '--to', 'zz', ...d])), 'HOST_NOT_FOUND')
  t.is(code(vmifs(['plan', 'db', '--to', 'b', '--alpha', '1.5', ...d])), 'PARAM_INVALID')
  t.is(code(vmifs(['plan', 'db', '--to', 'b', '--alpha', 'x', ...d])), 'PARAM_INVALID')
  t.is(code(vmifs(['plan', 'db', '--to', 'b', '--sigma=-1', ...d])), 'PARAM_INVALID')
  t.is(vmifs(['plan', 'db', ...d]).code, 2)
  t.is(code(vmifs(['place', 'db', '--candidates', 'a,zz', ...d])), 'HOST_NOT_FOUND')
  t.is(code(vmifs(['place', 'nope', '--candidates', 'a', ...d])), 'IMAGE_NOT_FOUND')
  t.is(code(vmifs(['place', 'db', '--candidates', 'a', '--pick', 'within', ...d])), 'PARAM_INVALID')
  t.is(code(vmifs(['place', 'db', '--candidates', 'a', '--alpha=-1', ...d])), 'PARAM_INVALID')
  t.is(vmifs(['place', 'db', ...d]).code, 2)
  for (const c of ['similarity', 'plan', 'place']) {
    const r = vmifs([c, '--help'])
    t.is(r.code, 0, c)
    t.regex(r.stdout, new RegExp(`^Usage: vmifs ${c}`), c)
  }
})
