// The hosts of the fleet and their state, as `vmifs hosts` shows them, on either backend: up,
// stale (no heartbeat for STALE_BEATS heartbeats) or dead (none for DEAD_BEATS: on the Redis
// backend, its live key expired). With the peers backend a heartbeat is a host's `status` fact
// (published every heartbeat with its time); with Redis, the host's live key.
import type { FactStore } from '../index/facts.js'

export const HEARTBEAT_MS = 5000
export const STALE_BEATS = 3
export const DEAD_BEATS = 4

export type HostState = 'up' | 'stale' | 'dead'

export interface HostRow {
  host: string
  state: HostState
  /** ms since the epoch of its last heartbeat; null when none was ever seen */
  lastSeen: number | null
  endpoint: string | null
  price: number | null
  site: { rttMs?: number; storagePrice?: number } | null
  cacheSizeBytes: number | null
  cacheCapacityBytes: number | null
  load: number | null
  /** the images it holds entries of, and of those the ones it holds whole (its inventory) */
  images: number
  wholeImages: number
}

/** What the Redis engine says of a host's liveness (RedisMetadata.liveness()). */
export interface Live {
  lastSeen: number
  status?: { cacheSizeBytes: number; cacheCapacityBytes: number; load: number }
}

const NONE: ReadonlySet<string> = new Set()

/**
 * The hosts taken for dead on the peers backend: those whose last `status` is DEAD_BEATS
 * heartbeats old (a host that never published a time is not judged). Kept for a second, since
 * holder choice asks on every fetch.
 */
export class StatusLiveness {
  private cached: { at: number; dead: ReadonlySet<string> } | undefined
  constructor(
    private readonly facts: FactStore,
    private readonly heartbeatMs = HEARTBEAT_MS
  ) {}

  dead(now = Date.now()): ReadonlySet<string> {
    if (this.cached && now - this.cached.at < 1000) return this.cached.dead
    const dead = new Set<string>()
    for (const f of this.facts.allAs('status'))
      if (
        f.origin !== this.facts.self &&
        f.value.at !== undefined &&
        stateOf(f.value.at, now, this.heartbeatMs) === 'dead'
      )
        dead.add(f.origin)
    this.cached = { at: now, dead: dead.size === 0 ? NONE : dead }
    return this.cached.dead
  }
}

/** No host taken for dead (a view with nothing to judge liveness by). */
export const nobodyDead = (): ReadonlySet<string> => NONE

export function stateOf(lastSeen: number | null, now: number, heartbeatMs = HEARTBEAT_MS): HostState {
  if (lastSeen === null) return 'dead'
  const age = now - lastSeen
  return age >= DEAD_BEATS * heartbeatMs ? 'dead' : age >= STALE_BEATS * heartbeatMs ? 'stale' : 'up'
}

/**
 * Every host with a host record here (and this one), sorted by id. `live`: the Redis engine's
 * view of liveness (a host missing from it is dead); without it, the `status` facts' times.
 */
export function hostRows(
  facts: FactStore,
  now: number,
  heartbeatMs = HEARTBEAT_MS,
  live?: ReadonlyMap<string, Live>
): HostRow[] {
  const ids = new Set([facts.self, ...facts.allAs('host').map(f => f.origin)])
  return [...ids].sort().map(host => {
    const rec = facts.getAs('host', host)
    const own = facts.getAs('status', host)
    const l = live?.get(host)
    const status = l?.status ?? own
    const lastSeen = host === facts.self ? now : live ? (l?.lastSeen ?? null) : (own?.at ?? null)
    const inv = facts.getAs('inv', host)?.images ?? {}
    const tenths = Object.values(inv)
    return {
      host,
      state: stateOf(lastSeen, now, heartbeatMs),
      lastSeen,
      endpoint: rec?.endpoint ?? null,
      price: rec?.price ?? null,
      site: rec?.site ?? null,
      cacheSizeBytes: status?.cacheSizeBytes ?? null,
      cacheCapacityBytes: status?.cacheCapacityBytes ?? null,
      load: status?.load ?? null,
      images: tenths.length,
      wholeImages: tenths.filter(x => x >= 10).length
    }
  })
}
