// `vmifs hosts [--json]`: the fleet's hosts with their state (up, stale, dead), last heartbeat,
// site, price, cache use and a summary of what they hold, from the running agent (on either
// metadata backend), or from the data dir's copy of the table when no agent runs.
import path from 'node:path'
import { type Command, COMMON_HELP, bytes, parse, resolveConfig, table, withDataDir } from './common.js'
import { agentCall } from '../server/local-api.js'
import { isVmifsError } from '../errors.js'
import { FactStore } from '../index/facts.js'
import { type HostRow, hostRows } from '../metadata/hosts.js'

export const command: Command = {
  name: 'hosts',
  summary: "the fleet's hosts: up, stale or dead, last seen, site, price, cache use, holdings",
  usage: `Usage: vmifs hosts [--json]

Lists every host of the fleet this host knows, with its state: up, stale (no heartbeat for 3
heartbeats: config heartbeatMs, 5 s) or dead (none for 4; on the Redis metadata backend, its live
key expired). Dead hosts are not chosen as holders, donors or replicas. Beside each: when it was
last seen, its site figures and price, its cache use and load, and how many images it holds
entries of (and how many whole). Asked of the agent running on the data dir; without one, from
the data dir's copy of the metadata table, as of when the agent last ran.

Options:
  --json    one JSON object: {"hosts": [...]}
${COMMON_HELP}`,
  async run(argv) {
    const a = parse(this, argv, { json: { type: 'boolean' } }, false)
    if (!a) return 0
    const cfg = resolveConfig(a.values)
    let hosts: HostRow[]
    try {
      hosts = ((await agentCall(path.join(cfg.dataDir, 'agent.sock'), 'GET', '/v1/hosts')) as { hosts: HostRow[] })
        .hosts
    } catch (err) {
      if (!isVmifsError(err, 'AGENT_NOT_RUNNING')) throw err
      hosts = await withDataDir(cfg, dd =>
        hostRows(new FactStore(dd.db, cfg.hostId, { trust: cfg.trust }), Date.now(), cfg.heartbeatMs)
      )
    }
    if (a.values.json === true) {
      process.stdout.write(JSON.stringify({ hosts }, null, 2) + '\n')
      return 0
    }
    const now = Date.now()
    const dash = (v: unknown, f: (x: never) => string = String): string =>
      v === null || v === undefined ? '-' : f(v as never)
    const rows = [['host', 'state', 'last seen', 'site rtt', 'price', 'cache', 'load', 'images (whole)']]
    for (const h of hosts)
      rows.push([
        h.host,
        h.state,
        dash(h.lastSeen, (t: number) => `${Math.max(0, Math.round((now - t) / 1000))} s ago`),
        dash(h.site?.rttMs, (x: number) => `${x} ms`),
        dash(h.price),
        h.cacheSizeBytes === null
          ? '-'
          : `${bytes(h.cacheSizeBytes)} / ${dash(h.cacheCapacityBytes, (x: number) => bytes(x))}`,
        dash(h.load),
        `${h.images} (${h.wholeImages})`
      ])
    process.stdout.write(table(rows) + '\n')
    return 0
  }
}
