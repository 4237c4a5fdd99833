// `vmifs hosts` on both metadata backends: every host with its state, and a host killed with
// kill -9 going stale and then dead within four heartbeats; on Redis, the holders following it forget it.
import test from 'ava'
import fs from 'node:fs'
import path from 'node:path'
import { BACKENDS, Fleet, TOKEN } from './fleet.js'
import { makeImage, run, sleep, vmifs } from './harness.js'
import type { HostRow } from '../../src/metadata/hosts.js'
import type { ReplicateReport } from '../../src/planner/replicate.js'

const HEARTBEAT = 400

for (const backend of BACKENDS) {
  test.serial(`vmifs hosts (${backend}): up, then stale and dead after kill -9`, async t => {
    const f = await Fleet.create(t, ['a', 'b'], { backend })
    const config = { heartbeatMs: HEARTBEAT }
    const img = path.join(f.dir, 'disk.raw')
    makeImage(img, 3)
    t.is(vmifs(['import', img, '--name', 'disk', '--data-dir', f.host('a').data]).code, 0)
    const a = await f.start('a', { config: { ...config, site: { rttMs: 3 } }, peers: backend === 'peers' ? ['b'] : [] })
    await f.start('b', { config, peers: backend === 'peers' ? ['a'] : [] })
    await f.waitFor('the image on b', () => fs.existsSync(f.image('b', 'disk')))
    t.is(run('cmp', [img, f.image('b', 'disk')]).status, 0)
    const hosts = (): HostRow[] =>
      (JSON.parse(vmifs(['hosts', '--json', '--data-dir', f.host('b').data]).stdout) as { hosts: HostRow[] }).hosts
    await f.waitFor('a up with its inventory', () => hosts().find(h => h.host === 'a')?.images === 1)
    const up = hosts()
    t.deepEqual(
      up.map(h => [h.host, h.state]),
      [
        ['a', 'up'],
        ['b', 'up']
      ]
    )
    const ha = up.find(h => h.host === 'a')!
    t.like(ha, { images: 1, wholeImages: 1, site: { rttMs: 3 }, price: 0 })
    t.true(ha.cacheSizeBytes! > 0 && ha.cacheCapacityBytes! > 0)
    const plain = vmifs(['hosts', '--data-dir', f.host('b').data])
    t.regex(plain.stdout, /^host +state +last seen/)
    t.regex(plain.stdout, /\na +up +\d+ s ago +3 ms/)
    await a.stop('SIGKILL')
    const killed = Date.now()
    const states = new Set<string>()
    await f.waitFor(
      'a dead',
      () => {
        const s = hosts().find(h => h.host === 'a')!.state
        states.add(s)
        return s === 'dead'
      },
      20 * HEARTBEAT
    )
    const ms = Date.now() - killed
    t.log(`${backend}: a dead ${ms} ms after kill -9 (heartbeat ${HEARTBEAT} ms), seen ${[...states].join(', ')}`)
    t.true(ms <= 6 * HEARTBEAT + 2000)
    if (backend === 'redis') {
      // b followed a as the holder of disk: it forgets a's holdings and chooses no dead holder
      await f.waitFor('b to forget a', () => f.stats('b').fleet!.metadata!.expired! >= 1, 20 * HEARTBEAT)
      await sleep(HEARTBEAT)
      t.is(f.stats('b').fleet!.metadata!.followedImages, 1)
    }
  })
}

for (const backend of BACKENDS) {
  test.serial(
    `a dead host is no longer chosen: holder choice and replication go to the live ones (${backend})`,
    async t => {
      const f = await Fleet.create(t, ['a', 'b', 'c'], { backend })
      const img = path.join(f.dir, 'disk.raw')
      makeImage(img, 6)
      for (const h of ['a', 'b'])
        t.is(vmifs(['import', img, '--name', 'disk', '--quiet', '--data-dir', f.host(h).data]).code, 0)
      const config = { heartbeatMs: HEARTBEAT }
      const a = await f.start('a', { config, peers: ['b', 'c'] })
      await f.start('b', { config, peers: ['a', 'c'] })
      // a is the cheaper holder for c: while it is up, c would take everything from it
      await f.start('c', {
        peers: ['a', 'b'],
        config: { ...config, links: { a: { price: 0 }, b: { price: 1e-5 } }, fetch: { alpha: 0, hedge: false } }
      })
      await f.waitFor('the image on c', () => fs.existsSync(f.image('c', 'disk')))
      await f.holdsAll('c', 'a', 'disk', 'a')
      await f.holdsAll('c', 'b', 'disk', 'b')
      await a.stop('SIGKILL')
      const killed = Date.now()
      const stateOnC = (): string | undefined =>
        (
          JSON.parse(vmifs(['hosts', '--json', '--data-dir', f.host('c').data]).stdout) as { hosts: HostRow[] }
        ).hosts.find(h => h.host === 'a')?.state
      await f.waitFor('a dead on c', () => stateOnC() === 'dead', 20 * HEARTBEAT)
      t.log(`${backend}: a dead on c ${Date.now() - killed} ms after kill -9`)
      const r = vmifs(['replicate', 'disk', '--json', '--alpha', '0', '--data-dir', f.host('c').data], {
        VMIFS_TOKEN: TOKEN
      })
      t.is(r.code, 0, r.stderr)
      const rep = JSON.parse(r.stdout) as ReplicateReport
      t.deepEqual(
        rep.perDonor.map(d => d.donor),
        ['b'],
        'the dead host is no donor'
      )
      t.is(rep.fallbackChunks, 0, 'nothing was first asked of the dead host')
      t.is(run('cmp', [img, f.image('c', 'disk')]).status, 0)
      const s = f.stats('c')
      t.is(s.fetch.byHolder.a, undefined, 'c never tried the dead host')
      t.true(s.fetch.byHolder.b!.bytes > 0)
      t.is(s.read.errors, 0)
    }
  )
}

test.serial(
  'on Redis, plan and place ask the engine for the holdings of an image this host does not follow, and skip the dead',
  async t => {
    const f = await Fleet.create(t, ['a', 'b', 'c'], { backend: 'redis' })
    const img = path.join(f.dir, 'disk.raw')
    makeImage(img, 4)
    for (const h of ['a', 'b'])
      t.is(vmifs(['import', img, '--name', 'disk', '--quiet', '--data-dir', f.host(h).data]).code, 0)
    const config = { heartbeatMs: HEARTBEAT }
    await f.start('a', { config })
    const b = await f.start('b', { config })
    await f.start('c', { config })
    await f.waitFor('the image on c', () => fs.existsSync(f.image('c', 'disk')))
    const cfgC = path.join(f.dir, 'c.json')
    const cli = (args: string[]): Record<string, unknown> => {
      const r = vmifs([...args, '--json', '--host-id', 'c', '--config', cfgC, '--data-dir', f.host('c').data])
      t.is(r.code, 0, r.stderr)
      t.notRegex(r.stderr, /METADATA_UNREACHABLE/)
      return JSON.parse(r.stdout) as Record<string, unknown>
    }
    interface Candidate {
      host: string
      missingBytes: number
      heldBytes: number
      unavailableBytes: number
      freeBytes: number | null
    }
    const place = (): Candidate[] => cli(['place', 'disk', '--candidates', 'a,b,c']).candidates as Candidate[]
    await f.waitFor('a and b announce disk whole', () =>
      place()
        .filter(x => x.host !== 'c')
        .every(x => x.missingBytes === 0 && x.unavailableBytes === 0 && x.heldBytes > 0)
    )
    // c never opened disk: its own copy has no holdings of it, so they came from the engine
    t.is(f.stats('c').fleet!.metadata!.followedImages, 0)
    const ranked = place()
    t.true(
      ranked.every(x => x.freeBytes !== null),
      "every host's free space, from its live key"
    )
    t.true(ranked.find(x => x.host === 'c')!.missingBytes > 0)
    type Plan = { need: { unavailableBytes: number; missingBytes: number }; donors: Array<{ id: string }> }
    const plan = (): Plan => cli(['plan', 'disk', '--to', 'c']) as unknown as Plan
    const before = plan()
    t.is(before.need.unavailableBytes, 0)
    t.deepEqual(before.donors.map(d => d.id).sort(), ['a', 'b'])
    await b.stop('SIGKILL')
    await f.waitFor('b no donor on c', () => !plan().donors.some(d => d.id === 'b'), 20 * HEARTBEAT)
    const after = plan()
    t.deepEqual(
      after.donors.map(d => d.id),
      ['a']
    )
    t.is(after.need.unavailableBytes, 0)
    // the engine gone: the command answers from c's own copy, and says so
    await f.redis!.stop()
    const r = vmifs([
      'place',
      'disk',
      '--candidates',
      'a,c',
      '--json',
      '--config',
      cfgC,
      '--data-dir',
      f.host('c').data
    ])
    t.is(r.code, 0, r.stderr)
    t.regex(r.stderr, /METADATA_UNREACHABLE/)
    const alone = (JSON.parse(r.stdout) as { candidates: Candidate[] }).candidates
    t.true(
      alone.every(x => x.unavailableBytes > 0 && (x.host === 'c' || x.freeBytes === null)),
      "c's copy knows no holder of disk"
    )
  }
)
