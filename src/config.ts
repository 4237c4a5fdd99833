// Configuration: defaults, then the JSON config file (--config), then command-line flags.
import fs from 'node:fs'
import os from 'node:os'
import { VmifsError } from './errors.js'
import { type Chunking, DEFAULT_CHUNKING, validateChunking } from './manifests/chunking.js'

export interface Config {
  dataDir: string
  hostId: string
  capacityBytes: number
  chunking: Chunking
  mount: { allowOther: boolean, readTimeoutMs: number }
  memoryCacheBytes: number
}

export const DEFAULT_DATA_DIR = '/var/lib/vmifs'

export function defaults (): Config {
  return {
    dataDir: process.env.VMIFS_DATA_DIR ?? DEFAULT_DATA_DIR,
    hostId: os.hostname(),
    capacityBytes: 20 * 1024 ** 3,
    chunking: DEFAULT_CHUNKING,
    mount: { allowOther: true, readTimeoutMs: 120_000 },
    memoryCacheBytes: 64 * 1024 ** 2
  }
}

const UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, kib: 1024, m: 1024 ** 2, mib: 1024 ** 2, g: 1024 ** 3, gib: 1024 ** 3, t: 1024 ** 4, tib: 1024 ** 4 }

/** "64KiB", "20G", "1048576" -> bytes */
export function parseSize (v: unknown, what: string): number {
  if (typeof v === 'number' && Number.isSafeInteger(v) && v > 0) return v
  const m = typeof v === 'string' ? /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(v) : null
  const unit = m ? UNITS[m[2]!.toLowerCase()] : undefined
  if (!m || unit === undefined) throw new VmifsError('CONFIG_INVALID', `${what}: ${JSON.stringify(v)} is not a size (e.g. 65536, 64KiB, 20GiB)`)
  const n = Math.round(Number(m[1]) * unit)
  if (!(n > 0)) throw new VmifsError('CONFIG_INVALID', `${what} must be positive`)
  return n
}

export function loadConfigFile (file: string, base: Config = defaults()): Config {
  let raw: unknown
  try {
    raw = JSON.parse(fs.readFileSync(file, 'utf8'))
  } catch (err) {
    throw new VmifsError('CONFIG_INVALID', `config file ${file}: ${(err as Error).message}`, { file })
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new VmifsError('CONFIG_INVALID', `config file ${file} must hold a JSON object`)
  const c = raw as Record<string, any>
  const known = new Set(['dataDir', 'hostId', 'cache', 'chunking', 'mount'])
  for (const k of Object.keys(c)) if (!known.has(k)) throw new VmifsError('CONFIG_INVALID', `config file ${file}: unknown key ${JSON.stringify(k)}`)
  const out: Config = { ...base, mount: { ...base.mount } }
  if (c.dataDir !== undefined) out.dataDir = String(c.dataDir)
  if (c.hostId !== undefined) out.hostId = String(c.hostId)
  if (c.cache?.capacity !== undefined) out.capacityBytes = parseSize(c.cache.capacity, 'cache.capacity')
  if (c.cache?.memory !== undefined) out.memoryCacheBytes = parseSize(c.cache.memory, 'cache.memory')
  if (c.chunking !== undefined) {
    try { out.chunking = validateChunking(c.chunking) } catch (err) { throw new VmifsError('CONFIG_INVALID', `config file ${file}: chunking: ${(err as Error).message}`) }
  }
  if (c.mount?.allowOther !== undefined) out.mount.allowOther = Boolean(c.mount.allowOther)
  if (c.mount?.readTimeoutMs !== undefined) out.mount.readTimeoutMs = Number(c.mount.readTimeoutMs)
  return out
}
