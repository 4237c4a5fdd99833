// Composition root of the agent: opens the data dir, the read path, the local API and the mount
// in that order and closes them in reverse. In this single-host mode chunks come only from the
// local cache; a chunk that is not there answers EIO.
import path from 'node:path'
import { Resource } from './util/resource.js'
import type { Config } from './config.js'
import { DataDir } from './datadir.js'
import { ImageReader } from './fuse/image-reader.js'
import { type ImageEntry, type MountView, VmifsMount } from './fuse/mount.js'
import { prepareMountpoint } from './fuse/mountpoint.js'
import { LocalApi } from './server/local-api.js'
import { Stats, snapshot } from './stats/stats.js'
import type { Logger } from './util/log.js'
import type { Manifest } from './manifests/manifest.js'
import { VmifsError } from './errors.js'

export interface AgentOptions { config: Config, mountpoint: string, log: Logger }

const FLUSH_MS = 5000
const IMAGE_STATS_TTL_MS = 5000

export class Agent extends Resource {
  readonly stats = new Stats()
  private dd: DataDir | undefined
  private reader: ImageReader | undefined
  private api: LocalApi | undefined
  private mount: VmifsMount | undefined
  private timer: NodeJS.Timeout | undefined
  private imageMap = new Map<string, ImageEntry>()
  private digestMap = new Map<string, ImageEntry>()
  private seenVersion = -1
  private imageStatsCache: { at: number, value: ReturnType<Agent['imageStats']> } | undefined

  constructor (private readonly opts: AgentOptions) { super() }

  get mountpoint (): string { return this.opts.mountpoint }

  protected async _open (): Promise<void> {
    const { config, log } = this.opts
    this.dd = DataDir.open(config.dataDir, { capacityBytes: config.capacityBytes })
    if (this.dd.leftovers > 0) log.info({ files: this.dd.leftovers }, 'removed temp files left by a crash')
    const fixed = this.dd.store.reconcilePins()
    if (fixed > 0) log.info({ entries: fixed }, 'reconciled pin flags')
    this.reader = new ImageReader(this.dd.store, this.stats, config.memoryCacheBytes)
    this.refreshImages()
    this.api = new LocalApi(path.join(config.dataDir, 'agent.sock'), {
      '/v1/stats': () => this.snapshot(),
      '/v1/health': () => ({ ok: true, hostId: config.hostId, mount: this.opts.mountpoint })
    })
    await this.api.listen()
    const { recovered } = prepareMountpoint(this.opts.mountpoint)
    if (recovered) log.warn({ mountpoint: this.opts.mountpoint }, 'recovered a mountpoint left by a crashed agent')
    this.mount = new VmifsMount(this.opts.mountpoint, this.view(), log, config.mount)
    await this.mount.mount()
    this.timer = setInterval(() => this.flush(), FLUSH_MS)
    this.timer.unref()
    log.info({ mountpoint: this.opts.mountpoint, dataDir: config.dataDir, images: this.imageMap.size }, 'agent ready')
  }

  protected async _close (): Promise<void> {
    if (this.timer) clearInterval(this.timer)
    const errors: unknown[] = []
    if (this.mount) await this.mount.unmount().catch((err) => errors.push(err))
    if (this.api) await this.api.close().catch((err) => errors.push(err))
    if (this.dd) {
      this.flush()
      this.dd.close()
    }
    this.opts.log.info('agent stopped')
    if (errors.length > 0) throw errors[0]
  }

  private flush (): void {
    try {
      this.dd?.store.flushAtimes()
      this.dd?.counters.flush()
    } catch (err) {
      this.opts.log.warn({ err }, 'flush failed')
    }
  }

  /** Reloads the image list when another process (e.g. `vmifs import`) committed a change. */
  private refreshImages (): void {
    const dd = this.dd!
    const v = dd.catalog.dataVersion()
    if (v === this.seenVersion) return
    this.seenVersion = v
    const byName = new Map<string, ImageEntry>()
    const byDigest = new Map<string, ImageEntry>()
    for (const r of dd.catalog.listImages()) {
      const e = { name: r.name, digest: r.digest, size: r.size, createdAt: r.createdAt }
      byName.set(r.name, e)
      if (!byDigest.has(r.digest)) byDigest.set(r.digest, e)
    }
    this.imageMap = byName
    this.digestMap = byDigest
    dd.store.refreshSize()
  }

  private view (): MountView {
    const dd = this.dd!
    const reader = this.reader!
    return {
      images: () => { this.refreshImages(); return this.imageMap },
      byDigest: (d) => { this.refreshImages(); return this.digestMap.get(d) },
      manifest: (d): Manifest => {
        const m = dd.catalog.manifest(d)
        if (!m) throw VmifsError.imageNotFound(d)
        return m
      },
      read: async (name, m, dst, pos, len) => {
        const t0 = performance.now()
        try {
          const n = await reader.read(name, m, dst, pos, len)
          this.stats.fuseReadOps++
          this.stats.fuseReadBytes += n
          return n
        } catch (err) {
          this.stats.readErrors++
          throw err
        } finally {
          this.stats.readLatency.record(performance.now() - t0)
        }
      },
      statsJson: () => Buffer.from(JSON.stringify(this.snapshot(), null, 2) + '\n')
    }
  }

  private imageStats (): { images: Array<{ name: string, digest: string, size: number, dataBytes: number, cachedBytes: number }>, pinnedBytes: number, chunks: number } {
    const dd = this.dd!
    const images = dd.catalog.listImages().map((r) => {
      const m = dd.catalog.manifest(r.digest)!
      let cachedBytes = 0
      for (const [hex, size] of m.distinctChunks()) if (dd.store.has(hex)) cachedBytes += size
      return { name: r.name, digest: r.digest, size: r.size, dataBytes: r.dataBytes, cachedBytes }
    })
    const agg = dd.db.prepare('SELECT coalesce(sum(CASE WHEN pinned = 1 THEN size END), 0) AS pinned, count(*) AS n FROM cache_entries').get() as { pinned: number, n: number }
    return { images, pinnedBytes: agg.pinned, chunks: agg.n }
  }

  snapshot (): Record<string, unknown> {
    this.assertOpen()
    const dd = this.dd!
    this.refreshImages()
    const now = Date.now()
    if (!this.imageStatsCache || now - this.imageStatsCache.at > IMAGE_STATS_TTL_MS || this.imageStatsCache.value.images.length !== this.imageMap.size) {
      this.imageStatsCache = { at: now, value: this.imageStats() }
    }
    const is = this.imageStatsCache.value
    return snapshot({
      stats: this.stats,
      cache: { sizeBytes: dd.store.sizeBytes, capacityBytes: dd.store.capacityBytes, evictions: dd.counters.get('cache.evictions'), pinnedBytes: is.pinnedBytes, chunks: is.chunks },
      images: is.images,
      mount: this.opts.mountpoint,
      hostId: this.opts.config.hostId
    })
  }
}
