import test from 'ava'
import {
  type PlacementCandidate,
  type RankedCandidate,
  pickPlacement,
  rankPlacement
} from '../../src/planner/placement.js'
import { type Donor, type Group, greedyPlan } from '../../src/planner/transfer-plan.js'
import { isVmifsError } from '../../src/errors.js'

const donors: Donor[] = [
  { id: 'lib', bandwidthBps: 1e7, pricePerByte: 1e-10 },
  { id: 'h1', bandwidthBps: 1e8, pricePerByte: 0 },
  { id: 'h2', bandwidthBps: 1e8, pricePerByte: 0 }
]
const chunks = (tag: string, n: number, size = 1e6): Array<{ hash: string; size: number }> =>
  Array.from({ length: n }, (_, k) => ({ hash: `${tag}${k}`, size }))
const group = (ds: string[], cs: Array<{ hash: string; size: number }>): Group => ({
  donors: ds,
  chunks: cs,
  bytes: cs.reduce((a, c) => a + c.size, 0)
})

function cand(host: string, groups: Group[], extra: Partial<PlacementCandidate> = {}): PlacementCandidate {
  return { host, groups, unavailableBytes: 0, heldBytes: 0, freeBytes: null, load: null, ...extra }
}

test('candidates are sorted by the network cost of building the image there, from the cheapest holders', t => {
  // the image is 30 chunks: h1 holds 20 of them, h2 10, the library all
  const a = chunks('a', 10)
  const b = chunks('b', 10)
  const c = chunks('c', 10)
  const candidates = [
    cand('h3', [group(['h1', 'lib'], [...a, ...b]), group(['h2', 'lib'], c)]), // holds nothing
    cand('h1', [group(['h2', 'lib'], c)], { heldBytes: 2e7 }), // lacks c only
    cand('h2', [group(['h1', 'lib'], [...a, ...b])], { heldBytes: 1e7 }), // lacks a and b
    cand('h4', [group(['lib'], c)], { unavailableBytes: 1e6 }) // cheap but cannot be completed
  ]
  const ranked = rankPlacement({ candidates, donors, alpha: 0.5, sigma: 1 })
  t.deepEqual(
    ranked.map(r => r.host),
    ['h1', 'h2', 'h3', 'h4']
  )
  t.deepEqual(
    ranked.map(r => r.rank),
    [1, 2, 3, 4]
  )
  t.deepEqual(
    ranked.map(r => r.missingBytes),
    [1e7, 2e7, 3e7, 1e7]
  )
  for (const r of ranked) {
    const c0 = candidates.find(x => x.host === r.host)!
    const g = greedyPlan({ groups: c0.groups, donors: donors.filter(d => d.id !== r.host), alpha: 0.5, sigma: 1 })
    t.is(r.cost, g.objective, `${r.host}: cost = the greedy construction's`)
  }
  // each missing chunk came from its cheapest holder: the fast free peers, never the library
  t.is(ranked[0]!.price, 0)
  // at alpha 0 with prices only, the same order holds (fewer missing bytes from paid holders)
  const byPrice = rankPlacement({
    candidates: candidates.slice(0, 3).map(c0 => ({ ...c0, groups: c0.groups.map(g => ({ ...g, donors: ['lib'] })) })),
    donors,
    alpha: 0,
    sigma: 1
  })
  t.deepEqual(
    byPrice.map(r => r.host),
    ['h1', 'h2', 'h3']
  )
  t.true(byPrice[0]!.price < byPrice[1]!.price)
})

test('a candidate is never its own donor', t => {
  const r = rankPlacement({
    candidates: [cand('h1', [group(['h1', 'lib'], chunks('x', 5))])],
    donors,
    alpha: 1,
    sigma: 1
  })
  // h1 lacks the chunks, so they come from the library even though the group lists h1
  t.is(r[0]!.seconds, 5e6 / 1e7)
})

function ranked(rows: Array<[string, number, number | null, number | null]>): RankedCandidate[] {
  return rows.map(([host, cost, load, freeBytes], k) => ({
    host,
    rank: k + 1,
    cost,
    missingBytes: 0,
    missingChunks: 0,
    heldBytes: 0,
    unavailableBytes: 0,
    seconds: 0,
    price: 0,
    freeBytes,
    load,
    fits: null
  }))
}

test("the seed's three ways to pick: top; best of the top X; best among those within X% of the top", t => {
  const list = ranked([
    ['a', 10, 0.9, 1e9],
    ['b', 10.5, 0.5, 5e9],
    ['c', 11.5, 0.1, 2e9],
    ['d', 30, 0.0, 9e9]
  ])
  t.is(pickPlacement(list, { mode: 'top' })!.host, 'a')
  t.is(pickPlacement(list, { mode: 'best-of', x: 1, by: 'load' })!.host, 'a')
  t.is(pickPlacement(list, { mode: 'best-of', x: 2, by: 'load' })!.host, 'b')
  t.is(pickPlacement(list, { mode: 'best-of', x: 3, by: 'load' })!.host, 'c')
  t.is(pickPlacement(list, { mode: 'best-of', x: 10, by: 'load' })!.host, 'd')
  t.is(pickPlacement(list, { mode: 'best-of', x: 3, by: 'free' })!.host, 'b')
  t.is(pickPlacement(list, { mode: 'within', x: 0, by: 'load' })!.host, 'a')
  t.is(pickPlacement(list, { mode: 'within', x: 10, by: 'load' })!.host, 'b', 'c costs 15% more than a')
  t.is(pickPlacement(list, { mode: 'within', x: 15, by: 'load' })!.host, 'c')
  t.is(pickPlacement(list, { mode: 'within', x: 15, by: 'free' })!.host, 'b')
  t.is(pickPlacement(list, { mode: 'within', x: 200, by: 'free' })!.host, 'd')
  // unknown metrics lose to known ones, then the list order decides
  const unknown = ranked([
    ['a', 10, null, null],
    ['b', 11, 0.7, null],
    ['c', 12, null, null]
  ])
  t.is(pickPlacement(unknown, { mode: 'best-of', x: 3, by: 'load' })!.host, 'b')
  t.is(pickPlacement(unknown, { mode: 'best-of', x: 3, by: 'free' })!.host, 'a')
  t.is(pickPlacement([], { mode: 'top' }), undefined)
})

test('bad picks and parameters answer PARAM_INVALID', t => {
  const list = ranked([['a', 1, 0, 0]])
  t.true(
    isVmifsError(
      t.throws(() => pickPlacement(list, { mode: 'best-of' })),
      'PARAM_INVALID'
    )
  )
  t.true(
    isVmifsError(
      t.throws(() => pickPlacement(list, { mode: 'best-of', x: 0 })),
      'PARAM_INVALID'
    )
  )
  t.true(
    isVmifsError(
      t.throws(() => pickPlacement(list, { mode: 'within', x: -5 })),
      'PARAM_INVALID'
    )
  )
  t.true(
    isVmifsError(
      t.throws(() => rankPlacement({ candidates: [], donors, alpha: 2, sigma: 1 })),
      'PARAM_INVALID'
    )
  )
})
