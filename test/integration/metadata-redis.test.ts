// The metadata table on a real redis-server: agents that share no peers learn of each other's
// images and holdings through the engine alone, follow holdings only of the images they use, and
// refuse what their origins did not sign.
import test from 'ava'
import fs from 'node:fs'
import path from 'node:path'
import { Fleet } from './fleet.js'
import { freePort } from '../../src/util/ports.js'
import { makeImage, run, sleep, vmifs } from './harness.js'
import { Redis } from 'ioredis'
import { startRedis } from '../helpers/redis.js'

test.serial(
  'on Redis: an image imported on A appears on B, which reads it byte-exact from A ' +
    'and follows only the holdings of what it reads',
  async t => {
    const f = await Fleet.create(t, ['a', 'b'])
    const redis = await startRedis(t, path.join(f.dir, 'redis'), await freePort())
    const img = path.join(f.dir, 'disk.raw')
    makeImage(img, 12)
    const other = path.join(f.dir, 'other.raw')
    makeImage(other, 3)
    t.is(vmifs(['import', img, '--name', 'disk', '--data-dir', f.host('a').data]).code, 0)
    t.is(vmifs(['import', other, '--name', 'other', '--data-dir', f.host('a').data]).code, 0)
    const config = { metadata: redis.url }
    await f.start('a', { config })
    await f.start('b', { config })
    const t0 = Date.now()
    await f.waitFor(
      'the images on b',
      () => fs.existsSync(f.image('b', 'disk')) && fs.existsSync(f.image('b', 'other'))
    )
    t.log(`published to b's mount through Redis in ${Date.now() - t0} ms`)
    const db = redis.client()
    // each host's facts are in its own keys, signed
    const aFacts = await db.hgetall('vmifs:g:a')
    t.truthy(aFacts.host)
    t.truthy(aFacts['image/disk'])
    t.regex(aFacts['image/disk']!, /^\d+ \S+ \{/)
    t.true((await db.pttl('vmifs:live:a')) > 0)
    // B has not used an image yet: it holds no holdings of A
    const before = f.stats('b')
    t.is(before.fleet!.metadata!.backend, 'redis')
    t.true(before.fleet!.metadata!.connected)
    t.is(before.fleet!.metadata!.followedImages, 0)
    t.is(run('cmp', [img, f.image('b', 'disk')]).status, 0)
    const s = f.stats('b')
    t.true(s.fetch.byHolder.a!.bytes > 0, 'fetched from A, the holder the engine named')
    t.is(s.fleet!.metadata!.followedImages, 1, 'only the image read is followed')
    t.true((s.fleet!.metadata!.lookups ?? 0) >= 1)
    // B's own holdings of the image reach the engine (for others that read it)
    const key = `hold/${s.images.disk!.digest}`
    // (a recount that finds none of it yet says nothing: the first word is the ranges read)
    for (let i = 0; i < 100 && !/"ranges"/.test((await db.hget('vmifs:s:b', key)) ?? ''); i++) await sleep(100)
    t.regex((await db.hget('vmifs:s:b', key)) ?? '', /"ranges"/)
  }
)

test.serial(
  'on Redis with ACL users: a host can write only its own keys, and a fact its origin did not sign is refused',
  async t => {
    const f = await Fleet.create(t, ['a', 'b'])
    const pass = (h: string): string => path.join(f.dir, `${h}.redis-password`)
    const rules = ['a', 'b'].map(h => {
      const r = vmifs(['fleet', 'redis-user', h, '--password-out', pass(h)])
      t.is(r.code, 0, r.stderr)
      return r.stdout.trim()
    })
    t.regex(rules[0]!, /^user vmifs-a on #[0-9a-f]{64} /)
    t.false(rules[0]!.includes(fs.readFileSync(pass('a'), 'utf8').trim()), 'the rule holds the hash only')
    t.is((fs.statSync(pass('a')).mode & 0o777).toString(8), '600')
    t.is(vmifs(['fleet', 'redis-user', 'a', '--password-out', pass('a')]).code, 1, 'a password is never overwritten')
    const port = await freePort()
    const redis = await startRedis(t, path.join(f.dir, 'redis'), port, {
      acl: ['user default on nopass ~* &* +@all', ...rules]
    })
    for (const h of ['a', 'b'])
      await f.start(h, {
        config: { metadata: `redis://vmifs-${h}@127.0.0.1:${port}`, metadataPasswordFile: pass(h) }
      })
    const img = path.join(f.dir, 'disk.raw')
    makeImage(img, 3)
    t.is(vmifs(['import', img, '--name', 'disk', '--data-dir', f.host('a').data]).code, 0)
    await f.waitFor('the image on b', () => fs.existsSync(f.image('b', 'disk')))
    t.is(run('cmp', [img, f.image('b', 'disk')]).status, 0)
    // a's credentials: its own keys, and nobody else's
    const asA = new Redis({ port, username: 'vmifs-a', password: fs.readFileSync(pass('a'), 'utf8').trim() })
    t.teardown(() => asA.disconnect())
    await t.throwsAsync(asA.hset('vmifs:g:b', 'image/evil', 'x'), { message: /NOPERM/ })
    await t.throwsAsync(asA.set('vmifs:live:b', 'x'), { message: /NOPERM/ })
    t.truthy(await asA.hget('vmifs:g:b', 'host'), 'every host reads every host')
    // a message in a's name that a did not sign (its signature of another fact) changes nothing on b
    const db = redis.client()
    const real = (await db.hget('vmifs:g:a', 'image/disk'))!
    const refused = f.stats('b').fleet!.metadata!.refused!
    await db.publish('vmifs:c:g', `a\nimage/evil\n${real}`)
    await f.waitFor('b to refuse the forged fact', () => f.stats('b').fleet!.metadata!.refused! > refused)
    t.false(fs.existsSync(f.image('b', 'evil')))
  }
)
