// Small helpers shared by the benchmarks: argument parsing, number formatting, markdown tables.
import { type Chunking, DEFAULT_CHUNKING } from '../../src/manifests/chunking.js'

/** `--name VALUE` from args (removed from the array), or undefined. */
export function takeOption(args: string[], name: string): string | undefined {
  const i = args.indexOf(name)
  if (i < 0) return undefined
  const v = args[i + 1]
  if (v === undefined || v.startsWith('--')) throw new Error(`${name} needs a value`)
  args.splice(i, 2)
  return v
}

export const KiB = 1024
export const MiB = 1024 * 1024
export const GiB = 1024 * 1024 * 1024

/** 16384 -> '16 KiB', 1048576 -> '1 MiB' */
export function sizeLabel(n: number): string {
  if (n >= GiB && n % GiB === 0) return `${n / GiB} GiB`
  if (n >= MiB && n % MiB === 0) return `${n / MiB} MiB`
  if (n >= KiB && n % KiB === 0) return `${n / KiB} KiB`
  return `${n} B`
}

export function pct(x: number, digits = 1): string {
  return Number.isFinite(x) ? `${(x * 100).toFixed(digits)} %` : 'n/a'
}

export function num(x: number, digits = 0): string {
  return Number.isFinite(x)
    ? x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })
    : 'n/a'
}

export function mean(xs: number[]): number {
  return xs.length === 0 ? NaN : xs.reduce((a, b) => a + b, 0) / xs.length
}

/** A markdown table: the columns listed in `left` are left-aligned, the others right-aligned. */
export function markdownTable(header: string[], rows: string[][], left: number[] = [0]): string {
  const widths = header.map((h, i) => Math.max(h.length, 3, ...rows.map(r => (r[i] ?? '').length)))
  const cell = (s: string, i: number): string => (left.includes(i) ? s.padEnd(widths[i]!) : s.padStart(widths[i]!))
  const line = (cells: string[]): string => `| ${cells.map(cell).join(' | ')} |`
  const rule = `| ${widths.map((w, i) => (left.includes(i) ? '-'.repeat(w) : '-'.repeat(w - 1) + ':')).join(' | ')} |`
  return [line(header), rule, ...rows.map(line)].join('\n')
}

export function seconds(t0: bigint): number {
  return Number(process.hrtime.bigint() - t0) / 1e9
}

const short = (n: number): string =>
  n >= MiB && n % MiB === 0 ? `${n / MiB}M` : n % KiB === 0 ? `${n / KiB}K` : `${n}`

/** { fixed, 65536 } -> 'fixed 64K'; { cdc, 16384, 65536, 262144 } -> 'cdc 16K/64K/256K' */
export function chunkingLabel(c: Chunking): string {
  return c.kind === 'fixed'
    ? `fixed ${short(c.chunkSize)}`
    : `cdc ${short(c.min)}/${short(c.avg)}/${short(c.max)}${c.fileCuts === true ? ' + file cuts' : ''}`
}

export function sameChunking(a: Chunking, b: Chunking): boolean {
  if (a.kind === 'fixed') return b.kind === 'fixed' && a.chunkSize === b.chunkSize
  return (
    b.kind === 'cdc' &&
    a.min === b.min &&
    a.avg === b.avg &&
    a.max === b.max &&
    (a.fileCuts === true) === (b.fileCuts === true)
  )
}

/** chunkingLabel, with ' (default)' when it is DEFAULT_CHUNKING */
export function chunkingTitle(c: Chunking): string {
  return sameChunking(c, DEFAULT_CHUNKING) ? `${chunkingLabel(c)} (default)` : chunkingLabel(c)
}
