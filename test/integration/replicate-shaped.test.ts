// `vmifs replicate` and replication policies with three real agents in network namespaces, each
// donor's link shaped with tc tbf (see fleet-shaped.test.ts; agents run under `nsenter --net`).
import test from 'ava'
import fs from 'node:fs'
import path from 'node:path'
import { randomBytes } from 'node:crypto'
import { type FleetNet, withFleetNet } from './netns.js'
import { AgentProcess, abortMount, run, sleep, tmpdir, vmifs } from './harness.js'
import { TOKEN } from './fleet.js'

const MiB = 1024 * 1024
type H = 'a' | 'b' | 'c'

interface Rig { net: FleetNet, dir: string, data: (h: H) => string, start: (h: H, peers: H[], config?: Record<string, unknown>) => Promise<AgentProcess>, agents: Map<H, AgentProcess> }

function rig (t: any, hosts: H[] = ['a', 'b', 'c']): Rig {
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
    fs.writeFileSync(path.join(base, 'config.json'), JSON.stringify({ token: TOKEN, syncIntervalMs: 200, ...config }))
    const a = new AgentProcess(path.join(base, 'mnt'), data(h),
      ['--host-id', h, '--config', path.join(base, 'config.json'), '--listen', `${net.addr(h)}:7070`, ...peers.flatMap(p => ['--peer', `http://${net.addr(p)}:7070`])],
      { VMIFS_LOG_LEVEL: process.env.VMIFS_TEST_LOG ?? 'warn' }, ['nsenter', `--net=/run/netns/${net.ns(h)}`])
    agents.set(h, a)
    await a.ready()
    return a
  }
  return { net, dir, data, start, agents }
}

/** Waits until `target`'s copy of the table shows `donors` holding every chunk of `image` it lacks. */
async function waitPlan (r: Rig, target: H, image: string, donors: H[], ms = 30_000): Promise<any> {
  const t0 = Date.now()
  for (;;) {
    const p = vmifs(['plan', image, '--to', target, '--json', '--host-id', target, '--data-dir', r.data(target)])
    if (p.code === 0) {
      const j = JSON.parse(p.stdout)
      if (j.need.unavailableChunks === 0 && j.groups.length > 0 && j.groups.every((g: any) => donors.every(d => g.donors.includes(d)))) return j
    }
    if (Date.now() - t0 > ms) throw new Error(`${target} never saw ${donors.join(',')} hold ${image}: ${p.stderr}${p.stdout.slice(0, 300)}`)
    await sleep(200)
  }
}

function replicate (r: Rig, target: H, image: string, extra: string[] = []): any {
  const p = vmifs(['replicate', image, '--json', '--data-dir', r.data(target), ...extra], {}, 180_000)
  if (p.code !== 0) throw new Error(`replicate ${image} on ${target}: ${p.stderr}`)
  return JSON.parse(p.stdout)
}

function stats (r: Rig, h: H): any { return JSON.parse(run('cat', [path.join(r.dir, h, 'mnt', '.stats')]).stdout) }

test.serial('two equal donors give about half the single-source makespan; the copy is whole, verified and pinned', async (t) => {
  const r = rig(t)
  const rate = 40 // Mbit/s on each donor's link
  r.net.shapeLink('a', rate)
  r.net.shapeLink('b', rate)
  const size = 12 * MiB
  const files: Record<string, Buffer> = {}
  for (const name of ['one', 'two']) {
    files[name] = randomBytes(size) // incompressible: the wire carries every byte
    fs.writeFileSync(path.join(r.dir, `${name}.raw`), files[name]!)
    for (const h of ['a', 'b'] as H[]) t.is(vmifs(['import', path.join(r.dir, `${name}.raw`), '--name', name, '--quiet', '--data-dir', r.data(h)]).code, 0)
  }
  const links = { a: { bandwidth: `${rate}Mbit` }, b: { bandwidth: `${rate}Mbit` } }
  await r.start('a', ['b'])
  await r.start('b', ['a'])
  await r.start('c', ['a', 'b'], { links })
  await waitPlan(r, 'c', 'one', ['a', 'b'])
  await waitPlan(r, 'c', 'two', ['a', 'b'])

  const single = replicate(r, 'c', 'one', ['--method', 'single-source'])
  const lp = replicate(r, 'c', 'two', ['--alpha', '0.9'])
  t.log(`single-source: ${single.makespan.toFixed(2)} s (predicted ${single.predicted.seconds.toFixed(2)}), from ${single.perDonor.map((d: any) => `${d.donor} ${(d.bytes / MiB).toFixed(1)} MiB`).join(', ')}`)
  t.log(`lp: ${lp.makespan.toFixed(2)} s (predicted ${lp.predicted.seconds.toFixed(2)}), from ${lp.perDonor.map((d: any) => `${d.donor} ${(d.bytes / MiB).toFixed(1)} MiB in ${d.seconds.toFixed(2)} s`).join(', ')}`)
  t.is(single.perDonor.length, 1)
  t.is(lp.perDonor.length, 2)
  for (const d of lp.perDonor) t.true(d.bytes > 0.4 * size && d.bytes < 0.6 * size, `${d.donor} sent ${d.bytes} of ${size}`)
  t.is(single.fetchedBytes, size)
  t.is(lp.fetchedBytes, size)
  const ratio = lp.makespan / single.makespan
  t.true(ratio > 0.3 && ratio < 0.75, `two donors took ${(ratio * 100).toFixed(0)} % of the single-source time`)
  // the single-source copy ran near the link rate (the shaping is real)
  const linkSec = size * 8 / (rate * 1e6)
  t.true(single.makespan > 0.8 * linkSec, `single-source took ${single.makespan} s for ${linkSec} s of link time`)
  t.true(single.makespan < 3 * linkSec + 2)

  // whole, verified, pinned, announced: reads are all hits and the images are pinned on c
  const before = stats(r, 'c')
  for (const name of ['one', 'two']) t.is(run('cmp', [path.join(r.dir, `${name}.raw`), path.join(r.dir, 'c', 'mnt', 'images', name)], 60_000).status, 0)
  const after = stats(r, 'c')
  t.is(after.fetch.bytes, before.fetch.bytes, 'nothing fetched on read: the copies are whole')
  t.true(after.cache.pinnedBytes >= 2 * size)
  const ls = JSON.parse(vmifs(['ls', '--json', '--data-dir', r.data('c')]).stdout) as Array<{ name: string, pinned: boolean }>
  t.true(ls.filter(i => i.pinned).length === 2, JSON.stringify(ls))
  // replicating again fetches nothing
  const again = replicate(r, 'c', 'two')
  t.is(again.fetchedBytes, 0)
})

test.serial('with α = 0 the cheap donor carries the bytes; with α = 1 the fast one carries most', async (t) => {
  const r = rig(t)
  r.net.shapeLink('a', 20) // cheap and slow
  r.net.shapeLink('b', 80) // dear and fast
  const size = 6 * MiB
  for (const name of ['p', 'q']) {
    fs.writeFileSync(path.join(r.dir, `${name}.raw`), randomBytes(size))
    for (const h of ['a', 'b'] as H[]) t.is(vmifs(['import', path.join(r.dir, `${name}.raw`), '--name', name, '--quiet', '--data-dir', r.data(h)]).code, 0)
  }
  await r.start('a', ['b'], { price: 0 })
  await r.start('b', ['a'], { price: 1e-9 })
  await r.start('c', ['a', 'b'], { links: { a: { bandwidth: '20Mbit' }, b: { bandwidth: '80Mbit' } } })
  await waitPlan(r, 'c', 'p', ['a', 'b'])
  await waitPlan(r, 'c', 'q', ['a', 'b'])
  const cheap = replicate(r, 'c', 'p', ['--alpha', '0'])
  const fast = replicate(r, 'c', 'q', ['--alpha', '1'])
  const share = (rep: any, h: H): number => (rep.perDonor.find((d: any) => d.donor === h)?.bytes ?? 0) / rep.fetchedBytes
  t.log(`α 0: a ${(share(cheap, 'a') * 100).toFixed(0)} % in ${cheap.makespan.toFixed(2)} s; α 1: b ${(share(fast, 'b') * 100).toFixed(0)} % in ${fast.makespan.toFixed(2)} s`)
  t.is(share(cheap, 'a'), 1, 'α 0: price alone, everything from the free donor')
  t.true(share(fast, 'b') > 0.7, 'α 1: time alone, the 4× faster donor carries ~80 %')
  t.true(fast.makespan < cheap.makespan, 'and it is faster')
})
