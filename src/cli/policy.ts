// `vmifs policy set|rm|show`: replication policies, stored as `policy/<image>` facts in the
// metadata table (this host is their origin), so every agent of the fleet sees them.
import path from 'node:path'
import { type Command, COMMON_HELP, parse, resolveConfig, withDataDir, bytes, table } from './common.js'
import { agentCall } from '../server/local-api.js'
import { VmifsError } from '../errors.js'
import { FactStore } from '../index/facts.js'
import type { Config } from '../config.js'
import { hostKey } from '../trust/keys.js'
import { validateName } from '../index/catalog.js'
import { openFleetView } from '../planner/fleet-view.js'
import { validatePolicy } from '../planner/replica-placement.js'
import { type ReplicaState, effectivePolicies, placementOf, siteOf } from '../planner/replication.js'

export const command: Command = {
  name: 'policy',
  summary: 'replication policies: minimum replicas, site limits, a disaster-recovery host',
  usage: `Usage: vmifs policy set <image> --min-replicas <n> [--dr <host>] [--max-rtt-ms <ms>] [--max-price <p>]
       vmifs policy rm <image>
       vmifs policy show [<image>] [--json]

set: publishes a replication policy for <image> in the fleet's metadata table: keep at least <n>
full copies (replicas) on hosts other than the publisher, pinned; only on sites whose published
latency (config site.rttMs) is at most --max-rtt-ms and whose storage price per byte (config
site.storagePrice) is at most --max-price; --dr names the disaster-recovery host, which is always
a replica (exempt from the limits) and gets every new version first. Replicas are placed by the
seed's greedy rule: within the limits, cheapest storage first, chunks a host already holds
credited. The newest policy set anywhere in the fleet wins.
rm: retracts the policy this host set (replicas unpin the image).
show: the policies in force, the placement every agent computes, and each replica's state (on the
Redis backend, from every host's holdings and status in the engine).

Options:
  --min-replicas <n>   replicas besides the publisher's copy (0..1000)
  --dr <host>          the disaster-recovery host
  --max-rtt-ms <ms>    latency limit for replica sites
  --max-price <p>      storage price limit (per byte) for replica sites
  --host-id <id>       this host's id (default: the running agent's, else config hostId or the hostname)
  --json               show: as JSON
${COMMON_HELP}`,
  async run(argv) {
    const a = parse(this, argv, {
      'min-replicas': { type: 'string' },
      dr: { type: 'string' },
      'max-rtt-ms': { type: 'string' },
      'max-price': { type: 'string' },
      'host-id': { type: 'string' },
      json: { type: 'boolean' }
    })
    if (!a) return 0
    const [verb, image, ...extra] = a.positionals
    if (!['set', 'rm', 'show'].includes(verb ?? '') || extra.length > 0 || (verb !== 'show' && image === undefined))
      throw VmifsError.usage(`policy takes "set <image> …", "rm <image>" or "show [<image>]"\n\n${this.usage}`)
    const cfg = resolveConfig(a.values)
    let self: string | undefined = typeof a.values['host-id'] === 'string' ? a.values['host-id'] : undefined
    if (self === undefined) {
      try {
        self = ((await agentCall(path.join(cfg.dataDir, 'agent.sock'), 'GET', '/v1/health')) as { hostId: string })
          .hostId
      } catch {
        self = cfg.hostId
      }
    }
    const me = self
    if (verb === 'set') {
      validateName(image!)
      const num = (k: 'min-replicas' | 'max-rtt-ms' | 'max-price'): number | undefined => {
        const v = a.values[k]
        if (v === undefined) return undefined
        const n = v.trim() === '' ? Number.NaN : Number(v)
        if (!Number.isFinite(n)) throw VmifsError.param(`--${k}`, `must be a number, not ${JSON.stringify(v)}`)
        return n
      }
      if (a.values['min-replicas'] === undefined)
        throw VmifsError.usage(`policy set needs --min-replicas <n>\n\n${this.usage}`)
      const raw: Record<string, unknown> = { minReplicas: num('min-replicas') }
      if (a.values.dr !== undefined) raw.dr = a.values.dr
      if (a.values['max-rtt-ms'] !== undefined) raw.maxRttMs = num('max-rtt-ms')
      if (a.values['max-price'] !== undefined) raw.maxPrice = num('max-price')
      const policy = validatePolicy(raw)
      await withDataDir(cfg, dd => {
        signedFacts(dd.db, me, cfg).publishAs('policy', image!, { ...policy, setAt: Date.now() })
      })
      process.stdout.write(JSON.stringify({ image, ...policy }) + '\n')
      return 0
    }
    if (verb === 'rm') {
      validateName(image!)
      const had = await withDataDir(cfg, dd => {
        const f = signedFacts(dd.db, me, cfg)
        if (!f.getAs('policy', me, image)) return false
        f.publishAs('policy', image!, null)
        return true
      })
      if (!had)
        throw new VmifsError('POLICY_NOT_FOUND', `this host (${me}) set no policy for ${JSON.stringify(image)}`, {
          name: image
        })
      return 0
    }
    const out = await withDataDir(cfg, async dd => {
      const facts = new FactStore(dd.db, me)
      const list = [...effectivePolicies(facts).values()].filter(p => image === undefined || p.image === image)
      if (image !== undefined && list.length === 0)
        throw new VmifsError('POLICY_NOT_FOUND', `no policy for ${JSON.stringify(image)}`, { name: image })
      const { view, close } = await openFleetView(
        cfg,
        dd,
        me,
        list.map(p => p.image)
      )
      try {
        return list.map(p => {
          const row = dd.catalog.getImage(p.image)
          const base = { image: p.image, policy: p.policy, setBy: p.origin, setAt: p.setAt }
          if (!row) return { ...base, known: false as const }
          const publisher = row.origin ?? me
          const placement = placementOf(view, facts, p.image, p.policy, publisher)
          const states: Record<string, ReplicaState> = Object.fromEntries(
            facts.allAs('replica', p.image).map(f => [f.origin, f.value])
          )
          return {
            ...base,
            known: true as const,
            digest: row.digest,
            publisher,
            placement: placement.replicas.map(r => ({
              ...r,
              ...siteOf(facts, r.id),
              state: states[r.id] ?? null,
              current: states[r.id]?.digest === row.digest && states[r.id]?.state === 'done'
            })),
            excluded: placement.excluded,
            short: placement.short
          }
        })
      } finally {
        close()
      }
    })
    if (a.values.json === true) {
      process.stdout.write(JSON.stringify(out, null, 2) + '\n')
      return 0
    }
    if (out.length === 0) {
      process.stdout.write('no policies\n')
      return 0
    }
    for (const p of out) {
      const pol = p.policy
      const limits =
        (pol.dr !== undefined ? `, DR ${pol.dr}` : '') +
        (pol.maxRttMs !== undefined ? `, rtt <= ${pol.maxRttMs} ms` : '') +
        (pol.maxPrice !== undefined ? `, storage price <= ${pol.maxPrice}` : '')
      process.stdout.write(`${p.image}: min ${pol.minReplicas} replicas${limits} (set by ${p.setBy})\n`)
      if (!p.known) {
        process.stdout.write('  image not known here yet\n\n')
        continue
      }
      const short = p.short > 0 ? `; ${p.short} replicas short (too few eligible hosts)` : ''
      process.stdout.write(`  publisher ${p.publisher}, digest ${p.digest.slice(0, 16)}…${short}\n`)
      process.stdout.write(
        table([
          ['  HOST', 'ROLE', 'MISSING', 'COST', 'STATE'],
          ...p.placement.map(r => [
            `  ${r.id}`,
            r.dr ? 'dr' : 'replica',
            bytes(r.missingBytes),
            String(r.cost),
            r.state
              ? `${r.state.state}${r.current ? '' : ' (older version)'}` +
                (r.state.drFor !== undefined ? `, DR for ${r.state.drFor}` : '')
              : '-'
          ])
        ]) + '\n'
      )
      for (const e of p.excluded) process.stdout.write(`  excluded ${e.id}: ${e.why}\n`)
      process.stdout.write('\n')
    }
    return 0
  }
}

/** The table as this host's agent keeps it, with the host key to sign what the command publishes. */
function signedFacts(db: ConstructorParameters<typeof FactStore>[0], me: string, cfg: Config): FactStore {
  return new FactStore(db, me, { signer: hostKey(cfg.dataDir) })
}
