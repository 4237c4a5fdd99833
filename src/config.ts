// Configuration: defaults, then the JSON config file (--config), then command-line flags.
import fs from 'node:fs'
import os from 'node:os'
import { VmifsError } from './errors.js'
import { type Chunking, DEFAULT_CHUNKING, validateChunking } from './manifests/chunking.js'
import { type Policy, validatePolicy } from './planner/replica-placement.js'
import { validateName } from './index/catalog.js'

export interface LinkConfig {
  price?: number
  bandwidthBps?: number
  rttMs?: number
}

export interface FleetConfig {
  /** where the peer server listens; undefined: no server (single host) */
  listen?: { host: string; port: number }
  /** the URL other hosts use to reach this one (default http(s)://<listen host>:<port>) */
  advertise?: string
  peers: string[]
  token: string
  origin?: string
  tls?: { cert: string; key: string; ca?: string }
  /** price per byte others pay to fetch from this host (published in its host record) */
  price: number
  /** this host's view of its links to others: price per byte, bandwidth and RTT seeds */
  links: Record<string, LinkConfig>
  syncIntervalMs: number
}

export interface FetchConfig {
  alpha: number
  prefetchAlpha: number
  sigma: number
  timeoutMs: number
  deadlineMs: number
  hedge: boolean
  missAheadKb: number
}

export interface Config {
  dataDir: string
  hostId: string
  capacityBytes: number
  chunking: Chunking
  /** readaheadKb: the kernel's read-ahead for the mount; undefined: 16 in fleet mode (bytes read ahead past a small file are bytes fetched for nothing), the kernel's default otherwise */
  mount: { allowOther: boolean; readTimeoutMs: number; readaheadKb?: number }
  memoryCacheBytes: number
  fleet: FleetConfig
  fetch: FetchConfig
  /** a usage session of an image ends this long after its last handle closed and reads stopped */
  sessionIdleMs: number
  /** this host's site figures, published in its host record for replica placement */
  site: { rttMs?: number; storagePrice?: number }
  /** replication policies this host publishes (a `vmifs policy set` anywhere overrides them) */
  policies: Record<string, Policy>
  replication: { drTimeoutMs: number; intervalMs: number }
}

export const DEFAULT_DATA_DIR = '/var/lib/vmifs'

export function defaults(): Config {
  return {
    dataDir: process.env.VMIFS_DATA_DIR ?? DEFAULT_DATA_DIR,
    hostId: os.hostname(),
    capacityBytes: 20 * 1024 ** 3,
    chunking: DEFAULT_CHUNKING,
    mount: { allowOther: true, readTimeoutMs: 120_000 },
    memoryCacheBytes: 64 * 1024 ** 2,
    fleet: { peers: [], token: process.env.VMIFS_TOKEN ?? '', price: 0, links: {}, syncIntervalMs: 1000 },
    fetch: {
      alpha: 0.9,
      prefetchAlpha: 0.3,
      sigma: 1,
      timeoutMs: 5000,
      deadlineMs: 30_000,
      hedge: true,
      missAheadKb: 64
    },
    sessionIdleMs: 10_000,
    site: {},
    policies: {},
    replication: { drTimeoutMs: 60_000, intervalMs: 1000 }
  }
}

/** "host:port" -> parts (port 0 = any) */
export function parseListen(v: unknown, what: string): { host: string; port: number } {
  const m = typeof v === 'string' ? /^(\[[0-9a-fA-F:]+\]|[^:]+):(\d{1,5})$/.exec(v) : null
  const port = m ? Number(m[2]) : -1
  if (!m || port > 65535) throw new VmifsError('CONFIG_INVALID', `${what}: ${JSON.stringify(v)} is not host:port`)
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port }
}

export function parseUrl(v: unknown, what: string): string {
  try {
    const u = new URL(String(v))
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('not http(s)')
    return u.toString().replace(/\/$/, '')
  } catch {
    throw new VmifsError('CONFIG_INVALID', `${what}: ${JSON.stringify(v)} is not an http(s) URL`)
  }
}

/** "100Mbit", "12.5MB", 1e8 (bytes/s) -> bytes per second */
export function parseRate(v: unknown, what: string): number {
  if (typeof v === 'number' && v > 0) return v
  const m = typeof v === 'string' ? /^\s*(\d+(?:\.\d+)?)\s*(k|m|g)?(bit|b|B)?(?:\/s|ps)?\s*$/i.exec(v) : null
  if (!m) throw new VmifsError('CONFIG_INVALID', `${what}: ${JSON.stringify(v)} is not a rate (e.g. 100Mbit, 12MB)`)
  const mul = { '': 1, k: 1e3, m: 1e6, g: 1e9 }[(m[2] ?? '').toLowerCase() as '' | 'k' | 'm' | 'g']
  const bits = (m[3] ?? 'B').toLowerCase() === 'bit'
  return Number(m[1]) * mul * (bits ? 1 / 8 : 1)
}

const UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tib: 1024 ** 4
}

/** "64KiB", "20G", "1048576" -> bytes */
export function parseSize(v: unknown, what: string): number {
  if (typeof v === 'number' && Number.isSafeInteger(v) && v > 0) return v
  const m = typeof v === 'string' ? /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(v) : null
  const unit = m ? UNITS[m[2]!.toLowerCase()] : undefined
  if (!m || unit === undefined)
    throw new VmifsError('CONFIG_INVALID', `${what}: ${JSON.stringify(v)} is not a size (e.g. 65536, 64KiB, 20GiB)`)
  const n = Math.round(Number(m[1]) * unit)
  if (!(n > 0)) throw new VmifsError('CONFIG_INVALID', `${what} must be positive`)
  return n
}

function nonNegative(v: unknown, what: string): number {
  const n = Number(v)
  if (!Number.isFinite(n) || n < 0) throw new VmifsError('CONFIG_INVALID', `${what} must be a non-negative number`)
  return n
}

export function loadConfigFile(file: string, base: Config = defaults()): Config {
  let raw: unknown
  try {
    raw = JSON.parse(fs.readFileSync(file, 'utf8'))
  } catch (err) {
    throw new VmifsError('CONFIG_INVALID', `config file ${file}: ${(err as Error).message}`, { file })
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    throw new VmifsError('CONFIG_INVALID', `config file ${file} must hold a JSON object`)
  const c = raw as Record<string, any>
  const known = new Set([
    'dataDir',
    'hostId',
    'cache',
    'chunking',
    'mount',
    'token',
    'listen',
    'advertise',
    'peers',
    'origin',
    'tls',
    'price',
    'links',
    'fetch',
    'syncIntervalMs',
    'sessionIdleMs',
    'site',
    'policies',
    'replication'
  ])
  for (const k of Object.keys(c))
    if (!known.has(k)) throw new VmifsError('CONFIG_INVALID', `config file ${file}: unknown key ${JSON.stringify(k)}`)
  const out: Config = {
    ...base,
    mount: { ...base.mount },
    fleet: { ...base.fleet, links: { ...base.fleet.links } },
    fetch: { ...base.fetch },
    site: { ...base.site },
    policies: { ...base.policies },
    replication: { ...base.replication }
  }
  if (c.site !== undefined) {
    if (typeof c.site !== 'object' || c.site === null)
      throw new VmifsError('CONFIG_INVALID', 'site must be {rttMs, storagePrice}')
    for (const k of Object.keys(c.site))
      if (k !== 'rttMs' && k !== 'storagePrice')
        throw new VmifsError('CONFIG_INVALID', `site: unknown key ${JSON.stringify(k)}`)
    if (c.site.rttMs !== undefined) out.site.rttMs = nonNegative(c.site.rttMs, 'site.rttMs')
    if (c.site.storagePrice !== undefined) out.site.storagePrice = nonNegative(c.site.storagePrice, 'site.storagePrice')
  }
  if (c.policies !== undefined) {
    if (typeof c.policies !== 'object' || c.policies === null || Array.isArray(c.policies))
      throw new VmifsError('CONFIG_INVALID', 'policies must map image names to {minReplicas, dr, maxRttMs, maxPrice}')
    for (const [name, v] of Object.entries(c.policies as Record<string, unknown>)) {
      try {
        out.policies[validateName(name)] = validatePolicy(v)
      } catch (err) {
        throw new VmifsError('CONFIG_INVALID', `policies.${name}: ${(err as Error).message}`)
      }
    }
  }
  if (c.replication !== undefined) {
    if (c.replication.drTimeoutMs !== undefined)
      out.replication.drTimeoutMs = nonNegative(c.replication.drTimeoutMs, 'replication.drTimeoutMs')
    if (c.replication.intervalMs !== undefined)
      out.replication.intervalMs = Math.max(100, nonNegative(c.replication.intervalMs, 'replication.intervalMs'))
  }
  const f = out.fleet
  if (c.token !== undefined) f.token = String(c.token)
  if (c.listen !== undefined) f.listen = parseListen(c.listen, 'listen')
  if (c.advertise !== undefined) f.advertise = parseUrl(c.advertise, 'advertise')
  if (c.peers !== undefined) {
    if (!Array.isArray(c.peers)) throw new VmifsError('CONFIG_INVALID', 'peers must be a list of URLs')
    f.peers = c.peers.map((p: unknown, i: number) => parseUrl(p, `peers[${i}]`))
  }
  if (c.origin !== undefined) f.origin = parseUrl(c.origin, 'origin')
  if (c.tls !== undefined) {
    if (typeof c.tls?.cert !== 'string' || typeof c.tls?.key !== 'string')
      throw new VmifsError('CONFIG_INVALID', 'tls needs "cert" and "key" file paths')
    f.tls = { cert: c.tls.cert, key: c.tls.key, ...(typeof c.tls.ca === 'string' ? { ca: c.tls.ca } : {}) }
  }
  if (c.price !== undefined) f.price = nonNegative(c.price, 'price')
  if (c.syncIntervalMs !== undefined) f.syncIntervalMs = nonNegative(c.syncIntervalMs, 'syncIntervalMs')
  if (c.sessionIdleMs !== undefined) out.sessionIdleMs = nonNegative(c.sessionIdleMs, 'sessionIdleMs')
  if (c.links !== undefined) {
    if (typeof c.links !== 'object' || c.links === null)
      throw new VmifsError('CONFIG_INVALID', 'links must map host ids to {price, bandwidth, rttMs}')
    for (const [id, l] of Object.entries(c.links as Record<string, any>)) {
      f.links[id] = {
        ...(l.price !== undefined ? { price: nonNegative(l.price, `links.${id}.price`) } : {}),
        ...(l.bandwidth !== undefined ? { bandwidthBps: parseRate(l.bandwidth, `links.${id}.bandwidth`) } : {}),
        ...(l.rttMs !== undefined ? { rttMs: nonNegative(l.rttMs, `links.${id}.rttMs`) } : {})
      }
    }
  }
  if (c.fetch !== undefined) {
    for (const k of ['alpha', 'prefetchAlpha'] as const) {
      if (c.fetch[k] !== undefined) {
        const v = Number(c.fetch[k])
        if (!(v >= 0 && v <= 1)) throw new VmifsError('CONFIG_INVALID', `fetch.${k} must be in [0, 1]`)
        out.fetch[k] = v
      }
    }
    for (const k of ['sigma', 'timeoutMs', 'deadlineMs', 'missAheadKb'] as const)
      if (c.fetch[k] !== undefined) out.fetch[k] = nonNegative(c.fetch[k], `fetch.${k}`)
    if (c.fetch.hedge !== undefined) out.fetch.hedge = Boolean(c.fetch.hedge)
  }
  if (c.dataDir !== undefined) out.dataDir = String(c.dataDir)
  if (c.hostId !== undefined) out.hostId = String(c.hostId)
  if (c.cache?.capacity !== undefined) out.capacityBytes = parseSize(c.cache.capacity, 'cache.capacity')
  if (c.cache?.memory !== undefined) out.memoryCacheBytes = parseSize(c.cache.memory, 'cache.memory')
  if (c.chunking !== undefined) {
    // cdc without fileCuts gets the default (on); "fileCuts": false turns it off
    const withCuts =
      c.chunking?.kind === 'cdc' && c.chunking.fileCuts === undefined ? { ...c.chunking, fileCuts: true } : c.chunking
    try {
      out.chunking = validateChunking(withCuts)
    } catch (err) {
      throw new VmifsError('CONFIG_INVALID', `config file ${file}: chunking: ${(err as Error).message}`)
    }
  }
  if (c.mount?.allowOther !== undefined) out.mount.allowOther = Boolean(c.mount.allowOther)
  if (c.mount?.readTimeoutMs !== undefined) out.mount.readTimeoutMs = Number(c.mount.readTimeoutMs)
  if (c.mount?.readaheadKb !== undefined) out.mount.readaheadKb = nonNegative(c.mount.readaheadKb, 'mount.readaheadKb')
  return out
}
