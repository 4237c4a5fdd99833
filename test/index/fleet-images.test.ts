// Which published images a host lists: signed publications of a publisher it accepts for the name
// (trust.publishers per prefix, else any admitted host, the first seen owning the name), from the
// table's image/ facts and the origin store's images.json.
import test, { type ExecutionContext } from 'ava'
import { FleetImages, type PublicationRefusal } from '../../src/index/fleet-images.js'
import type { FactStore } from '../../src/index/facts.js'
import { type Manifest, ManifestBuilder } from '../../src/manifests/manifest.js'
import { SigningKey } from '../../src/trust/keys.js'
import { signPublication } from '../../src/trust/publications.js'
import { issueRevocation } from '../../src/trust/certs.js'
import { createLogger } from '../../src/util/log.js'
import type { DataDir } from '../../src/datadir.js'
import { FleetKeys } from '../helpers/fleet-keys.js'
import { openDb } from '../../src/index/db.js'
import { openDataDir } from '../helpers/tmp.js'
import { randomBuffer } from '../helpers/random.js'

const keys = new FleetKeys()
const log = createLogger('test', 'silent')

/** A manifest of `n` made-up chunks (the seed makes it differ). */
function manifest(seed: number, n = 3): Manifest {
  const b = new ManifestBuilder({ kind: 'fixed', chunkSize: 4096 })
  for (let i = 0; i < n; i++) b.add(4096, randomBuffer(32, seed * 100 + i))
  return b.build()
}

interface World {
  dd: DataDir
  facts: FactStore
  images: FleetImages
  manifests: Map<string, Buffer>
  /** a publication of image `name` as manifest m, as a fact value or an images.json entry */
  pub: (key: SigningKey, name: string, m: Manifest, publishedAt?: number) => Record<string, unknown>
  origins: Map<string, FactStore>
  t: ExecutionContext
}

function world(t: ExecutionContext, prefixes: Record<string, string[]> = {}): World {
  const dd = openDataDir(t)
  const facts = keys.store(dd.db, 'c')
  const manifests = new Map<string, Buffer>()
  const images = new FleetImages(
    facts,
    dd.catalog,
    async d => manifests.get(d) ?? null,
    log,
    () => {},
    { prefixes }
  )
  const pub = (key: SigningKey, name: string, m: Manifest, publishedAt = 1000): Record<string, unknown> => {
    manifests.set(m.digest(), m.encode())
    const img = { name, digest: m.digest(), size: m.size }
    const { byHost: _b, ...p } = signPublication(key, img, { now: publishedAt })
    return { digest: img.digest, size: img.size, ...p }
  }
  return { dd, facts, images, manifests, pub, origins: new Map(), t }
}

/** Each origin publishes the facts in its own table (signed, numbered on), and c pulls them. */
function hear(w: World, facts: Array<{ origin: string; key: string; value: unknown }>): void {
  for (const f of facts) {
    let o = w.origins.get(f.origin)
    if (!o) {
      const db = openDb(':memory:')
      w.t.teardown(() => db.close())
      w.origins.set(f.origin, (o = keys.store(db, f.origin)))
    }
    o.publish(f.key, f.value)
    const r = w.facts.apply(o.since(w.facts.cursors()))
    if (r.blame) throw new Error(`an honest page was refused: ${JSON.stringify(r.refused)}`)
  }
}

const listed = (w: World): Record<string, string | null> =>
  Object.fromEntries(w.dd.catalog.listImages().map(i => [i.name, i.origin]))

const refusedOnly = (w: World): Partial<Record<PublicationRefusal, number>> =>
  Object.fromEntries(Object.entries(w.images.refused()).filter(([, n]) => n > 0))

test('a host lists what admitted hosts signed; unsigned and wrongly signed ones are counted, not listed', async t => {
  const w = world(t)
  const web = manifest(1)
  const good = w.pub(keys.key('a'), 'web', web)
  const tampered = { ...w.pub(keys.key('a'), 'db', manifest(2)), digest: manifest(3).digest() }
  const { publisher: _p, sig: _s, ...unsigned } = w.pub(keys.key('a'), 'plain', manifest(4))
  w.manifests.set(manifest(3).digest(), manifest(3).encode())
  hear(w, [
    { origin: 'a', key: 'image/web', value: good },
    { origin: 'a', key: 'image/db', value: tampered },
    { origin: 'a', key: 'image/plain', value: unsigned }
  ])
  await w.images.reconcile()
  t.deepEqual(listed(w), { web: 'a' })
  t.deepEqual(refusedOnly(w), { badSignature: 1, unsigned: 1 })
  // what is listed keeps its publication (publish-store passes it on)
  const row = w.dd.catalog.getImage('web')!
  t.is(row.publication?.sig, good.sig as string)
  t.is(row.digest, web.digest())
})

test("the first host seen owns a name: another's later (or backdated) one is refused until released", async t => {
  const w = world(t)
  hear(w, [{ origin: 'a', key: 'image/web', value: w.pub(keys.key('a'), 'web', manifest(1), 5000) }])
  await w.images.reconcile()
  t.is(w.dd.catalog.nameOwner('web'), 'host:a')
  hear(w, [{ origin: 'b', key: 'image/web', value: w.pub(keys.key('b'), 'web', manifest(2), 1) }])
  await w.images.reconcile()
  t.is(w.dd.catalog.getImage('web')!.digest, manifest(1).digest())
  t.deepEqual(refusedOnly(w), { notOwner: 1 })
  // the owner's own newer version replaces its old one
  hear(w, [{ origin: 'a', key: 'image/web', value: w.pub(keys.key('a'), 'web', manifest(5), 6000) }])
  await w.images.reconcile()
  t.is(w.dd.catalog.getImage('web')!.digest, manifest(5).digest())
  // released: the earliest publication at hand owns the name (b's backdated one here)
  t.true(w.dd.catalog.releaseName('web'))
  await w.images.reconcile()
  t.is(w.dd.catalog.nameOwner('web'), 'host:b')
  t.is(w.dd.catalog.getImage('web')!.digest, manifest(2).digest())
})

test('trust.publishers decides for its prefixes: only the keys it names, the longest prefix first', async t => {
  const offline = SigningKey.generate()
  const other = SigningKey.generate()
  const w = world(t, { 'sec-': [offline.publicKey], 'sec-lab-': [keys.key('a').publicKey] })
  hear(w, [
    { origin: 'a', key: 'image/sec-x', value: w.pub(keys.key('a'), 'sec-x', manifest(1)) },
    { origin: 'a', key: 'image/sec-y', value: w.pub(offline, 'sec-y', manifest(2)) },
    { origin: 'a', key: 'image/sec-lab-z', value: w.pub(keys.key('a'), 'sec-lab-z', manifest(3)) },
    // an offline key no prefix names is not a publisher anyone accepts
    { origin: 'a', key: 'image/free', value: w.pub(other, 'free', manifest(4)) }
  ])
  await w.images.reconcile()
  t.deepEqual(listed(w), { 'sec-y': 'a', 'sec-lab-z': 'a' })
  t.deepEqual(refusedOnly(w), { notAccepted: 1, unknownPublisher: 1 })
  t.is(w.dd.catalog.nameOwner('sec-y'), undefined, 'the config decides: nothing is pinned')
})

test("the origin store's entries are checked the same way: an edited images.json changes no name", async t => {
  const w = world(t)
  const a = keys.key('a')
  const web = w.pub(a, 'web', manifest(1))
  const entries: Record<string, unknown> = {
    web: { ...web, cert: keys.cert('a') },
    // a host c has no facts of, shown by its certificate
    tools: { ...w.pub(keys.key('d'), 'tools', manifest(2)), cert: keys.cert('d') },
    // signed by a host key whose certificate is missing: nobody c knows
    lab: w.pub(keys.key('e'), 'lab', manifest(3)),
    junk: { digest: 'nope' }
  }
  w.images.setOriginImages(entries)
  await w.images.reconcile()
  t.deepEqual(listed(w), { web: 'origin', tools: 'origin' })
  t.deepEqual(refusedOnly(w), { unknownPublisher: 1, malformed: 1 })
  t.is(w.dd.catalog.nameOwner('tools'), 'host:d')
  // the store's web now points at another manifest: the signature no longer covers it
  w.manifests.set(manifest(9).digest(), manifest(9).encode())
  w.images.setOriginImages({ ...entries, web: { ...(entries.web as object), digest: manifest(9).digest() } })
  await w.images.reconcile()
  t.false('web' in listed(w))
  t.is(w.images.refused().badSignature, 1)
  // a host's publication of the same name by its owner at the same time wins over the store's
  w.images.setOriginImages(entries)
  hear(w, [{ origin: 'a', key: 'image/web', value: web }])
  t.is(w.images.published().get('web')?.origin, 'a')
})

test("a revoked key's publications are listed nowhere: its host speaks for no name", async t => {
  const w = world(t)
  hear(w, [{ origin: 'a', key: 'image/web', value: w.pub(keys.key('a'), 'web', manifest(1)) }])
  await w.images.reconcile()
  t.deepEqual(listed(w), { web: 'a' })
  w.facts.revoke(issueRevocation(keys.admin, 'a', keys.key('a').publicKey))
  // the same publication from the origin store, with a's certificate, is not believed either
  w.images.setOriginImages({ web: { ...w.pub(keys.key('a'), 'web', manifest(1)), cert: keys.cert('a') } })
  await w.images.reconcile()
  t.deepEqual(listed(w), {})
  t.is(w.images.refused().unknownPublisher, 1)
})
