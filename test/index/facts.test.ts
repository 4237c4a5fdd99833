import test from 'ava'
import path from 'node:path'
import { openDb } from '../../src/index/db.js'
import {
  type Applied,
  type Fact,
  type FactPage,
  FactStore,
  SEQ_LIMIT,
  factMessage,
  headMessage,
  rowsDigest
} from '../../src/index/facts.js'
import { SigningKey } from '../../src/trust/keys.js'
import { issueCert, issueRevocation } from '../../src/trust/certs.js'
import { FleetKeys, factStore } from '../helpers/fleet-keys.js'
import { tmpDir } from '../helpers/tmp.js'
import { prng } from '../helpers/random.js'

const keys = new FleetKeys()
/** An image publication whose digest is made from a tag. */
const img = (tag: string): { digest: string; size: number; publishedAt: number } => ({
  digest: Buffer.from(tag).toString('hex').padEnd(64, '0'),
  size: 4096,
  publishedAt: 1
})
const store = (t: Parameters<typeof tmpDir>[0], self: string): FactStore => factStore(t, keys, self)

/** b pulls from a until a has nothing newer (pages of `limit`). */
function pull(b: FactStore, a: FactStore, limit = 5000): number {
  let n = 0
  for (let i = 0; i < 10_000; i++) {
    const page = a.since(b.cursors(), limit)
    const r = b.apply(page)
    if (r.blame) throw new Error(`an honest page was refused: ${JSON.stringify(r.refused)}`)
    n += page.facts.length
    if (page.facts.length === 0) return n
  }
  throw new Error('pull did not end')
}

const live = (s: FactStore): string[] =>
  s
    .byPrefix('')
    .map((f: Fact) => `${f.origin}/${f.key}=${JSON.stringify(f.value)}`)
    .sort()

test('publish numbers facts per origin; an unchanged value is not republished; null retracts', t => {
  const a = store(t, 'a')
  t.is(a.publish('host', { endpoint: 'http://x', price: 0 })!.seq, 1)
  t.is(a.publish('host', { endpoint: 'http://x', price: 0 })!.seq, 1)
  t.is(a.publish('host', { endpoint: 'http://y', price: 0 })!.seq, 2)
  t.is(a.publish('image/x', img('d'))!.seq, 3)
  t.is(a.publish('image/x', null)!.seq, 4)
  t.deepEqual(a.byKey('image/x'), [])
  t.is(a.get('a', 'image/x')!.value, null)
  t.is(a.cursor('a'), 4)
})

test('facts travel through a relay, and a retraction travels too', t => {
  const a = store(t, 'a')
  const b = store(t, 'b')
  const c = store(t, 'c')
  a.publish('image/x', img('d1'))
  pull(b, a)
  pull(c, b) // c never talks to a
  t.deepEqual(
    c.byKey('image/x').map(f => f.value),
    [img('d1')]
  )
  a.publish('image/x', null)
  pull(b, a)
  pull(c, b)
  t.deepEqual(c.byKey('image/x'), [])
  t.is(c.cursor('a'), 2)
})

test("an echo of this host's own facts moves its cursor only with its own signature", t => {
  const a = store(t, 'a')
  const b = store(t, 'b')
  for (let i = 0; i < 9; i++) a.publish('k', i)
  pull(b, a)
  // a's data dir is restored from before those facts: it hears them back and never reuses a number
  const dir = tmpDir(t)
  const db = openDb(path.join(dir, 'a.sqlite'))
  t.teardown(() => db.close())
  const restored = keys.store(db, 'a')
  const r = restored.apply(b.since(restored.cursors()))
  t.false(r.blame)
  t.is(restored.cursor('a'), 9)
  t.is(restored.get('a', 'k'), undefined, 'its own facts are never taken from a peer')
  t.is(restored.publish('k', 'fresh')!.seq, 10)
  // a forged echo (another key's signature, a seq near 2^53) moves nothing and is blamed
  const forger = SigningKey.generate()
  const seq = Number.MAX_SAFE_INTEGER
  const forged = restored.apply({
    facts: [{ origin: 'a', seq, key: 'k', value: 1, sig: forger.sign(factMessage('a', seq, 'k', '1')) }],
    complete: { a: seq },
    heads: { a: { seq: 20, digest: '0'.repeat(64), sig: forger.sign(headMessage('a', 20, '0'.repeat(64))) } }
  })
  t.true(forged.blame)
  t.deepEqual(forged.refused, { beyondHead: 1, badHead: 1 })
  t.is(restored.cursor('a'), 10)
  t.is(restored.publish('k', 'again')!.seq, 11)
})

test('facts not signed by their origin are refused and blamed; the honest copy stays', t => {
  const a = store(t, 'a')
  const b = store(t, 'b')
  a.publish('host', { endpoint: 'http://a', price: 0 })
  a.publish('image/web', img('d1'))
  pull(b, a)
  const before = live(b)
  const forger = keys.key('m') // a host of the fleet (admitted), speaking for a
  const honest = a.since({})
  const cases: Array<[string, FactPage, keyof Applied['refused']]> = [
    [
      'no signatures, no head',
      { facts: [{ origin: 'a', seq: 3, key: 'image/web', value: img('evil') }], complete: { a: 3 } },
      'unsigned'
    ],
    [
      "the forger's own signature and head",
      {
        facts: [
          {
            origin: 'a',
            seq: 3,
            key: 'image/web',
            value: img('evil'),
            sig: forger.sign(factMessage('a', 3, 'image/web', JSON.stringify(img('evil'))))
          }
        ],
        complete: { a: 3 },
        heads: {
          a: {
            seq: 3,
            digest: '0'.repeat(64),
            sig: forger.sign(headMessage('a', 3, '0'.repeat(64))),
            cert: keys.cert('m')
          }
        }
      },
      'badCert'
    ],
    [
      "a's real head with a fact past it",
      {
        facts: [
          { origin: 'a', seq: 9e15, key: 'host', value: { endpoint: 'http://evil', price: 0 }, sig: 'x'.repeat(86) }
        ],
        complete: { a: 9e15 },
        heads: honest.heads
      },
      'beyondHead'
    ],
    [
      "a's real head, a changed value",
      {
        facts: honest.facts.map(f => (f.key === 'image/web' ? { ...f, value: img('evil') } : f)),
        complete: honest.complete,
        heads: honest.heads
      },
      'digestMismatch'
    ]
  ]
  for (const [what, page, why] of cases) {
    const c = store(t, `c${cases.findIndex(x => x[0] === what)}`)
    const r = c.apply(page)
    t.true((r.refused[why] ?? 0) > 0, `${what}: ${JSON.stringify(r.refused)}`)
    t.deepEqual(c.byPrefix(''), [], what)
    // the same page on b, which holds a's facts already, changes nothing there
    const rb = b.apply({ ...page, complete: { ...page.complete } })
    t.is(rb.blame, why !== 'digestMismatch', what)
    if (why !== 'digestMismatch') t.deepEqual(live(b), before, what)
  }
})

test('an origin no admin of this host admitted is refused without blame; trust.hosts admits by key', t => {
  const a = store(t, 'a')
  a.publish('host', { endpoint: 'http://a', price: 0 })
  const stranger = new FleetKeys()
  const b = factStore(t, stranger, 'b')
  const r = b.apply(a.since({}))
  t.deepEqual(r.refused, { unknownOrigin: 1 })
  t.false(r.blame)
  t.deepEqual(b.byPrefix(''), [])
  const c = factStore(t, stranger, 'c', { admins: [], hosts: { a: keys.key('a').publicKey } })
  t.false(c.apply(a.since({})).blame)
  t.deepEqual(
    c.byKey('host').map(f => f.value),
    [{ endpoint: 'http://a', price: 0 }]
  )
})

test('a relay that hides a fact is found out when the origin completes: the origin is pulled again whole', t => {
  const a = store(t, 'a')
  const b = store(t, 'b')
  for (let i = 0; i < 10; i++) a.publish(`k${i}`, i)
  // a partial page (5 of 10) with k2 left out: each fact it has verifies, so it is applied
  const first = a.since({}, 5)
  const hidden = { ...first, facts: first.facts.filter(f => f.key !== 'k2') }
  t.false(b.apply(hidden).blame)
  t.is(b.cursor('a'), 5)
  // the rest, complete up to a's head: a's rows here do not hash to its digest
  const rest = b.apply(a.since(b.cursors()))
  t.deepEqual(rest.refused, { digestMismatch: 1 })
  t.deepEqual(rest.resets, ['a'])
  t.is(b.cursor('a'), 0)
  pull(b, a)
  t.deepEqual(live(b), live(a))
  t.is(b.digestOf('a'), a.digestOf('a'))
})

test("a rotated host key: the newer certificate's key replaces the old one and the origin is pulled again", t => {
  const a = store(t, 'a')
  const b = store(t, 'b')
  a.publish('host', { endpoint: 'http://a', price: 0 })
  pull(b, a)
  // a gets a new key and certificate, and a new data dir publishes under it
  const k2 = SigningKey.generate()
  const cert2 = issueCert(keys.admin, 'a', k2.publicKey, keys.cert('a').issuedAt + 1)
  const db2 = openDb(path.join(tmpDir(t), 'a2.sqlite'))
  t.teardown(() => db2.close())
  const a2 = new FactStore(db2, 'a', { signer: k2, trust: keys.trust(), cert: () => cert2 })
  a2.publish('host', { endpoint: 'http://a2', price: 0 })
  a2.publish('image/x', img('d'))
  const r = b.apply(a2.since(b.cursors()))
  t.deepEqual(r.resets, ['a'])
  pull(b, a2)
  t.deepEqual(
    b.byKey('host').map(f => f.value),
    [{ endpoint: 'http://a2', price: 0 }]
  )
  // the old key's certificate does not come back
  const old = b.apply(a.since({}))
  t.deepEqual(old.refused, { oldCert: 1 })
  t.deepEqual(
    b.byKey('host').map(f => f.value),
    [{ endpoint: 'http://a2', price: 0 }]
  )
})

test('a data dir whose own seqs were pushed past the limit is renumbered and signed again on open', t => {
  const file = path.join(tmpDir(t), 'a.sqlite')
  let db = openDb(file)
  const a = keys.store(db, 'a')
  a.publish('host', { endpoint: 'http://a', price: 0 })
  // what the forged echo of before left: the cursor at 2^53 - 1 and a fact published past it
  db.prepare('UPDATE cursors SET seq = ? WHERE origin = ?').run(Number.MAX_SAFE_INTEGER, 'a')
  db.prepare('INSERT INTO facts (origin, seq, key, value, sig, received_at) VALUES (?, ?, ?, ?, NULL, 0)').run(
    'a',
    2 ** 53,
    'status',
    '{"cacheCapacityBytes":1,"cacheSizeBytes":0,"load":1}'
  )
  // and an unsigned fact of another origin, from before signing
  db.prepare('INSERT INTO facts (origin, seq, key, value, sig, received_at) VALUES (?, ?, ?, ?, NULL, 0)').run(
    'z',
    4,
    'host',
    '{}'
  )
  db.prepare('INSERT INTO cursors (origin, seq) VALUES (?, ?)').run('z', 4)
  db.close()
  db = openDb(file)
  t.teardown(() => db.close())
  const again = keys.store(db, 'a')
  t.is(again.renumbered, 1)
  t.deepEqual(again.dropped, ['z'])
  t.is(again.cursor('a'), 2)
  t.deepEqual(again.get('a', 'status')?.seq, 2)
  t.is(again.publish('image/x', img('d'))!.seq, 3)
  const b = store(t, 'b')
  pull(b, again)
  t.deepEqual(live(b), live(again))
  t.true(SEQ_LIMIT < Number.MAX_SAFE_INTEGER)
})

test('small pages still converge, and cursors only cover what was received', t => {
  const a = store(t, 'a')
  const b = store(t, 'b')
  for (let i = 0; i < 23; i++) a.publish(`k${i}`, i)
  const first = a.since(b.cursors(), 5)
  t.is(first.facts.length, 5)
  t.is(first.complete.a, 5)
  b.apply(first)
  t.is(b.cursor('a'), 5)
  pull(b, a, 5)
  t.deepEqual(live(b), live(a))
  t.is(b.cursor('a'), 23)
})

test('random gossip over a connected graph converges to the same table everywhere', t => {
  const next = prng(7)
  const rng = { int: (n: number): number => next() % n }
  const ids = ['a', 'b', 'c', 'd', 'e']
  const s = new Map(ids.map(id => [id, store(t, id)]))
  const edges: Array<[string, string]> = [
    ['a', 'b'],
    ['b', 'c'],
    ['c', 'd'],
    ['d', 'e']
  ] // a line: no full mesh
  for (let round = 0; round < 200; round++) {
    const who = ids[rng.int(ids.length)]!
    const key = `k${rng.int(6)}`
    s.get(who)!.publish(key, rng.int(3) === 0 ? null : { v: round })
    const [x, y] = edges[rng.int(edges.length)]!
    if (rng.int(2) === 0) pull(s.get(x)!, s.get(y)!, 1 + rng.int(4))
    else pull(s.get(y)!, s.get(x)!, 1 + rng.int(4))
  }
  // quiesce: a few sweeps both ways along the line
  for (let i = 0; i < ids.length; i++) {
    for (const [x, y] of edges) {
      pull(s.get(x)!, s.get(y)!, 3)
      pull(s.get(y)!, s.get(x)!, 3)
    }
  }
  const want = live(s.get('a')!)
  t.true(want.length > 0)
  for (const id of ids) t.deepEqual(live(s.get(id)!), want, id)
  for (const id of ids) t.deepEqual(s.get(id)!.cursors(), s.get('a')!.cursors(), id)
})

test('after a restart (same data dir) a host resumes from its persisted cursors and numbers', t => {
  const dir = tmpDir(t)
  const a = store(t, 'a')
  for (let i = 0; i < 10; i++) a.publish(`k${i}`, i)
  let dbB = openDb(path.join(dir, 'b.sqlite'))
  let b = keys.store(dbB, 'b')
  b.publish('host', { endpoint: 'http://b', price: 0 })
  pull(b, a)
  dbB.close()
  // the restarted host asks only for what is new, and keeps numbering its own facts
  dbB = openDb(path.join(dir, 'b.sqlite'))
  t.teardown(() => dbB.close())
  b = keys.store(dbB, 'b')
  t.deepEqual(b.cursors(), { a: 10, b: 1 })
  t.is(a.since(b.cursors()).facts.length, 0)
  a.publish('k10', 10)
  t.deepEqual(
    a.since(b.cursors()).facts.map(f => f.key),
    ['k10']
  )
  t.is(b.publish('image/x', img('d'))!.seq, 2)
})

test('a revocation drops what the key signed on every host it reaches; the host rejoins only with a new key', t => {
  const a = store(t, 'a')
  const b = store(t, 'b')
  const c = store(t, 'c')
  a.publish('image/x', img('d'))
  pull(b, a)
  pull(c, b)
  t.throws(() => b.revoke(issueRevocation(SigningKey.generate(), 'a', keys.key('a').publicKey)), {
    code: 'CERT_INVALID'
  })
  t.deepEqual(b.byKey('image/x').length, 1, 'a stranger cannot revoke')
  t.deepEqual(b.revoke(issueRevocation(keys.admin, 'a', keys.key('a').publicKey)), ['a'])
  t.deepEqual(b.byKey('image/x'), [])
  t.true(b.isRevoked(keys.key('a').publicKey))
  // it travels: c drops a's facts on its next pull from b, and refuses them from a itself
  const r = c.apply(b.since(c.cursors()))
  t.false(r.blame)
  t.deepEqual(c.byKey('image/x'), [])
  const again = c.apply(a.since({}))
  t.deepEqual(again.refused, { revoked: 1 })
  t.false(again.blame)
  // a forged revocation (the admin's name, another signature) is refused and blamed
  const forged = { ...issueRevocation(keys.admin, 'b', keys.key('b').publicKey), sig: 'A'.repeat(86) }
  const rf = c.apply({ facts: [], complete: {}, revoked: [forged] })
  t.true(rf.blame)
  t.false(c.isRevoked(keys.key('b').publicKey))
  // a, with a new key and certificate, is believed again
  const k2 = SigningKey.generate()
  const cert2 = issueCert(keys.admin, 'a', k2.publicKey, keys.cert('a').issuedAt + 1)
  const db2 = openDb(path.join(tmpDir(t), 'a2.sqlite'))
  t.teardown(() => db2.close())
  const a2 = new FactStore(db2, 'a', { signer: k2, trust: keys.trust(), cert: () => cert2, owner: true })
  a2.publish('image/x', img('d2'))
  pull(c, a2)
  t.deepEqual(
    c.byKey('image/x').map(f => f.value),
    [img('d2')]
  )
})

test("a value that does not decode as its key's kind is refused like a bad signature, even signed by its origin", t => {
  const b = store(t, 'b')
  const k = keys.key('a')
  const value = { endpoint: 42 }
  const sig = k.sign(factMessage('a', 1, 'host', JSON.stringify(value)))
  const row = { seq: 1, key: 'host', value: JSON.stringify(value), sig }
  const digest = rowsDigest([row])
  const r = b.apply({
    facts: [{ origin: 'a', seq: 1, key: 'host', value, sig }],
    complete: { a: 1 },
    heads: { a: { seq: 1, digest, sig: k.sign(headMessage('a', 1, digest)), cert: keys.cert('a') } }
  })
  t.deepEqual(r.refused, { badValue: 1 })
  t.true(r.blame)
  t.deepEqual(b.byKey('host'), [])
  t.throws(() => b.publish('status', { load: 'high' }), { message: /does not decode/ })
  // a key of a kind this version does not know is kept and relayed unread
  t.is(b.publish('future/x', { anything: [1, 2] })!.seq, 1)
})
