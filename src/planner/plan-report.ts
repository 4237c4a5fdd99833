// What `vmifs plan --json` prints and the dashboard draws: the LP transfer plan of an image onto a
// target host from the fleet view (src/planner/fleet-view.ts), with greedy and single-source next to it.
import type { Config } from '../config.js'
import type { DataDir } from '../datadir.js'
import { openFleetView } from './fleet-view.js'
import { type TransferPlan, greedyPlan, planTransfer, singleSourcePlan, validateParams } from './transfer-plan.js'

const GB = 1e9

export interface PlanSummary {
  method: TransferPlan['method']
  seconds: number
  price: number
  objective: number
  fractional: TransferPlan['fractional']
  shares: Array<{ donor: string; bytes: number; chunkCount: number; seconds: number; price: number }>
}

export interface PlanReport {
  image: string
  target: string
  alpha: number
  sigma: number
  units: Record<string, string>
  need: {
    chunks: number
    bytes: number
    heldChunks: number
    heldBytes: number
    missingChunks: number
    missingBytes: number
    unavailableChunks: number
    unavailableBytes: number
    unavailable: string[]
  }
  donors: Array<{ id: string; bandwidthBps: number; pricePerByte: number; pricePerGB: number; holdsBytes: number }>
  groups: Array<{ donors: string[]; chunks: number; bytes: number }>
  /** the LP plan: "shares" list per donor the chunk hashes to fetch */
  plan: Omit<PlanSummary, 'shares'> & { fractions: number[][]; shares: TransferPlan['shares'] }
  compare: Array<PlanSummary & { donor?: string | null }>
}

function summary(p: TransferPlan): PlanSummary {
  return {
    method: p.method,
    seconds: p.seconds,
    price: p.price,
    objective: p.objective,
    fractional: p.fractional,
    shares: p.shares.map(s => ({
      donor: s.donor,
      bytes: s.bytes,
      chunkCount: s.chunks.length,
      seconds: s.seconds,
      price: s.price
    }))
  }
}

/** Plans copying `image` onto `target`, seen from host `self` (nothing is copied). */
export async function planReport(
  cfg: Config,
  dd: DataDir,
  self: string,
  image: string,
  target: string,
  alpha: number,
  sigma: number
): Promise<PlanReport> {
  validateParams(alpha, sigma)
  const { view, close } = await openFleetView(cfg, dd, self, [image])
  try {
    const donors = view.donors().filter(d => d.id !== target)
    const need = view.need(image, target, donors)
    const input = { groups: need.groups, donors, alpha, sigma }
    const lp = await planTransfer(input)
    const greedy = greedyPlan(input)
    const single = singleSourcePlan(input)
    const holds = donors.map(d => need.groups.filter(g => g.donors.includes(d.id)).reduce((s, g) => s + g.bytes, 0))
    return {
      image,
      target,
      alpha,
      sigma,
      units: {
        bytes: 'bytes',
        seconds: 'seconds',
        price: 'price units (config "price" is per byte)',
        bandwidthBps: 'bytes per second'
      },
      need: {
        chunks: need.chunks,
        bytes: need.bytes,
        heldChunks: need.heldChunks,
        heldBytes: need.heldBytes,
        missingChunks: need.groups.reduce((s, g) => s + g.chunks.length, 0),
        missingBytes: need.groups.reduce((s, g) => s + g.bytes, 0),
        unavailableChunks: need.unavailable.length,
        unavailableBytes: need.unavailable.reduce((s, c) => s + c.size, 0),
        unavailable: need.unavailable.map(c => c.hash)
      },
      donors: donors.map((d, j) => ({ ...d, pricePerGB: d.pricePerByte * GB, holdsBytes: holds[j]! })),
      groups: need.groups.map(g => ({ donors: g.donors, chunks: g.chunks.length, bytes: g.bytes })),
      plan: { ...summary(lp), fractions: lp.fractions, shares: lp.shares },
      compare: [summary(greedy), ...(single ? [{ ...summary(single), donor: single.shares[0]?.donor ?? null }] : [])]
    }
  } finally {
    close()
  }
}
