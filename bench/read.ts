// `npm run bench -- read [--size-mib N] [--readers N] [--repeat N]`: sequential MB/s and 4 KiB
// random-read latency through the mount vs the original file, in one run. Cases:
//   original          the image file itself (page cache warm / dropped)
//   mount, cold       page cache dropped and a fresh agent: the chunk store's packs come from disk
//                     (the cold cases run --repeat rounds, default 5, original and mount in turn in
//                     each, and report the median: a virtual disk's speed varies by 2x run to run)
//   mount, agent path the mounted file's pages dropped, packs in the page cache: every read crosses
//                     FUSE into the agent's native threads, which check each chunk's CRC before
//                     serving it
//   mount, warm       the mounted file's pages in the kernel page cache (kept across opens)
//   N readers         N images of size/N each, read at once by N processes, cold: through the
//                     mount against the N original files
import { execFile, spawn, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
const ROOT = path.resolve(here, '../..')
const VMIFS = path.join(ROOT, 'bin/vmifs.js')
const READER = path.join(here, 'lib/reader.js')

/** N readers at once, each `seq` over its own file: total bytes over the wall time of all. */
async function parallelSeq(files: string[]): Promise<{ bytes: number; seconds: number }> {
  const t0 = process.hrtime.bigint()
  const runs = await Promise.all(
    files.map(
      f =>
        new Promise<{ bytes: number }>((resolve, reject) => {
          execFile(process.execPath, [READER, 'seq', f], { encoding: 'utf8', timeout: 600_000 }, (err, out) => {
            if (err) reject(new Error(`reader failed on ${f}: ${err.message}`, { cause: err }))
            else resolve(JSON.parse(out) as { bytes: number })
          })
        })
    )
  )
  return { bytes: runs.reduce((n, r) => n + r.bytes, 0), seconds: Number(process.hrtime.bigint() - t0) / 1e9 }
}

function reader<T>(...args: string[]): T {
  const r = spawnSync(process.execPath, [READER, ...args], { encoding: 'utf8', timeout: 600_000 })
  if (r.status !== 0) throw new Error(`reader failed: ${r.stderr}`)
  return JSON.parse(r.stdout) as T
}

function dropCaches(): boolean {
  spawnSync('sync')
  try {
    fs.writeFileSync('/proc/sys/vm/drop_caches', '3')
    return true
  } catch {
    return false
  }
}

/** Drops one file's pages (works for the FUSE file too: its pages are clean). */
function dropFile(file: string): void {
  spawnSync('dd', [`if=${file}`, 'iflag=nocache', 'count=0', 'status=none'])
}

async function startAgent(mnt: string, data: string): Promise<() => Promise<void>> {
  const extra = process.env.VMIFS_BENCH_AGENT_CONFIG ? ['--config', process.env.VMIFS_BENCH_AGENT_CONFIG] : []
  const child = spawn(process.execPath, [VMIFS, 'agent', '--mount', mnt, '--data-dir', data, ...extra], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, VMIFS_LOG_LEVEL: 'warn' }
  })
  let out = ''
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString()
  })
  const t0 = Date.now()
  while (!out.includes('"ready"')) {
    if (child.exitCode !== null || Date.now() - t0 > 20_000) throw new Error('agent did not start')
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  return async () => {
    child.kill('SIGTERM')
    await new Promise(resolve => child.once('exit', resolve))
  }
}

export async function main(args: string[]): Promise<void> {
  const i = args.indexOf('--size-mib')
  const mib = i >= 0 ? Number(args[i + 1]) : 1024
  const j = args.indexOf('--readers')
  const readers = j >= 0 ? Number(args[j + 1]) : 4
  const k = args.indexOf('--repeat')
  const repeat = k >= 0 ? Number(args[k + 1]) : 5
  if (!(Number.isInteger(repeat) && repeat >= 1)) throw new Error('--repeat takes a whole number ≥ 1')
  const dir = fs.mkdtempSync(path.join(process.env.VMIFS_BENCH_DIR ?? '/var/tmp', 'vmifs-bench-read-'))
  const data = path.join(dir, 'data')
  const mnt = path.join(dir, 'mnt')
  const img = path.join(dir, 'disk.raw')
  fs.mkdirSync(mnt)
  try {
    // incompressible data (no zero runs), so every byte comes from a chunk
    const make = (file: string, name: string, size: number): void => {
      const fd = fs.openSync(file, 'w')
      for (let k = 0; k < size; k += 16) fs.writeSync(fd, randomBytes(16 * 1024 * 1024))
      fs.closeSync(fd)
      const imp = spawnSync(process.execPath, [VMIFS, 'import', file, '--name', name, '--data-dir', data, '--quiet'], {
        encoding: 'utf8'
      })
      if (imp.status !== 0) throw new Error(imp.stderr)
    }
    make(img, 'disk', mib)
    const many = Array.from({ length: readers }, (_, k) => `part${k}`)
    for (const n of many) make(path.join(dir, `${n}.raw`), n, Math.max(16, Math.floor(mib / readers)))
    const file = path.join(mnt, 'images/disk')
    const canDrop = dropCaches()
    const rows: Array<[string, string, string]> = []
    const seq = (label: string, f: string): void => {
      const r = reader<{ bytes: number; seconds: number }>('seq', f)
      rows.push([label, `${(r.bytes / r.seconds / 1e6).toFixed(0)} MB/s`, `${r.seconds.toFixed(2)} s`])
    }
    const lat: Array<[string, string, string]> = []
    const rand = (label: string, f: string): void => {
      const r = reader<{ p50Ms: number; p99Ms: number }>('rand', f, '5000')
      lat.push([label, `${(r.p50Ms * 1000).toFixed(0)} µs`, `${(r.p99Ms * 1000).toFixed(0)} µs`])
    }

    seq('original, warm', img)
    rand('original, warm', img)

    let stop = await startAgent(mnt, data)
    const cold: Array<[string, string, string]> = []
    if (canDrop) {
      // every round: each cold case once, original and mount in turn; a fresh agent for each
      // mount case, started after the caches are dropped (as after a host's reboot)
      const parts = many.map(n => path.join(dir, `${n}.raw`))
      const images = many.map(n => path.join(mnt, 'images', n))
      const cases: Array<{ label: string; mount: boolean; files: string[] }> = [
        { label: 'original, cold (page cache dropped)', mount: false, files: [img] },
        { label: 'mount, cold (page cache dropped, fresh agent)', mount: true, files: [file] },
        { label: `original, ${readers} readers on ${readers} files, cold`, mount: false, files: parts },
        { label: `mount, ${readers} readers on ${readers} images, cold (fresh agent)`, mount: true, files: images }
      ]
      const rates = cases.map(() => [] as number[])
      for (let round = 0; round < repeat; round++) {
        for (const [c, kase] of cases.entries()) {
          dropCaches()
          if (kase.mount) {
            await stop()
            stop = await startAgent(mnt, data)
          }
          const r = await parallelSeq(kase.files)
          rates[c]!.push(r.bytes / r.seconds / 1e6)
        }
      }
      const median = (v: number[]): number => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!
      cases.forEach((kase, c) => {
        const v = rates[c]!
        const m = median(v)
        const vs = kase.mount ? ` — ${(m / median(rates[c - 1]!)).toFixed(2)}× the original` : ''
        cold.push([
          kase.label,
          `${m.toFixed(0)} MB/s${vs}`,
          `${Math.min(...v).toFixed(0)}–${Math.max(...v).toFixed(0)} MB/s over ${v.length}`
        ])
      })
      dropCaches()
      await stop()
      stop = await startAgent(mnt, data)
      rand('mount, cold (page cache dropped, fresh agent)', file)
    }
    // bring the packs into the page cache (the agent reads them with O_DIRECT when they are not:
    // reading through the mount would not), then drop the mounted file's own pages
    for (const f of fs.readdirSync(path.join(data, 'packs'))) reader('seq', path.join(data, 'packs', f))
    reader('seq', file)
    dropFile(file)
    seq('mount, agent path (packs cached, mount pages dropped)', file)
    seq('mount, warm (kernel page cache)', file)
    rand('mount, warm (kernel page cache)', file)
    dropFile(file)
    rand('mount, agent path (packs cached, mount pages dropped)', file)
    const stats = JSON.parse(spawnSync('cat', [path.join(mnt, '.stats')], { encoding: 'utf8' }).stdout) as {
      read: { p50Ms: number; p99Ms: number; ops: number; nativeOps: number }
    }
    await stop()

    const dropNote = canDrop ? '' : ' (could not drop caches: cold cases skipped)'
    console.log(
      `\nread benchmark: ${mib} MiB image of random data, ${os.cpus().length} cores, ` +
        `node ${process.version}${dropNote}\n`
    )
    if (cold.length > 0) {
      console.log(`| sequential read, cold (1 MiB reads) | median of ${repeat} | range |\n|---|---|---|`)
      for (const r of cold) console.log(`| ${r.join(' | ')} |`)
      console.log('')
    }
    console.log('| sequential read (1 MiB reads) | throughput | time |\n|---|---|---|')
    for (const r of rows) console.log(`| ${r.join(' | ')} |`)
    console.log('\n| 4 KiB random reads (5000) | p50 | p99 |\n|---|---|---|')
    for (const r of lat) console.log(`| ${r.join(' | ')} |`)
    console.log(
      `\nagent-side FUSE read latency (from .stats): p50 ${stats.read.p50Ms} ms, p99 ${stats.read.p99Ms} ms ` +
        `over ${stats.read.ops} ops (${stats.read.nativeOps} answered by the native threads)`
    )
  } finally {
    spawnSync('umount', ['-l', mnt])
    fs.rmSync(dir, { recursive: true, force: true })
  }
}
