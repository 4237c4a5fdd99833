// `npm run bench -- boot [--settings a,b,…] [--tools x,y,…] [--replay [--speed S]] [--record-trace]`
//
// Boots a real Debian 12 VM (bench/lib/bootable-family.sh: debootstrap + mke2fs -d, 2 GiB ext4)
// under qemu TCG with direct kernel boot, to a marker its systemd prints on the serial console
// when multi-user.target is reached, on a cold host C whose only source of the image is host A
// over a link shaped with tc tbf (network namespaces, veth, a bridge) with RTT added by the
// userspace delay proxy. Compared: the lazy readers an operator would otherwise use (nbdkit curl +
// cache filter over NBD, httpfs2, qemu's http driver, rclone mount with a full VFS cache; all
// reading nginx on A), vmifs (cold, with a learned usage model, with a migration hint), a local
// copy, and copying the whole image first.
//
// Settings (--settings, default all but thin20): rtt0, rtt20, rtt100 (100 Mbit/s and that RTT),
// thin (10 Mbit/s), thin20 (10 Mbit/s, 20 ms), sibling (C boots boot-b, then the reported boot of
// boot-a, 100 Mbit/s, 20 ms), warm (C boots boot-a twice; the second is reported), takeover
// (rtt20; `vmifs agent --takeover` replaces C's agent 5 s into the boot), crash (rtt20; C's agent
// killed with kill -9 5 s into the boot and started again) — these two for the vmifs tools, each
// boot checked for I/O errors on the guest's console. --repeat N boots each row N times and
// reports the median. Tools (--tools, default all): local, copy, nbdkit, httpfs2, qemu-http,
// rclone, vmifs, vmifs-model, vmifs-hint, vmifs-origin, vmifs-origin-model, vmifs-redis,
// vmifs-redis-model. vmifs-redis*: vmifs and vmifs-model with A's and C's agents on the Redis
// metadata backend: a redis-server on A's side (expiry events on), which C reaches through its
// own delay proxy, emptied and A's agent restarted before each such boot.
// vmifs-model: A booted boot-a once from its own mount, so the fleet's usage model has a session;
// vmifs-origin: C's only source is an origin store (`vmifs publish-store` of A's images, served by
// the same nginx on A through the same delay proxy as the competitors); vmifs-origin-model: the
// same store with the boot profile of A's boot of boot-a published (`--with-models`);
// vmifs-hint: a hint exported (`vmifs hint export`) while a VM that booted boot-a from a vmifs mount
// runs, imported on C (`vmifs hint import`) just before qemu starts. Both templates are kept under
// /var/tmp/vmifs-bench/bootable/vmifs-templates (rebuilt when the images change).
// copy is measured at the first 100 Mbit/s setting and computed (2 GiB at the link rate + the
// boot of the copy) elsewhere, labelled so. Rows so far: /var/tmp/vmifs-boot-bench-rows.json.
//
// --replay replays a real boot's recorded read trace (bench/fixtures/boot-trace.json) against the
// file-exposing tools instead of booting: seconds instead of minutes. --record-trace re-records
// the fixture from a boot of the local boot-a.img (qemu → NBD → nbdkit file plugin + log filter).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { createFleetNet, type FleetNet } from '../test/integration/netns.js'
import { bootVm, type BootResult } from './lib/qemu-boot.js'
import { distinct, mergeReads, parseNbdkitLog, type BootTrace } from './lib/boot-trace.js'
import {
  detach,
  httpfs2Session,
  nbdkitSession,
  qemuHttpSession,
  rcloneSession,
  sleep,
  stopChild,
  waitFor,
  type Ctx,
  type ImageName,
  type ToolSession
} from './lib/boot-tools.js'
import { takeOption } from './lib/report.js'
import { DEFAULT_CHUNKING } from '../src/manifests/chunking.js'
import { TRUST, admitHost } from '../test/integration/admit.js'
import { nginxConfig } from '../src/util/nginx.js'

const here = path.dirname(fileURLToPath(import.meta.url))
const VMIFS = path.resolve(here, '../../bin/vmifs.js')
const PROXY = path.join(here, 'lib/delay-proxy.js')
const TRACE_READER = path.join(here, 'lib/boot-trace.js')
const FIXTURE = path.resolve(here, '../../bench/fixtures/boot-trace.json')
const FAMILY_SH = path.resolve(here, '../../bench/lib/bootable-family.sh')
const BOOTABLE = '/var/tmp/vmifs-bench/bootable'
const TEMPLATES = path.join(BOOTABLE, 'vmifs-templates')
const TOKEN = 'bench-secret'
const MiB = 1048576
const BOOT_TIMEOUT_MS = 300_000

interface Setting {
  name: string
  rateMbit: number
  rttMs: number
  kind: 'cold' | 'sibling' | 'warm' | 'takeover' | 'crash'
  label: string
}
/** When C's agent is taken over or killed in the takeover and crash settings. */
const DISTURB_AFTER_MS = 5000
const SETTINGS: Setting[] = [
  { name: 'rtt0', rateMbit: 100, rttMs: 0, kind: 'cold', label: 'cold host, 100 Mbit/s, no added RTT' },
  { name: 'rtt20', rateMbit: 100, rttMs: 20, kind: 'cold', label: 'cold host, 100 Mbit/s, RTT 20 ms' },
  { name: 'rtt100', rateMbit: 100, rttMs: 100, kind: 'cold', label: 'cold host, 100 Mbit/s, RTT 100 ms' },
  { name: 'thin', rateMbit: 10, rttMs: 0, kind: 'cold', label: 'cold host, thin link: 10 Mbit/s, no added RTT' },
  { name: 'thin20', rateMbit: 10, rttMs: 20, kind: 'cold', label: 'cold host, thin link: 10 Mbit/s, RTT 20 ms' },
  {
    name: 'sibling',
    rateMbit: 100,
    rttMs: 20,
    kind: 'sibling',
    label: 'host that booted the sibling image boot-b first, 100 Mbit/s, RTT 20 ms'
  },
  {
    name: 'warm',
    rateMbit: 100,
    rttMs: 20,
    kind: 'warm',
    label: 'second boot on the same host, 100 Mbit/s, RTT 20 ms'
  },
  {
    name: 'takeover',
    rateMbit: 100,
    rttMs: 20,
    kind: 'takeover',
    label: `cold host, 100 Mbit/s, RTT 20 ms; vmifs agent --takeover ${DISTURB_AFTER_MS / 1000} s into the boot`
  },
  {
    name: 'crash',
    rateMbit: 100,
    rttMs: 20,
    kind: 'crash',
    label:
      'cold host, 100 Mbit/s, RTT 20 ms; the agent killed (kill -9) ' +
      `${DISTURB_AFTER_MS / 1000} s into the boot and started again`
  }
]
const COMPETITORS = ['nbdkit', 'httpfs2', 'qemu-http', 'rclone'] as const
const VMIFS_TOOLS = [
  'vmifs',
  'vmifs-model',
  'vmifs-hint',
  'vmifs-origin',
  'vmifs-origin-model',
  'vmifs-redis',
  'vmifs-redis-model'
] as const
const ORIGIN_TOOLS: readonly string[] = ['vmifs-origin', 'vmifs-origin-model']
const REDIS_TOOLS: readonly string[] = ['vmifs-redis', 'vmifs-redis-model']
/** redis-server on A's address, and the delay proxy in front of it for C */
const REDIS_PORT = 6379
const REDIS_PROXY_PORT = 6380
const ALL_TOOLS = ['local', 'copy', ...COMPETITORS, ...VMIFS_TOOLS]
const TOOL_LABEL: Record<string, string> = {
  local: 'local copy (no network)',
  copy: 'copy whole image, then boot',
  nbdkit: 'nbdkit curl + cache filter (NBD)',
  httpfs2: 'httpfs2 (FUSE)',
  'qemu-http': 'qemu http driver (curl)',
  rclone: 'rclone mount, --vfs-cache-mode full',
  vmifs: 'vmifs, no model',
  'vmifs-model': 'vmifs, learned model',
  'vmifs-hint': 'vmifs, migration hint',
  'vmifs-origin': 'vmifs, origin store only, no model',
  'vmifs-origin-model': 'vmifs, origin store only, published boot profile',
  'vmifs-redis': 'vmifs on the Redis metadata backend, no model',
  'vmifs-redis-model': 'vmifs on the Redis metadata backend, learned model'
}

interface VmifsNumbers {
  fetchBytes: number
  readBytes: number
  missBytes: number
  hitBytes: number
  issued: number
  used: number
  late: number
  wasted: number
  prefetchBytes: number
  wastedBytes: number
  hinted: number
  demandFetchedChunks: number
  modelSessions: number
}
interface Row {
  setting: string
  tool: string
  ok: boolean
  seconds: number
  /** bytes received by C's network interface during the reported boot */
  rxBytes: number
  /** HTTP requests nginx on A answered during the reported boot (the tools that read nginx) */
  requests?: number
  note?: string
  error?: string
  vmifs?: VmifsNumbers
  computed?: boolean
}

/**
 * The parts of a mount's .stats file the deltas read (src/stats/stats.ts snapshot(); modelSessions
 * is added per image by the agent). Optional throughout: a key a build does not report counts as 0.
 */
interface Stats {
  fetch?: { bytes?: number }
  read?: { bytes?: number }
  cache?: { missBytes?: number; hitBytes?: number }
  prefetch?: {
    issued?: number
    used?: number
    late?: number
    wasted?: number
    bytes?: number
    wastedBytes?: number
    hinted?: number
    demandFetchedChunks?: number
  }
  images?: Record<string, { modelSessions?: number } | undefined>
}

function readStats(mnt: string): Stats {
  // a child process reads the mount (never the process that serves it; here for symmetry too)
  const r = spawnSync('cat', [path.join(mnt, '.stats')], { encoding: 'utf8', timeout: 20_000 })
  if (r.status !== 0) throw new Error(`reading ${mnt}/.stats: ${r.stderr}`)
  return JSON.parse(r.stdout) as Stats
}

function vmifsDelta(before: Stats, after: Stats, image: string): VmifsNumbers {
  const d = (f: (s: Stats) => number | undefined): number => (f(after) ?? 0) - (f(before) ?? 0)
  return {
    fetchBytes: d(s => s.fetch?.bytes),
    readBytes: d(s => s.read?.bytes),
    missBytes: d(s => s.cache?.missBytes),
    hitBytes: d(s => s.cache?.hitBytes),
    issued: d(s => s.prefetch?.issued),
    used: d(s => s.prefetch?.used),
    late: d(s => s.prefetch?.late),
    wasted: d(s => s.prefetch?.wasted),
    prefetchBytes: d(s => s.prefetch?.bytes),
    wastedBytes: d(s => s.prefetch?.wastedBytes),
    hinted: d(s => s.prefetch?.hinted),
    demandFetchedChunks: d(s => s.prefetch?.demandFetchedChunks),
    modelSessions: Number(after.images?.[image]?.modelSessions ?? 0)
  }
}

function rxBytes(ns: string): number {
  const r = spawnSync('ip', ['-n', ns, '-j', '-s', 'link', 'show', 'eth0'], { encoding: 'utf8' })
  const j = JSON.parse(r.stdout) as Array<{ stats64: { rx: { bytes: number } } }>
  return j[0]!.stats64.rx.bytes
}

/** Standard output seen so far of the children spawnIn made (the first 64 KiB): a ready line
 * printed before anyone waits for it is not lost. */
const early = new WeakMap<ChildProcess, { out: string }>()

function waitLine(child: ChildProcess, what: string, timeoutMs = 60_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const seen = early.get(child) ?? { out: '' }
    const find = (): string | undefined => seen.out.split('\n').find(l => l.startsWith('{'))
    const now = find()
    if (now !== undefined) {
      resolve(now)
      return
    }
    const t = setTimeout(() => reject(new Error(`${what} did not start`)), timeoutMs)
    const onData = (): void => {
      const line = find()
      if (line) {
        clearTimeout(t)
        child.stdout!.off('data', onData)
        resolve(line)
      }
    }
    child.stdout!.on('data', onData)
    child.once('exit', c => {
      clearTimeout(t)
      reject(new Error(`${what} exited ${String(c)}`))
    })
  })
}

function sh(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 * MiB })
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}${r.error?.message ?? ''}`)
  return r.stdout
}

const fmtS = (x: number): string => (Number.isFinite(x) ? `${x.toFixed(1)} s` : '—')
const fmtMiB = (x: number | undefined): string =>
  x === undefined || !Number.isFinite(x) ? '—' : `${(x / MiB).toFixed(1)}`

export async function main(args: string[]): Promise<void> {
  const replay = args.includes('--replay')
  const record = args.includes('--record-trace')
  const speed = Number(takeOption(args, '--speed') ?? 0)
  const repeat = Number(takeOption(args, '--repeat') ?? 1)
  if (!(Number.isInteger(repeat) && repeat >= 1)) throw new Error('--repeat takes a whole number ≥ 1')
  const settingNames = (
    takeOption(args, '--settings') ??
    (replay ? 'rtt0,rtt20,rtt100,thin' : 'rtt0,rtt20,rtt100,thin,sibling,warm,takeover,crash')
  ).split(',')
  const toolNames = (
    takeOption(args, '--tools') ?? (replay ? 'httpfs2,rclone,vmifs,vmifs-model' : ALL_TOOLS.join(','))
  ).split(',')
  for (const s of settingNames)
    if (!SETTINGS.some(x => x.name === s))
      throw new Error(`unknown setting ${s}; known: ${SETTINGS.map(x => x.name).join(', ')}`)
  for (const t of toolNames)
    if (!ALL_TOOLS.includes(t)) throw new Error(`unknown tool ${t}; known: ${ALL_TOOLS.join(', ')}`)
  const settings = settingNames.map(n => SETTINGS.find(x => x.name === n)!)
  const log = (m: string): void => {
    process.stderr.write(`boot: ${new Date().toISOString().slice(11, 19)} ${m}\n`)
  }

  // the images (built once, a few minutes; kept under /var/tmp/vmifs-bench/bootable)
  const need = [
    'boot-a.img',
    'boot-b.img',
    'boot-a.vmlinuz',
    'boot-a.initrd.img',
    'boot-b.vmlinuz',
    'boot-b.initrd.img'
  ]
  if (!need.every(f => fs.existsSync(path.join(BOOTABLE, f)))) {
    log('building the bootable images (debootstrap, a few minutes)')
    const r = spawnSync('bash', [FAMILY_SH, BOOTABLE], { stdio: 'inherit' })
    if (r.status !== 0) throw new Error('bootable-family.sh failed')
  }
  const kernel = (img: ImageName): { kernel: string; initrd: string } => ({
    kernel: path.join(BOOTABLE, `${img}.vmlinuz`),
    initrd: path.join(BOOTABLE, `${img}.initrd.img`)
  })
  const localImg = (img: ImageName): string => path.join(BOOTABLE, `${img}.img`)

  const dir = fs.mkdtempSync('/var/tmp/vmifs-bench-boot-')
  const children = new Set<ChildProcess>()
  let net: FleetNet | undefined
  const spawnIn = (
    ns: string | undefined,
    argv: string[],
    opts: { env?: NodeJS.ProcessEnv; stdout?: 'pipe' | 'ignore' } = {}
  ): ChildProcess => {
    const full = ns === undefined ? argv : ['nsenter', `--net=/run/netns/${ns}`, ...argv]
    const c = spawn(full[0]!, full.slice(1), {
      stdio: ['ignore', opts.stdout ?? 'pipe', 'pipe'],
      env: opts.env ?? { ...process.env, VMIFS_LOG_LEVEL: 'warn' }
    })
    let err = ''
    c.stderr!.on('data', (d: Buffer) => {
      err = (err + d.toString()).slice(-4000)
    })
    c.once('exit', (code, sig) => {
      children.delete(c)
      if (code !== 0 && code !== null && err.trim() !== '') {
        const lastLines = err.trim().split('\n').slice(-5).join(' | ')
        log(`${path.basename(argv[0]!)} ${argv[1] === VMIFS ? argv[2] : ''} exited ${code}: ${lastLines}`)
      }
      void sig
    })
    if (opts.stdout !== 'ignore') {
      const seen = { out: '' }
      early.set(c, seen)
      c.stdout!.on('data', (d: Buffer) => {
        if (seen.out.length < 65536) seen.out += d.toString()
      }) // also keeps the pipe drained
    }
    children.add(c)
    return c
  }
  const cfg = path.join(dir, 'config.json')
  fs.writeFileSync(cfg, JSON.stringify({ token: TOKEN, syncIntervalMs: 200, sessionIdleMs: 1000, trust: TRUST }))

  const startAgent = async (
    ns: string | undefined,
    host: string,
    data: string,
    mnt: string,
    extra: string[],
    // false for an agent that takes a live mount over or resumes a dead agent's: a stat of a
    // mount whose agent is dead waits for an answer, and would stop this process with it
    makeMountpoint = true
  ): Promise<ChildProcess> => {
    if (makeMountpoint) fs.mkdirSync(mnt, { recursive: true })
    admitHost(data, host)
    const c = spawnIn(ns, [
      process.execPath,
      VMIFS,
      'agent',
      '--mount',
      mnt,
      '--data-dir',
      data,
      '--host-id',
      host,
      '--config',
      cfg,
      ...extra
    ])
    await waitLine(c, `agent ${host}`)
    return c
  }
  const boot = async (
    img: ImageName,
    drive: string,
    ns?: string,
    until?: string,
    onReady?: () => void | Promise<void>
  ): Promise<BootResult> => {
    const r = await bootVm({ ...kernel(img), drive, netns: ns, timeoutMs: BOOT_TIMEOUT_MS, until, onReady })
    if (!r.ok) log(`boot of ${img} failed: ${r.error ?? ''}\n${r.tail}`)
    return r
  }

  const rows: Row[] = []
  const notes: string[] = []
  try {
    if (record) {
      await recordTrace(dir, kernel('boot-a'), localImg('boot-a'), spawnIn, log)
      if (!replay && args.includes('--record-only')) return
    }

    // vmifs templates: A's data dir with both images imported (a0), the same after one boot of
    // boot-a from A's own mount so that A's usage model of it has one session (a1), and a
    // migration hint exported while a VM that booted boot-a from a vmifs mount runs (hint.json)
    // (and when the default chunking changes: the images are imported with it)
    const stamp =
      need.map(f => `${f}:${fs.statSync(path.join(BOOTABLE, f)).mtimeMs}`).join(',') +
      ` ${JSON.stringify(DEFAULT_CHUNKING)}`
    if (
      !fs.existsSync(path.join(TEMPLATES, 'stamp')) ||
      fs.readFileSync(path.join(TEMPLATES, 'stamp'), 'utf8') !== stamp
    ) {
      fs.rmSync(TEMPLATES, { recursive: true, force: true })
      fs.mkdirSync(TEMPLATES, { recursive: true })
      for (const img of ['boot-a', 'boot-b'] as const) {
        log(`importing ${img} into the template of A's data dir`)
        sh(process.execPath, [
          VMIFS,
          'import',
          localImg(img),
          '--name',
          img,
          '--data-dir',
          path.join(TEMPLATES, 'a0'),
          '--quiet'
        ])
      }
      fs.writeFileSync(path.join(TEMPLATES, 'stamp'), stamp)
    }
    // templates written before pack files: converted the way an operator converts a data dir
    for (const t of ['a0', 'a1']) {
      const dd = path.join(TEMPLATES, t)
      if (!fs.existsSync(path.join(dd, 'chunks'))) continue
      log(`converting the template ${t} to pack files (vmifs fsck)`)
      const r = spawnSync(process.execPath, [VMIFS, 'fsck', '--data-dir', dd], { encoding: 'utf8' })
      if (r.status !== 0 && r.status !== 1) throw new Error(`vmifs fsck of ${dd} failed: ${r.stderr}`)
      log(r.stdout.trim())
    }
    const hintCli = spawnSync(process.execPath, [VMIFS, 'hint', '--help'], { encoding: 'utf8' }).status === 0
    const wantsModel = toolNames.includes('vmifs-model') || toolNames.includes('vmifs-redis-model')
    const wantsHint = toolNames.includes('vmifs-hint')
    net = createFleetNet({ hosts: ['a', 'c'], prefix: `boot${process.pid % 10000}` })
    const nsA = net.ns('a')
    const nsC = net.ns('c')
    const addrA = net.addr('a')

    if (wantsModel && !fs.existsSync(path.join(TEMPLATES, 'a1', '.done'))) {
      log('learning a model: A boots boot-a once from its own mount')
      fs.rmSync(path.join(TEMPLATES, 'a1'), { recursive: true, force: true })
      sh('cp', ['-a', path.join(TEMPLATES, 'a0'), path.join(TEMPLATES, 'a1')])
      const mnt = path.join(dir, 'learn-mnt')
      const a = await startAgent(nsA, 'a', path.join(TEMPLATES, 'a1'), mnt, [
        '--listen',
        `${addrA}:7070`,
        '--advertise',
        `http://${addrA}:7071`
      ])
      const r = await boot('boot-a', `file=${path.join(mnt, 'images/boot-a')},format=raw`)
      if (!r.ok) throw new Error('the learning boot failed')
      await waitFor(
        'the model of boot-a',
        () => Number(readStats(mnt).images?.['boot-a']?.modelSessions ?? 0) >= 1,
        30_000
      )
      await stopChild(a)
      detach(mnt)
      fs.writeFileSync(path.join(TEMPLATES, 'a1', '.done'), '')
    }
    // the origin stores: A's images published as vmifs publish-store writes them (from copies of
    // the templates: publishing signs and records in the data dir), the second with the boot profile
    const wantsOrigin = toolNames.some(t => ORIGIN_TOOLS.includes(t))
    const www = path.join(dir, 'www')
    fs.mkdirSync(www)
    if (wantsOrigin)
      for (const [template, store, extra] of [
        ['a0', 'store', []],
        ['a1', 'store-model', ['--with-models']]
      ] as const) {
        if (store === 'store-model' && !toolNames.includes('vmifs-origin-model')) continue
        if (!fs.existsSync(path.join(TEMPLATES, template))) continue
        const copy = path.join(dir, `pub-${template}`)
        sh('cp', ['-a', path.join(TEMPLATES, template), copy])
        admitHost(copy, 'a')
        const t0 = performance.now()
        const out = spawnSync(
          process.execPath,
          [VMIFS, 'publish-store', path.join(www, store), '--data-dir', copy, ...extra],
          { encoding: 'utf8' }
        )
        if (out.status !== 0) throw new Error(`publish-store: ${out.stderr}`)
        log(
          `${store}: ${out.stderr.trim().split('\n').pop() ?? ''} in ${((performance.now() - t0) / 1000).toFixed(1)} s`
        )
        fs.rmSync(copy, { recursive: true, force: true })
      }
    const hintFile = path.join(TEMPLATES, 'hint.json')
    if (wantsHint && hintCli && !fs.existsSync(hintFile)) {
      log(
        'a migration hint: a VM boots boot-a from a copy of A (no marker: it stays up), ' +
          'the hint is exported while it runs'
      )
      const data = path.join(dir, 'hint-src')
      sh('cp', ['-a', path.join(TEMPLATES, 'a0'), data])
      const mnt = path.join(dir, 'hint-mnt')
      const a = await startAgent(nsA, 'a', data, mnt, ['--listen', `${addrA}:7070`])
      const r = await boot('boot-a', `file=${path.join(mnt, 'images/boot-a')},format=raw`, undefined, 'login:', () => {
        sh(process.execPath, [VMIFS, 'hint', 'export', 'boot-a', '--data-dir', data, '--out', hintFile + '.tmp'])
        fs.renameSync(hintFile + '.tmp', hintFile)
      })
      await stopChild(a)
      detach(mnt)
      if (!r.ok || !fs.existsSync(hintFile)) throw new Error('exporting the hint failed')
    }
    if (wantsHint && !hintCli) notes.push('vmifs-hint: skipped, this build has no `vmifs hint` command yet.')

    // A's web server for the competitors: nginx serving the images (autoindex for rclone's listing;
    // Accept-Ranges on 206 answers too, which httpfs2 insists on and nginx leaves out)
    for (const img of ['boot-a', 'boot-b']) fs.symlinkSync(localImg(img as ImageName), path.join(www, `${img}.img`))
    const ngx = path.join(dir, 'nginx')
    const { conf: ngxConf, requests: nginxRequests } = nginxConfig(
      ngx,
      `listen ${addrA}:8080; location / { root ${www}; autoindex on; autoindex_exact_size on;` +
        ' add_header Accept-Ranges bytes; }',
      { http: 'types { application/octet-stream img; }' }
    )
    spawnIn(nsA, ['/usr/sbin/nginx', '-c', ngxConf, '-p', ngx])
    const wantsRedis = toolNames.some(t => REDIS_TOOLS.includes(t))
    if (wantsRedis) {
      const rdir = path.join(dir, 'redis')
      fs.mkdirSync(rdir, { recursive: true })
      const redis = spawnIn(nsA, [
        '/usr/bin/redis-server',
        ...['--bind', addrA, '--port', String(REDIS_PORT), '--save', '', '--appendonly', 'no'],
        ...['--notify-keyspace-events', 'Ex', '--protected-mode', 'no', '--dir', rdir]
      ])
      for (let i = 0; ; i++) {
        const r = spawnSync('ip', ['netns', 'exec', nsA, 'redis-cli', '-h', addrA, '-p', String(REDIS_PORT), 'ping'], {
          encoding: 'utf8'
        })
        if (r.stdout.trim() === 'PONG') break
        if (i > 100 || redis.exitCode !== null) throw new Error('redis-server did not start')
        await sleep(100)
      }
    }
    /** Empties the engine (a fresh fleet for each boot on the Redis backend). */
    const flushRedis = (): void => {
      sh('ip', ['netns', 'exec', nsA, 'redis-cli', '-h', addrA, '-p', String(REDIS_PORT), 'flushall'])
    }

    let localSeconds = NaN
    let copyMeasured: { copy: number; boot: number; rate: number } | undefined
    let aAgent: { child: ChildProcess; template: string; mnt: string; redis: boolean } | undefined
    const stopA = async (): Promise<void> => {
      if (aAgent) {
        await stopChild(aAgent.child)
        detach(aAgent.mnt)
        aAgent = undefined
      }
    }
    const ensureA = async (template: 'a0' | 'a1', tag: string, redis = false): Promise<void> => {
      // on Redis, A starts again on an emptied engine for each boot: C meets a fleet it never saw
      if (
        !redis &&
        aAgent?.template === template &&
        !aAgent.redis &&
        aAgent.child.exitCode === null &&
        aAgent.child.signalCode === null
      )
        return
      await stopA()
      if (redis) flushRedis()
      const data = path.join(dir, `a-data-${tag}`)
      fs.rmSync(data, { recursive: true, force: true })
      sh('cp', ['-a', path.join(TEMPLATES, template), data])
      const mnt = path.join(dir, `a-mnt-${tag}`)
      const child = await startAgent(nsA, 'a', data, mnt, [
        '--listen',
        `${addrA}:7070`,
        '--advertise',
        `http://${addrA}:7071`,
        ...(redis ? ['--metadata', `redis://${addrA}:${REDIS_PORT}`] : [])
      ])
      aAgent = { child, template, mnt, redis }
    }

    for (const st of settings) {
      log(`setting ${st.name}: ${st.label}`)
      net.shapeLink('a', st.rateMbit)
      // the delay proxies in front of nginx (8081) and of A's agent (7071); restarted if one was
      // killed from outside (seen on this shared machine), and the row that saw it says so
      const proxyPorts: ReadonlyArray<readonly [number, number]> = [
        [8081, 8080],
        [7071, 7070],
        ...(wantsRedis ? [[REDIS_PROXY_PORT, REDIS_PORT] as const] : [])
      ]
      const proxies: ChildProcess[] = []
      let proxyDeaths: string[] = []
      const ensureProxies = async (): Promise<void> => {
        for (let i = 0; i < proxyPorts.length; i++) {
          const old = proxies[i]
          if (old !== undefined && old.exitCode === null && old.signalCode === null) continue
          if (old !== undefined)
            proxyDeaths.push(`delay proxy :${proxyPorts[i]![0]} died (${String(old.signalCode ?? old.exitCode)})`)
          proxies[i] = spawnIn(nsA, [
            process.execPath,
            PROXY,
            '--listen',
            `${addrA}:${proxyPorts[i]![0]}`,
            '--target',
            `${addrA}:${proxyPorts[i]![1]}`,
            '--delay-ms',
            String(st.rttMs / 2)
          ])
          await waitLine(proxies[i]!, 'delay proxy')
        }
      }
      await ensureProxies()
      const ctx: Ctx = {
        dir,
        ns: nsC,
        url: `http://${addrA}:8081`,
        spawnIn: (ns, argv, o) => spawnIn(ns, argv, o),
        log
      }
      const images: ImageName[] =
        st.kind === 'sibling' ? ['boot-b', 'boot-a'] : st.kind === 'warm' ? ['boot-a', 'boot-a'] : ['boot-a']

      const disturbed = st.kind === 'takeover' || st.kind === 'crash'
      // runs in turns (every tool once, then every tool again): the machine's pace drifts
      for (let run = 1; run <= repeat; run++)
        toolLoop: for (const tool of toolNames) {
          if (disturbed && !(VMIFS_TOOLS as readonly string[]).includes(tool) && tool !== 'local') continue
          for (let attempt = 1; attempt <= 2; attempt++) {
            const row: Row = { setting: st.name, tool, ok: false, seconds: NaN, rxBytes: NaN }
            // a run's own: a reader's socket, cache and mount dirs are never another run's
            const tag = `${st.name}-${tool}-${run}`
            try {
              await ensureProxies()
              proxyDeaths = []
              if (tool === 'local') {
                if (replay) continue toolLoop
                // booted in every run of every setting, in turn with the others: the reference
                // the ratios are taken against drifts with the machine
                log('local: boot from the image file on local disk')
                const r = await boot('boot-a', `file=${localImg('boot-a')},format=raw`, nsC)
                if (r.ok) localSeconds = r.seconds
                Object.assign(row, { ok: r.ok, seconds: r.ok ? r.seconds : NaN, rxBytes: 0, error: r.error })
              } else if (tool === 'copy') {
                if (replay || st.kind !== 'cold' || run > 1) continue toolLoop
                if (copyMeasured === undefined && st.rateMbit === 100) {
                  log('copy: curl the whole image over the link, then boot the copy')
                  const copy = path.join(dir, 'copy.img')
                  const rx0 = rxBytes(nsC)
                  const t0 = performance.now()
                  const c = spawnIn(nsC, ['curl', '-sS', '--fail', '-o', copy, `${ctx.url}/boot-a.img`])
                  const code = await new Promise<number | null>(resolve => c.once('exit', resolve))
                  if (code !== 0) throw new Error(`curl exited ${String(code)}`)
                  const copySeconds = (performance.now() - t0) / 1000
                  row.rxBytes = rxBytes(nsC) - rx0
                  const r = await boot('boot-a', `file=${copy},format=raw`, nsC)
                  fs.rmSync(copy, { force: true })
                  if (!r.ok) throw new Error(r.error)
                  copyMeasured = { copy: copySeconds, boot: r.seconds, rate: st.rateMbit }
                  Object.assign(row, {
                    ok: true,
                    seconds: copySeconds + r.seconds,
                    note: `measured: copy ${copySeconds.toFixed(1)} s + boot ${r.seconds.toFixed(1)} s`
                  })
                } else {
                  const bootS = copyMeasured?.boot ?? localSeconds
                  const linkS = (fs.statSync(localImg('boot-a')).size * 8) / (st.rateMbit * 1e6)
                  Object.assign(row, {
                    ok: Number.isFinite(bootS),
                    seconds: linkS + bootS,
                    rxBytes: fs.statSync(localImg('boot-a')).size,
                    computed: true,
                    note: `computed: 2 GiB at the link rate (${linkS.toFixed(0)} s) + local boot`
                  })
                }
              } else if ((COMPETITORS as readonly string[]).includes(tool)) {
                const open: Record<string, () => ToolSession | Promise<ToolSession>> = {
                  nbdkit: () => nbdkitSession(ctx, tag),
                  httpfs2: () => httpfs2Session(ctx, tag),
                  'qemu-http': () => qemuHttpSession(ctx),
                  rclone: () => rcloneSession(ctx, tag)
                }
                if (replay && (tool === 'nbdkit' || tool === 'qemu-http')) {
                  notes.push(`${tool}: no replay (it exposes no file to read)`)
                  continue toolLoop
                }
                const sess = await open[tool]!()
                try {
                  for (let i = 0; i < images.length; i++) {
                    const img = images[i]!
                    const last = i === images.length - 1
                    const rx0 = rxBytes(nsC)
                    const q0 = nginxRequests()
                    let seconds: number
                    if (replay) {
                      seconds = (await replayTrace(await sess.file!(img), speed, spawnIn)).seconds
                    } else {
                      log(`${tool}: boot ${img}`)
                      const r = await boot(img, await sess.drive(img), nsC)
                      if (!r.ok) throw new Error(r.error)
                      seconds = r.seconds
                    }
                    if (last)
                      Object.assign(row, {
                        ok: true,
                        seconds,
                        rxBytes: rxBytes(nsC) - rx0,
                        requests: nginxRequests() - q0
                      })
                  }
                } finally {
                  await sess.close()
                }
              } else {
                // vmifs: A holds the images; C is a fresh agent pulling the table from A through the
                // proxy. vmifs-origin*: C's only source is the origin store behind nginx on A
                if (tool === 'vmifs-hint' && (!hintCli || st.kind !== 'cold')) continue toolLoop
                const fromOrigin = ORIGIN_TOOLS.includes(tool)
                if (fromOrigin && st.kind !== 'cold') continue toolLoop
                if (fromOrigin) await stopA()
                else
                  await ensureA(
                    tool === 'vmifs-model' || tool === 'vmifs-redis-model' ? 'a1' : 'a0',
                    tag,
                    REDIS_TOOLS.includes(tool)
                  )
                const dataC = path.join(dir, `c-data-${tag}`)
                const mntC = path.join(dir, `c-mnt-${tag}`)
                const cArgs = fromOrigin
                  ? ['--origin', `${ctx.url}/${tool === 'vmifs-origin-model' ? 'store-model' : 'store'}`]
                  : REDIS_TOOLS.includes(tool)
                    ? ['--metadata', `redis://${addrA}:${REDIS_PROXY_PORT}`]
                    : ['--peer', `http://${addrA}:7071`]
                let c = await startAgent(nsC, 'c', dataC, mntC, cArgs)
                try {
                  await waitFor(
                    'C learning the images',
                    () =>
                      fs.existsSync(path.join(mntC, 'images/boot-a')) &&
                      fs.existsSync(path.join(mntC, 'images/boot-b')),
                    30_000
                  )
                  await sleep(1000) // holdings follow the image facts
                  // (on Redis, C follows an image's models once it uses it: the model comes with
                  // the lookup that qemu's open of the image starts, within the boot)
                  if (tool === 'vmifs-model' || tool === 'vmifs-origin-model')
                    await waitFor(
                      'C seeing the model',
                      () => Number(readStats(mntC).images?.['boot-a']?.modelSessions ?? 0) >= 1,
                      30_000
                    )
                  for (let i = 0; i < images.length; i++) {
                    const img = images[i]!
                    const last = i === images.length - 1
                    const s0 = readStats(mntC)
                    const rx0 = rxBytes(nsC)
                    const q0 = nginxRequests()
                    if (tool === 'vmifs-hint')
                      sh(process.execPath, [VMIFS, 'hint', 'import', hintFile, '--data-dir', dataC])
                    const f = path.join(mntC, 'images', img)
                    let seconds: number
                    if (replay) {
                      seconds = (await replayTrace(f, speed, spawnIn)).seconds
                    } else {
                      log(`${tool}: boot ${img}`)
                      const booting = boot(img, `file=${f},format=raw`, nsC)
                      if (disturbed && last) {
                        await sleep(DISTURB_AFTER_MS)
                        const old = c
                        const gone = new Promise(resolve =>
                          old.exitCode === null && old.signalCode === null ? old.once('exit', resolve) : resolve(0)
                        )
                        if (st.kind === 'crash') {
                          log(`${tool}: kill -9 of C's agent`)
                          old.kill('SIGKILL')
                          await gone
                          log(`${tool}: C's agent started again`)
                          c = await startAgent(nsC, 'c', dataC, mntC, cArgs, false)
                        } else {
                          log(`${tool}: vmifs agent --takeover on C`)
                          c = await startAgent(nsC, 'c', dataC, mntC, [...cArgs, '--takeover'], false)
                          await gone
                        }
                        log(`${tool}: C's new agent serves the mount`)
                        const what = st.kind === 'crash' ? 'killed and restarted' : 'taken over'
                        row.note = `${what} at ${DISTURB_AFTER_MS / 1000} s`
                      }
                      const r = await booting
                      if (!r.ok) throw new Error(r.error)
                      if (r.ioErrors.length > 0) throw new Error(`I/O errors in the guest: ${r.ioErrors.join(' / ')}`)
                      seconds = r.seconds
                    }
                    await sleep(2500) // the session ends (file closed + sessionIdleMs): prefetch waste is counted then
                    if (last)
                      Object.assign(row, {
                        ok: true,
                        seconds,
                        rxBytes: rxBytes(nsC) - rx0,
                        ...(fromOrigin ? { requests: nginxRequests() - q0 } : {}),
                        // (a successor's counters start at zero: no figures across a takeover or a crash)
                        vmifs: disturbed ? undefined : vmifsDelta(s0, readStats(mntC), img)
                      })
                  }
                } finally {
                  await stopChild(c)
                  detach(mntC)
                }
              }
            } catch (e) {
              row.error = e instanceof Error ? e.message : String(e)
              log(`${tool} in ${st.name} failed: ${row.error}`)
            }
            await ensureProxies() // notes a proxy that died during this row
            if (proxyDeaths.length > 0) {
              row.ok = false
              const earlier = row.error === undefined ? '' : ` (${row.error})`
              row.error = `${proxyDeaths.join('; ')} during this row; not counted${earlier}`
              if (attempt < 2) {
                log(`${st.name} ${tool}: ${row.error}; once more`)
                continue
              }
            }
            rows.push(row)
            const v = row.vmifs
            const vmifsPart = v
              ? ` fetched ${fmtMiB(v.fetchBytes)} MiB, read ${fmtMiB(v.readBytes)} MiB,` +
                ` prefetch ${v.issued}/${v.used}/${v.wasted}, wasted ${fmtMiB(v.wastedBytes)} MiB`
              : ''
            log(`${st.name} ${tool}: ${row.ok ? fmtS(row.seconds) : `FAILED ${row.error ?? ''}`}${vmifsPart}`)
            fs.writeFileSync(path.join('/var/tmp', `vmifs-boot-bench-rows.json`), JSON.stringify(rows, null, 1))
            break
          }
        }
      await stopA()
      for (const p of proxies) await stopChild(p)
    }
    printReport(rows, settings, replay, speed, notes)
  } finally {
    for (const c of [...children]) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
    await sleep(300)
    for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
      const mp = line.split(' ')[4]
      if (mp !== undefined && mp.startsWith(dir + '/')) detach(mp)
    }
    if (net) await net.destroy()
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

async function replayTrace(
  file: string,
  speed: number,
  spawnIn: (ns: string | undefined, argv: string[]) => ChildProcess
): Promise<{ seconds: number; bytes: number }> {
  const c = spawnIn(undefined, [process.execPath, TRACE_READER, 'replay', file, FIXTURE, String(speed)])
  let out = ''
  c.stdout!.on('data', (d: Buffer) => {
    out += d.toString()
  })
  const code = await new Promise<number | null>(resolve => c.once('exit', resolve))
  if (code !== 0) throw new Error(`replay reader exited ${String(code)}`)
  return JSON.parse(out) as { seconds: number; bytes: number }
}

/** Records the fixture: qemu boots boot-a.img over NBD from nbdkit's file plugin with the log filter. */
async function recordTrace(
  dir: string,
  k: { kernel: string; initrd: string },
  img: string,
  spawnIn: (ns: string | undefined, argv: string[]) => ChildProcess,
  log: (m: string) => void
): Promise<void> {
  const sock = path.join(dir, 'rec.sock')
  const logFile = path.join(dir, 'rec.log')
  const nbd = spawnIn(undefined, [
    'nbdkit',
    '--foreground',
    '--readonly',
    '--unix',
    sock,
    '--filter=log',
    'file',
    img,
    `logfile=${logFile}`
  ])
  try {
    await waitFor('nbdkit', () => fs.existsSync(sock), 20_000, nbd)
    log('recording a boot read trace (nbdkit file plugin + log filter)')
    const r = await bootVm({ ...k, drive: `file=nbd+unix:///?socket=${sock},format=raw`, timeoutMs: BOOT_TIMEOUT_MS })
    if (!r.ok) throw new Error(`recording boot failed: ${r.error ?? ''}\n${r.tail}`)
    await stopChild(nbd)
    const raw = parseNbdkitLog(fs.readFileSync(logFile, 'utf8'))
    const reads = mergeReads(raw)
    const trace: BootTrace = {
      image: 'boot-a.img (bench/lib/bootable-family.sh)',
      imageSize: fs.statSync(img).size,
      recorded: new Date().toISOString(),
      how:
        'qemu TCG direct kernel boot to multi-user.target over NBD from nbdkit file + log filter; ' +
        'reads contiguous with the one before and within 5 ms merged',
      bootSeconds: Math.round(r.seconds * 10) / 10,
      rawReads: raw.length,
      bytes: raw.reduce((s, x) => s + x.length, 0),
      distinctBytes: distinct(raw),
      reads
    }
    fs.mkdirSync(path.dirname(FIXTURE), { recursive: true })
    fs.writeFileSync(FIXTURE, JSON.stringify(trace).replace(/\],\[/g, '],\n['))
    log(
      `trace: ${raw.length} reads (${reads.length} merged), ${(trace.distinctBytes / MiB).toFixed(1)} MiB distinct, ` +
        `boot ${r.seconds.toFixed(1)} s -> ${FIXTURE}`
    )
  } finally {
    await stopChild(nbd)
  }
}

function printReport(rows: Row[], settings: Setting[], replay: boolean, speed: number, notes: string[]): void {
  const out: string[] = []
  const p = (s = ''): void => {
    out.push(s)
  }
  if (replay) {
    const tr = JSON.parse(fs.readFileSync(FIXTURE, 'utf8')) as BootTrace
    p(
      `\n## Replay of a recorded boot read trace (${tr.reads.length} reads, ` +
        `${(tr.distinctBytes / MiB).toFixed(1)} MiB distinct; recorded ${tr.recorded.slice(0, 10)}, ` +
        `boot ${tr.bootSeconds} s)\n`
    )
    const thinkTime =
      speed > 0 ? `with the guest's think time between reads divided by ${speed}` : "without the guest's think time"
    p(
      'The recorded offsets are applied to the locally built boot-a.img, which may differ slightly from the image ' +
        'the trace was recorded on. Reads are replayed one at a time in recorded order, ' +
        `${thinkTime}, by a child process.`
    )
  } else {
    p('\n## Real VM boot to multi-user.target (Debian 12, qemu TCG, direct kernel boot, 2 GiB ext4 image)\n')
  }
  for (const st of settings) {
    const rs = medianRows(rows.filter(r => r.setting === st.name))
    if (rs.length === 0) continue
    const comp = rs.filter(r => (COMPETITORS as readonly string[]).includes(r.tool) && r.ok)
    const best = comp.length === 0 ? undefined : comp.reduce((a, b) => (a.seconds <= b.seconds ? a : b))
    const local = rs.find(r => r.tool === 'local')
    p(`\n### ${st.name}: ${st.label}\n`)
    const header = [
      'tool',
      `${replay ? 'replay' : 'boot'} time`,
      'best lazy reader ÷ this',
      'this ÷ local',
      'received by C (MiB)',
      'HTTP requests',
      'vmifs fetched (MiB)',
      'vmifs read (MiB)',
      'fetched ÷ read',
      'prefetch issued / used (late) / wasted, chunks',
      'prefetched (MiB)',
      'wasted ÷ fetched'
    ]
    p(`| ${header.join(' | ')} |`)
    p('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
    for (const r of rs) {
      const v = r.vmifs
      const speedup = best && r.ok ? `${(best.seconds / r.seconds).toFixed(2)}×` : '—'
      const cells = [
        `${TOOL_LABEL[r.tool] ?? r.tool}${r === best ? ' (best lazy reader)' : ''}${r.computed ? ' (computed)' : ''}`,
        r.ok ? fmtS(r.seconds) : `failed: ${r.error ?? ''}`,
        speedup,
        local && local.ok && r.ok && r !== local ? `${(r.seconds / local.seconds).toFixed(2)}×` : '—',
        fmtMiB(r.rxBytes),
        r.requests === undefined ? '—' : String(r.requests),
        fmtMiB(v?.fetchBytes),
        fmtMiB(v?.readBytes),
        v && v.readBytes > 0 ? (v.fetchBytes / v.readBytes).toFixed(2) : '—',
        v ? `${v.issued} / ${v.used} (${v.late}) / ${v.wasted}` : '—',
        fmtMiB(v?.prefetchBytes),
        v && v.fetchBytes > 0 ? `${((100 * v.wastedBytes) / v.fetchBytes).toFixed(1)} %` : '—'
      ]
      p(`| ${cells.join(' | ')} |`)
    }
    const notesHere = rs.filter(r => r.note).map(r => `${r.tool}: ${r.note!}`)
    if (notesHere.length > 0) p(`\n${notesHere.join('; ')}.`)
  }
  p(
    '\n"received by C": bytes into the cold host\'s network interface during the reported boot ' +
      '(all traffic: HTTP, NBD-over-HTTP, the vmifs table). ' +
      '"HTTP requests": requests nginx on A answered during the boot (for vmifs from the origin store: ' +
      'its range requests and its polls of store.json and images.json). ' +
      '"vmifs read": bytes the agent returned to FUSE reads (the kernel page cache answers re-reads). ' +
      'Prefetch waste (bytes of prefetched chunks the session never read, over all bytes fetched) ' +
      'is counted when the read session ends.'
  )
  for (const n of notes) p(n)
  console.log(out.join('\n'))
}

/**
 * One row per tool: with --repeat, the run at the median of the successful ones (its figures
 * shown), its time the median, every run's time in the note; a tool with no successful run shows
 * its first failure.
 */
function medianRows(rows: Row[]): Row[] {
  const tools = [...new Set(rows.map(r => r.tool))]
  return tools.map(tool => {
    const all = rows.filter(r => r.tool === tool)
    const ok = all.filter(r => r.ok).sort((a, b) => a.seconds - b.seconds)
    if (all.length === 1 || ok.length === 0) return all[0]!
    const mid = ok[Math.floor((ok.length - 1) / 2)]!
    const seconds = ok.length % 2 === 1 ? mid.seconds : (mid.seconds + ok[ok.length / 2]!.seconds) / 2
    const runs = all.map(r => (r.ok ? fmtS(r.seconds) : 'failed')).join(', ')
    const failed = all.length - ok.length
    return {
      ...mid,
      seconds,
      note: [mid.note, `median of ${ok.length} runs (${runs})${failed > 0 ? `, ${failed} failed` : ''}`]
        .filter(Boolean)
        .join('; ')
    }
  })
}
