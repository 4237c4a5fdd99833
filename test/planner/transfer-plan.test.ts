import test, { type ExecutionContext } from 'ava'
import {
  type Donor,
  type Group,
  type PlanInput,
  type TransferPlan,
  evaluate,
  greedyPlan,
  groupByDonors,
  lpText,
  planTransfer,
  singleSourcePlan
} from '../../src/planner/transfer-plan.js'
import { isVmifsError } from '../../src/errors.js'
import { prng } from '../helpers/random.js'

/** A random small instance: `g` groups over `d` donors, each group held by a random non-empty subset. */
function instance(seed: number, g: number, d: number): PlanInput {
  const rnd = prng(seed)
  const donors: Donor[] = Array.from({ length: d }, (_, j) => ({
    id: `h${j}`,
    bandwidthBps: 1e6 * (1 + (rnd() % 200)), // 1..200 MB/s
    pricePerByte: (rnd() % 4 === 0 ? 0 : rnd() % 100) * 1e-11 // 0..1 per GB
  }))
  const groups: Group[] = Array.from({ length: g }, (_, i) => {
    let mask = 0
    while (mask === 0) mask = rnd() % (1 << d)
    const holders = donors.filter((_, j) => (mask & (1 << j)) !== 0).map(x => x.id)
    const n = 5 + (rnd() % 40)
    const chunks = Array.from({ length: n }, (_, k) => ({ hash: `g${i}c${k}`, size: 4096 * (1 + (rnd() % 64)) }))
    return { donors: holders, chunks, bytes: chunks.reduce((a, c) => a + c.size, 0) }
  })
  return { groups, donors, alpha: (rnd() % 101) / 100, sigma: [0.01, 1, 100][rnd() % 3]! }
}

/** Every split of each group in steps of 1/steps among its holders; the best objective found. */
function bruteForce(p: PlanInput, steps: number): number {
  const idx = new Map(p.donors.map((d, j) => [d.id, j]))
  const options = p.groups.map(g => {
    const js = g.donors.map(id => idx.get(id)!)
    const out: number[][] = []
    const rec = (k: number, left: number, row: number[]): void => {
      if (k === js.length - 1) {
        row[js[k]!] = left / steps
        out.push([...row])
        row[js[k]!] = 0
        return
      }
      for (let s = 0; s <= left; s++) {
        row[js[k]!] = s / steps
        rec(k + 1, left - s, row)
      }
      row[js[k]!] = 0
    }
    rec(
      0,
      steps,
      p.donors.map(() => 0)
    )
    return out
  })
  let best = Infinity
  const pick: number[][] = []
  const walk = (i: number): void => {
    if (i === p.groups.length) {
      best = Math.min(best, evaluate(p, pick).objective)
      return
    }
    for (const o of options[i]!) {
      pick[i] = o
      walk(i + 1)
    }
  }
  walk(0)
  return best
}

/** The plan's constraints: each group fully assigned, only to donors holding it; every chunk sent once, by a holder. */
function checkPlan(t: ExecutionContext, p: PlanInput, plan: TransferPlan, what: string): void {
  p.groups.forEach((g, i) => {
    const row = plan.fractions[i]!
    t.true(Math.abs(row.reduce((a, b) => a + b, 0) - 1) < 1e-9, `${what}: group ${i} fully assigned`)
    p.donors.forEach((d, j) => {
      t.true(row[j]! >= 0, `${what}: r >= 0`)
      if (!g.donors.includes(d.id)) t.is(row[j], 0, `${what}: group ${i} not from ${d.id}, which lacks it`)
    })
  })
  const sentBy = new Map<string, string>()
  for (const s of plan.shares)
    for (const h of s.chunks) {
      t.false(sentBy.has(h), `${what}: ${h} sent once`)
      sentBy.set(h, s.donor)
    }
  const all = p.groups.flatMap(g => g.chunks.map(c => [c, g] as const))
  t.is(sentBy.size, all.length, `${what}: every missing chunk is sent`)
  for (const [c, g] of all) t.true(g.donors.includes(sentBy.get(c.hash)!), `${what}: ${c.hash} comes from a holder`)
  // whole chunks follow the fractions to within one chunk per group and donor
  const maxChunk = Math.max(...all.map(([c]) => c.size))
  for (const s of plan.shares) {
    const j = p.donors.findIndex(d => d.id === s.donor)
    t.true(
      Math.abs(s.bytes - plan.fractional.bytes[j]!) <= maxChunk * p.groups.length + 1e-6,
      `${what}: ${s.donor} sends about its share`
    )
    t.is(
      s.bytes,
      s.chunks.reduce((a, h) => a + all.find(([c]) => c.hash === h)![0].size, 0)
    )
  }
}

test("LP optimum is never worse than brute force over a 1/20 grid, and within the grid's error of it", async t => {
  let n = 0
  for (let seed = 1; seed <= 36; seed++) {
    const g = 2 + (seed % 2)
    const d = 2 + ((seed >> 1) % 2)
    const steps = g === 3 && d === 3 ? 10 : 20
    const p = instance(seed, g, d)
    const lp = await planTransfer(p)
    checkPlan(t, p, lp, `seed ${seed}`)
    const brute = bruteForce(p, steps)
    const obj = lp.fractional.objective
    const scale = Math.max(1e-12, brute)
    t.true(obj <= brute + 1e-7 * scale, `seed ${seed}: LP ${obj} <= brute force ${brute}`)
    // moving each r_ij by up to 1/steps moves each donor's bytes by up to Σ S_i / steps
    const total = p.groups.reduce((a, x) => a + x.bytes, 0)
    const minB = Math.min(...p.donors.map(x => x.bandwidthBps))
    const sumRho = p.donors.reduce((a, x) => a + x.pricePerByte, 0)
    const bound = (total / steps) * ((p.alpha * p.sigma) / minB + (1 - p.alpha) * sumRho)
    t.true(brute - obj <= bound + 1e-9 * scale, `seed ${seed}: brute force ${brute} within ${bound} of LP ${obj}`)
    n++
  }
  t.is(n, 36)
})

test('LP is at least as good as greedy and single-source, and beats both when donors can share the work', async t => {
  for (let seed = 100; seed < 130; seed++) {
    const p = instance(seed, 1 + (seed % 4), 1 + (seed % 3) + 1)
    const lp = await planTransfer(p)
    const greedy = greedyPlan(p)
    checkPlan(t, p, greedy, `greedy ${seed}`)
    t.true(lp.fractional.objective <= greedy.fractional.objective * (1 + 1e-9) + 1e-12, `seed ${seed} vs greedy`)
    const single = singleSourcePlan(p)
    if (single) {
      checkPlan(t, p, single, `single ${seed}`)
      t.is(new Set(single.shares.map(s => s.donor)).size, 1)
      t.true(
        lp.fractional.objective <= single.fractional.objective * (1 + 1e-9) + 1e-12,
        `seed ${seed} vs single source`
      )
    } else {
      t.false(
        p.donors.some(d => p.groups.every(g => g.donors.includes(d.id))),
        'no single source only when no donor holds everything'
      )
    }
  }
  // two equal donors holding everything, time only: the LP splits the bytes and halves the time
  const chunks = Array.from({ length: 100 }, (_, k) => ({ hash: `c${k}`, size: 1e6 }))
  const p: PlanInput = {
    groups: [{ donors: ['a', 'b'], chunks, bytes: 1e8 }],
    donors: [
      { id: 'a', bandwidthBps: 1e7, pricePerByte: 0 },
      { id: 'b', bandwidthBps: 1e7, pricePerByte: 0 }
    ],
    alpha: 1,
    sigma: 1
  }
  const lp = await planTransfer(p)
  const greedy = greedyPlan(p)
  const single = singleSourcePlan(p)!
  t.is(greedy.seconds, 10)
  t.is(single.seconds, 10)
  t.is(lp.seconds, 5)
  t.deepEqual(
    lp.shares.map(s => s.chunks.length),
    [50, 50]
  )
})

test('alpha weighs price against time: alpha 0 buys the cheapest bytes, alpha 1 the shortest makespan', async t => {
  const chunks = (tag: string, n: number): Array<{ hash: string; size: number }> =>
    Array.from({ length: n }, (_, k) => ({ hash: `${tag}${k}`, size: 1e6 }))
  const donors: Donor[] = [
    { id: 'cheap', bandwidthBps: 1e6, pricePerByte: 0 },
    { id: 'fast', bandwidthBps: 1e8, pricePerByte: 1e-9 }
  ]
  const groups: Group[] = [
    { donors: ['cheap', 'fast'], chunks: chunks('x', 50), bytes: 5e7 },
    { donors: ['fast'], chunks: chunks('y', 10), bytes: 1e7 }
  ]
  const byPrice = await planTransfer({ groups, donors, alpha: 0, sigma: 1 })
  t.is(byPrice.price, 1e7 * 1e-9, 'only what the cheap donor lacks is bought')
  t.is(byPrice.fractions[0]![0], 1)
  const byTime = await planTransfer({ groups, donors, alpha: 1, sigma: 1 })
  // the best makespan balances both links: cheap sends x bytes, fast the rest, x / 1e6 = (6e7 - x) / 1e8
  const x = 6e7 / 101
  t.true(Math.abs(byTime.fractional.seconds - x / 1e6) < 1e-6, String(byTime.fractional.seconds))
  t.true(byTime.fractional.seconds < byPrice.fractional.seconds)
  t.true(byTime.fractional.price > byPrice.fractional.price)
})

test('among equally good splits the LP takes the faster one at alpha 0 and the cheaper one at alpha 1', async t => {
  const chunks = (tag: string, n: number): Array<{ hash: string; size: number }> =>
    Array.from({ length: n }, (_, k) => ({ hash: `${tag}${k}`, size: 1e6 }))
  // price only, every link free: any split is optimal; the makespan should still be the least
  const free: PlanInput = {
    groups: [{ donors: ['a', 'b'], chunks: chunks('x', 100), bytes: 1e8 }],
    donors: [
      { id: 'a', bandwidthBps: 1e7, pricePerByte: 0 },
      { id: 'b', bandwidthBps: 3e7, pricePerByte: 0 }
    ],
    alpha: 0,
    sigma: 1
  }
  const lp0 = await planTransfer(free)
  t.true(Math.abs(lp0.fractional.seconds - 1e8 / 4e7) < 1e-6, String(lp0.fractional.seconds))
  // time only: a slow donor alone sets the makespan, so the shared group may go anywhere; it goes to the free donor
  const p: PlanInput = {
    groups: [
      { donors: ['dear', 'free'], chunks: chunks('y', 10), bytes: 1e7 },
      { donors: ['slow'], chunks: chunks('z', 100), bytes: 1e8 }
    ],
    donors: [
      { id: 'dear', bandwidthBps: 1e8, pricePerByte: 1e-9 },
      { id: 'free', bandwidthBps: 1e8, pricePerByte: 0 },
      { id: 'slow', bandwidthBps: 1e7, pricePerByte: 0 }
    ],
    alpha: 1,
    sigma: 1
  }
  const lp1 = await planTransfer(p)
  t.true(Math.abs(lp1.fractional.seconds - 10) < 1e-6)
  t.is(lp1.fractional.price, 0)
  t.deepEqual(lp1.shares.map(s => s.donor).sort(), ['free', 'slow'])
})

test('bad input answers stable codes', async t => {
  const p = instance(7, 2, 2)
  for (const alpha of [-0.1, 1.5, Number.NaN]) {
    t.true(isVmifsError(await t.throwsAsync(planTransfer({ ...p, alpha })), 'PARAM_INVALID'), `alpha ${alpha}`)
    t.true(
      isVmifsError(
        t.throws(() => greedyPlan({ ...p, alpha })),
        'PARAM_INVALID'
      )
    )
  }
  t.true(isVmifsError(await t.throwsAsync(planTransfer({ ...p, sigma: -1 })), 'PARAM_INVALID'))
  t.true(
    isVmifsError(
      await t.throwsAsync(planTransfer({ ...p, donors: [{ ...p.donors[0]!, bandwidthBps: 0 }, p.donors[1]!] })),
      'PARAM_INVALID'
    )
  )
  const orphan = { ...p, groups: [...p.groups, { donors: [], chunks: [{ hash: 'z', size: 1 }], bytes: 1 }] }
  t.true(isVmifsError(await t.throwsAsync(planTransfer(orphan)), 'PLAN_INFEASIBLE'))
  const unknown = {
    ...p,
    groups: [{ donors: ['nobody', p.donors[0]!.id], chunks: [{ hash: 'z', size: 1 }], bytes: 1 }]
  }
  t.true(isVmifsError(await t.throwsAsync(planTransfer(unknown)), 'PARAM_INVALID'))
})

test('nothing missing: an empty plan', async t => {
  const p = { groups: [], donors: [{ id: 'a', bandwidthBps: 1, pricePerByte: 0 }], alpha: 0.5, sigma: 1 }
  const lp = await planTransfer(p)
  t.deepEqual([lp.seconds, lp.price, lp.bytes, lp.shares.length], [0, 0, 0, 0])
  t.is(singleSourcePlan(p)?.bytes, 0)
})

test('groupByDonors groups chunks by the exact set of holders and sets aside those nobody holds', t => {
  const holders: Record<string, string[]> = { a: ['x', 'y'], b: ['y', 'x'], c: ['x'], d: [], e: ['y', 'x', 'x'] }
  const { groups, unavailable } = groupByDonors(
    Object.keys(holders).map(h => ({ hash: h, size: h.charCodeAt(0) })),
    h => holders[h]!
  )
  t.deepEqual(
    unavailable.map(c => c.hash),
    ['d']
  )
  t.deepEqual(
    groups.map(g => [g.donors, g.chunks.map(c => c.hash), g.bytes]),
    [
      [['x', 'y'], ['a', 'b', 'e'], 97 + 98 + 101],
      [['x'], ['c'], 99]
    ]
  )
})

test("the LP text is the seed's program: one equality per group, one makespan row per donor", t => {
  const p = instance(3, 3, 3)
  const { text, vars } = lpText(p)
  t.is((text.match(/^ g\d+:/gm) ?? []).length, p.groups.length)
  t.is(
    vars.length,
    p.groups.reduce((a, g) => a + g.donors.length, 0),
    'one variable per (group, holder): e_ij = 0 has none'
  )
  const used = new Set(p.groups.flatMap(g => g.donors))
  t.is((text.match(/^ d\d+:.* - t <= 0$/gm) ?? []).length, used.size)
})
