// Shared CLI plumbing: option parsing (node:util parseArgs), config resolution, formatting.
import { parseArgs, type ParseArgsConfig } from 'node:util'
import { VmifsError } from '../errors.js'
import { type Config, defaults, loadConfigFile, parseSize } from '../config.js'
import { DataDir } from '../datadir.js'

export interface Command {
  name: string
  summary: string
  usage: string
  run(argv: string[]): Promise<number>
}

export const COMMON_OPTIONS = {
  'data-dir': { type: 'string' },
  config: { type: 'string' },
  'cache-size': { type: 'string' },
  help: { type: 'boolean', short: 'h' }
} as const

/** Where a command's manual lives (its section of docs/cli.md): named by every --help. */
export function manualOf(cmd: Pick<Command, 'name'>): string {
  return `docs/cli.md#vmifs-${cmd.name}`
}

export const COMMON_HELP = `Common options:
  --data-dir <dir>     data dir (env VMIFS_DATA_DIR, default /var/lib/vmifs)
  --config <file>      JSON config file (every key: docs/config.md)
  --cache-size <size>  cache capacity, e.g. 20GiB (default 20GiB)
  -h, --help           this help`

type OptionsConfig = NonNullable<ParseArgsConfig['options']>

/** The parseArgs config of parse(): the common options and the command's own, strict. */
interface ParseConfig<O extends OptionsConfig> {
  args: string[]
  options: typeof COMMON_OPTIONS & O
  allowPositionals: boolean
  strict: true
}

/**
 * What parse() returns. The values are typed by parseArgs itself from the options: a string option
 * is `string | undefined`, a boolean one `boolean | undefined`, one with `multiple: true` an array.
 */
export interface Parsed<O extends OptionsConfig> {
  values: ReturnType<typeof parseArgs<ParseConfig<O>>>['values']
  positionals: string[]
}

/**
 * Parses argv with the common options and the command's own (strict: an unknown option is a usage
 * error). Undefined after printing the usage for --help.
 */
export function parse<const O extends OptionsConfig>(
  cmd: Command,
  argv: string[],
  options: O,
  allowPositionals = true
): Parsed<O> | undefined {
  const config: ParseConfig<O> = {
    args: argv,
    options: { ...COMMON_OPTIONS, ...options },
    allowPositionals,
    strict: true
  }
  let parsed
  try {
    parsed = parseArgs(config)
  } catch (err) {
    throw VmifsError.usage(`${(err as Error).message}\n\n${cmd.usage}`)
  }
  if ((parsed.values as Record<string, unknown>).help === true) {
    process.stdout.write(`${cmd.usage}\n\nManual: ${manualOf(cmd)}\n`)
    return undefined
  }
  return parsed
}

export function resolveConfig(values: Record<string, unknown>): Config {
  let c = defaults()
  if (typeof values.config === 'string') c = loadConfigFile(values.config, c)
  if (typeof values['data-dir'] === 'string') c.dataDir = values['data-dir']
  if (typeof values['cache-size'] === 'string') c.capacityBytes = parseSize(values['cache-size'], '--cache-size')
  return c
}

export async function withDataDir<T>(
  c: Config,
  fn: (dd: DataDir) => T | Promise<T>,
  opts?: { convert?: boolean }
): Promise<T> {
  const dd = DataDir.open(c.dataDir, { capacityBytes: c.capacityBytes, convert: opts?.convert })
  try {
    return await fn(dd)
  } finally {
    dd.close()
  }
}

export function bytes(n: number): string {
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let i = 0
  while (n >= 1024 && i < u.length - 1) {
    n /= 1024
    i++
  }
  return `${i === 0 ? n : n.toFixed(n >= 100 ? 0 : 1)} ${u[i]}`
}

export function table(rows: string[][]): string {
  const w = rows[0]!.map((_, c) => Math.max(...rows.map(r => r[c]!.length)))
  return rows.map(r => r.map((v, c) => (c === r.length - 1 ? v : v.padEnd(w[c]!))).join('  ')).join('\n')
}

/** Options shared by the planner commands (similarity, plan, place). */
export const PLANNER_HELP = [
  "  --host-id <id>       this host's id in the fleet, as its agent runs (default: config hostId, else the hostname)",
  '  --alpha <a>          α in [0, 1]: weight of time against price (default: config fetch.prefetchAlpha, 0.3)',
  '  --sigma <s>          σ: the price of one second (default: config fetch.sigma, 1)'
].join('\n')

export function plannerParams(
  c: Config,
  values: Record<string, unknown>
): { hostId: string; alpha: number; sigma: number } {
  const num = (v: unknown, fallback: number): number =>
    typeof v === 'string' ? (v.trim() === '' ? Number.NaN : Number(v)) : fallback
  return {
    hostId: typeof values['host-id'] === 'string' ? values['host-id'] : c.hostId,
    alpha: num(values.alpha, c.fetch.prefetchAlpha),
    sigma: num(values.sigma, c.fetch.sigma)
  }
}

/** Seconds, short: "0.25 s", "12.3 s", "4 min 10 s". */
export function seconds(s: number): string {
  if (s < 100) return `${s < 10 ? s.toFixed(s < 1 ? 3 : 2) : s.toFixed(1)} s`
  const m = Math.floor(s / 60)
  return `${m} min ${Math.round(s - 60 * m)} s`
}

/** A price or objective, 4 significant digits. */
export function money(x: number): string {
  return x === 0 ? '0' : Number(x.toPrecision(4)).toString()
}

export function csv(rows: Array<Array<string | number>>): string {
  const cell = (v: string | number): string =>
    typeof v === 'number' || !/[",\n]/.test(v) ? String(v) : `"${v.replace(/"/g, '""')}"`
  return rows.map(r => r.map(cell).join(',')).join('\n') + '\n'
}
