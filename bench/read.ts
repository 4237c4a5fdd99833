// `npm run bench -- read [--size-mib N]`: sequential MB/s and 4 KiB random-read latency through
// the mount vs the original file, in one run. Cases:
//   original          the image file itself (page cache warm / dropped)
//   mount, cold       page cache dropped and a fresh agent: chunk files come from disk
//   mount, agent path the mounted file's pages dropped, chunk files in the page cache: every read
//                     crosses FUSE into the agent's native threads (the first read of each chunk
//                     after a start goes through JavaScript, which verifies it)
//   mount, warm       the mounted file's pages in the kernel page cache (kept across opens)
import { spawn, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
const ROOT = path.resolve(here, '../..')
const VMIFS = path.join(ROOT, 'bin/vmifs.js')
const READER = path.join(here, 'lib/reader.js')

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
  const child = spawn(process.execPath, [VMIFS, 'agent', '--mount', mnt, '--data-dir', data], {
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
  const dir = fs.mkdtempSync(path.join(process.env.VMIFS_BENCH_DIR ?? '/var/tmp', 'vmifs-bench-read-'))
  const data = path.join(dir, 'data')
  const mnt = path.join(dir, 'mnt')
  const img = path.join(dir, 'disk.raw')
  fs.mkdirSync(mnt)
  try {
    // incompressible data (no zero runs), so every byte comes from a chunk
    const fd = fs.openSync(img, 'w')
    for (let k = 0; k < mib; k += 16) fs.writeSync(fd, randomBytes(16 * 1024 * 1024))
    fs.closeSync(fd)
    const imp = spawnSync(process.execPath, [VMIFS, 'import', img, '--name', 'disk', '--data-dir', data, '--quiet'], {
      encoding: 'utf8'
    })
    if (imp.status !== 0) throw new Error(imp.stderr)
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

    if (canDrop) seq('original, cold (page cache dropped)', img)
    seq('original, warm', img)
    rand('original, warm', img)

    let stop = await startAgent(mnt, data)
    if (canDrop) {
      dropCaches()
      await stop()
      stop = await startAgent(mnt, data)
      seq('mount, cold (page cache dropped, fresh agent)', file)
      dropCaches()
      await stop()
      stop = await startAgent(mnt, data)
      rand('mount, cold (page cache dropped, fresh agent)', file)
    }
    // a fresh agent verifies each chunk at its first read (through the agent); after that the
    // native threads answer reads of it
    seq('mount, agent path, first read (chunk files cached, mount pages dropped)', file)
    dropFile(file)
    seq('mount, agent path (again)', file)
    seq('mount, warm (kernel page cache)', file)
    rand('mount, warm (kernel page cache)', file)
    dropFile(file)
    rand('mount, agent path (chunk files cached, mount pages dropped)', file)
    const stats = JSON.parse(spawnSync('cat', [path.join(mnt, '.stats')], { encoding: 'utf8' }).stdout) as {
      read: { p50Ms: number; p99Ms: number; ops: number; nativeOps: number }
    }
    await stop()

    const dropNote = canDrop ? '' : ' (could not drop caches: cold cases skipped)'
    console.log(
      `\nread benchmark: ${mib} MiB image of random data, ${os.cpus().length} cores, ` +
        `node ${process.version}${dropNote}\n`
    )
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
