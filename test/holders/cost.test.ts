import test from 'ava'
import { inRanges, toRanges, validRanges } from '../../src/holders/holdings.js'
import { LinkStats, holderCost } from '../../src/holders/link-stats.js'

test('holdings ranges round trip and lookup', t => {
  const held = [0, 1, 2, 5, 6, 9]
  const r = toRanges(10, i => held.includes(i))
  t.deepEqual(r, [
    [0, 3],
    [5, 7],
    [9, 10]
  ])
  for (let i = 0; i < 10; i++) t.is(inRanges(r, i), held.includes(i), String(i))
  t.deepEqual(
    toRanges(4, () => true),
    [[0, 4]]
  )
  t.deepEqual(
    toRanges(4, () => false),
    []
  )
  t.true(validRanges(r))
  t.false(validRanges([[3, 1]]))
  t.false(
    validRanges([
      [0, 2],
      [1, 3]
    ])
  )
  t.false(validRanges('x'))
})

test('cost: price dominates at low alpha, time at high alpha; queued bytes add time', t => {
  const cheapSlow = new LinkStats('cheap', { bandwidthBps: 1e6, rttMs: 50 })
  const dearFast = new LinkStats('dear', { bandwidthBps: 1e9, rttMs: 1 })
  const S = 64 * 1024
  const at = (alpha: number): [number, number] => [
    holderCost(cheapSlow, 0, S, { alpha, sigma: 1 }),
    holderCost(dearFast, 1e-6, S, { alpha, sigma: 1 })
  ]
  const [c0, d0] = at(0)
  t.true(c0 < d0, 'alpha 0: the free link wins')
  const [c1, d1] = at(1)
  t.true(d1 < c1, 'alpha 1: the fast link wins')
  const before = holderCost(dearFast, 0, S, { alpha: 1, sigma: 1 })
  dearFast.inflightBytes = 100 * 1024 * 1024
  t.true(holderCost(dearFast, 0, S, { alpha: 1, sigma: 1 }) > before + 0.09)
})

test('link stats: EWMA moves toward measurements; demotion expires; hedge delay follows p95', t => {
  const l = new LinkStats('x', { rttMs: 100, bandwidthBps: 1e6 })
  for (let i = 0; i < 30; i++) l.record(1000, 2) // small requests: RTT
  t.true(l.rttMs < 5)
  for (let i = 0; i < 30; i++) l.record(10_000_000, 102) // 10 MB in ~100 ms: 100 MB/s
  t.true(l.bandwidthBps > 5e7 && l.bandwidthBps < 2e8, String(l.bandwidthBps))
  t.true(l.hedgeDelayMs() >= 100)
  const now = Date.now()
  l.demote(now)
  t.true(l.demoted(now + 1000))
  t.false(l.demoted(now + 10 * 60_000))
})
