// `vmifs replicate` and replication policies with three real agents in network namespaces, each
// donor's link shaped with tc tbf (see fleet-shaped.test.ts; agents run under `nsenter --net`).
import test, { type ExecutionContext } from 'ava'
import fs from 'node:fs'
import path from 'node:path'
import { randomBytes } from 'node:crypto'
import { type FleetNet, withFleetNet } from './netns.js'
import { AgentProcess, abortMount, run, sleep, tmpdir, vmifs } from './harness.js'
import { TOKEN } from './fleet.js'
import { readStats, type AgentStats } from './agent-stats.js'
import type { PlanJson, PolicyShown } from '../helpers/cli-json.js'
import type { ReplicateReport } from '../../src/planner/replicate.js'
import type { ReplicaState } from '../../src/planner/replication.js'
import { TRUST, admitHost } from './admit.js'

const MiB = 1024 * 1024
type H = 'a' | 'b' | 'c'

interface Rig {
  net: FleetNet
  dir: string
  data: (h: H) => string
  start: (h: H, peers: H[], config?: Record<string, unknown>) => Promise<AgentProcess>
  agents: Map<H, AgentProcess>
}

function rig(t: ExecutionContext, hosts: H[] = ['a', 'b', 'c']): Rig {
  const net = withFleetNet(t, { hosts })
  const dir = tmpdir('vmifs-repl-')
  const agents = new Map<H, AgentProcess>()
  t.teardown(async () => {
    for (const a of agents.values()) await a.stop('SIGTERM', 5000).catch(() => {})
    for (const h of hosts) abortMount(path.join(dir, h, 'mnt'))
    fs.rmSync(dir, { recursive: true, force: true })
  })
  const data = (h: H): string => path.join(dir, h, 'data')
  const start = async (h: H, peers: H[], config: Record<string, unknown> = {}): Promise<AgentProcess> => {
    const base = path.join(dir, h)
    fs.mkdirSync(path.join(base, 'mnt'), { recursive: true })
    fs.writeFileSync(
      path.join(base, 'config.json'),
      JSON.stringify({ token: TOKEN, syncIntervalMs: 200, trust: TRUST, ...config })
    )
    admitHost(data(h), h)
    const a = new AgentProcess(
      path.join(base, 'mnt'),
      data(h),
      [
        '--host-id',
        h,
        '--config',
        path.join(base, 'config.json'),
        '--listen',
        `${net.addr(h)}:7070`,
        ...peers.flatMap(p => ['--peer', `http://${net.addr(p)}:7070`])
      ],
      { VMIFS_LOG_LEVEL: process.env.VMIFS_TEST_LOG ?? 'warn' },
      ['nsenter', `--net=/run/netns/${net.ns(h)}`]
    )
    agents.set(h, a)
    await a.ready()
    return a
  }
  return { net, dir, data, start, agents }
}

/** Waits until `target`'s copy of the table shows `donors` holding every chunk of `image` it lacks. */
async function waitPlan(r: Rig, target: H, image: string, donors: H[], ms = 30_000): Promise<PlanJson> {
  const t0 = Date.now()
  for (;;) {
    const p = vmifs(['plan', image, '--to', target, '--json', '--host-id', target, '--data-dir', r.data(target)])
    if (p.code === 0) {
      const j = JSON.parse(p.stdout) as PlanJson
      if (
        j.need.unavailableChunks === 0 &&
        j.groups.length > 0 &&
        j.groups.every(g => donors.every(d => g.donors.includes(d)))
      )
        return j
    }
    if (Date.now() - t0 > ms)
      throw new Error(`${target} never saw ${donors.join(',')} hold ${image}: ${p.stderr}${p.stdout.slice(0, 300)}`)
    await sleep(200)
  }
}

function replicate(r: Rig, target: H, image: string, extra: string[] = []): ReplicateReport {
  const p = vmifs(['replicate', image, '--json', '--data-dir', r.data(target), ...extra], {}, 180_000)
  if (p.code !== 0) throw new Error(`replicate ${image} on ${target}: ${p.stderr}`)
  return JSON.parse(p.stdout) as ReplicateReport
}

function stats(r: Rig, h: H): AgentStats {
  return readStats(path.join(r.dir, h, 'mnt'))
}

test.serial(
  'two equal donors give about half the single-source makespan; the copy is whole, verified and pinned',
  async t => {
    const r = rig(t)
    const rate = 40 // Mbit/s on each donor's link
    r.net.shapeLink('a', rate)
    r.net.shapeLink('b', rate)
    const size = 12 * MiB
    const files: Record<string, Buffer> = {}
    for (const name of ['one', 'two']) {
      files[name] = randomBytes(size) // incompressible: the wire carries every byte
      fs.writeFileSync(path.join(r.dir, `${name}.raw`), files[name])
      for (const h of ['a', 'b'] as H[])
        t.is(
          vmifs(['import', path.join(r.dir, `${name}.raw`), '--name', name, '--quiet', '--data-dir', r.data(h)]).code,
          0
        )
    }
    const links = { a: { bandwidth: `${rate}Mbit` }, b: { bandwidth: `${rate}Mbit` } }
    await r.start('a', ['b'])
    await r.start('b', ['a'])
    await r.start('c', ['a', 'b'], { links })
    await waitPlan(r, 'c', 'one', ['a', 'b'])
    await waitPlan(r, 'c', 'two', ['a', 'b'])

    const single = replicate(r, 'c', 'one', ['--method', 'single-source'])
    const lp = replicate(r, 'c', 'two', ['--alpha', '0.9'])
    t.log(
      `single-source: ${single.makespan.toFixed(2)} s (predicted ${single.predicted.seconds.toFixed(2)}), ` +
        `from ${single.perDonor.map(d => `${d.donor} ${(d.bytes / MiB).toFixed(1)} MiB`).join(', ')}`
    )
    const lpDonors = lp.perDonor.map(d => `${d.donor} ${(d.bytes / MiB).toFixed(1)} MiB in ${d.seconds.toFixed(2)} s`)
    t.log(`lp: ${lp.makespan.toFixed(2)} s (predicted ${lp.predicted.seconds.toFixed(2)}), from ${lpDonors.join(', ')}`)
    t.is(single.perDonor.length, 1)
    t.is(lp.perDonor.length, 2)
    for (const d of lp.perDonor)
      t.true(d.bytes > 0.4 * size && d.bytes < 0.6 * size, `${d.donor} sent ${d.bytes} of ${size}`)
    t.is(single.fetchedBytes, size)
    t.is(lp.fetchedBytes, size)
    const ratio = lp.makespan / single.makespan
    t.true(ratio > 0.3 && ratio < 0.75, `two donors took ${(ratio * 100).toFixed(0)} % of the single-source time`)
    // the single-source copy ran near the link rate (the shaping is real)
    const linkSec = (size * 8) / (rate * 1e6)
    t.true(single.makespan > 0.8 * linkSec, `single-source took ${single.makespan} s for ${linkSec} s of link time`)
    t.true(single.makespan < 3 * linkSec + 2)

    // whole, verified, pinned, announced: reads are all hits and the images are pinned on c
    const before = stats(r, 'c')
    for (const name of ['one', 'two'])
      t.is(
        run('cmp', [path.join(r.dir, `${name}.raw`), path.join(r.dir, 'c', 'mnt', 'images', name)], 60_000).status,
        0
      )
    const after = stats(r, 'c')
    t.is(after.fetch.bytes, before.fetch.bytes, 'nothing fetched on read: the copies are whole')
    t.true(after.cache.pinnedBytes >= 2 * size)
    const ls = JSON.parse(vmifs(['ls', '--json', '--data-dir', r.data('c')]).stdout) as Array<{
      name: string
      pinned: boolean
    }>
    t.true(ls.filter(i => i.pinned).length === 2, JSON.stringify(ls))
    // replicating again fetches nothing
    const again = replicate(r, 'c', 'two')
    t.is(again.fetchedBytes, 0)
  }
)

test.serial('with α = 0 the cheap donor carries the bytes; with α = 1 the fast one carries most', async t => {
  const r = rig(t)
  r.net.shapeLink('a', 20) // cheap and slow
  r.net.shapeLink('b', 80) // dear and fast
  const size = 6 * MiB
  for (const name of ['p', 'q']) {
    fs.writeFileSync(path.join(r.dir, `${name}.raw`), randomBytes(size))
    for (const h of ['a', 'b'] as H[])
      t.is(
        vmifs(['import', path.join(r.dir, `${name}.raw`), '--name', name, '--quiet', '--data-dir', r.data(h)]).code,
        0
      )
  }
  await r.start('a', ['b'], { price: 0 })
  await r.start('b', ['a'], { price: 1e-9 })
  await r.start('c', ['a', 'b'], { links: { a: { bandwidth: '20Mbit' }, b: { bandwidth: '80Mbit' } } })
  await waitPlan(r, 'c', 'p', ['a', 'b'])
  await waitPlan(r, 'c', 'q', ['a', 'b'])
  const cheap = replicate(r, 'c', 'p', ['--alpha', '0'])
  const fast = replicate(r, 'c', 'q', ['--alpha', '1'])
  const share = (rep: ReplicateReport, h: H): number =>
    (rep.perDonor.find(d => d.donor === h)?.bytes ?? 0) / rep.fetchedBytes
  t.log(
    `α 0: a ${(share(cheap, 'a') * 100).toFixed(0)} % in ${cheap.makespan.toFixed(2)} s; ` +
      `α 1: b ${(share(fast, 'b') * 100).toFixed(0)} % in ${fast.makespan.toFixed(2)} s`
  )
  t.is(share(cheap, 'a'), 1, 'α 0: price alone, everything from the free donor')
  t.true(share(fast, 'b') > 0.7, 'α 1: time alone, the 4× faster donor carries ~80 %')
  t.true(fast.makespan < cheap.makespan, 'and it is faster')
})

/** Distinct data chunks of an image in a data dir: hash -> size. */
function chunksOf(data: string, name: string): Map<string, number> {
  const m = JSON.parse(vmifs(['manifest', name, '--data-dir', data]).stdout) as {
    chunks: Array<{ hash?: string; length: number }>
  }
  return new Map(m.chunks.filter(c => c.hash).map(c => [c.hash!, c.length]))
}

/** A placed replica: what its host last reported (nothing before its first report), current, dr. */
type Replica = Partial<ReplicaState> & { current: boolean; dr: boolean }

function replicaState(r: Rig, reader: H, image: string): Record<string, Replica> {
  const p = vmifs(['policy', 'show', image, '--json', '--host-id', reader, '--data-dir', r.data(reader)])
  if (p.code !== 0) return {}
  const j = (JSON.parse(p.stdout) as PolicyShown[])[0]
  return Object.fromEntries((j?.placement ?? []).map(x => [x.id, { ...x.state, current: x.current, dr: x.dr }]))
}

async function until(what: string, cond: () => boolean, ms = 60_000): Promise<void> {
  const t0 = Date.now()
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`)
    await sleep(200)
  }
}

/** Compressible, non-zero "file system" content: text lines, as in /etc or /usr/share/doc. */
function textLike(bytes: number, seed: number): Buffer {
  const words = [
    'server',
    'listen',
    'include',
    'location',
    'root',
    'index',
    'return',
    'error_page',
    'proxy_pass',
    'worker'
  ]
  let s = ''
  let x = seed
  while (s.length < bytes) {
    x = (x * 1103515245 + 12345) & 0x7fffffff
    s += `${words[x % 10]} ${x % 9973} ${words[(x >> 4) % 10]}/${(x >> 8) % 512};\n`
  }
  return Buffer.from(s.slice(0, bytes))
}

test.serial(
  'a new image version sends only its new chunks, the DR host first; a failed DR host hands DR duty to another replica',
  async t => {
    const r = rig(t)
    r.net.shapeLink('a', 40)
    const v1 = Buffer.concat([randomBytes(6 * MiB), textLike(2 * MiB, 7)])
    const v2 = Buffer.from(v1)
    randomBytes(256 * 1024).copy(v2, 3 * MiB) // a changed binary in the middle
    textLike(512 * 1024, 99).copy(v2, 7 * MiB) // and changed text files
    const v3 = Buffer.concat([v2, randomBytes(MiB)]) // a third version: 1 MiB more
    const file = (v: Buffer, n: string): string => {
      const f = path.join(r.dir, `${n}.raw`)
      fs.writeFileSync(f, v)
      return f
    }
    t.is(vmifs(['import', file(v1, 'v1'), '--name', 'web', '--quiet', '--data-dir', r.data('a')]).code, 0)
    const cfg = { replication: { drTimeoutMs: 20_000, intervalMs: 300 } }
    await r.start('a', ['b', 'c'], cfg)
    await r.start('b', ['a', 'c'], cfg)
    await r.start('c', ['a', 'b'], cfg)
    const set = vmifs(['policy', 'set', 'web', '--min-replicas', '2', '--dr', 'c', '--data-dir', r.data('a')])
    t.is(set.code, 0, set.stderr)

    // version 1 reaches both replicas, c (DR) first
    const digest = (n: string): string =>
      (JSON.parse(vmifs(['manifest', n, '--data-dir', r.data('a')]).stdout) as { digest: string }).digest
    let d = digest('web')
    await until('v1 on b and c', () => {
      const s = replicaState(r, 'a', 'web')
      return s.b?.current === true && s.c?.current === true
    })
    // ! below: replicas that are current have reported every figure
    let s = replicaState(r, 'a', 'web')
    t.true(s.c!.dr && s.c!.role === 'dr')
    t.true(s.c!.doneAt! <= s.b!.startedAt! + 50, `DR c done at ${s.c!.doneAt}, b started at ${s.b!.startedAt}`)

    // version 2 under the same name: only the new chunks travel, and c finishes first
    const old = chunksOf(r.data('a'), 'web')
    t.is(vmifs(['import', file(v2, 'v2'), '--name', 'web', '--replace', '--quiet', '--data-dir', r.data('a')]).code, 0)
    const now = chunksOf(r.data('a'), 'web')
    const newBytes = [...now].filter(([h]) => !old.has(h)).reduce((n, [, z]) => n + z, 0)
    const allBytes = [...now.values()].reduce((n, z) => n + z, 0)
    t.not(digest('web'), d)
    d = digest('web')
    await until('v2 on b and c', () => {
      const x = replicaState(r, 'a', 'web')
      return x.b?.current === true && x.c?.current === true && x.b.digest === d
    })
    s = replicaState(r, 'a', 'web')
    const b = s.b!
    const c = s.c!
    t.log(
      `v2: ${(newBytes / 1024).toFixed(0)} KiB of new chunks in ${(allBytes / MiB).toFixed(1)} MiB; ` +
        `c (DR) fetched ${(c.fetchedBytes! / 1024).toFixed(0)} KiB ` +
        `(${(c.wireBytes! / 1024).toFixed(0)} KiB on the wire) ` +
        `and was done ${c.doneAt! - c.startedAt!} ms after it started; ` +
        `b started ${b.startedAt! - c.doneAt!} ms after c was done, fetched ${(b.fetchedBytes! / 1024).toFixed(0)} KiB`
    )
    for (const h of ['b', 'c']) {
      t.is(s[h]!.fetchedBytes, newBytes, `${h} fetched exactly the new chunks`)
    }
    t.true(newBytes < 0.2 * allBytes)
    t.true(c.doneAt! <= b.startedAt! + 50, 'the DR host finished before the other replica began')
    t.true(c.wireBytes! < c.fetchedBytes!, 'the text part went compressed')
    // the replicas hold the whole new version, pinned: reading it fetches nothing
    for (const h of ['b', 'c'] as H[]) {
      const before = stats(r, h).fetch.bytes
      t.is(run('cmp', [file(v2, 'v2'), path.join(r.dir, h, 'mnt', 'images', 'web')], 60_000).status, 0)
      t.is(stats(r, h).fetch.bytes, before)
      const ls = JSON.parse(vmifs(['ls', '--json', '--data-dir', r.data(h)]).stdout) as Array<{
        name: string
        pinned: boolean
      }>
      t.true(ls.find(i => i.name === 'web')?.pinned, `${h} keeps web pinned`)
    }

    // the DR host fails; version 3: b takes DR duty and gets it
    await r.agents.get('c')!.stop('SIGTERM', 5000)
    t.is(vmifs(['import', file(v3, 'v3'), '--name', 'web', '--replace', '--quiet', '--data-dir', r.data('a')]).code, 0)
    d = digest('web')
    const t0 = Date.now()
    await until(
      'v3 on b',
      () => {
        const x = replicaState(r, 'a', 'web')
        return x.b?.current === true && x.b.digest === d
      },
      60_000
    )
    s = replicaState(r, 'a', 'web')
    t.log(
      `v3 with c down: b took DR duty (drFor ${s.b!.drFor}) ` +
        `and had it ${((Date.now() - t0) / 1000).toFixed(1)} s after the import`
    )
    t.is(s.b!.role, 'dr')
    t.is(s.b!.drFor, 'c')
    t.true(Date.now() - t0 < 20_000, 'without waiting out the DR timeout: c answers no health check')
  }
)
