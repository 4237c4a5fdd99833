// `npm run demo -- --single`: the single-host agent end to end on a generated image. Imports it
// into a fresh data dir, mounts it with a real agent process, reads it back through the mount
// with cmp (and qemu-img compare when present), prints the stats and unmounts. --keep leaves it
// mounted until Ctrl-C. Everything lives in one temp folder that is removed at the end.
import { spawn, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
const VMIFS = path.resolve(here, '../../../bin/vmifs.js')
const MiB = 1024 * 1024

function step(s: string): void {
  process.stdout.write(`\n== ${s}\n`)
}
function sh(cmd: string, args: string[]): number {
  process.stdout.write(`$ ${[cmd, ...args].join(' ')}\n`)
  const r = spawnSync(cmd, args, { stdio: 'inherit', timeout: 120_000 })
  return r.status ?? 1
}

/** Runs the walk-through; resolves with the exit status. */
export async function singleHostDemo(keep: boolean): Promise<number> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vmifs-demo-'))
  const data = path.join(dir, 'data')
  const mnt = path.join(dir, 'mnt')
  const img = path.join(dir, 'disk.raw')
  fs.mkdirSync(mnt)
  let failed = false

  step('a 256 MiB raw disk image: random blocks, zero runs and repeated content')
  {
    const fd = fs.openSync(img, 'w')
    const rnd = randomBytes(64 * MiB)
    fs.writeSync(fd, rnd) // 64 MiB of data
    fs.writeSync(fd, Buffer.alloc(96 * MiB)) // unallocated space
    fs.writeSync(fd, rnd.subarray(4096 * 3, 4096 * 3 + 32 * MiB)) // a copy at another offset
    fs.writeSync(fd, randomBytes(64 * MiB))
    fs.closeSync(fd)
    process.stdout.write(`${img}: ${fs.statSync(img).size} bytes\n`)
  }

  step('import it (chunked, hashed, stored in the cache, pinned)')
  failed ||= sh(process.execPath, [VMIFS, 'import', img, '--name', 'demo-disk', '--data-dir', data]) !== 0
  sh(process.execPath, [VMIFS, 'ls', '--data-dir', data])

  step('start the agent and mount the image filesystem')
  const agent = spawn(process.execPath, [VMIFS, 'agent', '--mount', mnt, '--data-dir', data], {
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let out = ''
  let err = ''
  agent.stdout.on('data', (d: Buffer) => {
    out += d.toString()
  })
  agent.stderr.on('data', (d: Buffer) => {
    err += d.toString()
  })
  const t0 = Date.now()
  while (!out.includes('"event":"ready"')) {
    if (agent.exitCode !== null || Date.now() - t0 > 20_000) {
      process.stderr.write(`agent did not start:\n${err}\n`)
      fs.rmSync(dir, { recursive: true, force: true })
      return 1
    }
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  process.stdout.write(out)
  sh('ls', ['-l', path.join(mnt, 'images'), path.join(mnt, 'by-digest')])

  step('read it back through the mount')
  failed ||= sh('cmp', [img, path.join(mnt, 'images/demo-disk')]) !== 0
  if (spawnSync('which', ['qemu-img']).status === 0)
    failed ||= sh('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', img, path.join(mnt, 'images/demo-disk')]) !== 0
  process.stdout.write(failed ? 'MISMATCH\n' : 'identical: the mounted file is byte-exact\n')

  step('the stats file')
  const statsKeys = '"(hitOps|missOps|hitBytes|hitRate|sizeBytes|pinnedBytes|ops|p50Ms|p99Ms)"'
  sh('sh', ['-c', `grep -E '${statsKeys}' ${JSON.stringify(path.join(mnt, '.stats'))}`])
  sh(process.execPath, [VMIFS, 'stats', '--data-dir', data])

  if (keep) {
    step(`mounted at ${mnt} (data dir ${data}); Ctrl-C to unmount and clean up`)
    await new Promise<void>(resolve => process.once('SIGINT', () => resolve()))
  }
  step('stop the agent (SIGTERM unmounts)')
  agent.kill('SIGTERM')
  const code = await new Promise<number | null>(resolve => agent.once('exit', c => resolve(c)))
  process.stdout.write(`agent exited with ${String(code)}\n`)
  fs.rmSync(dir, { recursive: true, force: true })
  return failed || code !== 0 ? 1 : 0
}
