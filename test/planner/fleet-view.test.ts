import test from 'ava'
import os from 'node:os'
import { FleetView } from '../../src/planner/fleet-view.js'
import { planTransfer } from '../../src/planner/transfer-plan.js'
import { rankPlacement } from '../../src/planner/placement.js'
import { Announcer } from '../../src/holders/announcer.js'
import { ManifestBuilder, type Manifest } from '../../src/manifests/manifest.js'
import { FleetKeys, signedPage } from '../helpers/fleet-keys.js'
import { toRanges } from '../../src/holders/holdings.js'
import { blake3 } from '../../src/util/hash.js'
import { isVmifsError } from '../../src/errors.js'
import { createLogger } from '../../src/util/log.js'
import { openDataDir } from '../helpers/tmp.js'
import type { DataDir } from '../../src/datadir.js'

const keys = new FleetKeys()

const BLOCK = 4096
const block = (k: number): Buffer => Buffer.alloc(BLOCK, k)

function manifest(blocks: number[]): Manifest {
  const b = new ManifestBuilder({ kind: 'fixed', chunkSize: BLOCK })
  for (const k of blocks) b.add(BLOCK, blake3(block(k)))
  return b.build()
}

/**
 * A data dir on host "a" with images x (blocks 1-8) and y (5-12). Host a holds blocks 1-4 in its
 * cache; host b (a peer) announces all of x; host c announces the second half of y and has no
 * host record (no endpoint: it cannot send).
 */
async function fleet(dd: DataDir): Promise<{ x: Manifest; y: Manifest }> {
  const x = manifest([1, 2, 3, 4, 5, 6, 7, 8])
  const y = manifest([5, 6, 7, 8, 9, 10, 11, 12])
  dd.catalog.addImage('x', x, { pinned: false, replace: false })
  dd.catalog.addImage('y', y, { pinned: false, replace: false })
  for (const k of [1, 2, 3, 4]) await dd.store.put(blake3(block(k)).toString('hex'), block(k))
  const facts = [
    { origin: 'b', key: 'host', value: { endpoint: 'http://b.invalid:7070', price: 2e-10, version: 1 } },
    { origin: 'b', key: `hold/${x.digest()}`, value: { ranges: toRanges(8, () => true) } },
    { origin: 'b', key: 'status', value: { cacheCapacityBytes: 1e9, cacheSizeBytes: 4e8, load: 0.25 } },
    { origin: 'c', key: `hold/${y.digest()}`, value: { ranges: toRanges(8, i => i >= 4) } }
  ]
  keys.store(dd.db, 'a').apply(signedPage(keys, facts))
  return { x, y }
}

const hex = (k: number): string => blake3(block(k)).toString('hex')

test('what a target lacks, grouped by the donors holding it, from the holdings facts and the local cache', async t => {
  const dd = openDataDir(t)
  await fleet(dd)
  const view = new FleetView(dd, { self: 'a', links: { b: { bandwidthBps: 5e6 } }, origin: 'http://origin.invalid' })
  t.deepEqual(view.hosts(), ['a', 'b', 'c'])
  t.deepEqual(
    view.donors().map(d => d.id),
    ['b', 'origin'],
    'c has no endpoint; a has no host record here'
  )
  t.deepEqual(
    view.donors().find(d => d.id === 'b'),
    { id: 'b', bandwidthBps: 5e6, pricePerByte: 2e-10 }
  )

  // a lacks 5-8 of x; b and the origin hold them
  const nx = view.need('x', 'a')
  t.is(nx.heldChunks, 4)
  t.is(nx.heldBytes, 4 * BLOCK)
  t.deepEqual(
    nx.groups.map(g => [g.donors, g.chunks.map(c => c.hash).sort()]),
    [[['b', 'origin'], [5, 6, 7, 8].map(hex).sort()]]
  )
  // c lacks 5-8 of y? no: it holds 9-12 only; 5-8 come from b or the origin, nothing else of y is held by b
  const nyc = view.need('y', 'c')
  t.is(nyc.heldChunks, 4)
  t.deepEqual(
    nyc.groups.map(g => [g.donors, g.chunks.length]),
    [[['b', 'origin'], 4]]
  )

  // without an origin, what only the origin could send is unavailable
  const noOrigin = new FleetView(dd, { self: 'a' })
  const ny = noOrigin.need('y', 'a')
  t.deepEqual(
    ny.groups.map(g => [g.donors, g.chunks.length]),
    [[['b'], 4]]
  )
  t.deepEqual(ny.unavailable.map(c => c.hash).sort(), [9, 10, 11, 12].map(hex).sort(), 'c holds 9-12 but cannot send')

  // the plan executes: per donor the chunk hashes to fetch
  const plan = await planTransfer({ groups: nx.groups, donors: view.donors(), alpha: 0.5, sigma: 1 })
  t.deepEqual(plan.shares.flatMap(s => s.chunks).sort(), [5, 6, 7, 8].map(hex).sort())

  t.true(
    isVmifsError(
      t.throws(() => view.need('nope', 'a')),
      'IMAGE_NOT_FOUND'
    )
  )
  t.true(
    isVmifsError(
      t.throws(() => view.need('x', 'zz')),
      'HOST_NOT_FOUND'
    )
  )
  t.true(
    isVmifsError(
      t.throws(() => view.requireHost('origin')),
      'HOST_NOT_FOUND'
    )
  )
})

test(
  'status: this host measured, others from their status facts (as the announcer publishes them), ' +
    'unknown otherwise',
  async t => {
    const dd = openDataDir(t)
    await fleet(dd)
    const view = new FleetView(dd, { self: 'a' })
    t.deepEqual(view.status('b', 0), { freeBytes: 6e8, load: 0.25 })
    t.deepEqual(view.status('c', 0), { freeBytes: null, load: null })
    const mine = view.status('a', 1e6)
    t.is(mine.freeBytes, 1e6 - dd.store.sizeBytes)
    t.true(mine.load !== null && mine.load >= 0)

    // a host's announcer publishes its status; another data dir learns it through the table
    const other = openDataDir(t, 50 * 1024 * 1024)
    const facts = keys.store(other.db, 'd')
    new Announcer(facts, other.catalog, other.store, createLogger('test', 'silent')).publishStatus()
    keys.store(dd.db, 'a').apply(facts.since({}))
    const d = view.status('d', 0)
    t.is(d.freeBytes, 50 * 1024 * 1024)
    t.true(d.load !== null && Math.abs(d.load - os.loadavg()[0]! / os.cpus().length) <= 0.05)
  }
)

test('placement over the data dir: the host holding more of the image ranks first', async t => {
  const dd = openDataDir(t)
  await fleet(dd)
  const view = new FleetView(dd, { self: 'a', origin: 'http://origin.invalid' })
  const donors = view.donors()
  const candidates = ['a', 'b', 'c'].map(h => {
    const n = view.need('x', h, donors)
    return {
      host: h,
      groups: n.groups,
      unavailableBytes: n.unavailable.reduce((s, c) => s + c.size, 0),
      heldBytes: n.heldBytes,
      ...view.status(h, 1e9)
    }
  })
  const ranked = rankPlacement({ candidates, donors, alpha: 0.5, sigma: 1 })
  t.deepEqual(
    ranked.map(r => [r.host, r.missingBytes]),
    [
      ['b', 0],
      ['a', 4 * BLOCK],
      ['c', 8 * BLOCK]
    ]
  )
})
