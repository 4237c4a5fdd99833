// The metadata table on Redis when the engine fails: agents keep serving reads from the holders
// they know while it is away and catch up when it is back, even empty; and with three nodes under
// Sentinel, the primary killed, the fleet goes on through the replica Sentinel promotes.
import test from 'ava'
import fs from 'node:fs'
import path from 'node:path'
import { Fleet } from './fleet.js'
import { freePort } from '../../src/util/ports.js'
import { makeImage, run, vmifs } from './harness.js'
import { startRedis, startSentinel } from '../helpers/redis.js'

test.serial(
  'Redis unreachable: reads go on from the holders known here; ' +
    'back (and empty), every host writes its facts again and catches up',
  async t => {
    const f = await Fleet.create(t, ['a', 'b'], { backend: 'redis' })
    const img = path.join(f.dir, 'disk.raw')
    makeImage(img, 12)
    const late = path.join(f.dir, 'late.raw')
    makeImage(late, 3)
    t.is(vmifs(['import', img, '--name', 'disk', '--data-dir', f.host('a').data]).code, 0)
    await f.start('a')
    await f.start('b')
    await f.waitFor('the image on b', () => fs.existsSync(f.image('b', 'disk')))
    await f.holdsAll('b', 'a', 'disk', 'a') // b uses disk and follows a's holdings of it
    await f.redis!.stop()
    await f.waitFor('b to lose the engine', () => !f.stats('b').fleet!.metadata!.connected)
    const t0 = Date.now()
    t.is(run('cmp', [img, f.image('b', 'disk')], 60_000).status, 0, 'read whole while the engine is away')
    t.log(`read 12 MiB from a in ${Date.now() - t0} ms with the engine away`)
    const s = f.stats('b')
    t.true(s.fetch.byHolder.a!.bytes > 0)
    t.is(s.read.errors, 0)
    // published on a while the engine is away: it goes out when the engine is back
    t.is(vmifs(['import', late, '--name', 'late', '--data-dir', f.host('a').data]).code, 0)
    await f.restartRedis()
    const t1 = Date.now()
    await f.waitFor('late on b', () => fs.existsSync(f.image('b', 'late')), 30_000)
    t.log(`caught up ${Date.now() - t1} ms after the engine came back empty`)
    t.is(run('cmp', [late, f.image('b', 'late')], 60_000).status, 0)
    const m = f.stats('b').fleet!.metadata!
    t.true(m.connected)
    t.true(m.catchUps! >= 2)
    // each host's facts are in the engine again, written by their own host
    const db = f.redis!.client()
    t.truthy(await db.hget('vmifs:g:a', 'image/late'))
    t.truthy(await db.hget('vmifs:g:b', 'host'))
    t.true((await db.pttl('vmifs:live:b')) > 0)
  }
)

test.serial(
  'three Redis nodes under Sentinel: with the primary killed, a publication still reaches every host',
  async t => {
    const f = await Fleet.create(t, ['a', 'b'])
    const dir = path.join(f.dir, 'redis')
    const ports = [await freePort(), await freePort(), await freePort()]
    // replicas synced at once (not after the 5 s a primary waits for more of them by default)
    const primary = await startRedis(t, path.join(dir, 'n0'), ports[0]!, { args: ['--repl-diskless-sync-delay', '0'] })
    const replicas = []
    for (const i of [1, 2])
      replicas.push(
        await startRedis(t, path.join(dir, `n${i}`), ports[i]!, {
          args: ['--replicaof', '127.0.0.1', String(ports[0]), '--repl-diskless-sync-delay', '0']
        })
      )
    for (const r of replicas) {
      const c = r.client()
      for (let i = 0; !(await c.info('replication')).includes('master_link_status:up'); i++) {
        if (i > 300) throw new Error('a replica did not sync')
        await new Promise(resolve => setTimeout(resolve, 50))
      }
    }
    const sports = [await freePort(), await freePort(), await freePort()]
    const sentinels = []
    for (const [i, p] of sports.entries())
      sentinels.push(await startSentinel(t, path.join(dir, `s${i}`), p, 'vmifs', ports[0]!))
    // the sentinels know each other and both replicas before the primary goes
    const s0 = sentinels[0]!.client()
    const master = async (): Promise<Record<string, string>> => {
      const flat = (await s0.call('SENTINEL', 'master', 'vmifs')) as string[]
      const o: Record<string, string> = {}
      for (let i = 0; i + 1 < flat.length; i += 2) o[flat[i]!] = flat[i + 1]!
      return o
    }
    for (let i = 0; ; i++) {
      const m = await master()
      if (m['num-other-sentinels'] === '2' && m['num-slaves'] === '2') break
      if (i > 300) throw new Error(`the sentinels did not settle: ${JSON.stringify(m)}`)
      await new Promise(resolve => setTimeout(resolve, 100))
    }
    const url = `redis+sentinel://${sports.map(p => `127.0.0.1:${p}`).join(',')}/vmifs`
    await f.start('a', { config: { metadata: url } })
    await f.start('b', { config: { metadata: url } })
    const img = path.join(f.dir, 'disk.raw')
    makeImage(img, 3)
    t.is(vmifs(['import', img, '--name', 'disk', '--data-dir', f.host('a').data]).code, 0)
    await f.waitFor('the image on b', () => fs.existsSync(f.image('b', 'disk')))
    t.is(run('cmp', [img, f.image('b', 'disk')]).status, 0)
    // what the hosts wrote is on both replicas (asynchronous replication: without this, the last
    // writes could be lost with the primary; the hosts would write them again, a later path)
    t.is(await primary.client().call('WAIT', '2', '5000'), 2)
    await primary.stop() // SIGKILL
    const killed = Date.now()
    const later = path.join(f.dir, 'later.raw')
    makeImage(later, 3)
    t.is(vmifs(['import', later, '--name', 'later', '--data-dir', f.host('a').data]).code, 0)
    await f.waitFor('later on b', () => fs.existsSync(f.image('b', 'later')), 60_000)
    t.log(`a publication reached b ${Date.now() - killed} ms after the primary was killed`)
    t.is(run('cmp', [later, f.image('b', 'later')]).status, 0)
    // every sentinel learns of the new primary (the one that led the failover first)
    let now = await master()
    for (let i = 0; now.port === String(ports[0]) && i < 300; i++) {
      await new Promise(resolve => setTimeout(resolve, 100))
      now = await master()
    }
    t.true(ports.slice(1).map(String).includes(now.port!), 'a replica was promoted')
    for (const h of ['a', 'b']) t.true(f.stats(h).fleet!.metadata!.connected, `${h} connected to the new primary`)
  }
)
