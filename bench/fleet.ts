// `npm run bench -- fleet [--hosts 10,100,300,1000] [--backends redis,peers] [--peers-max 300]
//   [--images 100] [--uses 5] [--steady-s 60] [--agents 3]`:
// the metadata table at fleet scale on this machine, on both backends. Every simulated host is what
// an agent runs for its table, without FUSE or chunks: its own SQLite copy (FactStore, signing with
// its own key admitted by the fleet admin, checking every fact it takes), a status fact every
// heartbeat (5 s) as an agent's announcer writes it, and its backend's client, all in this process:
// - redis: RedisMetadata against one real redis-server on loopback (its own two connections,
//   heartbeats, lookups, subscriptions);
// - peers: FactSync pulling every second from 3 peers (a seeded random graph), each pull answered
//   by that peer's FactStore.since() and carried as the JSON bodies the HTTP route sends, parsed
//   again on arrival (HTTP headers not counted).
// Each host publishes its host record and inventory, holds `--uses` of the `--images` images
// (published by the first tenth of the hosts) and uses them. On the Redis backend `--agents` real
// agents (with mounts) join the same fleet. Measured at each fleet size:
// - a publication: from the publisher's write until every host has it (p50/p99 over hosts);
// - a holdings change: from the holder's write until every host that follows that holder for the
//   image (peers: every host that uses it) has it;
// - at steady state (`--steady-s`): metadata bytes in and out per host (Redis: the engine's own
//   net counters over the hosts), CPU per host, memory (the process's RSS over the hosts), SQLite
//   size per host, and the event loop's delay (when it is long, the process could not keep up and
//   the latencies are upper bounds);
// - a boot storm: every host starts using the same new image and announces growing holdings of it
//   (ten steps, a third of a second apart): bytes per host per second meanwhile;
// - a dead host: one holder stops (no heartbeat, no answers); the time until every host takes it
//   for dead (and so no longer chooses it);
// - real agents: an image imported on one of them, until it is on every other agent's mount and in
//   every simulated host's table; each agent's RSS and SQLite size.
// The peers backend is run up to `--peers-max` hosts: beyond it one process cannot simulate it.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { spawnSync } from 'node:child_process'
import { monitorEventLoopDelay, performance } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import pino from 'pino'
import { openDb, type Db } from '../src/index/db.js'
import { FactStore, type Cursors, type FactPage, type Trust } from '../src/index/facts.js'
import { FactSync } from '../src/index/sync.js'
import type { PeerClient } from '../src/peer/client.js'
import { HEARTBEAT_MS, StatusLiveness } from '../src/metadata/hosts.js'
import { SigningKey } from '../src/trust/keys.js'
import { issueCert } from '../src/trust/certs.js'
import { RedisMetadata } from '../src/metadata/redis.js'
import { FLEET_ADMIN, TRUST, admitHost } from '../test/integration/admit.js'
import { AgentProcess, makeImage, sleep } from '../test/integration/harness.js'
import { startRedis } from '../test/helpers/redis.js'
import { waitFor } from './lib/boot-tools.js'
import { markdownTable, num, takeOption } from './lib/report.js'

type Backend = 'redis' | 'peers'

const here = path.dirname(fileURLToPath(import.meta.url))
const VMIFS = path.resolve(here, '../../bin/vmifs.js')
const SYNC_MS = 1000
const PEERS_PER_HOST = 3

interface SimHost {
  id: string
  db: Db
  facts: FactStore
  /** the images (by index) this host holds and uses */
  uses: number[]
  /** when each watched fact first arrived here (performance.now()), by "<origin> <key> <seq>" */
  seen: Map<string, number>
  beat?: NodeJS.Timeout
  meta?: RedisMetadata
  sync?: FactSync
  liveness?: StatusLiveness
  /** a stopped host answers no pulls */
  down?: boolean
}

function pct(xs: number[], p: number): number {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!
}

function digestOf(k: number): string {
  return (k.toString(16).padStart(8, '0') + 'ab'.repeat(32)).slice(0, 64)
}

/** A small seeded generator (mulberry32): the same peer graph every run. */
function seeded(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32
  }
}

/** Draws indexes by weight (a seeded generator): a sampler of `count` distinct ones. */
function zipf(weights: number[], rnd: () => number): () => number {
  const total = weights.reduce((a, b) => a + b, 0)
  return () => {
    let x = rnd() * total
    for (const [k, w] of weights.entries()) if ((x -= w) < 0) return k
    return weights.length - 1
  }
}

function pickUses(draw: () => number, count: number): number[] {
  const out = new Set<number>()
  for (let i = 0; out.size < count && i < 100 * count; i++) out.add(draw())
  return [...out]
}

/** CPU seconds a process has used (user + system), from /proc. */
function cpuSecondsOf(pid: number): number {
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
  const parts = f.slice(f.lastIndexOf(')') + 2).split(' ')
  return (Number(parts[11]) + Number(parts[12])) / 100
}

function rssMiBOf(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m ? Number(m[1]) / 1024 : NaN
}

interface Result {
  backend: Backend
  hosts: number
  startS: number
  pubP50: number
  pubP99: number
  holdP50: number
  holdP99: number
  followers: number
  sqliteKiB: number
  steadyBps: number
  stormBps: number
  cpuMsPerHostPerMin: number
  loadShare: number
  lagP99Ms: number
  engineCpuShare: number
  rssMiBPerHost: number
  deadS: number
  agents?: { n: number; importToMountsMs: number[]; importToHostsMs: number; rssMiB: number[]; sqliteKiB: number[] }
}

async function runScale(
  backend: Backend,
  n: number,
  o: { images: number; uses: number; steadyS: number; agents: number },
  base: string
): Promise<Result> {
  const dir = fs.mkdtempSync(path.join(base, `${backend}-${n}-`))
  const port = 20_000 + Math.floor(Math.random() * 12_000)
  // thousands of clients, each host with its own two connections
  const redis =
    backend === 'redis'
      ? await startRedis({ teardown: () => undefined }, path.join(dir, 'redis'), port, {
          args: ['--maxclients', '10000', '--protected-mode', 'no']
        })
      : undefined
  const url = `redis://127.0.0.1:${port}`
  const engine = redis?.client()
  const log = pino({ level: 'error' })
  const trust: Trust = { admins: [FLEET_ADMIN.publicKey], hosts: {} }
  const hosts: SimHost[] = []
  const byId = new Map<string, SimHost>()
  const agents: AgentProcess[] = []
  const publishers = Math.max(1, Math.ceil(n / 10))
  /** peers backend: the JSON bodies carried, both ways */
  let bodyBytes = 0
  const traffic = async (): Promise<number> => {
    if (!engine) return 2 * bodyBytes // each body leaves one host and enters another
    const info = await engine.info('stats')
    const get = (k: string): number => Number(new RegExp(`${k}:(\\d+)`).exec(info)?.[1] ?? NaN)
    return get('total_net_input_bytes') + get('total_net_output_bytes')
  }
  const statusOf = (s: number): { cacheCapacityBytes: number; cacheSizeBytes: number; load: number; at: number } => ({
    cacheCapacityBytes: 2 ** 40,
    cacheSizeBytes: 2 ** 38 + s * 2 ** 20,
    load: 0.2,
    at: Date.now()
  })
  // images are used as fleets use them: a few by most hosts, most by a few (Zipf weights 1/(k+1))
  const weights = Array.from({ length: o.images }, (_, k) => 1 / (k + 1))
  const pick = zipf(weights, seeded(7 * n + 1))
  const t0 = performance.now()
  try {
    for (let i = 0; i < n; i++) {
      const id = `h${String(i).padStart(4, '0')}`
      const key = SigningKey.generate()
      const cert = issueCert(FLEET_ADMIN, id, key.publicKey)
      const db = openDb(path.join(dir, `${id}.sqlite`))
      const facts = new FactStore(db, id, { signer: key, trust, cert: () => cert, owner: true })
      const seen = new Map<string, number>()
      facts.onChange(changed => {
        const now = performance.now()
        for (const f of changed) {
          const k = `${f.origin} ${f.key} ${f.seq}`
          if (!seen.has(k)) seen.set(k, now)
        }
      })
      // a closed port: an agent that asks a simulated host for a manifest is refused at once
      facts.publish('host', { endpoint: `http://127.0.0.1:9/${id}`, price: 0 })
      facts.publishAs('status', '', statusOf(0))
      const uses = pickUses(pick, o.uses)
      const inv: Record<string, number> = {}
      for (const k of uses) {
        facts.publishAs('hold', digestOf(k), { ranges: [[0, 4096]] })
        inv[digestOf(k).slice(0, 16)] = 10
      }
      facts.publishAs('inv', '', { images: inv })
      if (i < publishers)
        for (let k = i; k < o.images; k += publishers)
          facts.publishAs('image', `img${k}`, { digest: digestOf(k), size: 2 ** 31, publishedAt: Date.now() })
      const h: SimHost = { id, db, facts, uses, seen }
      hosts.push(h)
      byId.set(id, h)
      if (backend === 'redis') {
        h.meta = new RedisMetadata({ url, facts, log, cert: () => cert, heartbeatMs: HEARTBEAT_MS })
        h.meta.start()
        await h.meta.ready(120_000)
        for (const k of uses) void h.meta.use(digestOf(k))
      }
    }
    const users = new Map<number, number>()
    for (const h of hosts) for (const k of h.uses) users.set(k, (users.get(k) ?? 0) + 1)
    if (backend === 'peers') {
      const rnd = seeded(n)
      for (const [i, h] of hosts.entries()) {
        const mine = new Set<number>([(i + 1) % n])
        while (mine.size < Math.min(PEERS_PER_HOST, n - 1)) {
          const j = Math.floor(rnd() * n)
          if (j !== i) mine.add(j)
        }
        const clients = [...mine].map(j => {
          const peer = hosts[j]!
          return {
            endpoint: peer.id,
            facts: (cursors: Cursors): Promise<FactPage> => {
              if (peer.down) return Promise.reject(new Error('connection refused'))
              const body = JSON.stringify({ cursors })
              const out = JSON.stringify(peer.facts.since((JSON.parse(body) as { cursors: Cursors }).cursors))
              bodyBytes += body.length + out.length
              return Promise.resolve(JSON.parse(out) as FactPage)
            }
          } as unknown as PeerClient
        })
        h.sync = new FactSync(h.facts, () => clients, log, SYNC_MS)
        h.liveness = new StatusLiveness(h.facts, HEARTBEAT_MS)
      }
      for (const h of hosts) h.sync!.start()
      await waitFor(
        'every host to have every host record',
        () => hosts.every(h => h.facts.allAs('host').length === n),
        30 * 60_000
      )
    }
    // every host's status every heartbeat, as an agent writes it, spread over the interval
    for (const [i, h] of hosts.entries()) {
      let s = 0
      setTimeout(
        () => {
          h.beat = setInterval(() => h.facts.publishAs('status', '', statusOf(++s)), HEARTBEAT_MS)
        },
        Math.floor((i / n) * HEARTBEAT_MS)
      )
    }

    // real agents (with mounts) in the same fleet, on the Redis backend
    if (backend === 'redis')
      for (let a = 0; a < o.agents; a++) {
        const id = `agent${a}`
        const data = path.join(dir, id, 'data')
        const mnt = path.join(dir, id, 'mnt')
        fs.mkdirSync(mnt, { recursive: true })
        admitHost(data, id)
        const cfg = path.join(dir, id, 'config.json')
        fs.writeFileSync(cfg, JSON.stringify({ token: 'fleet-bench', trust: TRUST, metadata: url }))
        const listen = `127.0.0.1:${port + 1 + a}`
        const agent = new AgentProcess(mnt, data, ['--host-id', id, '--config', cfg, '--listen', listen], {
          VMIFS_LOG_LEVEL: 'error'
        })
        agents.push(agent)
        await agent.ready(60_000)
      }
    await sleep(2000)
    const startS = (performance.now() - t0) / 1000

    // a publication, five times
    const lag = monitorEventLoopDelay({ resolution: 10 })
    lag.enable()
    const pub: number[] = []
    for (let r = 0; r < 5; r++) {
      const p = hosts[r % publishers]!
      const f = p.facts.publishAs('image', `new${r}`, {
        digest: digestOf(o.images + r),
        size: 2 ** 31,
        publishedAt: 1
      })!
      const at = performance.now()
      const k = `${p.id} ${f.key} ${f.seq}`
      await waitFor('a publication on every host', () => hosts.every(h => h === p || h.seen.has(k)), 120_000)
      for (const h of hosts) if (h !== p) pub.push(h.seen.get(k)! - at)
    }

    // a holdings change of a followed holder, five times: of the holder's image with most followers
    const followersOf = (holder: SimHost, k: number): SimHost[] =>
      hosts.filter(
        h => h !== holder && (h.meta ? (h.meta.followed()[digestOf(k)] ?? []).includes(holder.id) : h.uses.includes(k))
      )
    // the five (holder, image) pairs with most followers: the widest fan-outs
    const fans = new Map<string, number>()
    for (const h of hosts)
      if (h.meta)
        for (const [d, hs] of Object.entries(h.meta.followed()))
          for (const x of hs) fans.set(`${x} ${d}`, (fans.get(`${x} ${d}`) ?? 0) + 1)
      else for (const k of h.uses) fans.set(`${h.id} ${digestOf(k)}`, users.get(k) ?? 0)
    const widest = [...fans]
      .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
      .slice(0, 5)
      .map(([pair]) => pair.split(' ') as [string, string])
    const hold: number[] = []
    let followers = 0
    for (const [r, [holderId, digest]] of widest.entries()) {
      const holder = byId.get(holderId)!
      const best = holder.uses.find(k => digestOf(k) === digest)!
      const who = followersOf(holder, best)
      followers += who.length
      const f = holder.facts.publishAs('hold', digestOf(best), { ranges: [[0, 4096 - r - 1]] })!
      const at = performance.now()
      const key = `${holder.id} ${f.key} ${f.seq}`
      await waitFor('a holdings change on its followers', () => who.every(h => h.seen.has(key)), 120_000)
      for (const h of who) hold.push(h.seen.get(key)! - at)
    }

    // steady state
    const b0 = await traffic()
    const c0 = process.cpuUsage()
    const e0 = redis ? cpuSecondsOf(redis.child.pid!) : 0
    const w0 = performance.now()
    await sleep(o.steadyS * 1000)
    const wallMs = performance.now() - w0
    const steadyBps = ((await traffic()) - b0) / n / (wallMs / 1000)
    const cpu = process.cpuUsage(c0)
    const cpuMs = (cpu.user + cpu.system) / 1000
    const engineCpuShare = redis ? (cpuSecondsOf(redis.child.pid!) - e0) / (wallMs / 1000) : 0
    const rssMiBPerHost = process.memoryUsage().rss / 2 ** 20 / n
    let sqlite = 0
    for (const h of hosts) {
      const pages = h.db.pragma('page_count', { simple: true }) as number
      const size = h.db.pragma('page_size', { simple: true }) as number
      sqlite += pages * size
    }

    // real agents: an image imported on the first, on the others' mounts and in every host's table
    let agentResult: Result['agents']
    if (agents.length > 0) {
      const img = path.join(dir, 'import.raw')
      makeImage(img, 6)
      const r = spawnSync(process.execPath, [
        VMIFS,
        'import',
        img,
        '--name',
        'imported',
        '--data-dir',
        agents[0]!.dataDir
      ])
      if (r.status !== 0) throw new Error(`vmifs import failed: ${r.stderr.toString()}`)
      const at = performance.now()
      const onMounts = await Promise.all(
        agents.slice(1).map(async a => {
          const file = path.join(a.mount, 'images', 'imported')
          for (let i = 0; i < 6000; i++) {
            if (
              await fs.promises.stat(file).then(
                () => true,
                () => false
              )
            )
              return performance.now() - at
            await sleep(20)
          }
          throw new Error(`the import did not reach ${a.mount}`)
        })
      )
      await waitFor(
        'the import in every host table',
        () => hosts.every(h => h.facts.get('agent0', 'image/imported') !== undefined),
        120_000
      )
      agentResult = {
        n: agents.length,
        importToMountsMs: onMounts,
        importToHostsMs: performance.now() - at,
        rssMiB: agents.map(a => rssMiBOf(a.child.pid!)),
        sqliteKiB: agents.map(
          a =>
            fs
              .readdirSync(a.dataDir)
              .filter(f => /\.(db|sqlite)(-wal)?$/.test(f))
              .reduce((s, f) => s + fs.statSync(path.join(a.dataDir, f)).size, 0) / 1024
        )
      }
    }

    // a boot storm: everyone uses one new image and announces growing holdings of it
    const storm = digestOf(o.images + 99)
    for (const h of hosts) h.facts.publishAs('hold', storm, { ranges: [[0, 1]] })
    const s0 = await traffic()
    const ws = performance.now()
    await Promise.all(hosts.flatMap(h => (h.meta ? [h.meta.use(storm)] : [])))
    for (let step = 1; step <= 10; step++) {
      for (const h of hosts) h.facts.publishAs('hold', storm, { ranges: [[0, step * 400]] })
      await sleep(333)
    }
    await sleep(1000)
    const stormBps = ((await traffic()) - s0) / n / ((performance.now() - ws) / 1000)

    // a dead host: the last host stops (no heartbeats, no answers)
    const victim = hosts[n - 1]!
    clearInterval(victim.beat)
    victim.down = true
    await victim.meta?.stop()
    await victim.sync?.stop()
    const wd = performance.now()
    const others = hosts.filter(h => h !== victim)
    const deadOn = (h: SimHost): boolean => (h.meta ? h.meta.deadHosts() : h.liveness!.dead()).has(victim.id)
    await waitFor('every host to take it for dead', () => others.every(deadOn), 180_000)
    const deadS = (performance.now() - wd) / 1000
    lag.disable()

    return {
      backend,
      hosts: n,
      startS,
      pubP50: pct(pub, 50),
      pubP99: pct(pub, 99),
      holdP50: pct(hold, 50),
      holdP99: pct(hold, 99),
      followers: followers / Math.max(1, widest.length),
      sqliteKiB: sqlite / n / 1024,
      steadyBps,
      stormBps,
      cpuMsPerHostPerMin: cpuMs / n / (wallMs / 60_000),
      loadShare: cpuMs / wallMs,
      lagP99Ms: lag.percentile(99) / 1e6,
      engineCpuShare,
      rssMiBPerHost,
      deadS,
      ...(agentResult ? { agents: agentResult } : {})
    }
  } finally {
    for (const a of agents) await a.stop().catch(() => undefined)
    for (const h of hosts) {
      clearInterval(h.beat)
      await h.meta?.stop().catch(() => undefined)
      await h.sync?.stop().catch(() => undefined)
      h.db.close()
    }
    await redis?.stop()
    for (const a of agents) spawnSync('umount', ['-l', a.mount])
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

export async function main(args: string[]): Promise<void> {
  const scales = (takeOption(args, '--hosts') ?? '10,100,300,1000').split(',').map(Number)
  const backends = (takeOption(args, '--backends') ?? 'redis,peers').split(',') as Backend[]
  for (const b of backends) if (b !== 'redis' && b !== 'peers') throw new Error(`unknown backend ${String(b)}`)
  const peersMax = Number(takeOption(args, '--peers-max') ?? 300)
  const o = {
    images: Number(takeOption(args, '--images') ?? 100),
    uses: Number(takeOption(args, '--uses') ?? 5),
    steadyS: Number(takeOption(args, '--steady-s') ?? 60),
    agents: Number(takeOption(args, '--agents') ?? 3)
  }
  const base = '/var/tmp/vmifs-bench-fleet'
  fs.mkdirSync(base, { recursive: true })
  const rows: string[][] = []
  const agentLines: string[] = []
  for (const n of scales)
    for (const backend of backends) {
      if (backend === 'peers' && n > peersMax) continue
      process.stderr.write(`fleet: ${backend}, ${n} hosts × ${o.images} images…\n`)
      const r = await runScale(backend, n, o, base)
      process.stderr.write(`fleet: ${JSON.stringify(r)}\n`)
      rows.push([
        backend,
        num(r.hosts),
        `${num(r.pubP50)} / ${num(r.pubP99)} ms`,
        `${num(r.holdP50)} / ${num(r.holdP99)} ms (${num(r.followers, 1)})`,
        num(r.sqliteKiB),
        num(r.steadyBps),
        num(r.stormBps),
        num(r.cpuMsPerHostPerMin, 1),
        num(r.rssMiBPerHost, 2),
        `${num(100 * r.loadShare)} % / ${num(r.lagP99Ms)} ms`,
        backend === 'redis' ? `${num(100 * r.engineCpuShare, 1)} %` : '—',
        `${num(r.deadS, 1)} s`,
        `${num(r.startS)} s`
      ])
      if (r.agents)
        agentLines.push(
          `- ${num(n)} hosts: an import on one agent was ` +
            (r.agents.n > 1
              ? `on the other ${r.agents.n - 1} agents' mounts in ` +
                `${r.agents.importToMountsMs.map(x => num(x)).join(', ')} ms and `
              : '') +
            `in every simulated host's table in ` +
            `${num(r.agents.importToHostsMs)} ms; agents' RSS ${r.agents.rssMiB.map(x => num(x)).join(', ')} MiB, ` +
            `SQLite ${r.agents.sqliteKiB.map(x => num(x)).join(', ')} KiB`
        )
    }
  process.stdout.write(
    `\n## The metadata table at fleet scale: ${o.images} images, each host holding and using ${o.uses} ` +
      `(${os.cpus().length} cores, ${o.steadyS} s of steady state)\n\n` +
      markdownTable(
        [
          'backend',
          'hosts',
          'publication p50 / p99',
          'holdings change p50 / p99 (followers)',
          'SQLite KiB / host',
          'steady B/s / host',
          'boot storm B/s / host',
          'CPU ms / host / min',
          'RSS MiB / host',
          'process CPU / loop delay p99',
          'redis-server CPU',
          'dead host seen by all',
          'fleet start'
        ],
        rows,
        [0, 1]
      ) +
      '\n' +
      (agentLines.length > 0 ? `\nReal agents (with mounts) in the Redis fleet:\n${agentLines.join('\n')}\n` : '')
  )
}
