// Composition root of the agent. Opens, in order: the data dir; the metadata table and holder
// directory; the chunk source (memory, cache, fleet); the read path; the local API; the peer server; the first
// publication of this host's facts and metadata sync; the mount. Closes in reverse.
// Single-host mode (no --listen, --peer or origin): no server, no sync, a chunk that is not local
// answers EIO.
import os from 'node:os'
import fs from 'node:fs'
import path from 'node:path'
import { Resource } from './util/resource.js'
import type { Config } from './config.js'
import { DataDir } from './datadir.js'
import { ImageReader } from './fuse/image-reader.js'
import { type ImageEntry, type MountView, VmifsMount } from './fuse/mount.js'
import type { ImageIndex } from './index/catalog.js'
import { mountsAt, prepareMountpoint } from './fuse/mountpoint.js'
import { holderSocket, takeFromHolder } from './fuse/holder.js'
import { LocalApi, agentCall, socketInUse } from './server/local-api.js'
import { PeerServer } from './server/peer-server.js'
import { DASHBOARD_INTERVAL_MS, Dashboard } from './server/dashboard.js'
import { planReport } from './planner/plan-report.js'
import { heldBytes } from './holders/holdings.js'
import { createMetrics } from './server/metrics.js'
import { Stats, imageSnapshot, prefetchPrecision, prefetchRecall, snapshot } from './stats/stats.js'
import type { Logger } from './util/log.js'
import type { Manifest } from './manifests/manifest.js'
import { VmifsError, isVmifsError } from './errors.js'
import { hostKey } from './trust/keys.js'
import { installedCert } from './trust/certs.js'
import { guard } from './util/guard.js'
import { FactStore, validOrigin } from './index/facts.js'
import { FactSync } from './index/sync.js'
import { RedisMetadata, metadataPassword, tieOrder } from './metadata/redis.js'
import { type HostRow, StatusLiveness, hostRows } from './metadata/hosts.js'
import { FleetImages } from './index/fleet-images.js'
import { signLocalImages } from './trust/publications.js'
import { HolderDirectory, ORIGIN_ID } from './holders/directory.js'
import { Announcer } from './holders/announcer.js'
import { ChunkPlaces } from './index/chunk-places.js'
import { ChunkSource } from './fetcher/source.js'
import { ManifestFetcher } from './fetcher/manifests.js'
import { OriginClient } from './peer/origin-client.js'
import { TraceRecorder } from './prefetch/trace-recorder.js'
import { FleetModels } from './prefetch/fleet-models.js'
import { Prefetcher } from './prefetch/prefetcher.js'
import { RecencyTracker } from './prefetch/recency.js'
import { CatalogClusters } from './planner/clusters.js'
import { Hints } from './prefetch/hint.js'
import { type ReplicateReport, Replicator, parseReplicateRequest } from './planner/replicate.js'
import { ReplicationManager } from './planner/replication.js'

/** The remote dashboard's token: the first line of its file, at least 16 characters. */
function readDashboardToken(file: string): string {
  let token: string
  try {
    token = fs.readFileSync(file, 'utf8').split('\n')[0]!.trim()
  } catch (err) {
    throw new VmifsError('CONFIG_INVALID', `dashboard.tokenFile: cannot read ${file}: ${(err as Error).message}`, {
      file
    })
  }
  if (token.length < 16)
    throw new VmifsError('CONFIG_INVALID', `dashboard.tokenFile: ${file} holds no token of 16 characters or more`, {
      file
    })
  return token
}

function readPem(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8')
  } catch (err) {
    throw new VmifsError('CONFIG_INVALID', `tls: cannot read ${file}: ${(err as Error).message}`, { file })
  }
}

export interface AgentOptions {
  config: Config
  mountpoint: string
  log: Logger
  /** take the live mount over from the agent running on this data dir (it hands over and exits 0) */
  takeover?: boolean
  /** called once the running agent agreed to hand over (--takeover), before it exits */
  onTakingOver?: () => void
}

/** How long a takeover waits for the running agent to hand over. */
const HANDOVER_TIMEOUT_MS = 30_000

const FLUSH_MS = 5000
/** How often the catalog is looked at for images imported or removed (by this agent or a CLI command). */
const CATALOG_POLL_MS = 250
const ORIGIN_POLL_MS = 5000
const IMAGE_STATS_TTL_MS = 5000
const DEMAND_GRACE_MS = 500
/** The dashboard's charts keep this many samples (one every DASHBOARD_INTERVAL_MS: 10 minutes). */
const HISTORY_SAMPLES = 300
/** The dashboard's holdings table shows at most this many hosts. */
const HOLDINGS_HOSTS = 64

/** One point of the dashboard's charts: this host's counters at time t (ms since the epoch). */
interface Sample {
  t: number
  hitBytes: number
  missBytes: number
  fetchBytes: number
  prefetch: { precision: number; recall: number }
  images: Record<
    string,
    { hitBytes: number; missBytes: number; cachedShare: number; precision: number; recall: number }
  >
}

export class Agent extends Resource {
  readonly stats = new Stats()
  private dd: DataDir | undefined
  private reader: ImageReader | undefined
  private api: LocalApi | undefined
  private mount: VmifsMount | undefined
  private timers: NodeJS.Timeout[] = []
  /** the catalog's images as last seen (Catalog.images()) */
  private index: ImageIndex | undefined
  private handingOver = false
  private imageStatsCache: { at: number; value: ReturnType<DataDir['usage']> } | undefined
  facts: FactStore | undefined
  private directory: HolderDirectory | undefined
  private announcer: Announcer | undefined
  private source: ChunkSource | undefined
  private server: PeerServer | undefined
  private sync: FactSync | undefined
  private metadata: RedisMetadata | undefined
  private fleetImages: FleetImages | undefined
  private manifests: ManifestFetcher | undefined
  /** the origin store's one client: chunks and manifests */
  private origin: OriginClient | undefined
  endpoint: string | undefined
  private recorder: TraceRecorder | undefined
  private prefetcher: Prefetcher | undefined
  replicator: Replicator | undefined
  replication: ReplicationManager | undefined
  private readonly recency = new RecencyTracker()
  private readonly clusters = new CatalogClusters()
  private models: FleetModels | undefined
  private dashboard: Dashboard | undefined
  private readonly history: Sample[] = []
  /** heldBytes of a host's holdings fact of an image ("<host> <digest>"), at the fact's seq */
  private readonly heldCache = new Map<string, { seq: number; bytes: number }>()
  private historyTimer: NodeJS.Timeout | undefined

  constructor(private readonly opts: AgentOptions) {
    super()
  }

  get mountpoint(): string {
    return this.opts.mountpoint
  }
  /** The images by name, as last seen. */
  private get images(): ReadonlyMap<string, ImageEntry> {
    return this.index?.byName ?? new Map()
  }

  get fleetMode(): boolean {
    const f = this.opts.config.fleet
    return f.listen !== undefined || f.peers.length > 0 || f.origin !== undefined || f.metadata !== undefined
  }

  protected async _open(): Promise<void> {
    const { config, log } = this.opts
    const fleet = config.fleet
    if (!validOrigin(config.hostId) || config.hostId === ORIGIN_ID)
      throw new VmifsError(
        'CONFIG_INVALID',
        `host id ${JSON.stringify(config.hostId)} is not valid (1-64 of A-Z a-z 0-9 . _ -, not "origin")`
      )
    const peered = fleet.listen !== undefined || fleet.peers.length > 0 || fleet.metadata !== undefined
    if (peered && fleet.token === '') {
      throw new VmifsError(
        'TOKEN_MISSING',
        'fleet mode needs the fleet secret: set VMIFS_TOKEN or "token" in the config file'
      )
    }
    const trust = config.trust
    if (peered && trust.admins.length === 0 && Object.keys(trust.hosts).length === 0)
      throw new VmifsError(
        'TRUST_MISSING',
        'fleet mode needs to know whose facts to believe: list the fleet admin keys in "trust.admins" ' +
          '(and admit each host: vmifs fleet admit, vmifs host cert), or the hosts\' keys in "trust.hosts"'
      )
    this.dd = DataDir.open(config.dataDir, {
      capacityBytes: config.capacityBytes,
      onEvict: () => this.announcer?.schedule(),
      onDiskFull: bytes =>
        log.warn(
          { code: 'DISK_FULL', dataDir: config.dataDir, effectiveCapacityBytes: bytes },
          "the data dir's filesystem is full: evicting unpinned chunks to make room; " +
            'the cache keeps at most effectiveCapacityBytes until space frees'
        )
    })
    const dd = this.dd
    if (dd.leftovers > 0)
      log.info({ packs: dd.leftovers }, 'cut back packs a crashed writer left with unrecorded bytes')
    const fixed = dd.store.reconcilePins()
    if (fixed > 0) log.info({ entries: fixed }, 'reconciled pin flags')

    const signer = hostKey(config.dataDir)
    const signed = signLocalImages(dd.catalog, signer)
    if (signed > 0) log.info({ images: signed }, 'signed the publications of images imported here with the host key')
    this.facts = new FactStore(dd.db, config.hostId, {
      signer,
      trust,
      cert: () => installedCert(config.dataDir),
      owner: true
    })
    if (this.facts.renumbered > 0)
      log.warn(
        { facts: this.facts.renumbered },
        "renumbered this host's facts: a forged echo had pushed their seqs past the largest a host may use"
      )
    if (this.facts.dropped.length > 0)
      log.info(
        { origins: this.facts.dropped.length },
        'dropped facts of origins this host does not admit (or that were not signed): they are pulled again'
      )
    if (this.fleetMode && trust.admins.length > 0 && installedCert(config.dataDir) === undefined)
      log.warn(
        { dataDir: config.dataDir },
        "no host certificate installed: hosts that admit by trust.admins refuse this host's facts " +
          '(vmifs host key; the admin runs vmifs fleet admit; then vmifs host cert)'
      )
    this.models = new FleetModels(this.facts, dd.catalog, log)
    const models = this.models
    // one chunk index for both: who may hold a chunk, and which entries a cached chunk fills
    const places = new ChunkPlaces(dd.catalog)
    this.directory = new HolderDirectory(this.facts, dd.catalog, config.hostId, fleet.links, fleet.origin, places)
    // hosts without a heartbeat are skipped: the Redis engine's expired keys, else the status facts' times
    const byStatus = new StatusLiveness(this.facts, config.heartbeatMs)
    this.directory.dead = () => this.metadata?.deadHosts() ?? byStatus.dead()
    this.announcer = new Announcer(this.facts, dd.catalog, dd.store, log, undefined, places)
    const demand = { alpha: config.fetch.alpha, hedge: config.fetch.hedge }
    const background = { alpha: config.fetch.prefetchAlpha, hedge: false }
    this.origin = fleet.origin ? new OriginClient(fleet.origin, fleet.originHeaders) : undefined
    this.source = new ChunkSource(
      dd.store,
      this.stats,
      log,
      config.memoryCacheBytes,
      this.fleetMode
        ? {
            directory: this.directory,
            token: fleet.token,
            sigma: config.fetch.sigma,
            timeoutMs: config.fetch.timeoutMs,
            deadlineMs: config.fetch.deadlineMs,
            policies: { demand, ahead: demand, prefetch: background, replicate: background },
            tls: fleet.tls?.ca !== undefined ? { ca: readPem(fleet.tls.ca) } : undefined,
            origin: this.origin,
            onCached: hash => this.announcer?.cached(hash),
            onDemand: () => this.prefetcher?.tune()
          }
        : undefined
    )
    const source = this.source
    if (this.fleetMode) {
      this.manifests = new ManifestFetcher({
        directory: this.directory,
        client: e => source.client(e),
        origin: this.origin,
        timeoutMs: config.fetch.timeoutMs,
        log
      })
      const manifests = this.manifests
      this.fleetImages = new FleetImages(
        this.facts,
        dd.catalog,
        async (d, o) => await manifests.fetch(d, o),
        log,
        () => {
          this.directory?.invalidate()
          this.announcer?.schedule()
        },
        { prefixes: config.trust.publishers }
      )
      this.facts.onChange(changed => {
        if (changed.some(f => f.key.startsWith('image/')))
          guard(log, 'reconciling the fleet images', () => this.fleetImages?.reconcile())
        // a model looked up when its image was first used (the Redis backend) may come after the
        // session started: the session follows it
        for (const f of changed)
          if (f.origin !== config.hostId && f.value !== null && f.key.startsWith('model/'))
            this.prefetcher?.modelArrived(f.key.slice('model/'.length))
      })
    }
    if (this.fleetMode) {
      this.replicator = new Replicator({
        dd,
        self: config.hostId,
        directory: this.directory,
        client: e => source.client(e),
        ensure: async (hash, size) => {
          await source.ensure({ hash, size }, 'replicate')
        },
        expect: (wants, donor) => source.expect(wants, donor),
        originClient: this.origin,
        stats: this.stats,
        log,
        links: fleet.links,
        origin: fleet.origin,
        alpha: config.fetch.prefetchAlpha,
        sigma: config.fetch.sigma,
        timeoutMs: config.fetch.timeoutMs,
        announce: () => {
          this.directory?.invalidate()
          this.announcer?.publishHoldings()
        }
      })
    }
    this.reader = new ImageReader(dd.store, source, this.stats, this.fleetMode, config.fetch.missAheadKb * 1024)
    this.refreshImages()
    if (this.fleetMode) {
      this.prefetcher = new Prefetcher({
        model: d => models.model(d),
        donors: d => models.donors(d),
        inherited: (d, from, share) => {
          log.info(
            { digest: d, from, share: Math.round(share * 1000) / 1000 },
            'prefetch: no model of this image yet; using one inherited from a related image'
          )
        },
        manifest: d => dd.catalog.manifest(d),
        has: h => dd.store.has(h),
        fetch: async (hash, size, digest) => {
          await source.ensure({ hash, size, image: digest }, 'prefetch')
        },
        // demand stays "active" for DEMAND_GRACE_MS after its last fetch, so the prefetch does not
        // surge between one miss of a reader and its next
        demandActive: () => source.demandActive(DEMAND_GRACE_MS),
        room: (size, since) => dd.store.hasRoomWithout(size, since),
        stats: this.stats.prefetch,
        imageStats: d => this.stats.digest(d).prefetch
      })
    }
    this.recorder = new TraceRecorder(
      tr =>
        guard(log, 'learning from a read session', () => {
          this.prefetcher?.end(tr.digest)
          models.learn(tr)
        }),
      config.sessionIdleMs,
      d => this.prefetcher?.start(d)
    )
    this.reader.onAccess = (m, first, last) => {
      this.recorder?.access(m.digest(), first, last)
      this.recency.touch(m, first, last)
      this.prefetcher?.demandRange(m, first, last)
    }

    const hints = new Hints({
      images: () => {
        this.refreshImages()
        return this.index!
      },
      recency: this.recency,
      hostId: config.hostId,
      prefetcher: () => this.prefetcher,
      log
    })

    const agentSock = path.join(config.dataDir, 'agent.sock')
    // the mount's connection, when one is live: handed over by the running agent (takeover), or
    // left held by the holder after a crash (then the requests the dead agent left are resent)
    const held = await this.liveConnection(agentSock)
    this.api = new LocalApi(agentSock, {
      'GET /v1/stats': () => this.snapshot(),
      'GET /v1/health': () => ({
        ok: true,
        hostId: config.hostId,
        mount: this.opts.mountpoint,
        endpoint: this.endpoint ?? null
      }),
      'GET /v1/hint': ({ query }) => {
        const max = query.get('max')
        return hints.export(query.get('image') ?? '', max === null ? undefined : Number(max))
      },
      'POST /v1/hint': ({ body }) => hints.take(body),
      'GET /v1/hosts': async () => ({ hosts: await this.hostList() }),
      'POST /v1/revoke': ({ body }) => {
        const dropped = this.facts!.revoke(body)
        this.metadata?.revoked(body)
        return { dropped }
      },
      'GET /v1/similarity': () => this.similarity(),
      'POST /v1/replicate': async ({ body }) => await this.replicate(body),
      'POST /v1/dashboard': async () => await this.openDashboard().loginUrl(),
      'POST /v1/takeover': () => {
        // answered first; then this agent closes, handing the mount over instead of unmounting
        this.handingOver = true
        setImmediate(() => this.onHandover?.())
        return { ok: true, pid: process.pid }
      }
    })
    await this.api.listen()

    if (fleet.listen) {
      this.server = new PeerServer(
        { ...fleet.listen, token: fleet.token, tls: fleet.tls },
        {
          hostId: config.hostId,
          readChunk: async h => {
            if (!dd.store.has(h)) return null
            try {
              return await dd.store.read(h)
            } catch (err) {
              if (isVmifsError(err)) return null
              throw err
            }
          },
          manifest: d => dd.catalog.manifest(d)?.encode() ?? null,
          facts: c => this.facts!.since(c),
          metrics: createMetrics({
            stats: this.stats,
            cache: () => ({
              sizeBytes: dd.store.sizeBytes,
              capacityBytes: dd.store.capacityBytes,
              effectiveCapacityBytes: dd.store.effectiveCapacityBytes,
              evictions: dd.counters.get('cache.evictions')
            }),
            links: () => this.directory!.allLinks(),
            images: () => this.images.size,
            imageUsage: () => this.usage().images,
            modelSessions: () =>
              [...this.images.values()].map(e => [e.name, Math.round(models.model(e.digest).n * 1000) / 1000]),
            prefetchPending: () => this.prefetcher?.pending ?? 0,
            cursors: () => this.facts!.cursors(),
            factsRefused: () => ({ ...(this.sync?.refused ?? {}) }),
            factResets: () => this.sync?.resets ?? 0,
            imagesRefused: () => this.fleetImages?.refused() ?? {}
          }),
          replicate: async body => await this.replicate(body),
          compressed: (raw, wire) => {
            this.stats.served.compressedRawBytes += raw
            this.stats.served.compressedWireBytes += wire
          },
          served: (kind, bytes) => {
            if (kind === 'chunk') {
              this.stats.served.chunks++
              this.stats.served.bytes += bytes
            } else if (kind === 'manifest') this.stats.served.manifests++
            else this.stats.served.factPages++
          }
        },
        log
      )
      await this.server.listen()
      const scheme = fleet.tls ? 'https' : 'http'
      const host = fleet.listen.host.includes(':') ? `[${fleet.listen.host}]` : fleet.listen.host
      this.endpoint = fleet.advertise ?? `${scheme}://${host}:${this.server.port}`
      if (fleet.advertise === undefined && (fleet.listen.host === '0.0.0.0' || fleet.listen.host === '::')) {
        log.warn(
          { listen: fleet.listen },
          'listening on a wildcard address without "advertise": other hosts cannot reach the published endpoint'
        )
      }
    }
    this.announcer.publishHost(this.endpoint, fleet.price, config.site)
    // config policies are published with setAt 0: a `vmifs policy set` anywhere overrides them
    for (const [name, p] of Object.entries(config.policies)) {
      const cur = this.facts.getAs('policy', config.hostId, name)
      if (!cur || cur.setAt === 0) this.facts.publishAs('policy', name, { ...p, setAt: 0 })
    }
    this.announcer.publishImages()
    this.announcer.publishHoldings()
    this.announcer.publishStatus()
    if (this.fleetMode) {
      if (fleet.metadata !== undefined) {
        const directory = this.directory
        const cost = { alpha: config.fetch.alpha, sigma: config.fetch.sigma }
        const tie = tieOrder(this.facts.self)
        this.metadata = new RedisMetadata({
          url: fleet.metadata,
          password: metadataPassword(fleet.metadataPasswordFile),
          facts: this.facts,
          log,
          cert: () => installedCert(config.dataDir),
          rank: hosts => directory.rank(hosts, 1024 * 1024, cost, tie),
          heartbeatMs: config.heartbeatMs
        })
        this.metadata.start()
      } else {
        const peers = fleet.peers.map(u => this.source!.client(u))
        this.sync = new FactSync(this.facts, () => peers, log, fleet.syncIntervalMs)
        this.sync.start()
      }
      guard(log, 'reconciling the fleet images', () => this.fleetImages?.reconcile())
      this.replication = new ReplicationManager({
        dd,
        facts: this.facts,
        self: config.hostId,
        directory: this.directory,
        replicator: this.replicator!,
        client: e => this.source!.client(e),
        links: fleet.links,
        origin: fleet.origin,
        log,
        drTimeoutMs: config.replication.drTimeoutMs,
        intervalMs: config.replication.intervalMs
      })
      this.replication.start()
      const publisherKeys = new Set(Object.values(config.trust.publishers).flat())
      this.manifests!.watchOrigin(
        ORIGIN_POLL_MS,
        // the store's writer: an admitted host, or a publisher key of the config
        st =>
          publisherKeys.has(st.signer) || this.facts!.hostsOfKey(st.signer, st.cert).length > 0
            ? undefined
            : 'not the key of an admitted host or of trust.publishers',
        imgs => guard(log, "taking the origin's images", () => this.fleetImages?.setOriginImages(imgs)),
        (digest, model) => {
          if (this.models?.setPublished(digest, model)) log.info({ digest }, "took the origin's boot profile")
        }
      )
    }

    if (config.dashboard) {
      const url = await this.openDashboard().listenRemote({
        listen: config.dashboard.listen,
        token: readDashboardToken(config.dashboard.tokenFile),
        tls: fleet.tls
      })
      log.info({ url }, 'dashboard listening for remote access (its own token: config "dashboard.tokenFile")')
    }

    this.mount = new VmifsMount(this.opts.mountpoint, this.view(), log, {
      ...config.mount,
      readaheadKb: config.mount.readaheadKb ?? (this.fleetMode ? 16 : undefined),
      packDir: dd.store.packDir,
      holderSocket: holderSocket(config.dataDir),
      // the threads block on the disk (direct reads): more of them than cores keep requests in flight
      workers: Math.min(64, Math.max(16, 4 * os.availableParallelism()))
    })
    if (held) {
      this.mount.adopt(held.fd)
      if (held.crashed) log.warn({ mountpoint: this.opts.mountpoint }, 'resumed the mount of a crashed agent')
      else log.info({ mountpoint: this.opts.mountpoint }, 'took the mount over')
    } else {
      const { recovered } = prepareMountpoint(this.opts.mountpoint)
      if (recovered) log.warn({ mountpoint: this.opts.mountpoint }, 'recovered a mountpoint left by a crashed agent')
      await this.mount.mount()
    }
    this.timers.push(setInterval(() => this.flush(), FLUSH_MS))
    this.timers.push(
      setInterval(() => guard(log, 'looking for new images', () => this.refreshImages()), CATALOG_POLL_MS)
    )
    this.timers.push(
      setInterval(() => guard(log, 'publishing the status', () => this.announcer?.publishStatus()), config.heartbeatMs)
    )
    for (const t of this.timers) t.unref()
    log.info(
      {
        mountpoint: this.opts.mountpoint,
        dataDir: config.dataDir,
        images: this.images.size,
        endpoint: this.endpoint,
        peers: fleet.peers
      },
      'agent ready'
    )
  }

  protected async _close(): Promise<void> {
    for (const t of this.timers) clearInterval(t)
    const errors: unknown[] = []
    if (this.mount) {
      if (this.handingOver) await this.mount.detach().catch(err => errors.push(err))
      else await this.mount.unmount().catch(err => errors.push(err))
    }
    try {
      this.recorder?.endAll()
    } catch (err) {
      errors.push(err)
    } // sessions under way are learnt
    this.prefetcher?.close()
    await this.replication?.close()
    await this.sync?.stop()
    this.fleetImages?.close()
    await this.metadata?.stop()
    await this.server?.close().catch(err => errors.push(err))
    clearInterval(this.historyTimer)
    await this.dashboard?.close().catch(err => errors.push(err))
    this.announcer?.close()
    await this.source?.close()
    this.manifests?.close()
    await this.origin?.close()
    if (this.api) await this.api.close().catch(err => errors.push(err))
    if (this.dd) {
      this.flush()
      this.dd.close()
    }
    this.opts.log.info('agent stopped')
    if (errors.length > 0) throw errors[0]
  }

  /** The dashboard (started with its first listener); its charts' samples are taken from then on. */
  private openDashboard(): Dashboard {
    if (this.dashboard) return this.dashboard
    const { config, log } = this.opts
    this.dashboard = new Dashboard(
      {
        state: async full => await this.dashboardState(full),
        plan: async (image, to) =>
          await planReport(config, this.dd!, config.hostId, image, to, config.fetch.prefetchAlpha, config.fetch.sigma)
      },
      log
    )
    this.sample()
    this.historyTimer = setInterval(
      () => guard(log, 'sampling for the dashboard', () => this.sample()),
      DASHBOARD_INTERVAL_MS
    )
    this.historyTimer.unref()
    return this.dashboard
  }

  /**
   * A point of the charts, from the counters as they are: cheap, whether a page is open or not
   * (the cached shares are those of the last snapshot, refreshed while a page or .stats is read).
   */
  private sample(): void {
    const st = this.stats
    const images: Sample['images'] = {}
    for (const u of this.imageStatsCache?.value.images ?? []) {
      const im = imageSnapshot(st, u)
      const { hitBytes, missBytes, cachedShare } = im
      images[u.name] = {
        hitBytes,
        missBytes,
        cachedShare,
        precision: im.prefetch.precision,
        recall: im.prefetch.recall
      }
    }
    this.history.push({
      t: Date.now(),
      hitBytes: st.hitBytes,
      missBytes: st.missBytes,
      fetchBytes: st.fetchBytes,
      prefetch: {
        precision: prefetchPrecision(st.prefetch),
        recall: prefetchRecall(st.prefetch, st.demandFetchedChunks)
      },
      images
    })
    if (this.history.length > HISTORY_SAMPLES) this.history.shift()
  }

  /** Clusters and the similarity matrix of the catalog's images (`vmifs similarity`), brought up to date. */
  private similarity(): ReturnType<CatalogClusters['snapshot']> {
    const dd = this.dd!
    this.clusters.sync(dd.catalog.listImages(), d => dd.catalog.manifest(d))
    return this.clusters.snapshot()
  }

  /** What the dashboard's page shows (docs/dashboard.md); `full`: every sample of the history, else the last. */
  private async dashboardState(full: boolean): Promise<Record<string, unknown>> {
    const stats = this.snapshot()
    const hosts = await this.hostList()
    return {
      hostId: this.opts.config.hostId,
      time: stats.time,
      intervalMs: DASHBOARD_INTERVAL_MS,
      stats,
      hosts,
      holdings: this.holdings(hosts),
      similarity: this.similarity(),
      history: full ? this.history : this.history.slice(-1),
      historyFull: full
    }
  }

  /**
   * Per host and image, the bytes of the image's distinct chunks it holds: this host's from its cache, the
   * others' from their holdings facts as this host's copy of the table has them (on Redis, the
   * images this host uses). The live hosts first, at most HOLDINGS_HOSTS.
   */
  private holdings(hosts: HostRow[]): {
    hosts: string[]
    images: string[]
    uniqueBytes: number[]
    heldBytes: number[][]
    more: number
  } {
    const dd = this.dd!
    const self = this.opts.config.hostId
    const rank = (h: HostRow): number => (h.host === self ? 0 : h.state === 'up' ? 1 : 2)
    const sorted = [...hosts].sort((a, b) => rank(a) - rank(b) || a.host.localeCompare(b.host))
    const ids = sorted.slice(0, HOLDINGS_HOSTS).map(h => h.host)
    const usage = this.usage().images
    const held = new Map<string, number>() // "<host> <digest>" -> bytes
    const shown = new Set(ids)
    for (const f of this.facts!.allAs('hold')) {
      if (f.origin === self || !shown.has(f.origin)) continue
      const key = `${f.origin} ${f.name}`
      let c = this.heldCache.get(key)
      if (c?.seq !== f.seq) {
        const m = dd.catalog.manifest(f.name)
        if (!m) continue
        c = { seq: f.seq, bytes: heldBytes(m, f.value.ranges) }
        this.heldCache.set(key, c)
      }
      held.set(key, c.bytes)
    }
    for (const k of this.heldCache.keys()) if (!held.has(k)) this.heldCache.delete(k)
    return {
      hosts: ids,
      images: usage.map(u => u.name),
      uniqueBytes: usage.map(u => u.uniqueBytes),
      heldBytes: ids.map(h => usage.map(u => (h === self ? u.cachedBytes : (held.get(`${h} ${u.digest}`) ?? 0)))),
      more: Math.max(0, sorted.length - ids.length)
    }
  }

  /** The fleet's hosts and their state (`vmifs hosts`): on Redis, liveness as the engine has it. */
  async hostList(): Promise<HostRow[]> {
    this.assertOpen()
    const live = this.metadata?.connected ? await this.metadata.liveness() : undefined
    return hostRows(this.facts!, Date.now(), this.opts.config.heartbeatMs, live)
  }

  /** Replicates an image onto this host (the plan's shares pulled from the donors, pinned). */
  async replicate(body: unknown): Promise<ReplicateReport> {
    const req = parseReplicateRequest(body)
    if (!this.replicator)
      throw new VmifsError(
        'NOT_FLEET_MODE',
        'this agent runs alone (no --listen, --peer or origin): there is nothing to replicate from'
      )
    this.refreshImages()
    const digest = this.dd?.catalog.getImage(req.image)?.digest
    if (digest !== undefined) await this.metadata?.use(digest)
    return await this.replicator.replicate(req)
  }

  private flush(): void {
    guard(this.opts.log, 'flushing access times and counters', () => {
      this.dd?.store.flushAtimes()
      this.dd?.counters.flush()
    })
  }

  /**
   * Acts on a change of the catalog's images (here, or `vmifs import` in another process); tells
   * the mount unless it is the one asking.
   */
  private refreshImages(tellMount = true): void {
    const dd = this.dd
    if (!dd || this.closed) return
    const index = dd.catalog.images()
    if (index === this.index) return
    this.index = index
    dd.store.refreshSize()
    // imports and removals (here or by `vmifs import`/`rm`) reach the fleet's table; holdings
    // first, so a host that learns of an image has already learnt who holds its chunks
    this.directory?.invalidate()
    this.announcer?.publishHoldings()
    this.announcer?.publishImages()
    if (tellMount) this.mount?.imagesChanged()
  }

  private view(): MountView {
    const dd = this.dd!
    const reader = this.reader!
    return {
      images: () => {
        this.refreshImages(false)
        return this.images
      },
      manifest: (d): Manifest => {
        const m = dd.catalog.manifest(d)
        if (!m) throw VmifsError.imageNotFound(d)
        return m
      },
      read: async (name, m, dst, pos, len, stream) => {
        const t0 = performance.now()
        try {
          if (this.metadata) await this.metadata.use(m.digest())
          const n = await reader.read(name, m, dst, pos, len, stream)
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
      statsJson: () => Buffer.from(JSON.stringify(this.snapshot(), null, 2) + '\n'),
      served: (name, m, pos, len, stream, ms) => {
        this.stats.fuseReadBytes += reader.served(name, m, pos, len, stream)
        this.stats.fuseReadOps++
        this.stats.nativeReadOps++
        this.stats.readLatency.record(ms)
      },
      chunks: dd.store,
      opened: (_name, digest) => {
        this.recorder?.open(digest)
        void this.metadata?.use(digest).catch(() => undefined)
      },
      released: (_name, digest) => {
        this.recorder?.release(digest)
      }
    }
  }

  /** Called once this agent was asked to hand its mount over (the command then closes it). */
  onHandover: (() => void) | undefined

  /**
   * A live connection of the mount to serve instead of mounting: with --takeover, the running
   * agent's (after it handed over); without, one the holder kept after its agent died, if the
   * mountpoint still has a vmifs mount (mountinfo only: a stat of it would wait for an answer).
   */
  private async liveConnection(agentSock: string): Promise<{ fd: number; crashed: boolean } | undefined> {
    const sock = holderSocket(this.opts.config.dataDir)
    if (this.opts.takeover === true) {
      if (!(await socketInUse(agentSock)))
        throw new VmifsError('TAKEOVER_FAILED', `no agent runs on this data dir to take over from (${agentSock})`)
      await agentCall(agentSock, 'POST', '/v1/takeover')
      this.opts.onTakingOver?.()
      const t0 = Date.now()
      while (await socketInUse(agentSock)) {
        if (Date.now() - t0 > HANDOVER_TIMEOUT_MS)
          throw new VmifsError('TAKEOVER_FAILED', 'the running agent did not hand over within 30 s')
        await new Promise(resolve => setTimeout(resolve, 20))
      }
      const fd = takeFromHolder(sock)
      if (fd === undefined) throw new VmifsError('TAKEOVER_FAILED', `no FUSE holder answers on ${sock}`)
      return { fd, crashed: false }
    }
    const top = mountsAt(this.opts.mountpoint).at(-1)
    if (top?.fstype !== 'fuse.vmifs' || (await socketInUse(agentSock))) return undefined
    const fd = takeFromHolder(sock)
    return fd === undefined ? undefined : { fd, crashed: true }
  }

  /** The data dir's usage per image (cached bytes…), at most IMAGE_STATS_TTL_MS old. */
  private usage(): ReturnType<DataDir['usage']> {
    const now = Date.now()
    if (
      !this.imageStatsCache ||
      now - this.imageStatsCache.at > IMAGE_STATS_TTL_MS ||
      this.imageStatsCache.value.images.length !== this.images.size
    ) {
      this.imageStatsCache = { at: now, value: this.dd!.usage() }
    }
    return this.imageStatsCache.value
  }

  snapshot(): Record<string, unknown> {
    this.assertOpen()
    const dd = this.dd!
    this.mount?.flushEvents()
    this.refreshImages()
    const is = this.usage()
    const snap = snapshot({
      stats: this.stats,
      cache: {
        sizeBytes: dd.store.sizeBytes,
        capacityBytes: dd.store.capacityBytes,
        effectiveCapacityBytes: dd.store.effectiveCapacityBytes,
        evictions: dd.counters.get('cache.evictions'),
        pinnedBytes: is.pinnedBytes,
        chunks: is.chunks
      },
      images: is.images,
      mount: this.opts.mountpoint,
      hostId: this.opts.config.hostId,
      prefetchPending: this.prefetcher?.pending
    })
    const imgs = snap.images as Record<string, Record<string, unknown>>
    for (const v of Object.values(imgs))
      v.modelSessions = Math.round((this.models?.model(String(v.digest)).n ?? 0) * 1000) / 1000
    if (this.fleetMode || this.endpoint) {
      snap.fleet = {
        endpoint: this.endpoint ?? null,
        peers: this.opts.config.fleet.peers,
        hosts: this.directory!.hosts().map(h => h.hostId),
        cursors: this.facts!.cursors(),
        syncRounds: this.sync?.rounds ?? 0,
        factsRefused: { ...(this.sync?.refused ?? {}) },
        factResets: this.sync?.resets ?? 0,
        imagesRefused: this.fleetImages?.refused() ?? {},
        syncDemoted: Object.keys(this.sync?.demoted() ?? {}),
        metadata: this.metadata
          ? {
              backend: 'redis',
              connected: this.metadata.connected,
              ...this.metadata.counters,
              expiryEvents: this.metadata.expiryEvents,
              deadHosts: this.metadata.deadHosts().size,
              followedImages: Object.keys(this.metadata.followed()).length
            }
          : { backend: 'peers' },
        ...(this.origin ? { origin: { ...this.origin.state } } : {}),
        inFlight: this.source?.inFlight ?? 0,
        links: Object.fromEntries(
          this.directory!.allLinks().map(l => [
            l.hostId,
            { rttMs: Math.round(l.rttMs * 100) / 100, bandwidthBps: Math.round(l.bandwidthBps), demoted: l.demoted() }
          ])
        )
      }
    }
    return snap
  }
}
