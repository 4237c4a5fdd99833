// What some `vmifs <command> --json` print, for tests that parse it. The commands assemble these
// objects inline, so there is no type to import: these are built from the src/ types of the parts.
import type { Pick as PlacementPick, RankedCandidate } from '../../src/planner/placement.js'
import type { ReplicaState } from '../../src/planner/replication.js'
import type { Placement, Policy } from '../../src/planner/replica-placement.js'
import type { Donor, DonorShare, Evaluation, TransferPlan } from '../../src/planner/transfer-plan.js'

/** A plan's figures without its chunk lists (src/cli/plan.ts summary()). */
interface PlanSummary extends Pick<TransferPlan, 'method' | 'seconds' | 'price' | 'objective'> {
  fractional: Evaluation
  shares: Array<Omit<DonorShare, 'chunks'> & { chunkCount: number }>
}

/** `vmifs plan <image> --to <host> --json` (src/cli/plan.ts). */
export interface PlanJson {
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
  donors: Array<Donor & { pricePerGB: number; holdsBytes: number }>
  groups: Array<{ donors: string[]; chunks: number; bytes: number }>
  /** the LP plan, with its chunk lists */
  plan: Omit<PlanSummary, 'shares'> & { fractions: number[][]; shares: DonorShare[] }
  /** greedy, then single-source (with its donor) when there is one */
  compare: Array<PlanSummary & { donor?: string | null }>
}

/** One entry of `vmifs policy show [<image>] --json` (src/cli/policy.ts). */
export interface PolicyShown {
  image: string
  policy: Policy
  setBy: string
  setAt: number
  /** false: this host has no such image; the fields below are left out */
  known: boolean
  digest?: string
  publisher?: string
  placement?: Array<
    Placement['replicas'][number] & {
      rttMs?: number
      storagePrice?: number
      /** what the host last reported of its copy (null: nothing yet) */
      state: ReplicaState | null
      /** it holds the image's current version */
      current: boolean
    }
  >
  excluded?: Placement['excluded']
  short?: number
}

/** `vmifs place <image> --candidates <hosts> --json` (src/cli/place.ts). */
export interface PlaceJson {
  image: string
  alpha: number
  sigma: number
  pick: PlacementPick & { host: string | null }
  candidates: RankedCandidate[]
}
