import {
  type Command,
  COMMON_HELP,
  PLANNER_HELP,
  parse,
  resolveConfig,
  withDataDir,
  bytes,
  table,
  plannerParams,
  seconds,
  money
} from './common.js'
import { VmifsError } from '../errors.js'
import { openFleetView } from '../planner/fleet-view.js'
import {
  type TransferPlan,
  greedyPlan,
  planTransfer,
  singleSourcePlan,
  validateParams
} from '../planner/transfer-plan.js'

const GB = 1e9

export const command: Command = {
  name: 'plan',
  summary: 'plan copying an image to a host: the LP split across donors, vs greedy and single-source',
  usage: `Usage: vmifs plan <image> --to <host> [--alpha <a>] [--sigma <s>] [--json]

Plans copying an image to a host from this data dir's copy of the fleet's metadata table (on the
Redis backend, with every host's holdings of the image and status read from the engine). The
chunks the host lacks (its announced holdings; this host's own cache for itself) are grouped by
the set of donors holding them; the split of each group across its donors minimizes
α·σ·t + (1 − α)·price, t being the time until the last donor is done (each donor sends its share at
its bandwidth, in parallel) and price the sum of bytes × each donor's price per byte (US9274818's
program, solved with the HiGHS LP solver). Shown next to greedy (each chunk from its cheapest
holder) and single-source (everything from the best donor that holds it all). Nothing is copied.

Donors are the hosts with an endpoint in the table and the origin store (config "origin"), taken to
hold every chunk. Bandwidth and price are this host's view of each donor (config "links", else the
donor's published price and 1 Gbit/s); for another target they are assumed to be the same.

Options:
  --to <host>          the target host (required)
${PLANNER_HELP}
  --json               one JSON object; "plan.shares" lists per donor the chunk hashes to fetch
${COMMON_HELP}`,
  async run(argv) {
    const a = parse(this, argv, {
      to: { type: 'string' },
      'host-id': { type: 'string' },
      alpha: { type: 'string' },
      sigma: { type: 'string' },
      json: { type: 'boolean' }
    })
    if (!a) return 0
    if (a.positionals.length !== 1) throw VmifsError.usage(`plan takes one image name\n\n${this.usage}`)
    const target = a.values.to
    if (target === undefined) throw VmifsError.usage(`plan needs --to <host>\n\n${this.usage}`)
    const cfg = resolveConfig(a.values)
    const { hostId, alpha, sigma } = plannerParams(cfg, a.values)
    validateParams(alpha, sigma)
    const image = a.positionals[0]!
    const out = await withDataDir(cfg, async dd => {
      const { view, close } = await openFleetView(cfg, dd, hostId, [image])
      try {
        const donors = view.donors().filter(d => d.id !== target)
        const need = view.need(image, target, donors)
        const input = { groups: need.groups, donors, alpha, sigma }
        const lp = await planTransfer(input)
        const holds = donors.map(d => need.groups.filter(g => g.donors.includes(d.id)).reduce((s, g) => s + g.bytes, 0))
        return { need, donors, holds, lp, greedy: greedyPlan(input), single: singleSourcePlan(input) }
      } finally {
        close()
      }
    })
    const { need, donors, lp, greedy, single } = out
    const missingBytes = need.groups.reduce((s, g) => s + g.bytes, 0)
    const missingChunks = need.groups.reduce((s, g) => s + g.chunks.length, 0)
    const unavailableBytes = need.unavailable.reduce((s, c) => s + c.size, 0)
    const summary = (p: TransferPlan): Record<string, unknown> => ({
      method: p.method,
      seconds: p.seconds,
      price: p.price,
      objective: p.objective,
      fractional: p.fractional,
      shares: p.shares.map(s => ({
        donor: s.donor,
        bytes: s.bytes,
        chunkCount: s.chunks.length,
        seconds: s.seconds,
        price: s.price
      }))
    })
    if (a.values.json === true) {
      process.stdout.write(
        JSON.stringify(
          {
            image,
            target,
            alpha,
            sigma,
            units: {
              bytes: 'bytes',
              seconds: 'seconds',
              price: 'price units (config "price" is per byte)',
              bandwidthBps: 'bytes per second'
            },
            need: {
              chunks: need.chunks,
              bytes: need.bytes,
              heldChunks: need.heldChunks,
              heldBytes: need.heldBytes,
              missingChunks,
              missingBytes,
              unavailableChunks: need.unavailable.length,
              unavailableBytes,
              unavailable: need.unavailable.map(c => c.hash)
            },
            donors: donors.map((d, j) => ({ ...d, pricePerGB: d.pricePerByte * GB, holdsBytes: out.holds[j] })),
            groups: need.groups.map(g => ({ donors: g.donors, chunks: g.chunks.length, bytes: g.bytes })),
            plan: { ...summary(lp), fractions: lp.fractions, shares: lp.shares },
            compare: [
              summary(greedy),
              ...(single ? [{ ...summary(single), donor: single.shares[0]?.donor ?? null }] : [])
            ]
          },
          null,
          2
        ) + '\n'
      )
      return 0
    }
    process.stdout.write(
      `${image} -> ${target}: lacks ${missingChunks + need.unavailable.length} of ${need.chunks} chunks ` +
        `(${bytes(missingBytes + unavailableBytes)} of ${bytes(need.bytes)}); α ${alpha}, σ ${sigma} per second\n`
    )
    if (need.unavailable.length > 0)
      process.stdout.write(
        `warning: ${need.unavailable.length} chunks (${bytes(unavailableBytes)}) are held by no donor; ` +
          'the plan covers the rest\n'
      )
    if (missingChunks === 0) {
      process.stdout.write('nothing to copy\n')
      return 0
    }
    const donorRows = donors.map((d, j) => [
      d.id,
      bytes(out.holds[j]!),
      `${bytes(d.bandwidthBps)}/s`,
      money(d.pricePerByte * GB)
    ])
    process.stdout.write(`\n${table([['DONOR', 'HOLDS', 'BANDWIDTH', 'PRICE/GB'], ...donorRows])}\n\n`)
    const row = (name: string, p: TransferPlan): string[] => [
      name,
      seconds(p.seconds),
      money(p.price),
      money(p.objective),
      p.shares.map(s => `${s.donor} ${bytes(s.bytes)}`).join(', ')
    ]
    process.stdout.write(
      table([
        ['METHOD', 'TIME', 'PRICE', 'OBJECTIVE', 'FROM'],
        row('lp', lp),
        row('greedy', greedy),
        single ? row('single-source', single) : ['single-source', '-', '-', '-', 'no donor holds every missing chunk']
      ]) + '\n'
    )
    return 0
  }
}
