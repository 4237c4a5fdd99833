// Import throughput next to b3sum on the same file, in one run: b3sum on one thread and on all
// cores, then vmifs (i) compute only: read + chunk + BLAKE3 every data chunk + manifest, no writes,
// and (ii) a full importImage into a fresh data dir (chunks appended to a pack, synced, SQLite).
// Inputs: a generated file of random bytes (every chunk is new data) and, if present, the nginx
// image of the Debian family. Files are read once first, so every run is warm.
// Compute and import runs alternate; "CPU vs compute" is the ratio of their median CPU seconds.
// --steps: instead, on the random file with the default chunking, the import with each of its
// steps left out in turn (STEPS), to see what each costs.
// Usage: npm run bench -- import [--size-mib N] [--runs N] [--json FILE] [--steps]
import fs from 'node:fs'
import fsp from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { randomFillSync } from 'node:crypto'
import { execFileSync, spawnSync } from 'node:child_process'
import { DataDir } from '../src/datadir.js'
import { type Chunking, DEFAULT_CHUNKING } from '../src/manifests/chunking.js'
import { CHUNK_ZERO, type ChunkRun, createChunker } from '../src/manifests/chunker.js'
import { READ_SIZE, importImage, planCuts } from '../src/manifests/import.js'
import { ManifestBuilder } from '../src/manifests/manifest.js'
import { readPieces } from '../src/util/files.js'
import { readThrough } from './lib/files.js'
import {
  GiB,
  MiB,
  chunkingLabel,
  chunkingTitle,
  markdownTable,
  num,
  pct,
  seconds,
  sizeLabel,
  takeOption
} from './lib/report.js'

export const NGINX_IMAGE = '/var/tmp/vmifs-bench/family/nginx.img'
export const CHUNKINGS: Chunking[] = [{ kind: 'fixed', chunkSize: 64 * 1024 }, DEFAULT_CHUNKING]

/** One timed run: wall seconds and CPU seconds (user + sys) of whoever did the work. */
export interface Timing {
  wall: number
  cpu: number
  user?: number
  sys?: number
  detail?: Record<string, number | string>
}

export interface Result {
  input: string
  bytes: number
  tool: string
  runs: Timing[]
  /** the median run by wall time */
  wall: number
  cpu: number
  user?: number
  sys?: number
  detail?: Record<string, number | string>
}

/** Writes `size` bytes of random data (incompressible, no zero blocks) in 16 MiB pieces, synced. */
export function writeRandomFile(file: string, size: number): void {
  const fd = fs.openSync(file, 'w')
  try {
    const buf = Buffer.allocUnsafe(Math.min(READ_SIZE, size))
    for (let off = 0; off < size;) {
      const n = Math.min(buf.length, size - off)
      randomFillSync(buf, 0, n)
      fs.writeSync(fd, buf, 0, n, off)
      off += n
    }
    fs.fsyncSync(fd) // no writeback of the input competing with the timed runs
  } finally {
    fs.closeSync(fd)
  }
}

let clockTicks: number | undefined

/** CPU seconds used so far by this process's waited-for children (cutime, cstime). */
function childCpu(): { user: number; sys: number } {
  clockTicks ??= Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100
  const stat = fs.readFileSync('/proc/self/stat', 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ') // f[0] is field 3 (state)
  return { user: Number(f[13]) / clockTicks, sys: Number(f[14]) / clockTicks }
}

/** This process's CPU seconds since `since` (a process.cpuUsage() reading). */
function cpuSince(since: NodeJS.CpuUsage): { cpu: number; user: number; sys: number } {
  const u = process.cpuUsage(since)
  return { cpu: (u.user + u.system) / 1e6, user: u.user / 1e6, sys: u.system / 1e6 }
}

export function timeB3sum(file: string, threads?: number): Timing {
  const args = threads === undefined ? [file] : ['--num-threads', String(threads), file]
  const c0 = childCpu()
  const t0 = process.hrtime.bigint()
  const r = spawnSync('b3sum', args, { encoding: 'utf8' })
  const wall = seconds(t0)
  if (r.error) throw new Error(`b3sum: ${r.error.message} (apt-get install b3sum)`)
  if (r.status !== 0) throw new Error(`b3sum ${args.join(' ')} failed: ${r.stderr}`)
  const c1 = childCpu()
  const user = c1.user - c0.user
  const sys = c1.sys - c0.sys
  return { wall, cpu: user + sys, user, sys, detail: { hash: r.stdout.split(' ')[0]! } }
}

/** The compute path of an import: the same reads (16 MiB, one ahead), chunker, hashes, manifest. */
export async function timeCompute(file: string, chunking: Chunking): Promise<Timing> {
  const c0 = process.cpuUsage()
  const t0 = process.hrtime.bigint()
  const fh = await fsp.open(file, 'r')
  let dataChunks = 0
  let zeroBytes = 0
  let digest: string
  try {
    const size = (await fh.stat()).size
    // as import does: the file layout first when file cuts are asked for
    const plan = await planCuts(fh, size, chunking)
    const chunker = createChunker(plan.chunking, plan.layout?.cuts)
    const builder = new ManifestBuilder(plan.chunking)
    const take = (run: ChunkRun): void => {
      builder.addRun(run)
      for (let i = 0; i < run.n; i++)
        if ((run.flags[i]! & CHUNK_ZERO) !== 0) zeroBytes += run.lengths[i]!
        else dataChunks++
    }
    const got = await readPieces(fh, size, READ_SIZE, buf => take(chunker.push(buf)))
    if (got < size) throw new Error(`${file} shrank`)
    take(chunker.finish())
    digest = builder.build().digest()
  } finally {
    await fh.close()
  }
  return { wall: seconds(t0), ...cpuSince(c0), detail: { dataChunks, zeroBytes, digest } }
}

/** The middle value (the lower of the two middle ones for an even count). */
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]!

/** The import's steps, left out one more at a time by --steps (in this order). */
export const STEPS = ['catalog rows', 'store rows', 'pack writes', 'store lookups'] as const

/**
 * A full import into a fresh data dir under `tmp`. The dir is kept until the whole benchmark
 * ends, so that no run is charged for deleting the previous run's files. With `leftOut`, the first
 * that many STEPS are replaced by stand-ins that answer as the real ones do for all-new data
 * (nothing held, every chunk new): the CPU a step costs is the difference (--steps).
 */
export async function timeImport(file: string, chunking: Chunking, tmp: string, leftOut = 0): Promise<Timing> {
  const dir = fs.mkdtempSync(path.join(tmp, 'dd-'))
  const dd = DataDir.open(dir, { capacityBytes: 1024 * GiB })
  try {
    if (leftOut >= 1) dd.catalog.addImage = () => ({ collectable: [] })
    if (leftOut >= 2)
      dd.store.recordMany = (h, at) => {
        const n = h.length / 32
        let bytes = 0
        for (let i = 0; i < n; i++) bytes += at[4 * i + 2]!
        return { fresh: new Uint8Array(n).fill(1), bytes }
      }
    if (leftOut >= 3) {
      let end = 0
      dd.store.appendRun = (run, _piece, idx) => {
        const places = new Float64Array(2 * idx.length)
        for (let k = 0; k < idx.length; k++) {
          places[2 * k] = end
          places[2 * k + 1] = run.crcs[idx[k]!]!
          end += run.lengths[idx[k]!]!
        }
        return { pack: 1, places }
      }
    }
    if (leftOut >= 4) {
      dd.store.holdsMany = h => new Uint8Array(h.length / 32)
      dd.store.pinMany = () => {}
    }
    const c0 = process.cpuUsage()
    const t0 = process.hrtime.bigint()
    const r = await importImage(dd, file, { name: 'bench', chunking })
    const wall = seconds(t0)
    return {
      wall,
      ...cpuSince(c0),
      detail: { dataChunks: r.dataChunks, newChunks: r.newChunks, newBytes: r.newBytes, digest: r.digest }
    }
  } finally {
    dd.close()
  }
}

/** --steps: compute, the import, and the import without each step, in turns; medians of CPU seconds. */
async function stepsTable(file: string, label: string, runs: number, tmp: string): Promise<string> {
  const c = DEFAULT_CHUNKING
  const variants: Array<{ name: string; once: () => Promise<Timing> }> = [
    { name: 'compute', once: async () => await timeCompute(file, c) },
    ...[0, 1, 2, 3, 4].map(k => ({
      name: k === 0 ? 'import' : `import without ${STEPS.slice(0, k).join(', ')}`,
      once: async () => await timeImport(file, c, tmp, k)
    }))
  ]
  const cpu = variants.map(() => [] as number[])
  for (let r = 0; r < runs; r++)
    for (const [i, v] of variants.entries()) {
      const t = await v.once()
      cpu[i]!.push(t.cpu)
      console.error(`import --steps: ${v.name}: ${t.cpu.toFixed(2)} CPU s`)
    }
  const med = cpu.map(median)
  const rows = variants.map((v, i) => [
    v.name,
    med[i]!.toFixed(2),
    `${(med[i]! / med[0]!).toFixed(2)}×`,
    i >= 1 && i <= STEPS.length ? `${STEPS[i - 1]}: ${(med[i]! - med[i + 1]!).toFixed(2)}` : ''
  ])
  return (
    `## Import steps (${label}, ${chunkingTitle(c)}; medians of ${runs} runs in turns)\n\n` +
    markdownTable(['run', 'CPU s', 'vs compute', 'step left out next: CPU s it costs'], rows, [0, 3])
  )
}

function summarize(input: string, bytes: number, tool: string, all: Timing[]): Result {
  const med = [...all].sort((a, b) => a.wall - b.wall)[Math.floor((all.length - 1) / 2)]!
  console.error(
    `import: ${input}: ${tool}: ${all.map(t => `${t.wall.toFixed(2)} s (${t.cpu.toFixed(2)} CPU s)`).join(', ')}`
  )
  return {
    input,
    bytes,
    tool,
    runs: all,
    wall: med.wall,
    // CPU and wall are medians of their own: on a noisy machine the run of median wall time is not
    // the one of median CPU time
    cpu: median(all.map(t => t.cpu)),
    user: median(all.map(t => t.user ?? 0)),
    sys: median(all.map(t => t.sys ?? 0)),
    detail: med.detail
  }
}

async function measure(
  input: string,
  bytes: number,
  tool: string,
  runs: number,
  once: () => Timing | Promise<Timing>
): Promise<Result> {
  const all: Timing[] = []
  for (let i = 0; i < runs; i++) all.push(await once())
  return summarize(input, bytes, tool, all)
}

/** Two tools run in turns (a, b, a, b, ...): a noisy machine's slow spells fall on both alike. */
async function measurePair(
  input: string,
  bytes: number,
  tools: [string, string],
  runs: number,
  a: () => Promise<Timing>,
  b: () => Promise<Timing>
): Promise<[Result, Result]> {
  const ta: Timing[] = []
  const tb: Timing[] = []
  for (let i = 0; i < runs; i++) {
    ta.push(await a())
    tb.push(await b())
  }
  return [summarize(input, bytes, tools[0], ta), summarize(input, bytes, tools[1], tb)]
}

export function renderTable(results: Result[]): string {
  const rows = results.map(r => {
    const base = results.find(b => b.input === r.input && b.tool === 'b3sum --num-threads 1')
    const compute = r.tool.startsWith('vmifs import, ')
      ? results.find(b => b.input === r.input && b.tool === r.tool.replace('vmifs import, ', 'vmifs compute, '))
      : undefined
    const rate = r.bytes / r.wall
    return [
      r.input,
      r.tool,
      r.wall.toFixed(3),
      num(rate / 1e6),
      (rate / 1e9).toFixed(2),
      base === undefined ? 'n/a' : `${(rate / (base.bytes / base.wall)).toFixed(2)}×`,
      r.cpu.toFixed(2),
      `${r.user?.toFixed(2) ?? '?'} / ${r.sys?.toFixed(2) ?? '?'}`,
      r.cpu > 0 ? (r.bytes / r.cpu / 1e9).toFixed(2) : 'n/a',
      compute === undefined ? '' : `${(r.cpu / compute.cpu).toFixed(2)}×`
    ]
  })
  return markdownTable(
    [
      'input',
      'tool',
      'wall s',
      'MB/s',
      'GB/s',
      'vs b3sum 1T',
      'CPU s',
      'user / sys s',
      'GB/s per core',
      'CPU vs compute'
    ],
    rows,
    [0, 1]
  )
}

export async function main(args: string[]): Promise<void> {
  args = [...args]
  const sizeMiB = Number(takeOption(args, '--size-mib') ?? 1024)
  const runs = Number(takeOption(args, '--runs') ?? 3)
  const jsonFile = takeOption(args, '--json')
  const steps = args.includes('--steps')
  if (!(Number.isInteger(sizeMiB) && sizeMiB > 0) || !(Number.isInteger(runs) && runs > 0))
    throw new Error('usage: npm run bench -- import [--size-mib N] [--runs N] [--json FILE] [--steps]')
  const tmp = fs.mkdtempSync('/var/tmp/vmifs-bench-import-')
  if (steps) {
    try {
      const random = path.join(tmp, 'random.img')
      writeRandomFile(random, sizeMiB * MiB)
      readThrough(random)
      console.log(await stepsTable(random, `random ${sizeLabel(sizeMiB * MiB)}`, runs, tmp))
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true })
    }
    return
  }
  const results: Result[] = []
  const notes: string[] = []
  try {
    const random = path.join(tmp, 'random.img')
    const t0 = process.hrtime.bigint()
    writeRandomFile(random, sizeMiB * MiB)
    console.error(`import: wrote ${sizeMiB} MiB of random data to ${random} in ${seconds(t0).toFixed(1)} s`)
    const inputs = [{ label: `random ${sizeLabel(sizeMiB * MiB)}`, file: random }]
    if (fs.existsSync(NGINX_IMAGE)) inputs.push({ label: 'nginx.img', file: NGINX_IMAGE })
    else
      console.error(
        `import: ${NGINX_IMAGE} missing, skipped (bash bench/lib/debian-family.sh /var/tmp/vmifs-bench/family)`
      )
    for (const { label, file } of inputs) {
      const bytes = readThrough(file) // warm the page cache
      results.push(await measure(label, bytes, 'b3sum --num-threads 1', runs, () => timeB3sum(file, 1)))
      results.push(
        await measure(label, bytes, `b3sum default (${os.availableParallelism()} cores)`, runs, () => timeB3sum(file))
      )
      for (const c of CHUNKINGS) {
        const [compute, full] = await measurePair(
          label,
          bytes,
          [`vmifs compute, ${chunkingTitle(c)}`, `vmifs import, ${chunkingTitle(c)}`],
          runs,
          async () => await timeCompute(file, c),
          async () => await timeImport(file, c, tmp)
        )
        const digests = new Set([...compute.runs, ...full.runs].map(t => t.detail?.digest))
        if (digests.size !== 1)
          throw new Error(
            `${label} ${chunkingLabel(c)}: runs disagree on the manifest digest: ${[...digests].join(', ')}`
          )
        results.push(compute, full)
      }
      const zero = Number(
        results.find(r => r.input === label && r.detail?.zeroBytes !== undefined)?.detail?.zeroBytes ?? 0
      )
      notes.push(
        `${label}: ${pct(zero / bytes)} zero (in zero entries of the ${chunkingLabel(CHUNKINGS[0]!)} manifest)`
      )
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true })
  }
  const cpuModel = os.cpus()[0]?.model ?? 'unknown CPU'
  const cores = os.availableParallelism()
  console.log(
    `## Import throughput (${cpuModel}, ${cores} cores; medians of ${runs} warm runs, compute and import in turns)\n`
  )
  console.log(renderTable(results))
  console.log(
    '\nGB/s = file bytes / wall time; GB/s per core = file bytes / CPU seconds (user + sys) of the process doing'
  )
  console.log("the work (b3sum: the child; vmifs: this Node process, including libuv threads; not the kernel's")
  console.log('writeback). vmifs detects zero blocks and does not hash')
  console.log(`them, while b3sum hashes every byte: ${notes.join('; ')}.`)
  if (jsonFile !== undefined) {
    fs.writeFileSync(
      jsonFile,
      JSON.stringify(
        {
          bench: 'import',
          date: new Date().toISOString(),
          cpu: os.cpus()[0]?.model,
          cores: os.availableParallelism(),
          results
        },
        null,
        2
      ) + '\n'
    )
    console.error(`import: wrote ${jsonFile}`)
  }
}
