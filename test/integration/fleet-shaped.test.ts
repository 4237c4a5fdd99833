import test from 'ava'
import fs from 'node:fs'
import path from 'node:path'
import { withFleetNet } from './netns.js'
import { AgentProcess, abortMount, makeImage, run, tmpdir, vmifs } from './harness.js'
import { TOKEN } from './fleet.js'

// Hosts in their own network namespaces, linked through a bridge; tc tbf shapes each host's link
// (both directions). Agents run under `nsenter --net` (not `ip netns exec`, which also unshares the
// mount namespace and would hide their FUSE mounts from this test).
test.serial('over shaped links the faster holder is chosen and the measured throughput converges to the link rate', async (t) => {
  const net = withFleetNet(t, { hosts: ['a', 'b', 'c'] })
  const rate = { a: 16, b: 160 } // Mbit/s
  net.shapeLink('a', rate.a)
  net.shapeLink('b', rate.b)
  const dir = tmpdir('vmifs-shaped-')
  const agents: AgentProcess[] = []
  t.teardown(async () => {
    for (const a of agents) await a.stop('SIGTERM', 5000).catch(() => {})
    for (const h of ['a', 'b', 'c']) abortMount(path.join(dir, h, 'mnt'))
    fs.rmSync(dir, { recursive: true, force: true })
  })
  const img = path.join(dir, 'disk.raw')
  makeImage(img, 96) // 37 MiB of data, the rest zero runs and repeats
  const url = (h: 'a' | 'b' | 'c'): string => `http://${net.addr(h)}:7070`
  const start = async (h: 'a' | 'b' | 'c', peers: Array<'a' | 'b' | 'c'>): Promise<AgentProcess> => {
    const base = path.join(dir, h)
    fs.mkdirSync(path.join(base, 'mnt'), { recursive: true })
    fs.writeFileSync(path.join(base, 'config.json'), JSON.stringify({ token: TOKEN, syncIntervalMs: 200 }))
    const a = new AgentProcess(path.join(base, 'mnt'), path.join(base, 'data'),
      ['--host-id', h, '--config', path.join(base, 'config.json'), '--listen', `${net.addr(h)}:7070`, ...peers.flatMap(p => ['--peer', url(p)])],
      { VMIFS_LOG_LEVEL: 'warn' }, ['nsenter', `--net=/run/netns/${net.ns(h)}`])
    agents.push(a)
    await a.ready()
    return a
  }
  // A and B both hold the whole image (imported on each); C holds nothing
  for (const h of ['a', 'b']) t.is(vmifs(['import', img, '--name', 'disk', '--data-dir', path.join(dir, h, 'data')]).code, 0)
  await start('a', ['b'])
  await start('b', ['a'])
  await start('c', ['a', 'b'])
  const cImage = path.join(dir, 'c', 'mnt', 'images', 'disk')
  const stats = (): any => JSON.parse(run('cat', [path.join(dir, 'c', 'mnt', '.stats')]).stdout)
  for (let i = 0; !fs.existsSync(cImage) || (stats().fleet.cursors.b ?? 0) < 3 || (stats().fleet.cursors.a ?? 0) < 3; i++) {
    if (i > 150) throw new Error('C did not learn the image and its holders')
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  const t0 = Date.now()
  t.is(run('cmp', [img, cImage], 120_000).status, 0)
  const s = stats()
  const secs = (Date.now() - t0) / 1000
  const share = s.fetch.byHolder.b.bytes / s.fetch.bytes
  const bMeasured = s.fleet.links.b.bandwidthBps * 8 / 1e6
  const aMeasured = s.fleet.links.a ? s.fleet.links.a.bandwidthBps * 8 / 1e6 : NaN
  t.log(`${(s.fetch.bytes / 1048576).toFixed(1)} MiB in ${secs.toFixed(1)} s; from B ${(share * 100).toFixed(1)} %; measured B ${bMeasured.toFixed(0)} Mbit/s (link ${rate.b}), A ${aMeasured.toFixed(1)} Mbit/s (link ${rate.a})`)
  t.true(share > 0.8, 'the faster holder served most of the bytes')
  t.true(bMeasured > rate.b * 0.6 && bMeasured < rate.b * 1.4, `measured ${bMeasured} Mbit/s for a ${rate.b} Mbit/s link`)
  if (!Number.isNaN(aMeasured) && s.fetch.byHolder.a.bytes > 1024 * 1024) t.true(aMeasured < rate.a * 1.5, `A measured ${aMeasured} Mbit/s`)
})
