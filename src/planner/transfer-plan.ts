// The optimal transfer plan (US9274818): the chunks a target lacks, grouped by the set of donors
// holding them (group i is available on donor j when e_ij = 1), are split across donors to
//
//   minimize   α·σ·t + (1 − α)·Σ_ij ρ_j·S_i·r_ij
//   subject to Σ_j r_ij = 1                  for every group i (each group fully assigned)
//              Σ_i r_ij·S_i / B_j <= t        for every donor j (t is the makespan)
//              r_ij >= 0, and r_ij = 0 where e_ij = 0
//
// Units: S_i bytes, B_j bytes per second, t seconds, ρ_j price per byte (the config's unit; the
// CLI shows it per GB), σ the price of one second, α in [0, 1] weighs time against price.
// Donors send in parallel, each over its own link; per-request RTT is left out (it does not grow
// with the plan, and would make the program integer).
//
// Solver: HiGHS (University of Edinburgh) compiled to WebAssembly, npm `highs` (MIT). Chosen
// because it is a real, maintained LP/MIP solver, needs no native build and no service, loads in
// Node 20 as an ES module (`await highs()`), and takes the program as CPLEX LP text, which keeps
// this module readable. The module is loaded once and reused.
//
// The fractional split is then turned into an executable plan: per donor, the list of chunk
// hashes and bytes (each group's chunks dealt to the donor furthest below its share), which is
// what `vmifs replicate` runs. Greedy (each chunk from its cheapest holder) and single-source
// (everything from the one donor that is cheapest overall) are computed for comparison.
import highsModule, { type Highs } from 'highs'
import { VmifsError } from '../errors.js'

export interface Donor {
  id: string
  /** B_j, bytes per second from this donor to the target */
  bandwidthBps: number
  /** ρ_j, price per byte */
  pricePerByte: number
}

export interface ChunkRef {
  hash: string
  size: number
}

/** Chunks the target lacks that exactly these donors hold. */
export interface Group {
  donors: string[]
  chunks: ChunkRef[]
  bytes: number
}

export interface PlanInput {
  groups: Group[]
  donors: Donor[]
  alpha: number
  sigma: number
}

export interface Evaluation {
  /** t: the makespan, seconds */
  seconds: number
  /** Σ ρ_j · bytes_j */
  price: number
  /** α·σ·t + (1 − α)·price */
  objective: number
  /** bytes per donor, in donors order */
  bytes: number[]
}

export interface DonorShare {
  donor: string
  bytes: number
  seconds: number
  price: number
  chunks: string[]
}

export interface TransferPlan {
  method: 'lp' | 'greedy' | 'single-source'
  /** r_ij: fractions[i][j] of group i from donors[j] */
  fractions: number[][]
  /** the fractional plan's figures (what the LP optimizes) */
  fractional: Evaluation
  /** the executable plan: whole chunks per donor, donors with nothing to send left out */
  shares: DonorShare[]
  /** figures of the executable plan */
  seconds: number
  price: number
  objective: number
  bytes: number
  chunks: number
}

export function validateParams(alpha: number, sigma: number): void {
  if (!(Number.isFinite(alpha) && alpha >= 0 && alpha <= 1))
    throw VmifsError.param('alpha', `must be a number in [0, 1], got ${String(alpha)}`)
  if (!(Number.isFinite(sigma) && sigma >= 0))
    throw VmifsError.param('sigma', `must be a non-negative number, got ${String(sigma)}`)
}

function validate(p: PlanInput): Map<string, number> {
  validateParams(p.alpha, p.sigma)
  const idx = new Map<string, number>()
  p.donors.forEach((d, j) => {
    if (idx.has(d.id)) throw VmifsError.param('donors', `list ${d.id} twice`)
    if (!(Number.isFinite(d.bandwidthBps) && d.bandwidthBps > 0))
      throw VmifsError.param(`bandwidth of ${d.id}`, 'must be positive')
    if (!(Number.isFinite(d.pricePerByte) && d.pricePerByte >= 0))
      throw VmifsError.param(`price of ${d.id}`, 'must be non-negative')
    idx.set(d.id, j)
  })
  p.groups.forEach((g, i) => {
    const holders = g.donors.filter(d => idx.has(d))
    if (holders.length === 0)
      throw new VmifsError('PLAN_INFEASIBLE', `group ${i} (${g.bytes} bytes) is held by no donor`, { group: i })
    for (const d of g.donors) if (!idx.has(d)) throw VmifsError.param('groups', `name unknown donor ${d}`)
  })
  return idx
}

/** Figures of a (fractional) split. */
export function evaluate(p: PlanInput, fractions: number[][]): Evaluation {
  const bytes = p.donors.map(() => 0)
  p.groups.forEach((g, i) => {
    p.donors.forEach((_, j) => {
      bytes[j]! += (fractions[i]?.[j] ?? 0) * g.bytes
    })
  })
  let seconds = 0
  let price = 0
  p.donors.forEach((d, j) => {
    seconds = Math.max(seconds, bytes[j]! / d.bandwidthBps)
    price += d.pricePerByte * bytes[j]!
  })
  return { seconds, price, objective: p.alpha * p.sigma * seconds + (1 - p.alpha) * price, bytes }
}

/** Deals each group's chunks to its donors in proportion to the fractions (within one chunk). */
function assign(p: PlanInput, fractions: number[][]): DonorShare[] {
  const lists = p.donors.map(() => [] as string[])
  const got = p.donors.map(() => 0)
  p.groups.forEach((g, i) => {
    const want = p.donors.map((_, j) => (fractions[i]?.[j] ?? 0) * g.bytes)
    const have = p.donors.map(() => 0)
    for (const c of g.chunks) {
      let best = -1
      for (let j = 0; j < p.donors.length; j++) {
        if (want[j]! <= 0) continue
        if (best < 0 || want[j]! - have[j]! > want[best]! - have[best]!) best = j
      }
      lists[best]!.push(c.hash)
      have[best]! += c.size
    }
    have.forEach((b, j) => {
      got[j]! += b
    })
  })
  const out: DonorShare[] = []
  p.donors.forEach((d, j) => {
    if (lists[j]!.length === 0) return
    out.push({
      donor: d.id,
      bytes: got[j]!,
      seconds: got[j]! / d.bandwidthBps,
      price: got[j]! * d.pricePerByte,
      chunks: lists[j]!
    })
  })
  return out
}

function build(p: PlanInput, method: TransferPlan['method'], fractions: number[][]): TransferPlan {
  const shares = assign(p, fractions)
  const seconds = Math.max(0, ...shares.map(s => s.seconds))
  const price = shares.reduce((a, s) => a + s.price, 0)
  return {
    method,
    fractions,
    fractional: evaluate(p, fractions),
    shares,
    seconds,
    price,
    objective: p.alpha * p.sigma * seconds + (1 - p.alpha) * price,
    bytes: shares.reduce((a, s) => a + s.bytes, 0),
    chunks: shares.reduce((a, s) => a + s.chunks.length, 0)
  }
}

// the package's types are CommonJS-flavoured (the loader appears as `default` of the module);
// under ESM the default import is the loader itself
type Loader = () => Promise<Highs>
const loadHighs = ((highsModule as unknown as { default?: Loader }).default ?? highsModule) as unknown as Loader
let solver: Promise<Highs> | undefined
async function highs(): Promise<Highs> {
  solver ??= loadHighs()
  return await solver
}

const num = (x: number): string => {
  const s = String(x)
  if (!/^[0-9.e+-]+$/.test(s)) throw new VmifsError('SOLVER_FAILED', `coefficient ${s} is not a finite number`)
  return s
}

/**
 * The program above, as CPLEX LP text. Coefficients are scaled so the largest of each kind is 1
 * (objective by its largest coefficient, t by the longest single-group time): HiGHS' tolerances
 * are absolute, and prices per byte are tiny. With `then`, the text of a second pass: keep the
 * objective at most `bound` (its optimum, scaled) and minimize the term that has no weight in it
 * (time when α·σ = 0, price when α = 1), so that among equally good splits the faster (or
 * cheaper) one is chosen.
 */
export function lpText(
  p: PlanInput,
  idx = validate(p),
  then?: { minimize: 'time' | 'price'; bound: number }
): { text: string; vars: Array<[number, number, string]>; tScale: number } {
  const vars: Array<[number, number, string]> = []
  p.groups.forEach((g, i) => {
    for (const d of [...new Set(g.donors)]) vars.push([i, idx.get(d)!, `r_${i}_${idx.get(d)!}`])
  })
  let tScale = 0
  for (const [i, j] of vars) tScale = Math.max(tScale, p.groups[i]!.bytes / p.donors[j]!.bandwidthBps)
  if (!(tScale > 0)) tScale = 1
  const costs = vars.map(([i, j]) => (1 - p.alpha) * p.donors[j]!.pricePerByte * p.groups[i]!.bytes)
  const tCost = p.alpha * p.sigma * tScale
  const oScale = costs.reduce((a, c) => Math.max(a, c), tCost) || 1
  const main = `${num(tCost / oScale)} t` + vars.map(([, , n], k) => ` + ${num(costs[k]! / oScale)} ${n}`).join('')
  const lines = ['Minimize']
  if (then === undefined) lines.push(` obj: ${main}`)
  else if (then.minimize === 'time') lines.push(' obj: t')
  else {
    const prices = vars.map(([i, j]) => p.donors[j]!.pricePerByte * p.groups[i]!.bytes)
    const pScale = prices.reduce((a, c) => Math.max(a, c), 0) || 1
    lines.push(' obj: ' + vars.map(([, , n], k) => `${num(prices[k]! / pScale)} ${n}`).join(' + '))
  }
  lines.push('Subject To')
  if (then !== undefined) lines.push(` cap: ${main} <= ${num(then.bound)}`)
  p.groups.forEach((_, i) => {
    const mine = vars.filter(v => v[0] === i)
    lines.push(` g${i}: ` + mine.map(([, , n]) => n).join(' + ') + ' = 1')
  })
  p.donors.forEach((d, j) => {
    const mine = vars.filter(v => v[1] === j)
    if (mine.length === 0) return
    lines.push(
      ` d${j}: ` +
        mine.map(([i, , n]) => `${num(p.groups[i]!.bytes / d.bandwidthBps / tScale)} ${n}`).join(' + ') +
        ' - t <= 0'
    )
  })
  lines.push('Bounds', ' t >= 0', ...vars.map(([, , n]) => ` ${n} >= 0`), 'End')
  return { text: lines.join('\n') + '\n', vars, tScale }
}

async function solve(text: string): Promise<{ objective: number; primal: (name: string) => number }> {
  const h = await highs()
  let sol
  try {
    sol = h.solve(text, { output_flag: false })
  } catch (err) {
    throw new VmifsError('SOLVER_FAILED', `HiGHS failed: ${(err as Error).message}`, undefined, { cause: err })
  }
  if (sol.Status !== 'Optimal')
    throw new VmifsError('SOLVER_FAILED', `HiGHS ended with status ${JSON.stringify(sol.Status)}`, {
      status: sol.Status
    })
  const cols = sol.Columns as Record<string, { Primal?: number } | undefined>
  return { objective: sol.ObjectiveValue, primal: n => Math.max(0, cols[n]?.Primal ?? 0) }
}

/** The seed's optimal plan, solved by HiGHS. */
export async function planTransfer(p: PlanInput): Promise<TransferPlan> {
  const idx = validate(p)
  const fractions = p.groups.map(() => p.donors.map(() => 0))
  if (p.groups.length === 0) return build(p, 'lp', fractions)
  const { text, vars } = lpText(p, idx)
  const first = await solve(text)
  const split = (sol: { primal: (name: string) => number }): number[][] => {
    const f = p.groups.map(() => p.donors.map(() => 0))
    for (const [i, j, n] of vars) f[i]![j] = sol.primal(n)
    // renormalise away solver round-off so every group is assigned exactly once
    for (const row of f) {
      const s = row.reduce((a, b) => a + b, 0)
      if (s > 0) for (let j = 0; j < row.length; j++) row[j]! /= s
    }
    return f
  }
  let best = split(first)
  const secondary = p.alpha * p.sigma === 0 ? 'time' : p.alpha === 1 ? 'price' : undefined
  if (secondary !== undefined) {
    // the second pass may not give up any of the first's objective (beyond float round-off)
    const second = split(await solve(lpText(p, idx, { minimize: secondary, bound: first.objective }).text))
    const a = evaluate(p, best).objective
    if (evaluate(p, second).objective <= a + 1e-12 * Math.abs(a)) best = second
  }
  return build(p, 'lp', best)
}

/** Per-byte cost of a donor as a single chunk sees it: the design's formula without RTT and queue. */
export function perByteCost(d: Donor, alpha: number, sigma: number): number {
  return (1 - alpha) * d.pricePerByte + (alpha * sigma) / d.bandwidthBps
}

/** Each chunk from its cheapest holder, as the per-chunk cost formula ranks them (ties: donor order). */
export function greedyPlan(p: PlanInput): TransferPlan {
  const idx = validate(p)
  const fractions = p.groups.map(g => {
    const row = p.donors.map(() => 0)
    const cost = (j: number): number => perByteCost(p.donors[j]!, p.alpha, p.sigma)
    const js = g.donors.map(id => idx.get(id)!).sort((a, b) => cost(a) - cost(b) || a - b)
    row[js[0]!] = 1
    return row
  })
  return build(p, 'greedy', fractions)
}

/** Everything from one donor: the one holding every group with the least objective; undefined if none holds all. */
export function singleSourcePlan(p: PlanInput): TransferPlan | undefined {
  validate(p)
  let best: TransferPlan | undefined
  p.donors.forEach((d, j) => {
    if (!p.groups.every(g => g.donors.includes(d.id))) return
    const plan = build(
      p,
      'single-source',
      p.groups.map(() => p.donors.map((_, k) => (k === j ? 1 : 0)))
    )
    if (!best || plan.fractional.objective < best.fractional.objective) best = plan
  })
  return best
}

/** Groups chunks by the set of donors holding them (the seed's e_ij); chunks nobody holds apart. */
export function groupByDonors(
  chunks: Iterable<ChunkRef>,
  holders: (hash: string) => string[]
): { groups: Group[]; unavailable: ChunkRef[] } {
  const groups = new Map<string, Group>()
  const unavailable: ChunkRef[] = []
  for (const c of chunks) {
    const ds = [...new Set(holders(c.hash))].sort()
    if (ds.length === 0) {
      unavailable.push(c)
      continue
    }
    const key = ds.join('\n')
    const g = groups.get(key)
    if (g) {
      g.chunks.push(c)
      g.bytes += c.size
    } else groups.set(key, { donors: ds, chunks: [c], bytes: c.size })
  }
  return {
    groups: [...groups.values()].sort((a, b) => b.bytes - a.bytes || (a.donors.join() < b.donors.join() ? -1 : 1)),
    unavailable
  }
}
