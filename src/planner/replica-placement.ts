// Replication policies and replica placement (US9110727).
//
// A policy per image: the minimum number of replicas (full copies kept pinned on hosts other than
// the publisher), optional limits on the sites a replica may live on — the latency users see at
// the site (`site.rttMs` a host publishes) and its storage price per byte (`site.storagePrice`) —
// and optionally a disaster-recovery host, which gets every new version first.
//
// Placement is the seed's greedy heuristic, made deterministic so that every agent computes the
// same answer from its copy of the metadata table: the eligible sites are the hosts within the
// limits (the distribution phase's latency filter); among them the cheapest to keep the image
// win, the cost being storagePrice × the bytes the host would have to add, so chunks it already
// holds (this image's, or a sibling's) are credited (the seed's de-duplication savings); ties go
// to the host id. The DR host is exempt from the limits (a disaster-recovery site is far away on
// purpose) and comes first; the others follow in cost order, up to minReplicas in all.
import { VmifsError } from '../errors.js'

export interface Policy {
  minReplicas: number
  /** the disaster-recovery host: new versions go there first */
  dr?: string
  /** replicas only on sites whose published latency is at most this */
  maxRttMs?: number
  /** replicas only on sites whose storage price per byte is at most this */
  maxPrice?: number
}

/** What placement knows of a candidate host. */
export interface Site {
  id: string
  /** latency users see at this site (ms); undefined: not published (within any limit) */
  rttMs?: number
  /** price per byte stored; undefined: 0 */
  storagePrice?: number
  /** bytes of the image's distinct chunks the host already holds */
  heldBytes: number
}

export interface Placement {
  /** replicas in order: the DR host first (when there is one), then by cost */
  replicas: Array<{ id: string; dr: boolean; cost: number; missingBytes: number }>
  /** hosts left out by the limits */
  excluded: Array<{ id: string; why: string }>
  /** fewer eligible hosts than minReplicas */
  short: number
}

export function validatePolicy(v: unknown): Policy {
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    throw VmifsError.param('policy', 'must be an object {minReplicas, dr?, maxRttMs?, maxPrice?}')
  const o = v as Record<string, unknown>
  for (const k of Object.keys(o))
    if (!['minReplicas', 'dr', 'maxRttMs', 'maxPrice', 'setAt'].includes(k))
      throw VmifsError.param('policy', `has an unknown key ${JSON.stringify(k)}`)
  const n = o.minReplicas
  if (!(typeof n === 'number' && Number.isInteger(n) && n >= 0 && n <= 1000))
    throw VmifsError.param('minReplicas', `must be an integer in 0..1000, not ${JSON.stringify(n)}`)
  const p: Policy = { minReplicas: n }
  if (o.dr !== undefined && o.dr !== null) {
    if (typeof o.dr !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(o.dr))
      throw VmifsError.param('dr', `must be a host id, not ${JSON.stringify(o.dr)}`)
    p.dr = o.dr
  }
  for (const k of ['maxRttMs', 'maxPrice'] as const) {
    if (o[k] === undefined || o[k] === null) continue
    const x = o[k]
    if (!(typeof x === 'number' && Number.isFinite(x) && x >= 0))
      throw VmifsError.param(k, `must be a non-negative number, not ${JSON.stringify(x)}`)
    p[k] = x
  }
  if (p.dr !== undefined && p.minReplicas < 1)
    throw VmifsError.param('minReplicas', 'must be at least 1 with a DR host (the DR host is a replica)')
  return p
}

/**
 * The replicas of an image of `imageBytes` distinct data bytes under `policy`, among `sites`
 * (every host that could keep it, the publisher excluded by the caller).
 */
export function placeReplicas(policy: Policy, sites: Site[], imageBytes: number): Placement {
  const excluded: Placement['excluded'] = []
  const cost = (s: Site): number => (s.storagePrice ?? 0) * Math.max(0, imageBytes - s.heldBytes)
  const replicas: Placement['replicas'] = []
  const dr = policy.dr !== undefined ? sites.find(s => s.id === policy.dr) : undefined
  if (dr && policy.minReplicas > 0)
    replicas.push({ id: dr.id, dr: true, cost: cost(dr), missingBytes: Math.max(0, imageBytes - dr.heldBytes) })
  const eligible: Site[] = []
  for (const s of sites) {
    if (s.id === dr?.id) continue
    if (policy.maxRttMs !== undefined && s.rttMs !== undefined && s.rttMs > policy.maxRttMs) {
      excluded.push({ id: s.id, why: `latency ${s.rttMs} ms > ${policy.maxRttMs} ms` })
      continue
    }
    if (policy.maxPrice !== undefined && (s.storagePrice ?? 0) > policy.maxPrice) {
      excluded.push({ id: s.id, why: `storage price ${s.storagePrice ?? 0} > ${policy.maxPrice}` })
      continue
    }
    eligible.push(s)
  }
  eligible.sort((a, b) => cost(a) - cost(b) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
  for (const s of eligible) {
    if (replicas.length >= policy.minReplicas) break
    replicas.push({ id: s.id, dr: false, cost: cost(s), missingBytes: Math.max(0, imageBytes - s.heldBytes) })
  }
  return { replicas, excluded, short: Math.max(0, policy.minReplicas - replicas.length) }
}
