// Helpers for tests that run real vmifs processes and a real FUSE mount. The test process never
// reads a mount itself (a process reading its own FUSE mount can deadlock, and a hung read would
// hang the suite): every read goes through a child process with a timeout.
import { spawn, spawnSync, type ChildProcess, type SpawnSyncReturns } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { randomBytes } from 'node:crypto'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
export const ROOT = path.resolve(here, '../../..') // dist/test/integration -> project root
export const VMIFS = path.join(ROOT, 'bin/vmifs.js')

export function tmpdir(prefix = 'vmifs-it-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix))
}

export interface RunResult {
  code: number | null
  stdout: string
  stderr: string
}

/** Runs the CLI synchronously (it never touches a mount of this process). */
export function vmifs(args: string[], env: Record<string, string> = {}, timeoutMs = 120_000): RunResult {
  const r = spawnSync(process.execPath, [VMIFS, ...args], {
    env: { ...process.env, ...env },
    encoding: 'utf8',
    timeout: timeoutMs
  })
  return { code: r.status, stdout: r.stdout, stderr: r.stderr }
}

/** Runs any command in a child with a timeout (for reads of a mount). */
export function run(cmd: string, args: string[], timeoutMs = 60_000): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 })
}

/** Runs a small Node script in a child; it prints JSON on stdout. */
export function nodeJson<T>(script: string, timeoutMs = 60_000): T {
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: timeoutMs })
  if (r.status !== 0) throw new Error(`child failed (${String(r.status)} ${String(r.signal)}): ${r.stderr}`)
  return JSON.parse(r.stdout) as T
}

/** A test image with random, zero and repeated regions. */
export function makeImage(file: string, mib = 48): Buffer {
  const parts: Buffer[] = []
  const rnd = randomBytes(Math.floor(mib / 3) * 1024 * 1024)
  parts.push(rnd)
  parts.push(Buffer.alloc(Math.floor(mib / 3) * 1024 * 1024))
  parts.push(rnd.subarray(12345, 12345 + 5 * 1024 * 1024)) // repeated, unaligned
  parts.push(Buffer.alloc(8192)) // a short zero run inside data
  parts.push(randomBytes(777_777)) // odd tail
  const img = Buffer.concat(parts)
  fs.writeFileSync(file, img)
  return img
}

export class AgentProcess {
  readonly child: ChildProcess
  private out = ''
  err = ''
  readonly exited: Promise<number | null>

  constructor(
    readonly mount: string,
    readonly dataDir: string,
    extra: string[] = [],
    env: Record<string, string> = {},
    wrap: string[] = []
  ) {
    const argv = [process.execPath, VMIFS, 'agent', '--mount', mount, '--data-dir', dataDir, ...extra]
    this.child = spawn(
      wrap.length > 0 ? wrap[0]! : argv[0]!,
      [...wrap.slice(1), ...(wrap.length > 0 ? argv : argv.slice(1))],
      { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } }
    )
    this.child.stdout!.on('data', (d: Buffer) => {
      this.out += d.toString()
    })
    const keep = process.env.VMIFS_TEST_AGENT_LOGDIR
    const file = keep ? path.join(keep, `agent-${Date.now()}-${this.child.pid ?? 0}.err`) : undefined
    this.child.stderr!.on('data', (d: Buffer) => {
      this.err += d.toString()
      if (file) fs.appendFileSync(file, d) // kept for a run that hangs in a synchronous read of a mount
    })
    this.exited = new Promise(resolve =>
      this.child.once('exit', (code, signal) => {
        if (file) fs.appendFileSync(file, `exited: code ${code} signal ${signal}\n`)
        resolve(code)
      })
    )
  }

  /** What the agent printed on standard output so far (its log lines). */
  get output(): string {
    return this.out
  }

  /** The ready line the agent printed (endpoint, pid, …). */
  get info(): { endpoint: string | null; hostId: string; pid: number } {
    const line = this.out.split('\n').find(l => l.includes('"event":"ready"'))
    return JSON.parse(line ?? '{}') as { endpoint: string | null; hostId: string; pid: number }
  }

  async ready(timeoutMs = 20_000): Promise<void> {
    const t0 = Date.now()
    while (!this.out.includes('"event":"ready"')) {
      if (this.child.exitCode !== null) throw new Error(`agent exited ${this.child.exitCode}: ${this.err}`)
      if (Date.now() - t0 > timeoutMs) throw new Error(`agent not ready: ${this.err}`)
      await sleep(50)
    }
  }

  /** Whether stop() was called (an exit before it is the agent's own). */
  stopping = false

  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 15_000): Promise<number | null> {
    this.stopping = true
    if (this.child.exitCode !== null || this.child.signalCode !== null) return this.child.exitCode
    this.child.kill(signal)
    const t = setTimeout(() => {
      abortMount(this.mount)
      this.child.kill('SIGKILL')
    }, timeoutMs)
    const code = await this.exited
    clearTimeout(t)
    return code
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise(resolve => setTimeout(resolve, ms))
}

/** Drops one file's pages from the kernel page cache (they are clean; works on a FUSE file too). */
export function dropPages(file: string): void {
  run('dd', [`if=${file}`, 'iflag=nocache', 'count=0', 'status=none'])
}

/** The FUSE connection id (the device minor) of a mount, from mountinfo. */
export function fuseConnection(mount: string): string | undefined {
  const real = path.resolve(mount)
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const f = line.split(' ')
    if (f[4] === real && line.includes(' - fuse')) return f[2]!.split(':')[1]
  }
  return undefined
}

export function isMounted(mount: string): boolean {
  return fuseConnection(mount) !== undefined
}

/**
 * Frees anything stuck on a mount: aborts its FUSE connection through fusectl, then detaches it
 * lazily. Safe to call when nothing is mounted.
 */
export function abortMount(mount: string): void {
  const conn = fuseConnection(mount)
  if (conn === undefined) return
  const ctl = '/sys/fs/fuse/connections'
  if (!fs.existsSync(path.join(ctl, conn))) spawnSync('mount', ['-t', 'fusectl', 'none', ctl])
  try {
    fs.writeFileSync(path.join(ctl, conn, 'abort'), '1')
  } catch {
    /* the connection went away meanwhile; the lazy umount below still detaches the mount */
  }
  spawnSync('umount', ['-l', mount])
}

/** Per-test fixture: a data dir, a mountpoint, teardown that always frees the mount. */
export function fixture(t: { teardown: (fn: () => void | Promise<void>) => void }): {
  dir: string
  data: string
  mnt: string
  agents: AgentProcess[]
  start: (extra?: string[]) => Promise<AgentProcess>
} {
  const dir = tmpdir()
  const data = path.join(dir, 'data')
  const mnt = path.join(dir, 'mnt')
  fs.mkdirSync(mnt)
  const agents: AgentProcess[] = []
  t.teardown(async () => {
    for (const a of agents) await a.stop('SIGTERM', 5000).catch(() => {})
    abortMount(mnt)
    fs.rmSync(dir, { recursive: true, force: true })
  })
  return {
    dir,
    data,
    mnt,
    agents,
    start: async (extra = []) => {
      const a = new AgentProcess(mnt, data, extra)
      agents.push(a)
      await a.ready()
      return a
    }
  }
}
