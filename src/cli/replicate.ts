// `vmifs replicate <image> [--to <host>]`: copies an image onto a host by executing a transfer
// plan in that host's agent (planner/replicate.ts). This host: over the agent's local API.
// Another host: over the peer protocol (`POST /v1/replicate` with the fleet token), so it can be
// run from any host of the fleet.
import fs from 'node:fs'
import path from 'node:path'
import {
  type Command,
  COMMON_HELP,
  PLANNER_HELP,
  parse,
  resolveConfig,
  withDataDir,
  bytes,
  table,
  seconds
} from './common.js'
import { agentCall } from '../server/local-api.js'
import { VmifsError } from '../errors.js'
import { FleetView } from '../planner/fleet-view.js'
import { PeerClient } from '../peer/client.js'
import type { ReplicateReport, ReplicateRequest } from '../planner/replicate.js'

export const command: Command = {
  name: 'replicate',
  summary: "copy an image onto a host: the plan's shares pulled from the donors in parallel, verified, pinned",
  usage: `Usage: vmifs replicate <image> [--to <host>] [--method lp|greedy|single-source] [--alpha <a>] [--sigma <s>]
                       [--streams <n>] [--no-compress] [--no-pin] [--json]

Executes a transfer plan (see vmifs plan) in the agent of the target host: the chunks the target
lacks are split across the donors that hold them, each donor's share is pulled in parallel
batched streams (64 chunks a request), compressed on the wire when that pays, every chunk is
verified against its BLAKE3 hash, stored pinned in the target's cache, and the image is pinned
there (never evicted) and its holdings announced. Prints per donor the bytes, the bytes on the
wire and the time, and the makespan against the plan's prediction.

Without --to, or with --to naming this host, the agent running on the data dir does it (its
local API). With --to naming another host, that host's agent is asked over the peer protocol
(its endpoint from the metadata table, the fleet secret from VMIFS_TOKEN or the config).

Options:
  --to <host>          the target host (default: this host)
  --method <m>         lp (default), greedy or single-source (see vmifs plan)
${PLANNER_HELP}
  --streams <n>        concurrent batch requests per donor (default 4)
  --no-compress        do not ask donors for compressed batches
  --no-pin             do not pin the image on the target
  --json               the report as JSON
${COMMON_HELP}`,
  async run(argv) {
    const a = parse(this, argv, {
      to: { type: 'string' },
      'host-id': { type: 'string' },
      method: { type: 'string' },
      alpha: { type: 'string' },
      sigma: { type: 'string' },
      streams: { type: 'string' },
      'no-compress': { type: 'boolean' },
      'no-pin': { type: 'boolean' },
      json: { type: 'boolean' }
    })
    if (!a) return 0
    if (a.positionals.length !== 1) throw VmifsError.usage(`replicate takes one image name\n\n${this.usage}`)
    const cfg = resolveConfig(a.values)
    const req: ReplicateRequest = { image: a.positionals[0]! }
    const num = (k: 'alpha' | 'sigma' | 'streams'): number | undefined => {
      const v = a.values[k]
      if (v === undefined) return undefined
      const n = v.trim() === '' ? Number.NaN : Number(v)
      if (!Number.isFinite(n)) throw VmifsError.param(k, `must be a number, not ${JSON.stringify(v)}`)
      return n
    }
    const alpha = num('alpha')
    if (alpha !== undefined) req.alpha = alpha
    const sigma = num('sigma')
    if (sigma !== undefined) req.sigma = sigma
    const streams = num('streams')
    if (streams !== undefined) req.streams = streams
    const method = a.values.method
    if (method !== undefined) {
      if (method !== 'lp' && method !== 'greedy' && method !== 'single-source')
        throw VmifsError.param('--method', `must be lp, greedy or single-source, not ${JSON.stringify(method)}`)
      req.method = method
    }
    if (a.values['no-compress'] === true) req.compress = false
    if (a.values['no-pin'] === true) req.pin = false
    const sock = path.join(cfg.dataDir, 'agent.sock')
    const to = a.values.to
    let self: string | undefined = typeof a.values['host-id'] === 'string' ? a.values['host-id'] : undefined
    if (self === undefined) {
      try {
        self = ((await agentCall(sock, 'GET', '/v1/health')) as { hostId: string }).hostId
      } catch {
        self = cfg.hostId
      }
    }
    let report: ReplicateReport
    if (to === undefined || to === self) {
      report = (await agentCall(sock, 'POST', '/v1/replicate', req, { untimed: true })) as ReplicateReport
    } else {
      if (cfg.fleet.token === '')
        throw new VmifsError(
          'TOKEN_MISSING',
          'asking another host needs the fleet secret: set VMIFS_TOKEN or "token" in the config file'
        )
      const endpoint = await withDataDir(cfg, dd => {
        const view = new FleetView(dd, { self, links: cfg.fleet.links, origin: cfg.fleet.origin })
        view.requireHost(to)
        const h = view.directory.host(to)
        if (!h) throw new VmifsError('HOST_NOT_FOUND', `host ${JSON.stringify(to)} publishes no endpoint`, { host: to })
        return h.endpoint
      })
      const client = new PeerClient(endpoint, {
        token: cfg.fleet.token,
        untimed: true,
        ...(cfg.fleet.tls?.ca ? { tls: { ca: fs.readFileSync(cfg.fleet.tls.ca, 'utf8') } } : {})
      })
      try {
        report = (await client.replicate(req, new AbortController().signal)) as ReplicateReport
      } finally {
        await client.close()
      }
    }
    if (a.values.json === true) {
      process.stdout.write(JSON.stringify(report, null, 2) + '\n')
      return 0
    }
    process.stdout.write(printReport(report))
    return 0
  }
}

export function printReport(r: ReplicateReport): string {
  const lines = [
    `${r.image} -> ${r.target}: held ${bytes(r.heldBytes)} of ${bytes(r.bytes)}; fetched ${r.fetchedChunks} chunks, ` +
      `${bytes(r.fetchedBytes)} (${bytes(r.wireBytes)} on the wire, ${(r.wireRatio * 100).toFixed(1)} %); ` +
      `${r.method}, α ${r.alpha}, σ ${r.sigma}`
  ]
  if (r.perDonor.length > 0) {
    lines.push(
      '',
      table([
        ['DONOR', 'CHUNKS', 'BYTES', 'WIRE', 'REQUESTS', 'TIME', 'PREDICTED', 'FAILED'],
        ...r.perDonor.map(d => [
          d.donor,
          String(d.chunks),
          bytes(d.bytes),
          bytes(d.wireBytes),
          String(d.requests),
          seconds(d.seconds),
          seconds(d.predictedSeconds),
          String(d.failed)
        ])
      ])
    )
  }
  const fallback = r.fallbackChunks > 0 ? `; ${r.fallbackChunks} chunks from other holders` : ''
  lines.push(
    '',
    `makespan ${seconds(r.makespan)} (plan predicted ${seconds(r.predicted.seconds)}; ` +
      `planning ${seconds(r.planSeconds)})${fallback}${r.pinned ? '; pinned' : ''}`
  )
  return lines.join('\n') + '\n'
}
