// Placement (US9300725, Tables 1-2): candidate hosts sorted by the network cost of constructing
// an image there — every chunk the candidate lacks from its cheapest holder (VM Construction,
// here greedyPlan) — and the three ways to pick from the sorted list:
//   top     the head of the list;
//   best-of the best by another metric among the top X;
//   within  the best by another metric among those costing at most X% more than the head.
// Other metrics: `load` (lower is better) or `free` cache space (more is better). A candidate
// whose metric is unknown is picked only when no candidate in range has it known.
import { VmifsError } from '../errors.js'
import { type Donor, type Group, greedyPlan, validateParams } from './transfer-plan.js'

export interface PlacementCandidate {
  host: string
  /** the chunks this candidate lacks, grouped by the donors (other than itself) holding them */
  groups: Group[]
  /** bytes it lacks that no donor holds (it cannot be built there completely) */
  unavailableBytes: number
  /** distinct data bytes of the image the candidate already holds */
  heldBytes: number
  freeBytes: number | null
  /** 1-minute load average per CPU */
  load: number | null
}

export interface RankedCandidate {
  host: string
  rank: number
  /** network cost of constructing the image there: α·σ·time + (1 − α)·price of the greedy plan */
  cost: number
  missingBytes: number
  missingChunks: number
  heldBytes: number
  unavailableBytes: number
  seconds: number
  price: number
  freeBytes: number | null
  load: number | null
  /** the missing bytes fit in the free cache space (null when that is unknown) */
  fits: boolean | null
}

export type PickMode = 'top' | 'best-of' | 'within'
export type PickMetric = 'load' | 'free'
export interface Pick {
  mode: PickMode
  x?: number
  by?: PickMetric
}

export interface PlacementInput {
  candidates: PlacementCandidate[]
  donors: Donor[]
  alpha: number
  sigma: number
}

/** Candidates sorted by network cost, cheapest first; hosts that cannot be completed go last. */
export function rankPlacement(p: PlacementInput): RankedCandidate[] {
  validateParams(p.alpha, p.sigma)
  const rows = p.candidates.map((c): Omit<RankedCandidate, 'rank'> => {
    // a candidate never sends to itself: groups it is listed in lose it (and nobody else may hold them)
    const donors = p.donors.filter(d => d.id !== c.host)
    const groups = c.groups.map(g => ({ ...g, donors: g.donors.filter(d => d !== c.host) }))
    const orphanBytes = groups.filter(g => g.donors.length === 0).reduce((a, g) => a + g.bytes, 0)
    const plan = greedyPlan({ groups: groups.filter(g => g.donors.length > 0), donors, alpha: p.alpha, sigma: p.sigma })
    const missingBytes = plan.bytes
    const unavailableBytes = c.unavailableBytes + orphanBytes
    return {
      host: c.host,
      cost: plan.objective,
      missingBytes,
      missingChunks: plan.chunks,
      heldBytes: c.heldBytes,
      unavailableBytes,
      seconds: plan.seconds,
      price: plan.price,
      freeBytes: c.freeBytes,
      load: c.load,
      fits: c.freeBytes === null ? null : missingBytes + unavailableBytes <= c.freeBytes
    }
  })
  rows.sort(
    (a, b) =>
      Number(a.unavailableBytes > 0) - Number(b.unavailableBytes > 0) ||
      a.cost - b.cost ||
      a.missingBytes - b.missingBytes ||
      (a.host < b.host ? -1 : 1)
  )
  return rows.map((r, k) => ({ ...r, rank: k + 1 }))
}

function metricOrder(by: PickMetric): (a: RankedCandidate, b: RankedCandidate) => number {
  const val = (r: RankedCandidate): number | null =>
    by === 'load' ? r.load : r.freeBytes === null ? null : -r.freeBytes
  return (a, b) => {
    const va = val(a)
    const vb = val(b)
    if (va === null || vb === null) return Number(va === null) - Number(vb === null) || a.rank - b.rank
    return va - vb || a.rank - b.rank
  }
}

export function validatePick(pick: Pick): void {
  if (pick.mode === 'top') return
  if (pick.x === undefined || !Number.isFinite(pick.x))
    throw VmifsError.param('x', `is required with --pick ${pick.mode}`)
  if (pick.mode === 'best-of' && !(Number.isInteger(pick.x) && pick.x >= 1))
    throw VmifsError.param('x', `must be a whole number >= 1 with --pick best-of, got ${pick.x}`)
  if (pick.mode === 'within' && !(pick.x >= 0))
    throw VmifsError.param('x', `must be a percentage >= 0 with --pick within, got ${pick.x}`)
}

/** Picks from a ranked list in one of the seed's three ways; undefined for an empty list. */
export function pickPlacement(ranked: RankedCandidate[], pick: Pick): RankedCandidate | undefined {
  validatePick(pick)
  if (ranked.length === 0) return undefined
  const head = ranked[0]!
  if (pick.mode === 'top') return head
  const by = pick.by ?? 'load'
  const pool =
    pick.mode === 'best-of'
      ? ranked.slice(0, pick.x)
      : ranked.filter(
          r => r.unavailableBytes > 0 === head.unavailableBytes > 0 && r.cost <= head.cost * (1 + pick.x! / 100) + 1e-12
        )
  return [...pool].sort(metricOrder(by))[0]
}
