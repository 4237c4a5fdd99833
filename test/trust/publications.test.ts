import test from 'ava'
import { ManifestBuilder } from '../../src/manifests/manifest.js'
import { SigningKey } from '../../src/trust/keys.js'
import {
  acceptanceProblem,
  checkPublication,
  publishersFor,
  signLocalImages,
  signPublication
} from '../../src/trust/publications.js'
import { openDataDir } from '../helpers/tmp.js'
import { randomBuffer } from '../helpers/random.js'

const img = { name: 'web', digest: 'ab'.repeat(32), size: 4096 }

test('a publication verifies only for the name, digest, size and time it was signed for', t => {
  const k = SigningKey.generate()
  const p = { ...img, ...signPublication(k, img, { now: 7 }) }
  t.is(checkPublication(p), undefined)
  for (const change of [{ name: 'db' }, { digest: 'cd'.repeat(32) }, { size: 4097 }, { publishedAt: 8 }])
    t.is(checkPublication({ ...p, ...change }), 'badSignature', JSON.stringify(change))
  t.is(checkPublication({ ...p, publisher: SigningKey.generate().publicKey }), 'badSignature')
  t.is(checkPublication({ ...p, sig: 'x' }), 'badSignature')
  t.is(checkPublication({ ...img, publishedAt: 7 }), 'unsigned')
})

test('the longest matching prefix decides; the commands warn of a publication nobody would list', t => {
  const prefixes = { '': ['ed25519:all'], 'prod-': ['ed25519:prod'], 'prod-lab-': ['ed25519:lab'] }
  t.deepEqual(publishersFor('dev', prefixes), ['ed25519:all'])
  t.deepEqual(publishersFor('prod-web', prefixes), ['ed25519:prod'])
  t.deepEqual(publishersFor('prod-lab-1', prefixes), ['ed25519:lab'])
  t.is(publishersFor('dev', {}), undefined)
  t.is(acceptanceProblem('prod-web', 'ed25519:prod', 'ed25519:host', prefixes), undefined)
  t.regex(acceptanceProblem('prod-web', 'ed25519:host', 'ed25519:host', prefixes)!, /other keys/)
  t.is(acceptanceProblem('dev', 'ed25519:host', 'ed25519:host', {}), undefined)
  t.regex(acceptanceProblem('dev', 'ed25519:offline', 'ed25519:host', {})!, /host keys/)
})

test('images of before signing, and those of a rotated host key, get the host key; offline ones stay', t => {
  const dd = openDataDir(t)
  const add = (name: string, seed: number, publication?: ReturnType<typeof signPublication>): void => {
    const b = new ManifestBuilder({ kind: 'fixed', chunkSize: 4096 })
    b.add(4096, randomBuffer(32, seed))
    dd.catalog.addImage(name, b.build(), { pinned: false, replace: false, ...(publication ? { publication } : {}) })
  }
  const old = SigningKey.generate()
  const offline = SigningKey.generate()
  const host = SigningKey.generate()
  add('before', 1) // a data dir of before signatures: no publication
  add('rotated', 2)
  dd.catalog.setPublication('rotated', dd.catalog.getImage('rotated')!.digest, {
    ...signPublication(old, { ...dd.catalog.getImage('rotated')! }, { byHost: true })
  })
  add('offline', 3)
  const row = dd.catalog.getImage('offline')!
  const off = signPublication(offline, row)
  dd.catalog.setPublication('offline', row.digest, off)
  t.is(signLocalImages(dd.catalog, host), 2)
  t.is(signLocalImages(dd.catalog, host), 0, 'once')
  for (const name of ['before', 'rotated']) {
    const r = dd.catalog.getImage(name)!
    t.is(r.publication!.publisher, host.publicKey)
    t.is(checkPublication({ ...r, ...r.publication! }), undefined)
  }
  t.deepEqual(dd.catalog.getImage('offline')!.publication, off)
})
