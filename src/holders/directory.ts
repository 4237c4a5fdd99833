// Who holds what, from the global metadata table: hosts (`host` facts: endpoint, egress price),
// holdings (`hold/<digest>` facts: entry ranges), and this host's link measurements. Contract:
// candidates() lists every other host whose announced holdings contain the chunk, in any manifest
// that uses it (the catalog's ChunkPlaces: hash -> (manifest, entry)); rank() orders them by the cost model,
// demoted holders last; the origin store, if configured, is always the last resort.
import type { Catalog } from '../index/catalog.js'
import type { FactStore } from '../index/facts.js'
import { ChunkPlaces } from '../index/chunk-places.js'
import { type Ranges, inRanges } from './holdings.js'
import { decodeAs, keyOf } from '../index/schema.js'
import { type CostParams, type LinkSeed, LinkStats, holderCost } from './link-stats.js'
import { nobodyDead } from '../metadata/hosts.js'

export const ORIGIN_ID = 'origin'

export interface HostInfo {
  hostId: string
  endpoint: string
  price: number
}

export class HolderDirectory {
  private readonly links = new Map<string, LinkStats>()
  /**
   * Other hosts' holdings by manifest, decoded when a `hold` fact of another host changes, not on
   * every fetch (each chunk fetched asks candidates(); reading and parsing every holdings fact
   * for each was a tenth of the agent's time replaying a boot)
   */
  private holdings: Map<string, Array<{ origin: string; ranges: Ranges }>> | undefined
  /**
   * The hosts taken for dead (no heartbeat: src/metadata/hosts.ts, or the Redis engine's expired
   * keys): no longer a host here, so holder choice, donors and placement skip them.
   */
  dead: () => ReadonlySet<string> = nobodyDead

  constructor(
    private readonly facts: FactStore,
    private readonly catalog: Catalog,
    private readonly self: string,
    private readonly seeds: Record<string, LinkSeed> = {},
    readonly originUrl?: string,
    private readonly places = new ChunkPlaces(catalog)
  ) {
    facts.onChange(changed => {
      if (changed.some(f => f.key.startsWith(keyOf('image')))) this.places.invalidate()
      if (changed.some(f => f.origin !== self && f.key.startsWith(keyOf('hold')))) this.holdings = undefined
    })
  }

  /** The catalog changed (an image was added or removed): rebuild the chunk index lazily. */
  invalidate(): void {
    this.places.invalidate()
  }

  host(hostId: string): HostInfo | undefined {
    if (hostId === ORIGIN_ID)
      return this.originUrl ? { hostId, endpoint: this.originUrl, price: this.seeds[ORIGIN_ID]?.price ?? 0 } : undefined
    if (this.dead().has(hostId)) return undefined
    const v = this.facts.getAs('host', hostId)
    if (!v) return undefined
    return { hostId, endpoint: v.endpoint, price: this.seeds[hostId]?.price ?? v.price }
  }

  hosts(): HostInfo[] {
    return this.facts
      .allAs('host')
      .map(f => this.host(f.origin))
      .filter((h): h is HostInfo => h !== undefined && h.hostId !== this.self)
  }

  link(hostId: string): LinkStats {
    let l = this.links.get(hostId)
    if (!l) {
      l = new LinkStats(hostId, this.seeds[hostId])
      this.links.set(hostId, l)
    }
    return l
  }

  allLinks(): LinkStats[] {
    return [...this.links.values()]
  }

  private holdingsByDigest(): Map<string, Array<{ origin: string; ranges: Ranges }>> {
    if (this.holdings) return this.holdings
    const by = new Map<string, Array<{ origin: string; ranges: Ranges }>>()
    for (const f of this.facts.byPrefix(keyOf('hold'))) {
      if (f.origin === this.self) continue
      const ranges = decodeAs('hold', f.value)?.ranges
      if (!ranges) continue
      const digest = f.key.slice(keyOf('hold').length)
      by.set(digest, [...(by.get(digest) ?? []), { origin: f.origin, ranges }])
    }
    this.holdings = by
    return by
  }

  /** Other hosts that announced holding this chunk (plus the origin store, if any). */
  candidates(hash: string): string[] {
    const out = new Set<string>()
    const snap = this.places.current()
    const places = snap.byHash.get(hash) ?? []
    const holdings = this.holdingsByDigest()
    const seen = new Set<number>()
    for (let k = 0; k < places.length; k += 2) {
      // the first entry of a manifest with this hash says it: a host holds all or none of them
      if (seen.has(places[k]!)) continue
      seen.add(places[k]!)
      for (const h of holdings.get(snap.digests[places[k]!]!) ?? [])
        if (inRanges(h.ranges, places[k + 1]!)) out.add(h.origin)
    }
    const list = [...out].filter(h => this.host(h) !== undefined)
    if (this.originUrl) list.push(ORIGIN_ID)
    return list
  }

  /**
   * Cheapest first; demoted holders after the others; the origin last of all. Equal costs in the
   * order of `tie` (default: by id).
   */
  rank(hostIds: string[], bytes: number, p: CostParams, tie: (h: string) => string = h => h): string[] {
    const now = Date.now()
    const scored = hostIds.map(h => {
      const info = this.host(h)
      const link = this.link(h)
      const tier = h === ORIGIN_ID ? 2 : link.demoted(now) ? 1 : 0
      return { h, tier, cost: holderCost(link, info?.price ?? 0, bytes, p), key: tie(h) }
    })
    scored.sort((a, b) => a.tier - b.tier || a.cost - b.cost || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
    return scored.map(s => s.h)
  }
}
