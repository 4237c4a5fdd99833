// The planner's view of the fleet, read from one data dir's copy of the metadata table: images
// (the catalog), who holds which chunks (`hold/<digest>` facts; this host's own cache for
// itself), donors and their links, and each host's cache space and load (`status` facts).
//
// Donors are the hosts with a host record (an endpoint others can fetch from) and the origin
// store if one is configured; as in HolderDirectory the origin is taken to hold every chunk.
// B_j and ρ_j are this host's view of each donor (config `links`, else the donor's published
// price and the 1 Gbit/s seed; measured throughput lives in the running agent only). For a
// target other than this host the plan assumes the target sees the donors as this host does:
// the table records no host's view of another's links.
import os from 'node:os'
import type { DataDir } from '../datadir.js'
import { VmifsError } from '../errors.js'
import { FactStore } from '../index/facts.js'
import { HolderDirectory, ORIGIN_ID } from '../holders/directory.js'
import type { LinkSeed } from '../holders/link-stats.js'
import { StatusLiveness } from '../metadata/hosts.js'
import { readEngine } from '../metadata/engine-view.js'
import type { Config } from '../config.js'
import { type ImageChunks, imageChunks } from './clusters.js'
import { type ChunkRef, type Donor, type Group, groupByDonors } from './transfer-plan.js'

export interface FleetViewOptions {
  self: string
  links?: Record<string, LinkSeed>
  origin?: string
  /** the hosts taken for dead (skipped as donors and replica sites) */
  dead?: () => ReadonlySet<string>
  /** without `dead`: judge liveness by the status facts' times at this heartbeat (else nobody is dead) */
  heartbeatMs?: number
  /** the table to read (default: the data dir's) */
  facts?: FactStore
}

/**
 * The view a command (plan, place, policy) reads, from a data dir. On the peers backend the data
 * dir's copy, liveness judged by the status facts' times. On Redis, that copy plus what the engine
 * says of the `images` named (every host's holdings of them) and of every host's status, the
 * hosts without a live key dead (src/metadata/engine-view.ts); if the engine does not answer, the
 * copy alone, nobody judged dead. `close()` when done.
 */
export async function openFleetView(
  cfg: Config,
  dd: DataDir,
  self: string,
  images: string[]
): Promise<{ view: FleetView; close: () => void }> {
  const o = { self, links: cfg.fleet.links, origin: cfg.fleet.origin }
  if (cfg.fleet.metadata === undefined)
    return { view: new FleetView(dd, { ...o, heartbeatMs: cfg.heartbeatMs }), close: () => undefined }
  const digests = images.flatMap(n => {
    const d = dd.catalog.getImage(n)?.digest
    return d === undefined ? [] : [d]
  })
  const engine = await readEngine(cfg, dd, self, digests)
  if (!engine) return { view: new FleetView(dd, o), close: () => undefined }
  const dead = engine.dead
  return { view: new FleetView(dd, { ...o, facts: engine.facts, dead: () => dead }), close: engine.close }
}

export interface Need {
  image: string
  target: string
  /** distinct data chunks of the image */
  chunks: number
  bytes: number
  heldChunks: number
  heldBytes: number
  groups: Group[]
  unavailable: ChunkRef[]
}

export class FleetView {
  readonly facts: FactStore
  readonly directory: HolderDirectory
  readonly self: string
  private readonly held = new Map<string, Set<string>>()

  constructor(
    private readonly dd: DataDir,
    private readonly opts: FleetViewOptions
  ) {
    this.self = opts.self
    this.facts = opts.facts ?? new FactStore(dd.db, opts.self)
    this.directory = new HolderDirectory(this.facts, dd.catalog, opts.self, opts.links ?? {}, opts.origin)
    if (opts.dead) this.directory.dead = opts.dead
    else if (opts.heartbeatMs !== undefined) {
      const byStatus = new StatusLiveness(this.facts, opts.heartbeatMs)
      this.directory.dead = () => byStatus.dead()
    }
  }

  image(name: string): ImageChunks {
    const row = this.dd.catalog.requireImage(name)
    return imageChunks(row.name, this.dd.catalog.manifest(row.digest)!)
  }

  images(): ImageChunks[] {
    return this.dd.catalog.listImages().map(r => imageChunks(r.name, this.dd.catalog.manifest(r.digest)!))
  }

  /** Hosts the table knows: this one, those with a host record, those announcing holdings. */
  hosts(): string[] {
    const out = new Set([this.self])
    for (const f of this.facts.allAs('host')) out.add(f.origin)
    for (const f of this.facts.allAs('hold')) out.add(f.origin)
    out.delete(ORIGIN_ID)
    return [...out].sort()
  }

  /** Whether the host is taken for dead (no heartbeat). */
  isDead(host: string): boolean {
    return this.directory.dead().has(host)
  }

  requireHost(host: string): string {
    if (!this.hosts().includes(host)) throw VmifsError.hostNotFound(host)
    return host
  }

  /** Hosts that can send chunks: a host record with an endpoint, plus the origin store. */
  donors(): Donor[] {
    const ids = this.facts
      .allAs('host')
      .map(f => f.origin)
      .filter(h => this.directory.host(h) !== undefined)
      .sort()
    if (this.opts.origin !== undefined) ids.push(ORIGIN_ID)
    return ids.map(id => ({
      id,
      bandwidthBps: this.directory.link(id).bandwidthBps,
      pricePerByte: this.directory.host(id)?.price ?? 0
    }))
  }

  /** Does `host` hold the chunk? This host: its cache. The origin: always. Others: their holdings facts. */
  holds(host: string, hash: string): boolean {
    if (host === this.self) return this.dd.store.has(hash)
    if (host === ORIGIN_ID) return this.opts.origin !== undefined
    return this.heldBy(host).has(hash)
  }

  private heldBy(host: string): Set<string> {
    const hit = this.held.get(host)
    if (hit) return hit
    const set = new Set<string>()
    for (const f of this.facts.allAs('hold')) {
      if (f.origin !== host) continue
      const m = this.dd.catalog.manifest(f.name)
      if (!m) continue
      for (const [a, b] of f.value.ranges) {
        for (let i = a; i < Math.min(b, m.count); i++) if (m.zero[i] === 0) set.add(m.hashHexAt(i))
      }
    }
    this.held.set(host, set)
    return set
  }

  /** What `target` lacks of `image`, grouped by the donors (other than the target) holding it. */
  need(image: string, target: string, donors: Donor[] = this.donors()): Need {
    const img = this.image(image)
    this.requireHost(target)
    const others = donors.filter(d => d.id !== target)
    const missing: ChunkRef[] = []
    let heldChunks = 0
    let heldBytes = 0
    let bytes = 0
    for (const [hash, c] of img.chunks) {
      bytes += c.size
      if (this.holds(target, hash)) {
        heldChunks++
        heldBytes += c.size
      } else missing.push({ hash, size: c.size })
    }
    const { groups, unavailable } = groupByDonors(missing, h => others.filter(d => this.holds(d.id, h)).map(d => d.id))
    return { image, target, chunks: img.chunks.size, bytes, heldChunks, heldBytes, groups, unavailable }
  }

  /** Free cache space and load per CPU: measured here for this host, from `status` facts for others. */
  status(host: string, capacityBytes: number): { freeBytes: number | null; load: number | null } {
    if (host === this.self) {
      return {
        freeBytes: Math.max(0, capacityBytes - this.dd.store.sizeBytes),
        load: os.loadavg()[0]! / Math.max(1, os.cpus().length)
      }
    }
    const v = this.facts.getAs('status', host)
    return {
      freeBytes: v ? Math.max(0, v.cacheCapacityBytes - v.cacheSizeBytes) : null,
      load: v ? v.load : null
    }
  }
}
