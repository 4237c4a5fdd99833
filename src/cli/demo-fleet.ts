// `npm run demo`: a fleet of three real agents on this machine, in about a minute.
//   1. the fleet's trust, the operator's way: an admin key (vmifs key new), and each host's key
//      admitted with a certificate (vmifs host key, vmifs fleet admit, vmifs host cert);
//   2. an origin store: a generated 128 MiB image (random data between zero runs) imported on
//      host-a, written out with vmifs publish-store, served by nginx on loopback;
//   3. three agents, host-a, host-b and host-c (vmifs agent, each with its own data dir, mount
//      and loopback port), each pulling the metadata table from the other two;
//   4. the image, imported on host-a only, appears in every mount;
//   5. host-b, cold, reads it as a boot does (src/util/boot-pattern.ts: files of 4 KiB–1 MiB read
//      through in 128 KiB requests, a fifth of the image): what it fetched, and from whom;
//   6. a build machine (admitted, no agent) publishes a sibling with 6 % of its bytes rewritten to
//      the origin store; host-b reads it with the same pattern and fetches only the changed
//      chunks (checked: under 20 % of what it read);
//   7. host-b's read session ended and taught the fleet a usage model: host-c, cold, opens the
//      image, its prefetcher pulls what the model expects, and its read is mostly hits (checked);
//   8. a table of the three hosts (with --keep, the link to host-c's web dashboard).
// Every byte read through a mount is compared with the image's file. The demo reads the mounts
// itself, with async reads (the agents are other processes). Everything lives in one temp dir,
// removed at the end; every process it starts is stopped at the end, and on SIGINT or SIGTERM
// (then exit 130); every wait is bounded and fails the demo with what it waited for. Exit status
// 1 when a check failed. --keep leaves the fleet running until Ctrl-C.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { randomBytes, randomFillSync } from 'node:crypto'
import fs from 'node:fs'
import fsp from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { type Extent, bootPattern, distinctBytes } from '../util/boot-pattern.js'
import { readAt } from '../util/files.js'
import { nginxConfig } from '../util/nginx.js'
import { freePort } from '../util/ports.js'

const here = path.dirname(fileURLToPath(import.meta.url))
const VMIFS = path.resolve(here, '../../../bin/vmifs.js')
const MiB = 1024 * 1024
const IMAGE_BYTES = 128 * MiB
/** the share of an image a boot reads, the pattern's seed, and the size of its read requests */
const BOOT_SHARE = 0.2
const BOOT_SEED = 7
const REQUEST = 128 * 1024
/** the share of the sibling's bytes rewritten, in files of 32–256 KiB */
const CHANGED_SHARE = 0.06
/** the checks: host-b fetches less than this share of what it reads of the sibling… */
const SIBLING_BOUND = 0.2
/** …and host-c, prefetched by the model, reads at least this share of its bytes locally */
const HIT_BOUND = 0.8
const HOSTS = ['host-a', 'host-b', 'host-c']
/** a read session ends this long after its last read (the agent's default is 10 s) */
const SESSION_IDLE_MS = 1000
/** bounds: a command, a process's start, the fleet settling, a prefetch, a read pass, a stop */
const COMMAND_MS = 60_000
const START_MS = 30_000
const SETTLE_MS = 30_000
const PREFETCH_MS = 20_000
const READ_MS = 90_000
const STOP_MS = 20_000

/** The keys of an agent's `.stats` the demo reads (docs/stats.md). */
interface Stats {
  cache: { hitBytes: number; missBytes: number }
  read: { bytes: number }
  fetch: { bytes: number; byHolder: Record<string, { bytes: number } | undefined> }
  served: { bytes: number }
  prefetch: { issued: number; bytes: number; pending: number; precision: number; recall: number }
  images: Record<string, { modelSessions?: number } | undefined>
  fleet?: { cursors: Record<string, number | undefined>; inFlight: number }
}

/** A failure no retry mends (a process exited): waits give up on it at once. */
class Fatal extends Error {}

interface Proc {
  name: string
  child: ChildProcess
  out: string
  err: string
  exited: Promise<number | null>
}

const say = (s: string): void => void process.stdout.write(s + '\n')
const step = (s: string): void => say(`\n== ${s}`)
const mib = (n: number): string => `${(n / MiB).toFixed(1)} MiB`
const pct = (x: number): string => `${(100 * x).toFixed(1)} %`
const secs = (ms: number): string => `${(ms / 1000).toFixed(1)} s`
const sleep = (ms: number): Promise<void> => new Promise(resolve => setTimeout(resolve, ms))

/** Resolves with p, or rejects once `ms` passed (p goes on: what it waits for is stopped by the cleanup). */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${secs(ms)}: ${what}`)), ms)
  })
  try {
    return await Promise.race([p, late])
  } finally {
    clearTimeout(timer)
  }
}

/** Waits until `cond` holds (asked every 100 ms; an error other than Fatal counts as not yet). */
async function until(what: string, ms: number, cond: () => boolean | Promise<boolean>): Promise<void> {
  const t0 = Date.now()
  for (;;) {
    try {
      if (await cond()) return
    } catch (err) {
      if (err instanceof Fatal) throw err
    }
    if (Date.now() - t0 > ms) throw new Error(`timed out after ${secs(ms)} waiting for ${what}`)
    await sleep(100)
  }
}

/** The images' layout (their bytes are random): the same on every run, Park–Miller's generator. */
let layoutSeed = 1
/** `lo`..`hi` 4 KiB blocks, in bytes. */
function blocks(lo: number, hi: number): number {
  layoutSeed = (layoutSeed * 48271) % 0x7fffffff
  return 4096 * (lo + Math.floor((layoutSeed / 0x7fffffff) * (hi - lo)))
}

/** Version 1: random data in runs of 256 KiB–4 MiB between zero runs of 64 KiB–1 MiB. */
function makeImage(): { img: Buffer; dataBytes: number } {
  const img = Buffer.alloc(IMAGE_BYTES)
  let dataBytes = 0
  for (let pos = 0; pos < IMAGE_BYTES;) {
    const n = Math.min(blocks(64, 1024), IMAGE_BYTES - pos)
    randomFillSync(img, pos, n)
    dataBytes += n
    pos += n + blocks(16, 256)
  }
  return { img, dataBytes }
}

/** Version 2: a copy with files of 32–256 KiB rewritten at random places, CHANGED_SHARE of it in all. */
function makeSibling(v1: Buffer): { img: Buffer; changed: number; files: number } {
  const img = Buffer.from(v1)
  let files = 0
  for (let rewritten = 0; rewritten < CHANGED_SHARE * IMAGE_BYTES; files++) {
    const n = blocks(8, 64)
    const at = blocks(0, (IMAGE_BYTES - n) / 4096)
    randomFillSync(img, at, n)
    rewritten += n
  }
  let changed = 0
  for (let at = 0; at < IMAGE_BYTES; at += 4096)
    if (v1.compare(img, at, at + 4096, at, at + 4096) !== 0) changed += 4096
  return { img, changed, files }
}

/** Reads the extents of an open image in REQUEST-sized reads, each compared with the same bytes of `source`. */
async function bootRead(fh: fsp.FileHandle, source: Buffer, pattern: Extent[]): Promise<{ ms: number; bad: number }> {
  const t0 = Date.now()
  let bad = 0
  for (const e of pattern)
    for (let at = e.offset; at < e.offset + e.length; at += REQUEST) {
      const n = Math.min(REQUEST, e.offset + e.length - at)
      if (!(await readAt(fh, at, n)).equals(source.subarray(at, at + n))) bad++
    }
  return { ms: Date.now() - t0, bad }
}

/** What a host did between two snapshots. */
function delta(before: Stats, after: Stats): { read: number; hitRate: number; fetched: number; from: string } {
  const hit = after.cache.hitBytes - before.cache.hitBytes
  const miss = after.cache.missBytes - before.cache.missBytes
  const by: Record<string, number> = {}
  for (const [h, v] of Object.entries(after.fetch.byHolder))
    by[h] = (v?.bytes ?? 0) - (before.fetch.byHolder[h]?.bytes ?? 0)
  return {
    read: after.read.bytes - before.read.bytes,
    hitRate: hit + miss === 0 ? 0 : hit / (hit + miss),
    fetched: after.fetch.bytes - before.fetch.bytes,
    from: holders(by)
  }
}

/** "host-a 20.1 MiB, origin 1.2 MiB", most bytes first. */
function holders(by: Record<string, number>): string {
  const rows = Object.entries(by)
    .filter(([, n]) => n > 0)
    .sort((x, y) => y[1] - x[1])
  return rows.length === 0 ? 'nobody' : rows.map(([h, n]) => `${h} ${mib(n)}`).join(', ')
}

function exited(p: Proc): boolean {
  return p.child.exitCode !== null || p.child.signalCode !== null
}

/** Mountpoints at or under `dir`. */
function mountsUnder(dir: string): string[] {
  return fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map(l => l.split(' ')[4] ?? '')
    .filter(m => m === dir || m.startsWith(dir + '/'))
}

class FleetDemo {
  private readonly procs = new Set<Proc>()
  private readonly agents = new Map<string, Proc>()
  private nginx: Proc | undefined
  private stopping: Promise<boolean> | undefined
  /** the fleet secret every agent gets in VMIFS_TOKEN */
  private readonly token = randomBytes(16).toString('hex')
  private readonly checks: Array<{ what: string; ok: boolean }> = []
  /** While --keep waits: what a signal ends instead of the demo. */
  release: (() => void) | undefined

  constructor(readonly dir: string) {}

  /** Runs the demo; resolves with whether every check passed (or rejects: the demo failed). */
  async run(keep: boolean): Promise<boolean> {
    const pattern = bootPattern(IMAGE_BYTES, BOOT_SHARE, BOOT_SEED)
    const requests = pattern.reduce((n, e) => n + Math.ceil(e.length / REQUEST), 0)
    const bootBytes = distinctBytes(pattern)

    step('1. the fleet: an admin key; each host admitted with a certificate the admin signs')
    const admin = (await this.vmifs(['key', 'new', 'admin.key'])).trim()
    await Promise.all([...HOSTS, 'build'].map(id => this.admit(id, admin, id === 'host-a')))
    say('(the same for host-b, host-c, and build: a build machine that publishes images and runs no agent)')

    step(`2. an origin store: a ${mib(IMAGE_BYTES)} image imported on host-a, published, served by nginx`)
    const { img: v1, dataBytes } = makeImage()
    fs.writeFileSync(path.join(this.dir, 'demo-v1.raw'), v1)
    say(`demo-v1.raw: ${mib(IMAGE_BYTES)}, ${mib(dataBytes)} of random data blocks between zero runs`)
    await this.vmifs(['import', 'demo-v1.raw', '--name', 'demo-v1', '--config', 'host-a.json'])
    fs.mkdirSync(path.join(this.dir, 'store'))
    await this.vmifs(['publish-store', 'store', '--config', 'host-a.json'])
    const origin = await this.startNginx()

    step('3. three agents, each pulling the metadata table from the other two')
    const ports = new Map<string, number>()
    for (const id of HOSTS) ports.set(id, await freePort())
    for (const id of HOSTS)
      await this.startAgent(
        id,
        ports.get(id)!,
        HOSTS.filter(h => h !== id).map(h => `http://127.0.0.1:${ports.get(h)!}`),
        origin
      )

    step('4. an image imported on host-a appears in every mount')
    for (const id of ['host-b', 'host-c']) await this.appears(id, 'demo-v1')
    await this.show('ls', ['-l', 'host-b/mnt/images', 'host-c/mnt/images'])
    say('demo-v1 appeared on host-b and host-c, which did not import it (host-a did)')
    // host-b must know what host-a holds before it reads, or it takes the origin for the only holder
    const facts = (await this.stats('host-a')).fleet?.cursors['host-a'] ?? 0
    await until("host-b to hold host-a's facts", SETTLE_MS, async () => {
      return ((await this.stats('host-b')).fleet?.cursors['host-a'] ?? 0) >= facts
    })

    step(
      `5. a cold host-b reads demo-v1 as a boot does: ${pattern.length} files, ${mib(bootBytes)}, ` +
        `in ${requests} reads of ≤ 128 KiB`
    )
    const b1 = await this.bootRead('host-b', 'demo-v1', v1, pattern)
    say(`host-b's agent answered ${mib(b1.read)} of reads in ${secs(b1.ms)} (the kernel reads 16 KiB ahead)`)
    say(`hit rate ${pct(b1.hitRate)}: zero runs, and chunks fetched along with an earlier miss (64 KiB past it)`)
    say(`fetched ${mib(b1.fetched)} by holder: ${b1.from}`)
    say('(host-b/mnt/.stats before and after: fetch.byHolder.<holder>.bytes, cache.hitBytes, missBytes)')
    this.matched('host-b', 'demo-v1', b1.bad)

    step(`6. a sibling: demo-v2, ${pct(CHANGED_SHARE)} rewritten, built elsewhere and published to the origin store`)
    const v2 = makeSibling(v1)
    fs.writeFileSync(path.join(this.dir, 'demo-v2.raw'), v2.img)
    say(`demo-v2.raw: ${mib(v2.changed)} in ${v2.files} files rewritten (${pct(v2.changed / IMAGE_BYTES)})`)
    await this.vmifs(['import', 'demo-v2.raw', '--name', 'demo-v2', '--config', 'build.json'])
    await this.vmifs(['publish-store', 'store', '--config', 'build.json'])
    const t2 = Date.now()
    await this.appears('host-b', 'demo-v2')
    say(`demo-v2 appeared on host-b ${secs(Date.now() - t2)} later (agents look at the store every 5 s)`)
    const b2 = await this.bootRead('host-b', 'demo-v2', v2.img, pattern)
    const share = b2.fetched / bootBytes
    say(
      `host-b read ${mib(bootBytes)} of demo-v2 in ${secs(b2.ms)} (its agent answered ${mib(b2.read)}), ` +
        `hit rate ${pct(b2.hitRate)}`
    )
    say(`fetched ${mib(b2.fetched)} by holder: ${b2.from}`)
    say("(host-b holds the chunks of the files it read of demo-v1, and demo-v2's unchanged files are")
    say(' the same chunks; only the store holds the rewritten ones)')
    this.matched('host-b', 'demo-v2', b2.bad)
    this.check(
      `host-b fetched ${pct(share)} of the ${mib(bootBytes)} it read of the sibling (bound ${pct(SIBLING_BOUND)})`,
      share < SIBLING_BOUND
    )

    step('7. a learned model: host-b read demo-v1 in a session; a cold host-c is prefetched from it')
    let sessions = 0
    await until("host-b's usage model of demo-v1 on host-c", SETTLE_MS, async () => {
      sessions = (await this.stats('host-c')).images['demo-v1']?.modelSessions ?? 0
      return sessions >= 1
    })
    say(`host-b's read session ended ${secs(SESSION_IDLE_MS)} after its last read (config sessionIdleMs)`)
    say(`host-c has the fleet's usage model of demo-v1 (sessions: ${sessions})`)
    const c = await this.bootRead('host-c', 'demo-v1', v1, pattern, true)
    say(
      `host-c read ${mib(bootBytes)} in ${secs(c.ms)} (its agent answered ${mib(c.read)}): ` +
        `hit rate ${pct(c.hitRate)} (host-b, cold: ${pct(b1.hitRate)})`
    )
    say(`fetched ${mib(c.fetched)}, prefetch and reads, by holder: ${c.from}`)
    const cs = await this.stats('host-c')
    say(`prefetch precision ${pct(cs.prefetch.precision)}: of the chunks prefetched, those the read used`)
    say(`prefetch recall ${pct(cs.prefetch.recall)}: of the chunks the read needed from the network, those prefetched`)
    this.matched('host-c', 'demo-v1', c.bad)
    this.check(`host-c's hit rate is ${pct(c.hitRate)} (bound ${pct(HIT_BOUND)})`, c.hitRate >= HIT_BOUND)

    step('8. the fleet (since each agent started)')
    await this.table()

    if (keep) {
      step(`the fleet runs in ${this.dir}; Ctrl-C stops it and cleans up`)
      say(`mounts: ${HOSTS.map(id => this.mnt(id)).join(' ')}`)
      say(`e.g. vmifs hosts --config ${path.join(this.dir, 'host-c.json')}`)
      const link = (await this.vmifs(['dashboard', '--config', 'host-c.json'], true)).trim()
      say(`host-c's web dashboard (one browser, within 10 minutes; vmifs dashboard for another): ${link}`)
      await new Promise<void>(resolve => {
        this.release = resolve
      })
    }
    return this.passed()
  }

  /** Whether every check so far passed. */
  passed(): boolean {
    return this.checks.every(c => c.ok)
  }

  /** Records and prints a check. */
  check(what: string, ok: boolean): void {
    this.checks.push({ what, ok })
    say(`${ok ? 'PASS' : 'FAIL'}: ${what}`)
  }

  private matched(id: string, image: string, bad: number): void {
    this.check(`every byte ${id} read of ${image} is the image's (${bad} reads differed)`, bad === 0)
  }

  /** The checks so far, as a summary line. */
  summary(): string {
    const failed = this.checks.filter(c => !c.ok)
    return failed.length === 0
      ? `all ${this.checks.length} checks passed`
      : `${failed.length} of ${this.checks.length} checks failed: ${failed.map(c => c.what).join('; ')}`
  }

  private mnt(id: string, ...rest: string[]): string {
    return path.join(this.dir, id, 'mnt', ...rest)
  }

  /** A child process, tracked until it exits; long-lived ones get a process group of their own. */
  private spawn(
    name: string,
    cmd: string,
    args: string[],
    o: { detached?: boolean; env?: NodeJS.ProcessEnv } = {}
  ): Proc {
    // detached: a Ctrl-C in the terminal reaches the demo alone, which stops the fleet in order
    const child = spawn(cmd, args, {
      cwd: this.dir,
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: o.detached === true,
      env: { ...process.env, ...o.env }
    })
    const p: Proc = { name, child, out: '', err: '', exited: new Promise(resolve => child.once('close', resolve)) }
    void p.exited.then(() => this.procs.delete(p))
    child.stdout.on('data', (d: Buffer) => {
      p.out += d.toString()
    })
    child.stderr.on('data', (d: Buffer) => {
      p.err = (p.err + d.toString()).slice(-8000)
    })
    child.once('error', err => {
      p.err += err.message
    })
    this.procs.add(p)
    return p
  }

  /** Runs a vmifs command in the demo dir; prints it and its output unless quiet. Its standard output. */
  private async vmifs(args: string[], quiet = false): Promise<string> {
    if (!quiet) say(`$ vmifs ${args.join(' ')}`)
    const p = this.spawn(`vmifs ${args[0]}`, process.execPath, [VMIFS, ...args])
    const code = await within(p.exited, COMMAND_MS, `vmifs ${args.join(' ')}`)
    if (code !== 0) throw new Error(`vmifs ${args.join(' ')} exited ${String(code)}: ${p.err.trim()}`)
    if (!quiet) for (const s of [p.out, p.err]) if (s.trim() !== '') say(s.trimEnd())
    return p.out
  }

  /** Runs a command in the demo dir and prints it and its output. */
  private async show(cmd: string, args: string[]): Promise<void> {
    say(`$ ${cmd} ${args.join(' ')}`)
    const p = this.spawn(cmd, cmd, args)
    const code = await within(p.exited, COMMAND_MS, `${cmd} ${args.join(' ')}`)
    say((p.out + p.err).trimEnd())
    if (code !== 0) throw new Error(`${cmd} exited ${String(code)}`)
  }

  /** A host's data dir and config, its key, the admin's certificate for it, installed. */
  private async admit(id: string, admin: string, loud: boolean): Promise<void> {
    fs.mkdirSync(path.join(this.dir, id, 'data'), { recursive: true })
    fs.mkdirSync(this.mnt(id))
    const config = {
      dataDir: path.join(this.dir, id, 'data'),
      hostId: id,
      trust: { admins: [admin] },
      // a small fleet on one machine: pull the table often, end read sessions soon after their reads
      syncIntervalMs: 200,
      sessionIdleMs: SESSION_IDLE_MS,
      mount: { readTimeoutMs: 20_000 }
    }
    fs.writeFileSync(path.join(this.dir, `${id}.json`), JSON.stringify(config, null, 2) + '\n')
    const [, key] = (await this.vmifs(['host', 'key', '--config', `${id}.json`], !loud)).trim().split(' ')
    if (key === undefined) throw new Error(`vmifs host key printed no key for ${id}`)
    await this.vmifs(['fleet', 'admit', id, key, '--admin-key', 'admin.key', '--out', `${id}.cert`], !loud)
    await this.vmifs(['host', 'cert', `${id}.cert`, '--config', `${id}.json`], !loud)
  }

  /** nginx serving the store on loopback; its URL. */
  private async startNginx(): Promise<string> {
    const bin = ['/usr/sbin/nginx', '/usr/bin/nginx'].find(b => fs.existsSync(b))
    if (bin === undefined) throw new Error('nginx is not installed (npm run demo installs nginx-light)')
    const d = path.join(this.dir, 'nginx')
    const port = await freePort()
    const { conf } = nginxConfig(d, `listen 127.0.0.1:${port}; location / { root ${this.dir}/store; }`, {
      accessLog: false
    })
    this.nginx = this.spawn('nginx', bin, ['-c', conf, '-p', d], { detached: true })
    const url = `http://127.0.0.1:${port}`
    const nginx = this.nginx
    await until(`nginx to serve ${url}`, START_MS, async () => {
      if (exited(nginx))
        throw new Fatal(`nginx exited: ${nginx.err}${fs.readFileSync(path.join(d, 'error.log'), 'utf8')}`)
      const r = await fetch(`${url}/store.json`, { signal: AbortSignal.timeout(2000) })
      await r.arrayBuffer()
      return r.ok
    })
    say(`nginx serves store/ at ${url} (pid ${nginx.child.pid ?? '?'})`)
    return url
  }

  /** Starts a host's agent on `port`, peering `peers`, with the origin store; its endpoint. */
  private async startAgent(id: string, port: number, peers: string[], origin: string): Promise<string> {
    const args = ['agent', '--config', `${id}.json`, '--mount', `${id}/mnt`, '--listen', `127.0.0.1:${port}`]
    for (const p of peers) args.push('--peer', p)
    args.push('--origin', origin)
    say(`$ VMIFS_TOKEN=… vmifs ${args.join(' ')}`)
    const p = this.spawn(id, process.execPath, [VMIFS, ...args], {
      detached: true,
      env: { VMIFS_TOKEN: this.token, VMIFS_LOG_LEVEL: 'warn' }
    })
    this.agents.set(id, p)
    await until(`${id}'s agent to mount`, START_MS, () => {
      if (exited(p)) throw new Fatal(`${id}'s agent exited: ${p.err}`)
      return p.out.includes('"event":"ready"')
    })
    const ready = JSON.parse(p.out.split('\n').find(l => l.includes('"event":"ready"'))!) as {
      endpoint: string
      pid: number
    }
    say(`${id}: mounted at ${id}/mnt, serves peers at ${ready.endpoint} (pid ${ready.pid})`)
    return ready.endpoint
  }

  /** Waits until an image is listed in a host's mount. */
  private async appears(id: string, image: string): Promise<void> {
    await until(`${image} in ${id}/mnt/images`, SETTLE_MS, async () => {
      const names = await within(fsp.readdir(this.mnt(id, 'images')), 10_000, `listing ${id}/mnt/images`)
      return names.includes(image)
    })
  }

  /** A host's `.stats`, read from its mount. */
  private async stats(id: string): Promise<Stats> {
    const p = this.agents.get(id)
    if (p === undefined || exited(p)) throw new Fatal(`${id}'s agent is not running: ${p?.err ?? 'never started'}`)
    return JSON.parse(await within(fsp.readFile(this.mnt(id, '.stats'), 'utf8'), 10_000, `${id}/mnt/.stats`)) as Stats
  }

  /** Waits until a host has no fetch or prefetch under way (within `ms`); whether it got there. */
  private async settled(id: string, ms: number): Promise<boolean> {
    return await until(`${id}'s fetches to finish`, ms, async () => {
      const s = await this.stats(id)
      return s.fleet?.inFlight === 0 && s.prefetch.pending === 0
    }).then(
      () => true,
      (err: unknown) => {
        if (err instanceof Fatal) throw err
        return false
      }
    )
  }

  /**
   * A boot's reads of an image on a host, and what the host did meanwhile. With `prefetch`, the
   * image is opened first, which starts a read session and its prefetch, and the reads wait for
   * the prefetch (at most PREFETCH_MS) as a boot's first reads follow the open by a moment.
   */
  private async bootRead(
    id: string,
    image: string,
    source: Buffer,
    pattern: Extent[],
    prefetch = false
  ): Promise<ReturnType<typeof delta> & { ms: number; bad: number }> {
    const before = await this.stats(id)
    const fh = await within(fsp.open(this.mnt(id, 'images', image)), 10_000, `opening ${id}/mnt/images/${image}`)
    let r: { ms: number; bad: number }
    try {
      if (prefetch) {
        const t0 = Date.now()
        await until(`${id}'s prefetch to start`, PREFETCH_MS, async () => (await this.stats(id)).prefetch.issued > 0)
        const done = await this.settled(id, PREFETCH_MS)
        const s = await this.stats(id)
        say(
          `${id} opened ${image}; its prefetcher fetched ${mib(s.prefetch.bytes - before.prefetch.bytes)} ` +
            `in ${secs(Date.now() - t0)}${done ? '' : ', and goes on: the read starts anyway'}`
        )
      }
      r = await within(bootRead(fh, source, pattern), READ_MS, `reading ${image} on ${id}`)
    } finally {
      await within(fh.close(), 10_000, `closing ${id}/mnt/images/${image}`)
    }
    await this.settled(id, SETTLE_MS)
    return { ...delta(before, await this.stats(id)), ...r }
  }

  /** The three hosts since their agents started. */
  private async table(): Promise<void> {
    const rows = [['host', 'read', 'hit rate', 'fetched', 'served', 'fetched by holder']]
    for (const id of HOSTS) {
      const s = await this.stats(id)
      const by: Record<string, number> = {}
      for (const [h, v] of Object.entries(s.fetch.byHolder)) by[h] = v?.bytes ?? 0
      const hits = s.cache.hitBytes + s.cache.missBytes
      rows.push([
        id,
        mib(s.read.bytes),
        hits === 0 ? '-' : pct(s.cache.hitBytes / hits),
        mib(s.fetch.bytes),
        mib(s.served.bytes),
        s.fetch.bytes === 0 ? '-' : holders(by)
      ])
    }
    const width = rows[0]!.map((_, i) => Math.max(...rows.map(r => r[i]!.length)))
    for (const r of rows)
      say(
        r
          .map((c, i) => (i === 0 || i === r.length - 1 ? c.padEnd(width[i]!) : c.padStart(width[i]!)))
          .join('  ')
          .trimEnd()
      )
  }

  /**
   * Stops everything, once however often it is called: commands under way, the agents (SIGTERM:
   * each unmounts; SIGKILL and a lazy unmount past STOP_MS), nginx, then removes the demo dir.
   * Resolves with whether every agent exited 0.
   */
  stop(): Promise<boolean> {
    return (this.stopping ??= this.stopAll())
  }

  private async stopAll(): Promise<boolean> {
    const long = new Set([...this.agents.values(), ...(this.nginx ? [this.nginx] : [])])
    const commands = [...this.procs].filter(p => !long.has(p))
    const codes = await Promise.all([...commands, ...this.agents.values()].map(p => this.end(p)))
    const agentsOk = codes.slice(commands.length).every(c => c === 0)
    for (const m of mountsUnder(this.dir)) spawnSync('umount', ['-l', m])
    if (this.nginx) await this.end(this.nginx)
    fs.rmSync(this.dir, { recursive: true, force: true })
    return agentsOk
  }

  /** SIGTERM, and its exit code; SIGKILL past STOP_MS (null: killed, or still there 5 s later). */
  private async end(p: Proc): Promise<number | null> {
    const gone = (ms: number): Promise<boolean> =>
      within(p.exited, ms, p.name).then(
        () => true,
        () => false
      )
    if (!exited(p)) p.child.kill('SIGTERM')
    if (!(await gone(STOP_MS))) {
      p.child.kill('SIGKILL')
      await gone(5000)
    }
    return p.child.exitCode
  }
}

/** Runs the fleet demo; resolves with the exit status (130 once a signal's stop is done). */
export async function fleetDemo(keep: boolean): Promise<number> {
  const t0 = Date.now()
  const demo = new FleetDemo(fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'vmifs-demo-'))))
  say(`working in ${demo.dir} (removed at the end)`)
  let interrupted = false
  const stopped = new Promise<number>(resolve => {
    const onSignal = (signal: NodeJS.Signals): void => {
      if (demo.release) {
        demo.release()
        demo.release = undefined
        return
      }
      if (interrupted) return // npm passes a terminal's Ctrl-C on as well: one is enough
      interrupted = true
      say(`\n${signal}: stopping the fleet`)
      void demo.stop().finally(() => {
        say(`stopped; ${demo.dir} removed`)
        resolve(130)
      })
    }
    process.on('SIGINT', onSignal)
    process.on('SIGTERM', onSignal)
  })
  const finished = async (): Promise<number> => {
    let ok = false
    try {
      ok = await demo.run(keep)
    } catch (err) {
      if (!interrupted) process.stderr.write(`\ndemo failed: ${(err as Error).message}\n`)
    }
    if (interrupted) return await stopped
    step('stop the fleet: SIGTERM to each agent (it unmounts), then nginx; remove the demo dir')
    demo.check('every agent exited 0 on SIGTERM, having unmounted', await demo.stop())
    say(`${demo.summary()}; ${demo.dir} removed; the demo took ${secs(Date.now() - t0)}`)
    return ok && demo.passed() ? 0 : 1
  }
  return await Promise.race([finished(), stopped])
}
