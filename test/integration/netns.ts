// A tiny "fleet" of hosts in network namespaces, for multi-agent tests and benchmarks.
//
// Topology: one namespace per host (`vmifs-<prefix>-<host>`) holding `eth0` with 10.213.N.x/24,
// and one switch namespace (`vmifs-<prefix>-switch`) holding a bridge `br0` with the other end of
// every host's veth pair. Nothing is created in (or routed through) the root namespace, so the
// machine's own networking is never touched. Needs root and iproute2.
//
// The bridge's ifalias records the creating pid: a later createFleetNet() removes the leftovers
// of fleets whose creator died (a crashed or killed test worker) but refuses to clobber a fleet
// that is still in use by a live process.
import {
  spawn as cpSpawn,
  spawnSync,
  type ChildProcess,
  type SpawnOptions,
  type SpawnSyncOptions,
  type SpawnSyncReturns
} from 'node:child_process'
import fs from 'node:fs'
import type { ExecutionContext } from 'ava'

export interface FleetNetOptions {
  /** Host names: lowercase letters and digits, at most 40 hosts. */
  hosts: string[]
  /** Namespace name prefix ([a-z0-9], max 20 chars); defaults to one derived from the pid. */
  prefix?: string
}

export interface ShapeOptions {
  rateMbit: number
  /** Bucket size; default 10 ms worth of rate, at least 32 KiB (TSO super-packets must fit). */
  burstKb?: number
  /** Max time a packet may wait in the tbf queue (bounds the queue); default 50 ms. */
  latencyMs?: number
}

export interface FleetNet {
  readonly prefix: string
  readonly subnet: string
  readonly hosts: readonly string[]
  /** Namespace name of a host (for `ip netns exec` / `nsenter --net=/run/netns/<ns>`). */
  ns: (host: string) => string
  addr: (host: string) => string
  exec: (
    host: string,
    cmd: string,
    args?: string[],
    opts?: Omit<SpawnSyncOptions, 'encoding'>
  ) => SpawnSyncReturns<string>
  spawn: (host: string, cmd: string, args?: string[], opts?: SpawnOptions) => ChildProcess
  /** tbf on the host's egress (traffic leaving the host). */
  shape: (host: string, opts: ShapeOptions) => void
  /** tbf on the bridge-side peer's egress (traffic towards the host). */
  shapeIngress: (host: string, opts: ShapeOptions) => void
  /** Both directions of the host's link at the same rate. */
  shapeLink: (host: string, rateMbit: number) => void
  unshape: (host: string) => void
  /** Kills what it spawned (SIGTERM, SIGKILL after graceMs) and deletes the namespaces. Idempotent. */
  destroy: (graceMs?: number) => Promise<void>
}

const NS_PREFIX = 'vmifs-'
const SWITCH = 'switch'
const OWNER_TAG = 'vmifs-fleetnet owner='
const NAME_RE = /^[a-z0-9]+$/

function sh(cmd: string, args: string[], allowFail = false): SpawnSyncReturns<string> {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 30_000 })
  if (!allowFail && r.status !== 0)
    throw new Error(
      `${cmd} ${args.join(' ')} failed (${String(r.status ?? r.signal)}): ${r.stderr}${r.error?.message ?? ''}`
    )
  return r
}

const ip = (args: string[], allowFail = false): SpawnSyncReturns<string> => sh('ip', args, allowFail)

function listNetns(): string[] {
  // `ip netns list` prints "name (id: N)" for namespaces with an id
  return ip(['netns', 'list'])
    .stdout.split('\n')
    .map(l => l.trim().split(/\s+/)[0])
    .filter((n): n is string => n !== undefined && n !== '')
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/** Pid recorded on a fleet's bridge, or undefined if the switch namespace is half-built. */
function ownerOf(switchNs: string): number | undefined {
  const r = ip(['-n', switchNs, '-o', 'link', 'show', 'br0'], true)
  const m = /alias vmifs-fleetnet owner=(\d+)/.exec(r.stdout)
  return m === null ? undefined : Number(m[1])
}

function nsBirthMs(ns: string): number {
  try {
    return fs.statSync(`/run/netns/${ns}`).mtimeMs
  } catch {
    return 0
  }
}

/** SIGKILLs every process still living in a namespace (grandchildren included). */
function killNsPids(ns: string): void {
  const r = ip(['netns', 'pids', ns], true)
  for (const p of r.stdout.split('\n')) {
    const pid = Number(p.trim())
    if (pid > 0 && pid !== process.pid)
      try {
        process.kill(pid, 'SIGKILL')
      } catch {
        /* already gone */
      }
  }
}

function deleteFleet(prefix: string, names = listNetns()): void {
  const mine = names.filter(
    n => n.startsWith(`${NS_PREFIX}${prefix}-`) && NAME_RE.test(n.slice(NS_PREFIX.length + prefix.length + 1))
  )
  // hosts first, the switch (which carries the owner tag) last: a crash half-way stays sweepable
  const sw = `${NS_PREFIX}${prefix}-${SWITCH}`
  for (const ns of [...mine.filter(n => n !== sw), ...mine.filter(n => n === sw)]) {
    killNsPids(ns)
    ip(['netns', 'del', ns], true)
  }
}

/** Removes fleets (any prefix) whose creating process is gone; returns the prefixes removed. */
export function sweepStaleFleets(): string[] {
  const names = listNetns()
  const removed: string[] = []
  for (const n of names) {
    const m = /^vmifs-([a-z0-9]+)-switch$/.exec(n)
    if (m === null) continue
    const owner = ownerOf(n)
    if (owner !== undefined && pidAlive(owner)) continue
    // untagged: either a creator that died before tagging, or one that is tagging right now
    if (owner === undefined && Date.now() - nsBirthMs(n) < 30_000) continue
    deleteFleet(m[1]!, names)
    removed.push(m[1]!)
  }
  return removed
}

/** True when we can create network namespaces here (root + iproute2). */
export function netnsAvailable(): boolean {
  if (process.getuid?.() !== 0) return false
  return spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).status === 0
}

// best effort if the worker exits without a teardown; a SIGKILLed worker is swept next time
const liveFleets = new Map<string, () => void>() // prefix -> sync destroy
let exitHooked = false
const onExit = (): void => {
  for (const d of [...liveFleets.values()]) d()
}

/** Third octet of 10.213.N.0/24 from the prefix: namespaces are isolated anyway, but distinct
 * subnets keep logs and captures of parallel fleets unambiguous. */
function subnetOctet(prefix: string): number {
  let h = 2166136261
  for (const c of prefix) h = Math.imul(h ^ c.charCodeAt(0), 16777619) >>> 0
  return (h % 254) + 1
}

export function createFleetNet(opts: FleetNetOptions): FleetNet {
  const prefix = opts.prefix ?? `p${process.pid}`
  if (!NAME_RE.test(prefix) || prefix.length > 20)
    throw new Error(`bad fleet prefix ${JSON.stringify(prefix)}: use [a-z0-9]{1,20}`)
  const hosts = [...opts.hosts]
  if (hosts.length === 0 || hosts.length > 40) throw new Error('a fleet needs 1..40 hosts')
  for (const h of hosts) {
    if (!NAME_RE.test(h) || h === SWITCH)
      throw new Error(`bad host name ${JSON.stringify(h)}: use [a-z0-9]+, not "${SWITCH}"`)
  }
  if (new Set(hosts).size !== hosts.length) throw new Error('duplicate host names')

  if (liveFleets.has(prefix)) throw new Error(`fleet ${prefix} already exists in this process; destroy it first`)
  const swNs = `${NS_PREFIX}${prefix}-${SWITCH}`
  const names = listNetns()
  if (names.includes(swNs)) {
    const owner = ownerOf(swNs)
    if (owner !== undefined && owner !== process.pid && pidAlive(owner))
      throw new Error(`fleet ${prefix} is in use by live pid ${owner}`)
  }
  sweepStaleFleets()
  deleteFleet(prefix) // our own leftovers (e.g. an earlier fleet of this process not destroyed)

  const octet = subnetOctet(prefix)
  const nsOf = new Map(hosts.map(h => [h, `${NS_PREFIX}${prefix}-${h}`]))
  const addrOf = new Map(hosts.map((h, i) => [h, `10.213.${octet}.${i + 1}`]))
  const portOf = new Map(hosts.map((h, i) => [h, `vh${i}`])) // bridge-side veth end
  const children = new Set<ChildProcess>()
  let destroyed = false

  const ns = (host: string): string => {
    const n = nsOf.get(host)
    if (n === undefined) throw new Error(`unknown host ${host}`)
    return n
  }

  const destroySync = (): void => {
    if (destroyed) return
    destroyed = true
    liveFleets.delete(prefix)
    for (const c of children)
      if (c.exitCode === null && c.signalCode === null)
        try {
          c.kill('SIGKILL')
        } catch {
          /* already gone */
        }
    deleteFleet(prefix)
  }
  liveFleets.set(prefix, destroySync)
  if (!exitHooked) {
    exitHooked = true
    process.once('exit', onExit)
  }

  try {
    ip(['netns', 'add', swNs])
    ip(['-n', swNs, 'link', 'add', 'br0', 'type', 'bridge'])
    ip(['-n', swNs, 'link', 'set', 'br0', 'alias', `${OWNER_TAG}${process.pid}`])
    ip(['-n', swNs, 'link', 'set', 'br0', 'up'])
    for (const h of hosts) {
      const hn = ns(h)
      const port = portOf.get(h)!
      ip(['netns', 'add', hn])
      ip(['-n', hn, 'link', 'set', 'lo', 'up'])
      // created inside the host namespace with the peer moved straight into the switch: the
      // root namespace never sees either end
      ip(['-n', hn, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', port, 'netns', swNs])
      ip(['-n', swNs, 'link', 'set', port, 'alias', h])
      ip(['-n', swNs, 'link', 'set', port, 'master', 'br0'])
      ip(['-n', swNs, 'link', 'set', port, 'up'])
      ip(['-n', hn, 'addr', 'add', `${addrOf.get(h)!}/24`, 'dev', 'eth0'])
      ip(['-n', hn, 'link', 'set', 'eth0', 'up'])
    }
  } catch (e) {
    destroySync()
    throw e
  }

  const tbf = (nsName: string, dev: string, o: ShapeOptions): void => {
    if (!(o.rateMbit > 0)) throw new Error('rateMbit must be > 0')
    const burstKb = o.burstKb ?? Math.max(32, Math.ceil((o.rateMbit * 1e6) / 8 / 100 / 1024))
    const latencyMs = o.latencyMs ?? 50
    sh('tc', [
      '-n',
      nsName,
      'qdisc',
      'replace',
      'dev',
      dev,
      'root',
      'tbf',
      'rate',
      `${o.rateMbit}mbit`,
      'burst',
      `${burstKb}kb`,
      'latency',
      `${latencyMs}ms`
    ])
  }

  const net: FleetNet = {
    prefix,
    subnet: `10.213.${octet}.0/24`,
    hosts,
    ns,
    addr: host => {
      ns(host)
      return addrOf.get(host)!
    },
    exec: (host, cmd, args = [], o = {}) =>
      spawnSync('ip', ['netns', 'exec', ns(host), cmd, ...args], {
        timeout: 60_000,
        maxBuffer: 64 * 1024 * 1024,
        ...o,
        encoding: 'utf8'
      }),
    spawn: (host, cmd, args = [], o = {}) => {
      if (destroyed) throw new Error('fleet destroyed')
      // `ip netns exec` execs the command in place, so the child's pid is the command's pid
      const c = cpSpawn('ip', ['netns', 'exec', ns(host), cmd, ...args], o)
      children.add(c)
      c.once('exit', () => children.delete(c))
      return c
    },
    shape: (host, o) => {
      tbf(ns(host), 'eth0', o)
    },
    shapeIngress: (host, o) => {
      ns(host)
      tbf(swNs, portOf.get(host)!, o)
    },
    shapeLink: (host, rateMbit) => {
      net.shape(host, { rateMbit })
      net.shapeIngress(host, { rateMbit })
    },
    unshape: host => {
      // deleting the root qdisc restores the default; "no qdisc" errors are fine
      sh('tc', ['-n', ns(host), 'qdisc', 'del', 'dev', 'eth0', 'root'], true)
      sh('tc', ['-n', swNs, 'qdisc', 'del', 'dev', portOf.get(host)!, 'root'], true)
    },
    destroy: async (graceMs = 2000) => {
      if (destroyed) return
      const live = [...children].filter(c => c.exitCode === null && c.signalCode === null)
      await Promise.all(
        live.map(async c => {
          const exited = new Promise<void>(resolve => c.once('exit', () => resolve()))
          try {
            c.kill('SIGTERM')
          } catch {
            /* already gone */
          }
          const timer = setTimeout(() => {
            try {
              c.kill('SIGKILL')
            } catch {
              /* already gone */
            }
          }, graceMs)
          await exited
          clearTimeout(timer)
        })
      )
      destroySync()
    }
  }
  return net
}

/** createFleetNet whose teardown is registered on the ava test, so it runs even if the test fails. */
export function withFleetNet(t: ExecutionContext, opts: FleetNetOptions): FleetNet {
  const net = createFleetNet(opts)
  t.teardown(async () => {
    await net.destroy()
  })
  return net
}
