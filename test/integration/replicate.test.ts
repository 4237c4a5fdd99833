// `vmifs replicate` and `vmifs policy` as a user runs them, on a loopback fleet: a copy started
// from another host over the peer protocol, a donor that sends wrong bytes, and bad input.
import test from 'ava'
import fs from 'node:fs'
import path from 'node:path'
import { BACKENDS, Fleet, faultyProxy } from './fleet.js'
import { fixture, makeImage, run, vmifs } from './harness.js'
import type { PolicyShown } from '../helpers/cli-json.js'
import type { ReplicateReport } from '../../src/planner/replicate.js'

const code = (r: { stderr: string }): string | undefined => /\[([A-Z_]+)\]\s*$/.exec(r.stderr.trim())?.[1]

for (const backend of BACKENDS) {
  test.serial(
    `replicate --to another host runs in that host's agent over the peer protocol; ` +
      `the copy is whole and pinned (${backend})`,
    async t => {
      const f = await Fleet.create(t, ['a', 'b', 'c'], { backend })
      const img = path.join(f.dir, 'disk.raw')
      makeImage(img, 12)
      t.is(vmifs(['import', img, '--name', 'disk', '--quiet', '--data-dir', f.host('a').data]).code, 0)
      await f.start('a', { peers: ['b', 'c'] })
      await f.start('b', { peers: ['a', 'c'] })
      await f.start('c', { peers: ['a', 'b'] })
      await f.waitFor('the image on c', () => fs.existsSync(f.image('c', 'disk')))
      await f.holdsAll('c', 'a', 'disk', 'a')
      await f.synced('b', 'c') // b knows c's endpoint
      // asked on b, done by c
      const r = vmifs(['replicate', 'disk', '--to', 'c', '--json', '--data-dir', f.host('b').data], {
        VMIFS_TOKEN: 'fleet-test-secret'
      })
      t.is(r.code, 0, r.stderr)
      const rep = JSON.parse(r.stdout) as ReplicateReport
      t.is(rep.target, 'c')
      t.is(rep.perDonor.length, 1)
      t.is(rep.perDonor[0]!.donor, 'a')
      t.true(rep.fetchedBytes > 0 && rep.fetchedBytes === rep.bytes)
      const s = f.stats('c')
      t.is(run('cmp', [img, f.image('c', 'disk')], 60_000).status, 0)
      t.is(f.stats('c').fetch.bytes, s.fetch.bytes, 'reading the copy fetches nothing')
      const ls = JSON.parse(vmifs(['ls', '--json', '--data-dir', f.host('c').data]).stdout) as Array<{
        name: string
        pinned: boolean
      }>
      t.true(ls.find(i => i.name === 'disk')!.pinned)
      // the human report
      const again = vmifs(['replicate', 'disk', '--to', 'c', '--data-dir', f.host('b').data], {
        VMIFS_TOKEN: 'fleet-test-secret'
      })
      t.is(again.code, 0, again.stderr)
      t.regex(again.stdout, /disk -> c: held .* fetched 0 chunks/)
      // unknown host and image
      t.is(
        code(
          vmifs(['replicate', 'disk', '--to', 'nope', '--data-dir', f.host('b').data], {
            VMIFS_TOKEN: 'fleet-test-secret'
          })
        ),
        'HOST_NOT_FOUND'
      )
      t.is(
        code(
          vmifs(['replicate', 'nope', '--to', 'c', '--data-dir', f.host('b').data], {
            VMIFS_TOKEN: 'fleet-test-secret'
          })
        ),
        'IMAGE_NOT_FOUND'
      )
    }
  )
}

test.serial(
  'a donor that sends wrong bytes does not spoil the copy: those chunks come from another holder',
  async t => {
    const f = await Fleet.create(t, ['a', 'b', 'c'])
    const img = path.join(f.dir, 'disk.raw')
    makeImage(img, 12)
    for (const h of ['a', 'b'])
      t.is(vmifs(['import', img, '--name', 'disk', '--quiet', '--data-dir', f.host(h).data]).code, 0)
    const proxy = await faultyProxy(f.host('b').port, 'corrupt')
    t.teardown(async () => {
      await proxy.close()
    })
    await f.start('a', { peers: ['b', 'c'] })
    await f.start('b', { peers: ['a', 'c'], advertise: proxy.url }) // others reach b through the proxy
    await f.start('c', { peers: ['a', 'b'] })
    await f.holdsAll('c', 'a', 'disk', 'a')
    await f.holdsAll('c', 'b', 'disk', 'b')
    const r = vmifs(['replicate', 'disk', '--json', '--alpha', '1', '--data-dir', f.host('c').data])
    t.is(r.code, 0, r.stderr)
    const rep = JSON.parse(r.stdout) as ReplicateReport
    const fromB = rep.perDonor.find(d => d.donor === 'b')
    t.truthy(fromB, 'b had a share')
    t.true(fromB!.failed > 0, 'its corrupt chunks were refused')
    t.is(rep.fallbackChunks, fromB!.failed)
    t.is(run('cmp', [img, f.image('c', 'disk')], 60_000).status, 0)
  }
)

test('replicate and policy: help, usage errors and codes', async t => {
  const fx = fixture(t)
  for (const c of ['replicate', 'policy']) {
    const h = vmifs([c, '--help'])
    t.is(h.code, 0)
    t.regex(h.stdout, new RegExp(`Usage: vmifs ${c}`))
  }
  t.is(vmifs(['replicate']).code, 2)
  t.is(vmifs(['policy']).code, 2)
  t.is(vmifs(['policy', 'set', 'web']).code, 2, '--min-replicas is required')
  t.is(code(vmifs(['replicate', 'x', '--method', 'fastest', '--data-dir', fx.data])), 'PARAM_INVALID')
  t.is(code(vmifs(['replicate', 'x', '--data-dir', fx.data])), 'AGENT_NOT_RUNNING')
  t.is(code(vmifs(['policy', 'set', 'web', '--min-replicas=-1', '--data-dir', fx.data])), 'PARAM_INVALID')
  t.is(
    code(vmifs(['policy', 'set', 'web', '--min-replicas', '0', '--dr', 'b', '--data-dir', fx.data])),
    'PARAM_INVALID'
  )
  t.is(code(vmifs(['policy', 'set', 'bad/name', '--min-replicas', '1', '--data-dir', fx.data])), 'NAME_INVALID')
  t.is(code(vmifs(['policy', 'rm', 'web', '--data-dir', fx.data])), 'POLICY_NOT_FOUND')
  const set = vmifs([
    'policy',
    'set',
    'web',
    '--min-replicas',
    '2',
    '--dr',
    'b',
    '--max-rtt-ms',
    '40',
    '--host-id',
    'a',
    '--data-dir',
    fx.data
  ])
  t.is(set.code, 0, set.stderr)
  const show = JSON.parse(
    vmifs(['policy', 'show', '--json', '--host-id', 'a', '--data-dir', fx.data]).stdout
  ) as PolicyShown[]
  t.like(show[0], { image: 'web', policy: { minReplicas: 2, dr: 'b', maxRttMs: 40 }, setBy: 'a', known: false })
  t.is(vmifs(['policy', 'rm', 'web', '--host-id', 'a', '--data-dir', fx.data]).code, 0)
  t.deepEqual(JSON.parse(vmifs(['policy', 'show', '--json', '--host-id', 'a', '--data-dir', fx.data]).stdout), [])
  // a single-host agent has nothing to replicate from
  const img = path.join(fx.dir, 'd.raw')
  makeImage(img, 3)
  t.is(vmifs(['import', img, '--name', 'd', '--quiet', '--data-dir', fx.data]).code, 0)
  await fx.start()
  t.is(code(vmifs(['replicate', 'd', '--data-dir', fx.data])), 'NOT_FLEET_MODE')
  // a bad policy in a config file
  const cfg = path.join(fx.dir, 'bad.json')
  fs.writeFileSync(cfg, JSON.stringify({ policies: { web: { minReplicas: 'two' } } }))
  t.is(code(vmifs(['ls', '--config', cfg, '--data-dir', fx.data])), 'CONFIG_INVALID')
})

test.serial(
  "a policy from the publisher's config places the replica on the site within its latency limit; " +
    'a lower minimum unpins it',
  async t => {
    const f = await Fleet.create(t, ['a', 'b', 'c'])
    const img = path.join(f.dir, 'disk.raw')
    makeImage(img, 6)
    t.is(vmifs(['import', img, '--name', 'disk', '--quiet', '--data-dir', f.host('a').data]).code, 0)
    const repl = { replication: { intervalMs: 300 } }
    await f.start('a', { peers: ['b', 'c'], config: { ...repl, policies: { disk: { minReplicas: 1, maxRttMs: 50 } } } })
    // c's storage is cheaper, but its users see 120 ms: outside the limit
    await f.start('b', { peers: ['a', 'c'], config: { ...repl, site: { rttMs: 10, storagePrice: 5e-12 } } })
    await f.start('c', { peers: ['a', 'b'], config: { ...repl, site: { rttMs: 120, storagePrice: 1e-12 } } })
    const show = (h: string): PolicyShown | undefined =>
      (
        JSON.parse(
          vmifs(['policy', 'show', 'disk', '--json', '--host-id', h, '--data-dir', f.host(h).data]).stdout
        ) as PolicyShown[]
      )[0]
    await f.waitFor('b to hold its replica', () => show('a')?.placement?.[0]?.current === true, 30_000)
    const p = show('a')!
    t.deepEqual(
      p.placement!.map(r => r.id),
      ['b']
    )
    t.deepEqual(p.excluded, [{ id: 'c', why: 'latency 120 ms > 50 ms' }])
    const pinned = (h: string): boolean | undefined =>
      (
        JSON.parse(vmifs(['ls', '--json', '--data-dir', f.host(h).data]).stdout) as Array<{
          name: string
          pinned: boolean
        }>
      ).find(i => i.name === 'disk')?.pinned
    t.true(pinned('b'))
    t.false(pinned('c'))
    // a policy set later anywhere overrides the config's: no replicas, and b unpins
    t.is(
      vmifs(['policy', 'set', 'disk', '--min-replicas', '0', '--host-id', 'c', '--data-dir', f.host('c').data]).code,
      0
    )
    await f.waitFor('b to unpin', () => pinned('b') === false, 30_000)
    t.is(show('b')!.policy.minReplicas, 0)
  }
)
