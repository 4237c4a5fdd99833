// Replication policies in a running agent (US9110727): every agent reads the policies
// (`policy/<image>` facts, from `vmifs policy set` on any host or the `policies` config section),
// computes the same placement from its copy of the metadata table (replica-placement.ts), and if
// it is one of an image's replicas, replicates the image onto itself (Replicator: only the chunks
// it lacks, batched, compressed when it pays) and keeps it pinned.
//
// Update propagation: a new version of an image under the same name (a new digest in its
// `image/<name>` fact) is adopted by every host; a replica then lacks exactly the new chunks
// (content addressing: the seed's active index minus the stale one), and fetches only those. The
// DR host goes first: the other replicas wait until it announces holding the whole new version.
// If the DR host is down (its health check fails) or has not finished within `drTimeoutMs` of the
// new version appearing, DR duty passes to the next replica in placement order, and so on.
//
// Each replica publishes `replica/<image>`: {digest, role, state, startedAt, doneAt, fetchedBytes,
// wireBytes, makespan}, so the fleet (and `vmifs policy show`) sees who holds which version.
// A host that stops being a replica of an image unpins it (it stays cached, evictable).
import type { DataDir } from '../datadir.js'
import { logFault } from '../util/guard.js'
import type { FactStore } from '../index/facts.js'
import type { ValueOf } from '../index/schema.js'
import type { HolderDirectory } from '../holders/directory.js'
import type { PeerClient } from '../peer/client.js'
import type { Logger } from '../util/log.js'
import { FleetView } from './fleet-view.js'
import { type Placement, type Policy, type Site, placeReplicas, validatePolicy } from './replica-placement.js'
import type { ReplicateReport, Replicator } from './replicate.js'

export interface EffectivePolicy {
  image: string
  policy: Policy
  origin: string
  setAt: number
}

/** This host's state as a replica of an image (its `replica/<image>` fact: src/index/schema.ts). */
export type ReplicaState = ValueOf<'replica'>

/** The policy in force for each image: the newest `policy/<image>` fact of any origin. */
export function effectivePolicies(facts: FactStore): Map<string, EffectivePolicy> {
  const out = new Map<string, EffectivePolicy>()
  for (const f of facts.allAs('policy')) {
    const image = f.name
    let policy: Policy
    try {
      policy = validatePolicy({ ...f.value, setAt: undefined }) // the codec's checks, and the DR rule
    } catch {
      continue
    }
    const setAt = f.value.setAt
    const cur = out.get(image)
    if (!cur || setAt > cur.setAt || (setAt === cur.setAt && f.origin > cur.origin))
      out.set(image, { image, policy, origin: f.origin, setAt })
  }
  return out
}

/** The site figures a host publishes in its host record. */
export function siteOf(facts: FactStore, host: string): { rttMs?: number; storagePrice?: number } {
  const s = facts.getAs('host', host)?.site
  const out: { rttMs?: number; storagePrice?: number } = {}
  if (s?.rttMs !== undefined) out.rttMs = s.rttMs
  if (s?.storagePrice !== undefined) out.storagePrice = s.storagePrice
  return out
}

/** The placement of an image's replicas as the table shows it (the publisher never counts). */
export function placementOf(
  view: FleetView,
  facts: FactStore,
  image: string,
  policy: Policy,
  publisher: string
): Placement {
  const img = view.image(image)
  let bytes = 0
  for (const c of img.chunks.values()) bytes += c.size
  const sites: Site[] = []
  for (const f of facts.allAs('host')) {
    if (f.origin === publisher || view.isDead(f.origin)) continue
    const need = view.need(image, f.origin, [])
    sites.push({ id: f.origin, ...siteOf(facts, f.origin), heldBytes: need.heldBytes })
  }
  return placeReplicas(policy, sites, bytes)
}

export interface ReplicationDeps {
  dd: DataDir
  facts: FactStore
  self: string
  directory: HolderDirectory
  replicator: Replicator
  client: (endpoint: string) => PeerClient
  links: Record<string, { price?: number; bandwidthBps?: number; rttMs?: number }>
  origin?: string
  log: Logger
  drTimeoutMs: number
  intervalMs: number
}

const HEALTH_TTL_MS = 2000

export class ReplicationManager {
  private timer: NodeJS.Timeout | undefined
  private busy = false
  private closed = false
  private readonly running = new Map<string, Promise<void>>()
  /** when this host first saw each (image, digest): the DR deadline counts from there */
  private readonly firstSeen = new Map<string, number>()
  private readonly health = new Map<string, { at: number; ok: boolean }>()
  private readonly probing = new Set<string>()
  runs = 0

  constructor(private readonly d: ReplicationDeps) {}

  start(): void {
    this.timer = setInterval(() => this.tick(), this.d.intervalMs)
    this.timer.unref()
    this.tick()
  }

  async close(): Promise<void> {
    this.closed = true
    if (this.timer) clearInterval(this.timer)
    // copies under way end when the fetcher's connections close; wait a little, not for them
    await Promise.race([
      Promise.allSettled([...this.running.values()]),
      new Promise(resolve => setTimeout(resolve, 2000).unref())
    ])
  }

  /** Cached health of a host; unknown hosts are probed in the background and count as alive meanwhile. */
  private alive(host: string): boolean {
    const h = this.health.get(host)
    const now = Date.now()
    if (!h || now - h.at > HEALTH_TTL_MS) {
      if (!this.probing.has(host)) {
        const info = this.d.directory.host(host)
        if (!info) {
          this.health.set(host, { at: now, ok: false })
          return false
        }
        this.probing.add(host)
        this.d
          .client(info.endpoint)
          .health(AbortSignal.timeout(1500))
          .then(
            () => this.health.set(host, { at: Date.now(), ok: true }),
            () => this.health.set(host, { at: Date.now(), ok: false })
          )
          .finally(() => this.probing.delete(host))
      }
      return h?.ok ?? true
    }
    return h.ok
  }

  private state(image: string): ReplicaState | undefined {
    return this.d.facts.getAs('replica', this.d.self, image)
  }

  private publish(image: string, s: ReplicaState | null): void {
    this.d.facts.publishAs('replica', image, s)
  }

  tick(): void {
    if (this.busy || this.closed) return
    this.busy = true
    try {
      this.tickOnce()
    } catch (err) {
      logFault(this.d.log, 'replication: a tick', err)
    } finally {
      this.busy = false
    }
  }

  private tickOnce(): void {
    const d = this.d
    const policies = effectivePolicies(d.facts)
    const view = new FleetView(d.dd, { self: d.self, links: d.links, origin: d.origin, dead: d.directory.dead })
    const mine = new Set<string>()
    for (const { image, policy } of policies.values()) {
      const row = d.dd.catalog.getImage(image)
      if (!row) continue
      const publisher = row.origin ?? d.self
      if (publisher === d.self) continue // the publisher holds the primary copy
      const placement = placementOf(view, d.facts, image, policy, publisher)
      const idx = placement.replicas.findIndex(r => r.id === d.self)
      if (idx < 0) continue
      mine.add(image)
      if (this.running.has(image)) continue
      const key = `${image} ${row.digest}`
      if (!this.firstSeen.has(key)) this.firstSeen.set(key, Date.now())
      const need = view.need(image, d.self, [])
      const complete = need.heldChunks === need.chunks
      const cur = this.state(image)
      if (complete && row.pinned) {
        if (cur?.digest !== row.digest || cur.state !== 'done')
          this.publish(image, {
            ...(cur ?? {}),
            digest: row.digest,
            role: placement.replicas[idx]!.dr ? 'dr' : (cur?.role ?? 'replica'),
            state: 'done',
            doneAt: cur?.doneAt ?? Date.now()
          })
        continue
      }
      // DR first: walk the replicas ahead of this host; one that holds the whole version, or is
      // this host, ends the wait; a live one within its deadline makes us wait; a dead or late
      // one hands DR duty on
      let go = false
      let drFor: string | undefined
      const seen = this.firstSeen.get(key)!
      for (let k = 0; k < placement.replicas.length; k++) {
        const r = placement.replicas[k]!
        if (r.id === d.self || !placement.replicas[0]!.dr) {
          go = true
          break
        } // no DR host: no order
        if (view.need(image, r.id, []).heldChunks === need.chunks) {
          go = true
          drFor = undefined
          break
        }
        const late = Date.now() - seen > d.drTimeoutMs * (k + 1)
        if (this.alive(r.id) && !late) break
        drFor = r.id
        d.log.info(
          { image, host: r.id, late },
          'replication: the DR host (or the replica acting for it) is down or late: DR duty passes on'
        )
      }
      if (!go) {
        if (cur?.digest !== row.digest || cur.state !== 'waiting')
          this.publish(image, { digest: row.digest, role: 'replica', state: 'waiting' })
        continue
      }
      const role = placement.replicas[idx]!.dr || drFor !== undefined ? 'dr' : 'replica'
      this.running.set(
        image,
        this.copy(image, row.digest, role, drFor).finally(() => this.running.delete(image))
      )
    }
    // no longer a replica: unpin (the chunks stay cached and become evictable)
    for (const f of d.facts.allAs('replica')) {
      if (f.origin !== d.self) continue
      const image = f.name
      if (mine.has(image) || this.running.has(image)) continue
      const row = d.dd.catalog.getImage(image)
      if (row && row.origin !== null && row.pinned) d.dd.catalog.setPinned(image, false)
      this.publish(image, null)
      d.log.info({ image }, 'replication: no longer a replica here: unpinned')
    }
  }

  private async copy(image: string, digest: string, role: 'dr' | 'replica', drFor: string | undefined): Promise<void> {
    const startedAt = Date.now()
    this.publish(image, { digest, role, state: 'copying', startedAt, ...(drFor !== undefined ? { drFor } : {}) })
    this.d.log.info({ image, digest, role, drFor }, 'replication: copying a new version')
    let rep: ReplicateReport
    try {
      rep = await this.d.replicator.replicate({ image, pin: true })
    } catch (err) {
      this.d.log.warn({ image, err: (err as Error).message }, 'replication: copy failed (will retry)')
      this.publish(image, {
        digest,
        role,
        state: 'failed',
        startedAt,
        error: (err as Error).message,
        ...(drFor !== undefined ? { drFor } : {})
      })
      return
    }
    this.runs++
    // the image may have moved on to yet another version meanwhile: the next tick sees it
    this.publish(image, {
      digest: rep.digest,
      role,
      state: 'done',
      startedAt,
      doneAt: Date.now(),
      fetchedBytes: rep.fetchedBytes,
      wireBytes: rep.wireBytes,
      makespan: rep.makespan,
      ...(drFor !== undefined ? { drFor } : {})
    })
  }
}
