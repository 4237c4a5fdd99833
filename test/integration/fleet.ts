// Several real agents on loopback, each with its own data dir, mount, port and config file, and
// a faulty proxy a real agent can advertise instead of its own endpoint (so other hosts fetch
// through it): it corrupts or truncates chunk bodies, or accepts and never answers.
import fs from 'node:fs'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { request } from 'undici'
import Database from 'better-sqlite3'
import path from 'node:path'
import { AgentProcess, abortMount, run, sleep, tmpdir } from './harness.js'
import type { AgentStats } from './agent-stats.js'
import { TRUST, admitHost } from './admit.js'
import { type RedisServer, startRedis } from '../helpers/redis.js'
import { freePort } from '../../src/util/ports.js'

const here = path.dirname(fileURLToPath(import.meta.url))

export const TOKEN = 'fleet-test-secret'

/** Where the fleet's agents keep the metadata table: synced among peers, or a real redis-server. */
export type Backend = 'peers' | 'redis'
export const BACKENDS: readonly Backend[] = ['peers', 'redis']

export interface StartOptions {
  peers?: string[]
  config?: Record<string, unknown>
  advertise?: string
  extra?: string[]
  listen?: boolean
}

interface Host {
  id: string
  port: number
  data: string
  mnt: string
  agent?: AgentProcess
}

export class Fleet {
  readonly dir = tmpdir('vmifs-fleet-')
  readonly hosts = new Map<string, Host>()
  backend: Backend = 'peers'
  /** the engine of a fleet on the Redis backend (started with the fleet, stopped after its agents) */
  redis: RedisServer | undefined

  static async create(
    t: { teardown: (fn: () => Promise<void> | void) => void },
    ids: string[],
    o: { backend?: Backend } = {}
  ): Promise<Fleet> {
    const f = new Fleet()
    f.backend = o.backend ?? 'peers'
    for (const id of ids) {
      const h: Host = {
        id,
        port: await freePort(),
        data: path.join(f.dir, id, 'data'),
        mnt: path.join(f.dir, id, 'mnt')
      }
      fs.mkdirSync(h.mnt, { recursive: true })
      f.hosts.set(id, h)
    }
    t.teardown(async () => {
      await f.destroy()
    })
    if (f.backend === 'redis')
      f.redis = await startRedis({ teardown: () => undefined }, path.join(f.dir, 'redis'), await freePort())
    return f
  }

  /** Starts the fleet's engine again on its port, empty (as after a restart that lost its data). */
  async restartRedis(): Promise<void> {
    const port = this.redis!.port
    await this.redis!.stop()
    this.redis = await startRedis({ teardown: () => undefined }, path.join(this.dir, 'redis'), port)
  }

  host(id: string): Host {
    return this.hosts.get(id)!
  }
  url(id: string): string {
    return `http://127.0.0.1:${this.host(id).port}`
  }
  image(id: string, name: string): string {
    return path.join(this.host(id).mnt, 'images', name)
  }

  async start(id: string, o: StartOptions = {}): Promise<AgentProcess> {
    const h = this.host(id)
    const cfgFile = path.join(this.dir, `${id}.json`)
    const config = {
      token: TOKEN,
      syncIntervalMs: 200,
      trust: TRUST,
      ...(this.redis ? { metadata: this.redis.url } : {}),
      ...(o.config ?? {})
    }
    fs.writeFileSync(cfgFile, JSON.stringify(config))
    admitHost(h.data, id)
    const args = [
      '--host-id',
      id,
      '--config',
      cfgFile,
      ...(o.listen === false ? [] : ['--listen', `127.0.0.1:${h.port}`])
    ]
    for (const p of o.peers ?? []) args.push('--peer', this.url(p))
    if (o.advertise) args.push('--advertise', o.advertise)
    const a = new AgentProcess(h.mnt, h.data, [...args, ...(o.extra ?? [])], {
      VMIFS_LOG_LEVEL: process.env.VMIFS_TEST_LOG ?? 'warn'
    })
    h.agent = a
    await a.ready()
    return a
  }

  /** `.stats` of a host, read by a child process. */
  stats(id: string): AgentStats {
    const r = run('cat', [path.join(this.host(id).mnt, '.stats')], 10_000)
    if (r.status !== 0) throw new Error(`cat .stats on ${id}: ${r.stderr}`)
    return JSON.parse(r.stdout) as AgentStats
  }

  async waitFor(what: string, fn: () => boolean, timeoutMs = 15_000): Promise<void> {
    const t0 = Date.now()
    for (;;) {
      try {
        if (fn()) return
      } catch {
        /* not there yet (e.g. a key of .stats fn reads is still missing): ask again */
      }
      if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`)
      await sleep(100)
    }
  }

  /**
   * Waits until `reader` has every fact `writer` has published about itself (after the writer's
   * debounced holdings announcement, 300 ms, has had time to go out).
   */
  async synced(reader: string, writer: string): Promise<void> {
    await sleep(500)
    if (this.backend === 'redis') return await this.syncedFollowed(reader, writer)
    const want = this.stats(writer).fleet!.cursors[writer]!
    await this.waitFor(
      `${reader} to see ${writer}'s facts`,
      () => (this.stats(reader).fleet!.cursors[writer] ?? 0) >= want
    )
  }

  /** Opens an image on a host's mount (in a child process) and reads nothing: the host now uses it. */
  use(id: string, name: string): void {
    const r = run('dd', [`if=${this.image(id, name)}`, 'count=0', 'status=none'])
    if (r.status !== 0) throw new Error(`opening ${name} on ${id}: ${r.stderr}`)
  }

  /**
   * A host's copy of the metadata table, every fact it keeps of every origin, read from its data
   * dir's SQLite (its peer endpoint serves only the origins it holds whole: on Redis, none).
   */
  table(id: string): Array<{ origin: string; seq: number; key: string; value: unknown }> {
    const db = new Database(path.join(this.host(id).data, 'index.sqlite'), { readonly: true, fileMustExist: true })
    try {
      db.pragma('busy_timeout = 5000')
      const rows = db.prepare('SELECT origin, seq, key, value FROM facts').all() as Array<{
        origin: string
        seq: number
        key: string
        value: string | null
      }>
      return rows.map(r => ({ ...r, value: r.value === null ? null : (JSON.parse(r.value) as unknown) }))
    } finally {
      db.close()
    }
  }

  /**
   * On Redis, a host keeps another's followed facts (host record, publications, inventory…) and
   * no cursor: waits until `reader` has each of them at least as new as `writer` has it.
   */
  private async syncedFollowed(reader: string, writer: string): Promise<void> {
    const followed = (k: string): boolean => !k.startsWith('hold/') && !k.startsWith('model/') && k !== 'status'
    const want = this.table(writer).filter(x => x.origin === writer && followed(x.key))
    const t0 = Date.now()
    for (;;) {
      const have = new Map(
        this.table(reader)
          .filter(x => x.origin === writer)
          .map(x => [x.key, x.seq])
      )
      if (want.every(x => (have.get(x.key) ?? -1) >= x.seq)) return
      if (Date.now() - t0 > 15_000) throw new Error(`timed out waiting for ${reader} to see ${writer}'s facts`)
      await sleep(100)
    }
  }

  /**
   * Waits until `reader` knows that `holder` holds every data chunk of image `name` (of `dataOf`).
   * On Redis a host follows holdings only of the images it uses: the reader opens the image first.
   */
  async holdsAll(reader: string, holder: string, name: string, dataOf: string): Promise<void> {
    if (this.backend === 'redis') this.use(reader, name)
    const m = JSON.parse(
      run(process.execPath, [
        path.resolve(here, '../../../bin/vmifs.js'),
        'manifest',
        name,
        '--data-dir',
        this.host(dataOf).data
      ]).stdout
    ) as { digest: string; chunks: Array<{ hash?: string }> }
    const want = m.chunks.filter(c => c.hash).length
    const t0 = Date.now()
    for (;;) {
      const hold = this.table(reader).find(f => f.origin === holder && f.key === `hold/${m.digest}`) as
        { value: { ranges?: Array<[number, number]> } | null } | undefined
      const held = (hold?.value?.ranges ?? []).reduce((n, [a, b]) => n + b - a, 0)
      if (held >= want) return
      if (Date.now() - t0 > 15_000)
        throw new Error(
          `${reader} never saw ${holder} hold all of ${name} (${held}/${want}); its metadata: ` +
            JSON.stringify(this.stats(reader).fleet?.metadata)
        )
      await sleep(100)
    }
  }

  async destroy(): Promise<void> {
    for (const h of this.hosts.values()) {
      const a = h.agent
      // an agent that died during the test says why, whatever the test made of it
      if (a && (a.child.exitCode !== null || a.child.signalCode !== null) && !a.stopping)
        process.stderr.write(
          `agent ${h.id} died during the test (${a.child.exitCode ?? a.child.signalCode}):\n${a.err.slice(-4000)}\n`
        )
      await a?.stop('SIGTERM', 5000).catch(() => {})
      abortMount(h.mnt)
    }
    await this.redis?.stop()
    fs.rmSync(this.dir, { recursive: true, force: true })
  }
}

export type Fault = 'corrupt' | 'truncate' | 'blackhole'

export interface ChildProxy {
  url: string
  port: number
  close: () => Promise<void>
  stats: () => Promise<{ spoiled: number; seen: string[] }>
}

/**
 * Starts a proxy as a child process (the test process blocks in spawnSync while it reads a
 * mount, so a proxy living in it could not answer meanwhile) and waits for its {"port":N} line.
 */
async function childProxy(script: string, args: string[]): Promise<ChildProxy> {
  const child = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString()
  })
  const t0 = Date.now()
  while (!out.includes('\n')) {
    if (child.exitCode !== null || Date.now() - t0 > 10_000) throw new Error(`proxy ${script} did not start`)
    await sleep(20)
  }
  const port = (JSON.parse(out.split('\n')[0]!) as { port: number }).port
  const url = `http://127.0.0.1:${port}`
  return {
    url,
    port,
    close: async () => {
      if (child.exitCode !== null) return
      child.kill('SIGTERM')
      await new Promise(resolve => child.once('exit', resolve))
    },
    stats: async () => {
      const r = await request(`${url}/__proxy/stats`)
      return (await r.body.json()) as { spoiled: number; seen: string[] }
    }
  }
}

/** A proxy to a real agent that spoils chunk answers (test/integration/faulty-proxy.ts). */
export function faultyProxy(targetPort: number, fault: Fault): Promise<ChildProxy> {
  return childProxy(path.join(here, 'faulty-proxy.js'), ['--target', String(targetPort), '--fault', fault])
}

/** The userspace delay/throttle proxy of the benchmarks (bench/lib/delay-proxy.ts), as a child. */
export function delayProxy(
  targetPort: number,
  delayMs: number,
  rateBytesPerSec?: number,
  listenPort = 0
): Promise<ChildProxy> {
  return childProxy(path.resolve(here, '../../bench/lib/delay-proxy.js'), [
    '--listen',
    `127.0.0.1:${listenPort}`,
    '--target',
    `127.0.0.1:${targetPort}`,
    '--delay-ms',
    String(delayMs),
    ...(rateBytesPerSec ? ['--rate-bytes-per-sec', String(rateBytesPerSec)] : [])
  ])
}
