// A peer that holds the fleet token but speaks for another host: it answers pulls of the metadata
// table with facts under host a's origin (an image naming a manifest it made up, a host record
// with its own endpoint, holdings, seqs near 2^53), unsigned, signed with its own admitted key, or
// under a certificate of an admin nobody trusts. Real agents refuse all of it, demote it for sync,
// keep serving the image as a published it, and a publishes afterwards.
import test from 'ava'
import fs from 'node:fs'
import http from 'node:http'
import path from 'node:path'
import { Fleet, TOKEN } from './fleet.js'
import { makeImage, run, vmifs } from './harness.js'
import { SigningKey } from '../../src/trust/keys.js'
import { issueCert } from '../../src/trust/certs.js'
import { FLEET_ADMIN } from './admit.js'
import { factMessage, headMessage, type FactPage } from '../../src/index/facts.js'

const HUGE = Number.MAX_SAFE_INTEGER - 1
const ZERO = '0'.repeat(64)

/** The pages the forger answers with, in turn. */
function forgedPages(): FactPage[] {
  const insider = SigningKey.generate() // admitted as host m by the real admin: a compromised host
  const mCert = issueCert(FLEET_ADMIN, 'm', insider.publicKey)
  const rogueAdmin = SigningKey.generate()
  const aByRogue = issueCert(rogueAdmin, 'a', insider.publicKey) // "a" under an admin nobody trusts
  const fake = (seq: number, key: string, value: unknown, k?: SigningKey): FactPage['facts'][number] => ({
    origin: 'a',
    seq,
    key,
    value,
    ...(k ? { sig: k.sign(factMessage('a', seq, key, JSON.stringify(value))) } : {})
  })
  const facts = (k?: SigningKey): FactPage['facts'] => [
    fake(HUGE - 2, 'image/web', { digest: 'f'.repeat(64), size: 4096, publishedAt: Date.now() + 1e9 }, k),
    fake(HUGE - 1, 'host', { endpoint: 'http://127.0.0.1:9', price: 0 }, k),
    fake(HUGE, `hold/${'f'.repeat(64)}`, { ranges: [[0, 1]] }, k)
  ]
  const head = (k: SigningKey, cert: unknown): NonNullable<FactPage['heads']>[string] =>
    ({ seq: HUGE, digest: ZERO, sig: k.sign(headMessage('a', HUGE, ZERO)), cert }) as never
  return [
    { facts: facts(), complete: { a: HUGE } },
    { facts: facts(insider), complete: { a: HUGE }, heads: { a: head(insider, mCert) } },
    { facts: facts(insider), complete: { a: HUGE }, heads: { a: head(insider, aByRogue) } },
    { facts: facts(insider), complete: { a: HUGE }, heads: { a: head(insider, undefined) } }
  ]
}

async function forger(t: {
  teardown: (fn: () => Promise<void>) => void
}): Promise<{ url: string; pulls: () => number }> {
  const pages = forgedPages()
  let n = 0
  const server = http.createServer((req, res) => {
    req.resume()
    if (req.headers.authorization !== `Bearer ${TOKEN}`) return void res.writeHead(401).end()
    if (req.method === 'POST' && req.url === '/v1/facts') {
      const page = pages[n++ % pages.length]
      return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(page))
    }
    res.writeHead(404).end()
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => await new Promise<void>(resolve => server.close(() => resolve())))
  const port = (server.address() as { port: number }).port
  return { url: `http://127.0.0.1:${port}`, pulls: () => n }
}

test.serial(
  'facts a peer forged under host a are refused and it is demoted; the fleet keeps a as a published it; a publishes on',
  async t => {
    const f = await Fleet.create(t, ['a', 'b', 'c'])
    const evil = await forger(t)
    const img = path.join(f.dir, 'web.raw')
    makeImage(img, 8)
    t.is(vmifs(['import', img, '--name', 'web', '--data-dir', f.host('a').data]).code, 0)
    // a itself hears the forged echo of its own facts; b pulls from a and the forger; c only from b
    await f.start('a', { peers: ['b'], extra: ['--peer', evil.url] })
    await f.start('b', { peers: ['a'], extra: ['--peer', evil.url] })
    await f.start('c', { peers: ['b'] })
    await f.waitFor('web on c', () => fs.existsSync(f.image('c', 'web')))
    await f.waitFor(
      'b demotes the forger after refusing its pages',
      () => f.stats('b').fleet!.syncDemoted.includes(evil.url) && f.stats('a').fleet!.syncDemoted.includes(evil.url)
    )
    for (const h of ['a', 'b'] as const) {
      const s = f.stats(h).fleet!
      const refused = Object.values(s.factsRefused).reduce((x, y) => x + y, 0)
      t.true(refused >= 1, `${h}: ${JSON.stringify(s.factsRefused)}`)
      t.log(`${h} refused ${JSON.stringify(Object.fromEntries(Object.entries(s.factsRefused).filter(e => e[1] > 0)))}`)
      t.deepEqual(s.syncDemoted, [evil.url], h)
      t.true(s.cursors.a! < 1000, `${h}: a's cursor ${s.cursors.a}`)
    }
    // the demoted forger is left alone for a while: no more pulls while the honest ones go on
    const pulls = evil.pulls()
    const rounds = f.stats('b').fleet!.syncRounds
    await f.waitFor('a few more sync rounds on b', () => f.stats('b').fleet!.syncRounds >= rounds + 5)
    t.is(evil.pulls(), pulls, 'nobody pulls from a demoted peer')
    // the image is still a's: the same bytes on every host, from a
    for (const h of ['b', 'c'] as const) t.is(run('cmp', [img, f.image(h, 'web')]).status, 0, h)
    t.deepEqual(f.stats('c').fleet!.hosts.sort(), ['a', 'b'])
    // a is up and publishes on: a new image reaches c
    t.is(f.host('a').agent!.child.exitCode, null, 'a is up')
    const img2 = path.join(f.dir, 'web2.raw')
    makeImage(img2, 4)
    t.is(vmifs(['import', img2, '--name', 'web2', '--data-dir', f.host('a').data]).code, 0)
    await f.waitFor('web2 on c', () => fs.existsSync(f.image('c', 'web2')))
    t.is(run('cmp', [img2, f.image('c', 'web2')]).status, 0)
  }
)

test.serial("a revoked host's facts disappear fleet-wide, and what its key signs is refused from then on", async t => {
  const f = await Fleet.create(t, ['a', 'b', 'c'])
  const img = path.join(f.dir, 'c.raw')
  makeImage(img, 4)
  t.is(vmifs(['import', img, '--name', 'from-c', '--data-dir', f.host('c').data]).code, 0)
  await f.start('a', { peers: ['b'] })
  await f.start('b', { peers: ['a', 'c'] })
  await f.start('c', { peers: ['b'] })
  await f.waitFor('from-c on a', () => fs.existsSync(f.image('a', 'from-c')))
  const adminKey = path.join(f.dir, 'admin.key')
  FLEET_ADMIN.writeNewFile(adminKey)
  const cKey = (
    JSON.parse(vmifs(['host', 'key', '--json', '--data-dir', f.host('c').data]).stdout) as { publicKey: string }
  ).publicKey
  const onA = ['--data-dir', f.host('a').data, '--config', path.join(f.dir, 'a.json')]
  // a revocation whose signature does not verify is refused, and changes nothing
  const file = path.join(f.dir, 'revoke-c.json')
  t.is(vmifs(['fleet', 'revoke', 'c', cKey, '--admin-key', adminKey, '--out', file]).code, 0)
  const tampered = path.join(f.dir, 'tampered.json')
  fs.writeFileSync(tampered, JSON.stringify({ ...JSON.parse(fs.readFileSync(file, 'utf8')), host: 'b' }))
  const bad = vmifs(['fleet', 'revoke', '--file', tampered, ...onA])
  t.is(bad.code, 1)
  t.regex(bad.stderr, /\[CERT_INVALID\]/)
  t.true(fs.existsSync(f.image('a', 'from-c')))
  // the real one, recorded on a through its agent
  const ok = vmifs(['fleet', 'revoke', '--file', file, ...onA])
  t.is(ok.code, 0, ok.stderr)
  t.regex(ok.stdout, /dropped the facts of c here/)
  for (const h of ['a', 'b'] as const) {
    await f.waitFor(`from-c gone on ${h}`, () => !fs.existsSync(f.image(h, 'from-c')))
    t.false(f.stats(h).fleet!.hosts.includes('c'), h)
  }
  // b still pulls from c, and refuses what c's key signs
  await f.waitFor('b refuses c', () => (f.stats('b').fleet!.factsRefused.revoked ?? 0) > 0)
  t.deepEqual(f.stats('b').fleet!.syncDemoted, [], 'a revoked key is refused, not blamed on the peer')
  t.is(f.host('c').agent!.child.exitCode, null, 'c is up')
})
