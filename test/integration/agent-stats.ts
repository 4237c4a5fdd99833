// The agent's stats snapshot as tests read it: the mount's .stats file and `vmifs stats --json`.
// The agent builds it in snapshot() (src/stats/stats.ts), completed in src/agent.ts (modelSessions,
// fleet); docs/stats.md documents every key. Maps keyed by host id or image name are
// records: with noUncheckedIndexedAccess, a test says (with !) which keys it expects.
import path from 'node:path'
import type { PrefetchStats, Stats } from '../../src/stats/stats.js'
import { run } from './harness.js'

export interface HolderSnapshot {
  bytes: number
  wireBytes: number
  requests: number
  errors: number
  p50Ms: number
  p99Ms: number
}

export interface ImageSnapshot {
  size: number
  digest: string
  dataBytes: number
  uniqueBytes: number
  cachedBytes: number
  cachedShare: number
  hitRate: number
  hitBytes: number
  missBytes: number
  readOps: number
  fetch: { bytes: number; byHolder: Record<string, number>; demandFetchedChunks: number }
  prefetch: { issued: number; used: number; late: number; wasted: number; precision: number; recall: number }
  modelSessions: number
}

export interface LinkSnapshot {
  rttMs: number
  bandwidthBps: number
  demoted: boolean
}

/** Present in fleet mode (or with --listen). */
export interface FleetSnapshot {
  endpoint: string | null
  peers: string[]
  hosts: string[]
  cursors: Record<string, number>
  syncRounds: number
  /** facts refused from peers since start, per reason */
  factsRefused: Record<string, number>
  imagesRefused: Record<string, number>
  factResets: number
  /** peers not pulled from now: they sent facts their origins did not sign */
  syncDemoted: string[]
  /** with an origin store: what this host read of it */
  origin?: { format?: number; images: number; chunks: number; problem?: string }
  inFlight: number
  links: Record<string, LinkSnapshot>
  /** where the table is kept: peers (synced copies) or redis (a shared engine) */
  metadata?: {
    backend: 'peers' | 'redis'
    connected?: boolean
    written?: number
    applied?: number
    refused?: number
    lookups?: number
    catchUps?: number
    expired?: number
    bytesIn?: number
    bytesOut?: number
    expiryEvents?: boolean
    deadHosts?: number
    followedImages?: number
  }
}

export interface AgentStats {
  version: number
  hostId: string
  mount: string
  time: string
  uptimeSec: number
  cache: {
    hitOps: number
    missOps: number
    hitBytes: number
    missBytes: number
    hitRate: number
    zeroBytes: number
    memoryHits: number
    sizeBytes: number
    capacityBytes: number
    effectiveCapacityBytes: number
    pinnedBytes: number
    chunks: number
    evictions: number
    corruptChunks: number
  }
  read: { ops: number; bytes: number; nativeOps: number; errors: number; p50Ms: number; p99Ms: number }
  fetch: {
    bytes: number
    wireBytes: number
    failures: number
    hedges: number
    readAheadChunks: number
    missAheadChunks: number
    byHolder: Record<string, HolderSnapshot>
  }
  served: Stats['served']
  prefetch: PrefetchStats & { precision: number; recall: number; pending: number; demandFetchedChunks: number }
  images: Record<string, ImageSnapshot>
  fleet?: FleetSnapshot
}

/** `.stats` of the agent mounted at `mount`, read by a child process (`run`'s timeout). */
export function readStats(mount: string, timeoutMs?: number): AgentStats {
  return JSON.parse(run('cat', [path.join(mount, '.stats')], timeoutMs).stdout) as AgentStats
}
