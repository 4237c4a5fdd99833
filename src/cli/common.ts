// Shared CLI plumbing: option parsing (node:util parseArgs), config resolution, formatting.
import { parseArgs, type ParseArgsConfig } from 'node:util'
import { VmifsError } from '../errors.js'
import { type Config, defaults, loadConfigFile, parseSize } from '../config.js'
import { DataDir } from '../datadir.js'

export interface Command {
  name: string
  summary: string
  usage: string
  run (argv: string[]): Promise<number>
}

export const COMMON_OPTIONS = {
  'data-dir': { type: 'string' },
  config: { type: 'string' },
  'cache-size': { type: 'string' },
  help: { type: 'boolean', short: 'h' }
} as const

export const COMMON_HELP = `Common options:
  --data-dir <dir>     data dir (env VMIFS_DATA_DIR, default /var/lib/vmifs)
  --config <file>      JSON config file (see README, "Config file")
  --cache-size <size>  cache capacity, e.g. 20GiB (default 20GiB)
  -h, --help           this help`

export function parse<O extends NonNullable<ParseArgsConfig['options']>> (cmd: Command, argv: string[], options: O, allowPositionals = true): { values: any, positionals: string[] } | undefined {
  let parsed
  try {
    parsed = parseArgs({ args: argv, options: { ...COMMON_OPTIONS, ...options }, allowPositionals, strict: true })
  } catch (err) {
    throw VmifsError.usage(`${(err as Error).message}\n\n${cmd.usage}`)
  }
  if ((parsed.values as Record<string, unknown>).help === true) {
    process.stdout.write(cmd.usage + '\n')
    return undefined
  }
  return parsed as { values: any, positionals: string[] }
}

export function resolveConfig (values: Record<string, unknown>): Config {
  let c = defaults()
  if (typeof values.config === 'string') c = loadConfigFile(values.config, c)
  if (typeof values['data-dir'] === 'string') c.dataDir = values['data-dir']
  if (typeof values['cache-size'] === 'string') c.capacityBytes = parseSize(values['cache-size'], '--cache-size')
  return c
}

export async function withDataDir<T> (c: Config, fn: (dd: DataDir) => Promise<T>): Promise<T> {
  const dd = DataDir.open(c.dataDir, { capacityBytes: c.capacityBytes })
  try { return await fn(dd) } finally { dd.close() }
}

export function bytes (n: number): string {
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let i = 0
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++ }
  return `${i === 0 ? n : n.toFixed(n >= 100 ? 0 : 1)} ${u[i]}`
}

export function table (rows: string[][]): string {
  const w = rows[0]!.map((_, c) => Math.max(...rows.map(r => r[c]!.length)))
  return rows.map(r => r.map((v, c) => c === r.length - 1 ? v : v.padEnd(w[c]!)).join('  ')).join('\n')
}
