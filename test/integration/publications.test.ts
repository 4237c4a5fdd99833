// Signed publications with real agents: names under a prefix the config gives an offline publisher
// key are listed only when that key signed them, on every host; a name no prefix covers belongs to
// the first host seen publishing it; `vmifs sign` on a running agent's data dir reaches the fleet.
import test from 'ava'
import fs from 'node:fs'
import path from 'node:path'
import { Fleet } from './fleet.js'
import { TRUST } from './admit.js'
import { makeImage, run, vmifs } from './harness.js'
import { SigningKey } from '../../src/trust/keys.js'

test.serial(
  'an image not signed by an accepted publisher is not listed anywhere; a name belongs to its first publisher',
  async t => {
    const f = await Fleet.create(t, ['a', 'b', 'c'])
    const prod = SigningKey.generate()
    const keyFile = path.join(f.dir, 'prod.key')
    prod.writeNewFile(keyFile)
    const config = { trust: { ...TRUST, publishers: { 'prod-': [prod.publicKey] } } }
    const cfgFile = path.join(f.dir, 'cli.json')
    fs.writeFileSync(cfgFile, JSON.stringify(config))
    const imp = (host: string, name: string, extra: string[] = []): string => {
      const file = path.join(f.dir, `${host}-${name}.raw`)
      makeImage(file, 6)
      const r = vmifs(['import', file, '--name', name, '--data-dir', f.host(host).data, '--config', cfgFile, ...extra])
      t.is(r.code, 0, r.stderr)
      return r.stderr
    }
    // the host key is not a publisher of prod- names: the import says so, and nobody lists it
    t.regex(imp('a', 'prod-web'), /prod-web: warning: hosts with this config will not list it/)
    t.notRegex(imp('a', 'prod-db', ['--sign-key', keyFile]), /warning/)
    imp('a', 'dev')
    imp('b', 'dev') // later: a owns the name where both are seen
    await f.start('a', { peers: ['b'], config })
    await f.start('b', { peers: ['a', 'c'], config })
    await f.start('c', { peers: ['b'], config })
    await f.waitFor(
      'prod-db and dev on c',
      () => fs.existsSync(f.image('c', 'prod-db')) && fs.existsSync(f.image('c', 'dev'))
    )
    await f.waitFor('prod-db on b', () => fs.existsSync(f.image('b', 'prod-db')))
    t.is(run('cmp', [path.join(f.dir, 'a-prod-db.raw'), f.image('c', 'prod-db')]).status, 0)
    t.is(run('cmp', [path.join(f.dir, 'a-dev.raw'), f.image('c', 'dev')]).status, 0, "c lists a's dev")
    for (const h of ['b', 'c']) t.false(fs.existsSync(f.image(h, 'prod-web')), `prod-web listed on ${h}`)
    t.like(f.stats('c').fleet!.imagesRefused, { notAccepted: 1, notOwner: 1, unsigned: 0, badSignature: 0 })
    t.like(f.stats('b').fleet!.imagesRefused, { notAccepted: 1 })
    const names = vmifs(['names', '--json', '--data-dir', f.host('c').data])
    t.is(names.code, 0, names.stderr)
    t.like(JSON.parse(names.stdout) as unknown[], [{ name: 'dev', owner: 'host:a' }])
    // the publisher signs prod-web on a's data dir while a runs: it reaches every host
    const sign = vmifs(['sign', 'prod-web', '--sign-key', keyFile, '--data-dir', f.host('a').data, '--config', cfgFile])
    t.is(sign.code, 0, sign.stderr)
    await f.waitFor('prod-web on c', () => fs.existsSync(f.image('c', 'prod-web')))
    t.is(run('cmp', [path.join(f.dir, 'a-prod-web.raw'), f.image('c', 'prod-web')]).status, 0)
    await f.waitFor('c counts no refusal of prod-web', () => f.stats('c').fleet!.imagesRefused.notAccepted === 0)
    // c releases dev: the earliest publication at hand (a's) owns it again
    t.is(vmifs(['names', '--release', 'dev', '--data-dir', f.host('c').data]).code, 0)
    t.is(vmifs(['names', '--release', 'dev', '--data-dir', f.host('c').data]).code, 1)
  }
)
