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
  type Pick,
  type PickMetric,
  type PickMode,
  pickPlacement,
  rankPlacement,
  validatePick
} from '../planner/placement.js'
import { validateParams } from '../planner/transfer-plan.js'

export const command: Command = {
  name: 'place',
  summary: 'rank candidate hosts for an image by the network cost of building it there',
  usage:
    'Usage: vmifs place <image> --candidates <h1,h2,...> [--pick top|best-of|within] ' +
    `[--x <n>] [--by load|free] [--json]

Sorts candidate hosts by the network cost of constructing the image there: every chunk a
candidate lacks, fetched from its cheapest holder (cost α·σ·time + (1 − α)·price, as in "vmifs
plan"'s greedy column), from this data dir's copy of the fleet's metadata table (on the Redis
backend, with every host's holdings of the image and status read from the engine). Beside each: the
bytes it lacks, its free cache space and load (1-minute load average per CPU; this host measured,
others from their agents' status facts, "-" when unknown). A host that cannot be completed (some
chunk has no holder) goes last. Then picks one of them (US9300725):
  top       the head of the list (default)
  best-of   the best by --by among the top --x hosts
  within    the best by --by among the hosts costing at most --x percent more than the head

Options:
  --candidates <list>  comma-separated host ids (required)
  --pick <mode>        top, best-of or within
  --x <n>              best-of: how many from the top; within: the percentage
  --by load|free       the other metric: least load (default) or most free cache space
${PLANNER_HELP}
  --json               one JSON object: the ranked list and the pick
${COMMON_HELP}`,
  async run(argv) {
    const a = parse(this, argv, {
      candidates: { type: 'string' },
      pick: { type: 'string' },
      x: { type: 'string' },
      by: { type: 'string' },
      'host-id': { type: 'string' },
      alpha: { type: 'string' },
      sigma: { type: 'string' },
      json: { type: 'boolean' }
    })
    if (!a) return 0
    if (a.positionals.length !== 1) throw VmifsError.usage(`place takes one image name\n\n${this.usage}`)
    if (a.values.candidates === undefined)
      throw VmifsError.usage(`place needs --candidates <h1,h2,...>\n\n${this.usage}`)
    const hosts = [
      ...new Set(
        a.values.candidates
          .split(',')
          .map(s => s.trim())
          .filter(s => s !== '')
      )
    ]
    if (hosts.length === 0) throw VmifsError.usage(`--candidates names no host\n\n${this.usage}`)
    const mode = (a.values.pick ?? 'top') as PickMode
    if (!['top', 'best-of', 'within'].includes(mode))
      throw VmifsError.usage(`--pick takes top, best-of or within\n\n${this.usage}`)
    const by = (a.values.by ?? 'load') as PickMetric
    if (by !== 'load' && by !== 'free') throw VmifsError.usage(`--by takes load or free\n\n${this.usage}`)
    const pick: Pick = { mode, by, ...(a.values.x !== undefined ? { x: Number(a.values.x) } : {}) }
    validatePick(pick)
    const cfg = resolveConfig(a.values)
    const { hostId, alpha, sigma } = plannerParams(cfg, a.values)
    validateParams(alpha, sigma)
    const image = a.positionals[0]!
    const ranked = await withDataDir(cfg, async dd => {
      const { view, close } = await openFleetView(cfg, dd, hostId, [image])
      try {
        view.image(image)
        for (const h of hosts) view.requireHost(h)
        const donors = view.donors()
        const candidates = hosts.map(h => {
          const n = view.need(image, h, donors)
          return {
            host: h,
            groups: n.groups,
            unavailableBytes: n.unavailable.reduce((s, c) => s + c.size, 0),
            heldBytes: n.heldBytes,
            ...view.status(h, cfg.capacityBytes)
          }
        })
        return rankPlacement({ candidates, donors, alpha, sigma })
      } finally {
        close()
      }
    })
    const chosen = pickPlacement(ranked, pick)
    if (a.values.json === true) {
      process.stdout.write(
        JSON.stringify(
          { image, alpha, sigma, pick: { ...pick, host: chosen?.host ?? null }, candidates: ranked },
          null,
          2
        ) + '\n'
      )
      return 0
    }
    const opt = <T>(v: T | null, f: (x: T) => string): string => (v === null ? '-' : f(v))
    process.stdout.write(`${image}: ${ranked.length} candidates, α ${alpha}, σ ${sigma} per second\n\n`)
    process.stdout.write(
      table([
        ['RANK', 'HOST', 'COST', 'MISSING', 'HELD', 'TIME', 'PRICE', 'FREE', 'LOAD', 'FITS'],
        ...ranked.map(r => [
          String(r.rank),
          r.host,
          money(r.cost),
          bytes(r.missingBytes) + (r.unavailableBytes > 0 ? ` (+${bytes(r.unavailableBytes)} unavailable)` : ''),
          bytes(r.heldBytes),
          seconds(r.seconds),
          money(r.price),
          opt(r.freeBytes, bytes),
          opt(r.load, x => x.toFixed(2)),
          opt(r.fits, x => (x ? 'yes' : 'no'))
        ])
      ]) + '\n\n'
    )
    const best = by === 'load' ? 'least load' : 'most free cache'
    const how =
      mode === 'top'
        ? 'top of the list'
        : mode === 'best-of'
          ? `${best} among the top ${pick.x}`
          : `${best} within ${pick.x}% of the top`
    process.stdout.write(`pick (${how}): ${chosen?.host ?? '-'}\n`)
    return 0
  }
}
