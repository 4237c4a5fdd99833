// Configuration: defaults, then the JSON config file (--config), then command-line flags. The file's
// shape is one schema (CONFIG_FILE): every key at every level is known, typed and range-checked
// before anything is applied, so a misspelt or mistyped key is an error (CONFIG_INVALID), never
// silently ignored. docs/config.md documents every key of it (a test checks that).
import fs from 'node:fs'
import os from 'node:os'
import { z } from 'zod'
import { VmifsError } from './errors.js'
import { type Chunking, DEFAULT_CHUNKING, validateChunking } from './manifests/chunking.js'
import { type Policy, validatePolicy } from './planner/replica-placement.js'
import { validateName } from './index/catalog.js'
import { isPublicKeyText } from './trust/keys.js'
import { validHostId } from './trust/host-id.js'
import { redisOptions } from './metadata/redis.js'

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
  /** headers every request to the origin store carries (its own credentials; never the fleet token) */
  originHeaders: Record<string, string>
  tls?: { cert: string; key: string; ca?: string }
  /** price per byte others pay to fetch from this host (published in its host record) */
  price: number
  /** this host's view of its links to others: price per byte, bandwidth and RTT seeds */
  links: Record<string, LinkConfig>
  syncIntervalMs: number
  /**
   * where the metadata table is kept: undefined, each host's own copy synced with its peers; a
   * redis:// or redis+sentinel:// URL, a Redis engine shared by the fleet (src/metadata/redis.ts)
   */
  metadata?: string
  /** a file holding this host's password for the metadata engine (its ACL user) */
  metadataPasswordFile?: string
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
  /**
   * readaheadKb: the kernel's read-ahead for the mount; undefined: 16 in fleet mode (bytes read
   * ahead past a small file are bytes fetched for nothing), the mount's default otherwise (8192)
   */
  mount: { allowOther: boolean; readTimeoutMs: number; readaheadKb?: number }
  memoryCacheBytes: number
  fleet: FleetConfig
  fetch: FetchConfig
  /** a usage session of an image ends this long after its last handle closed and reads stopped */
  sessionIdleMs: number
  /** how often the agent tells the fleet it is alive (its status): 3 missed, stale; 4, dead */
  heartbeatMs: number
  /** this host's site figures, published in its host record for replica placement */
  site: { rttMs?: number; storagePrice?: number }
  /** replication policies this host publishes (a `vmifs policy set` anywhere overrides them) */
  policies: Record<string, Policy>
  replication: { drTimeoutMs: number; intervalMs: number }
  /**
   * admins: the fleet admin public keys whose host certificates this host accepts; hosts: host
   * ids admitted by their public key alone (no certificate); publishers: per image name prefix,
   * the publisher keys whose publications of names with it are listed (the longest prefix decides;
   * a name no prefix matches is any admitted host's, the first seen owning it)
   */
  trust: { admins: string[]; hosts: Record<string, string>; publishers: Record<string, string[]> }
  /**
   * remote access to the dashboard (docs/dashboard.md): where it listens, and the file holding its
   * token (its own, never the fleet token); over https when "tls" is set. Undefined: loopback only
   * (a tokenFile without listen is left unused).
   */
  dashboard?: { listen: { host: string; port: number }; tokenFile: string }
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
    fleet: {
      peers: [],
      token: process.env.VMIFS_TOKEN ?? '',
      originHeaders: {},
      price: 0,
      links: {},
      syncIntervalMs: 1000
    },
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
    heartbeatMs: 5000,
    site: {},
    policies: {},
    replication: { drTimeoutMs: 60_000, intervalMs: 1000 },
    trust: { admins: [], hosts: {}, publishers: {} }
  }
}

/** A metadata engine's URL, checked (CONFIG_INVALID otherwise). */
export function parseMetadataUrl(v: string, what: string): string {
  try {
    redisOptions(v)
  } catch (err) {
    throw new VmifsError('CONFIG_INVALID', `${what}: ${(err as Error).message}`)
  }
  return v
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

const nonNegative = z.number().finite().nonnegative()
const positiveInt = z.number().int().positive()
const share = z.number().min(0).max(1)
/** bytes, or a string such as "20GiB" (parseSize) */
const size = z.union([positiveInt, z.string()])
/** bytes per second, or a string such as "100Mbit" (parseRate) */
const rate = z.union([z.number().positive(), z.string()])
const publicKey = z.string().refine(isPublicKeyText, 'is not a public key ("ed25519:" and 43 base64url characters)')

/** The config file: every key it may hold. Strings that carry sizes, rates, URLs and addresses are
 * parsed after the shape is checked, by the same parsers the command-line flags use. */
export const CONFIG_FILE = z
  .strictObject({
    dataDir: z.string().min(1),
    hostId: z.string().min(1),
    cache: z.strictObject({ capacity: size, memory: size }).partial(),
    chunking: z.discriminatedUnion('kind', [
      z.strictObject({ kind: z.literal('fixed'), chunkSize: positiveInt }),
      z.strictObject({
        kind: z.literal('cdc'),
        min: positiveInt,
        avg: positiveInt,
        max: positiveInt,
        fileCuts: z.boolean().optional()
      })
    ]),
    mount: z.strictObject({ allowOther: z.boolean(), readTimeoutMs: positiveInt, readaheadKb: nonNegative }).partial(),
    token: z.string(),
    listen: z.string(),
    advertise: z.string(),
    peers: z.array(z.string()),
    origin: z.string(),
    originHeaders: z.record(
      z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, 'is not an HTTP header name'),
      z.string().regex(/^[^\r\n\0]*$/, 'must not hold CR, LF or NUL')
    ),
    tls: z.strictObject({ cert: z.string(), key: z.string(), ca: z.string().optional() }),
    price: nonNegative,
    links: z.record(z.string(), z.strictObject({ price: nonNegative, bandwidth: rate, rttMs: nonNegative }).partial()),
    fetch: z
      .strictObject({
        alpha: share,
        prefetchAlpha: share,
        sigma: nonNegative,
        timeoutMs: positiveInt,
        deadlineMs: positiveInt,
        hedge: z.boolean(),
        missAheadKb: nonNegative
      })
      .partial(),
    syncIntervalMs: nonNegative,
    metadata: z.string().regex(/^redis(\+sentinel)?:\/\/\S+$/, 'is not a redis:// or redis+sentinel:// URL'),
    metadataPasswordFile: z.string(),
    sessionIdleMs: nonNegative,
    heartbeatMs: positiveInt,
    site: z.strictObject({ rttMs: nonNegative, storagePrice: nonNegative }).partial(),
    policies: z.record(
      z.string(),
      z.strictObject({
        minReplicas: z.number().int().min(0).max(1000),
        dr: z.string().optional(),
        maxRttMs: nonNegative.optional(),
        maxPrice: nonNegative.optional()
      })
    ),
    replication: z.strictObject({ drTimeoutMs: nonNegative, intervalMs: nonNegative }).partial(),
    trust: z
      .strictObject({
        admins: z.array(publicKey),
        hosts: z.record(z.string().refine(validHostId, 'is not a host id (1-64 of A-Z a-z 0-9 . _ -)'), publicKey),
        publishers: z.record(
          z.string().regex(/^[A-Za-z0-9._+-]{0,128}$/, 'is not an image name prefix (0-128 of A-Z a-z 0-9 . _ + -)'),
          z.array(publicKey).min(1, 'lists no publisher key')
        )
      })
      .partial(),
    dashboard: z.strictObject({ listen: z.string(), tokenFile: z.string() }).partial()
  })
  .partial()

export type ConfigFile = z.infer<typeof CONFIG_FILE>

/** "fetch.deadlinMs: unknown key" style text for the first problem zod found. */
function describeIssue(issue: z.core.$ZodIssue): string {
  const at = issue.path.map(String).join('.')
  const where = at === '' ? '' : `${at}: `
  if (issue.code === 'unrecognized_keys') {
    const keys = issue.keys.map(k => (at === '' ? k : `${at}.${k}`))
    return `unknown key${keys.length > 1 ? 's' : ''} ${keys.map(k => JSON.stringify(k)).join(', ')}`
  }
  if (issue.code === 'invalid_key') return `${where}${issue.issues[0]?.message ?? issue.message}`
  if (issue.code === 'invalid_union' && issue.path.at(-1) === 'chunking')
    return `${where}kind must be "fixed" or "cdc" with its fields`
  return `${where}${issue.message}`
}

function invalid(file: string, what: string): VmifsError {
  return new VmifsError('CONFIG_INVALID', `config file ${file}: ${what}`, { file })
}

export function loadConfigFile(file: string, base: Config = defaults()): Config {
  let raw: unknown
  try {
    raw = JSON.parse(fs.readFileSync(file, 'utf8'))
  } catch (err) {
    throw invalid(file, (err as Error).message)
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw invalid(file, 'must hold a JSON object')
  const parsed = CONFIG_FILE.safeParse(raw)
  if (!parsed.success) throw invalid(file, describeIssue(parsed.error.issues[0]!))
  const c = parsed.data
  const out: Config = {
    ...base,
    mount: { ...base.mount, ...c.mount },
    fleet: { ...base.fleet, links: { ...base.fleet.links } },
    fetch: { ...base.fetch, ...c.fetch },
    site: { ...base.site, ...c.site },
    policies: { ...base.policies },
    replication: { ...base.replication, ...c.replication },
    trust: {
      admins: [...(c.trust?.admins ?? base.trust.admins)],
      hosts: { ...(c.trust?.hosts ?? base.trust.hosts) },
      publishers: { ...(c.trust?.publishers ?? base.trust.publishers) }
    }
  }
  // the minimum keeps a typo from spinning the replication loop
  if (c.replication?.intervalMs !== undefined) out.replication.intervalMs = Math.max(100, c.replication.intervalMs)
  for (const [name, v] of Object.entries(c.policies ?? {})) {
    try {
      out.policies[validateName(name)] = validatePolicy(v)
    } catch (err) {
      throw invalid(file, `policies.${name}: ${(err as Error).message}`)
    }
  }
  const f = out.fleet
  if (c.token !== undefined) f.token = c.token
  if (c.listen !== undefined) f.listen = parseListen(c.listen, 'listen')
  if (c.advertise !== undefined) f.advertise = parseUrl(c.advertise, 'advertise')
  if (c.peers !== undefined) f.peers = c.peers.map((p, i) => parseUrl(p, `peers[${i}]`))
  if (c.origin !== undefined) f.origin = parseUrl(c.origin, 'origin')
  if (c.originHeaders !== undefined) f.originHeaders = { ...c.originHeaders }
  if (c.tls !== undefined) f.tls = { ...c.tls }
  if (c.price !== undefined) f.price = c.price
  if (c.syncIntervalMs !== undefined) f.syncIntervalMs = c.syncIntervalMs
  if (c.metadata !== undefined) f.metadata = parseMetadataUrl(c.metadata, 'metadata')
  if (c.metadataPasswordFile !== undefined) f.metadataPasswordFile = c.metadataPasswordFile
  if (c.dashboard?.listen !== undefined) {
    const listen = parseListen(c.dashboard.listen, 'dashboard.listen')
    if (c.dashboard.tokenFile === undefined)
      throw invalid(file, 'dashboard.listen needs dashboard.tokenFile (the remote token of its own)')
    out.dashboard = { listen, tokenFile: c.dashboard.tokenFile }
  }
  if (c.sessionIdleMs !== undefined) out.sessionIdleMs = c.sessionIdleMs
  if (c.heartbeatMs !== undefined) out.heartbeatMs = Math.max(100, c.heartbeatMs)
  for (const [id, l] of Object.entries(c.links ?? {})) {
    f.links[id] = {
      ...(l.price !== undefined ? { price: l.price } : {}),
      ...(l.bandwidth !== undefined ? { bandwidthBps: parseRate(l.bandwidth, `links.${id}.bandwidth`) } : {}),
      ...(l.rttMs !== undefined ? { rttMs: l.rttMs } : {})
    }
  }
  if (c.dataDir !== undefined) out.dataDir = c.dataDir
  if (c.hostId !== undefined) out.hostId = c.hostId
  if (c.cache?.capacity !== undefined) out.capacityBytes = parseSize(c.cache.capacity, 'cache.capacity')
  if (c.cache?.memory !== undefined) out.memoryCacheBytes = parseSize(c.cache.memory, 'cache.memory')
  if (c.chunking !== undefined) {
    // cdc without fileCuts gets the default (on); "fileCuts": false turns it off
    const withCuts = c.chunking.kind === 'cdc' ? { ...c.chunking, fileCuts: c.chunking.fileCuts ?? true } : c.chunking
    try {
      out.chunking = validateChunking(withCuts)
    } catch (err) {
      throw invalid(file, `chunking: ${(err as Error).message}`)
    }
  }
  return out
}
