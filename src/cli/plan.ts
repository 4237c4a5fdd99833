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
import { type PlanSummary, planReport } from '../planner/plan-report.js'
import { validateParams } from '../planner/transfer-plan.js'

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
    const r = await withDataDir(cfg, async dd => await planReport(cfg, dd, hostId, image, target, alpha, sigma))
    if (a.values.json === true) {
      process.stdout.write(JSON.stringify(r, null, 2) + '\n')
      return 0
    }
    const { need, donors } = r
    const [greedy, single] = r.compare
    process.stdout.write(
      `${image} -> ${target}: lacks ${need.missingChunks + need.unavailableChunks} of ${need.chunks} chunks ` +
        `(${bytes(need.missingBytes + need.unavailableBytes)} of ${bytes(need.bytes)}); ` +
        `α ${alpha}, σ ${sigma} per second\n`
    )
    if (need.unavailableChunks > 0)
      process.stdout.write(
        `warning: ${need.unavailableChunks} chunks (${bytes(need.unavailableBytes)}) are held by no donor; ` +
          'the plan covers the rest\n'
      )
    if (need.missingChunks === 0) {
      process.stdout.write('nothing to copy\n')
      return 0
    }
    const donorRows = donors.map(d => [d.id, bytes(d.holdsBytes), `${bytes(d.bandwidthBps)}/s`, money(d.pricePerGB)])
    process.stdout.write(`\n${table([['DONOR', 'HOLDS', 'BANDWIDTH', 'PRICE/GB'], ...donorRows])}\n\n`)
    const row = (
      name: string,
      p: Pick<PlanSummary, 'seconds' | 'price' | 'objective'> & { shares: Array<{ donor: string; bytes: number }> }
    ): string[] => [
      name,
      seconds(p.seconds),
      money(p.price),
      money(p.objective),
      p.shares.map(s => `${s.donor} ${bytes(s.bytes)}`).join(', ')
    ]
    process.stdout.write(
      table([
        ['METHOD', 'TIME', 'PRICE', 'OBJECTIVE', 'FROM'],
        row('lp', r.plan),
        row('greedy', greedy!),
        single ? row('single-source', single) : ['single-source', '-', '-', '-', 'no donor holds every missing chunk']
      ]) + '\n'
    )
    return 0
  }
}
