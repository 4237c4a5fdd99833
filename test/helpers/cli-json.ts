// What some `vmifs <command> --json` print, for tests that parse it. Most commands assemble these
// objects inline, so there is no type to import: these are built from the src/ types of the parts.
import type { Pick as PlacementPick, RankedCandidate } from '../../src/planner/placement.js'
import type { ReplicaState } from '../../src/planner/replication.js'
import type { Placement, Policy } from '../../src/planner/replica-placement.js'

/** `vmifs plan <image> --to <host> --json` (src/planner/plan-report.ts). */
export type { PlanReport as PlanJson } from '../../src/planner/plan-report.js'

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
