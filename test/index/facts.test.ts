import test from 'ava'
import path from 'node:path'
import { openDb } from '../../src/index/db.js'
import { FactStore, type Fact } from '../../src/index/facts.js'
import { tmpDir } from '../helpers/tmp.js'
import { prng } from '../helpers/random.js'

function store(t: Parameters<typeof tmpDir>[0], self: string): FactStore {
  const db = openDb(path.join(tmpDir(t), `${self}.sqlite`))
  t.teardown(() => db.close())
  return new FactStore(db, self)
}

/** b pulls from a until a has nothing newer (pages of `limit`). */
function pull(b: FactStore, a: FactStore, limit = 5000): number {
  let n = 0
  for (;;) {
    const page = a.since(b.cursors(), limit)
    b.apply(page)
    n += page.facts.length
    if (page.facts.length === 0) return n
  }
}

const live = (s: FactStore): string[] =>
  s
    .byPrefix('')
    .map((f: Fact) => `${f.origin}/${f.key}=${JSON.stringify(f.value)}`)
    .sort()

test('publish numbers facts per origin; an unchanged value is not republished; null retracts', t => {
  const a = store(t, 'a')
  t.is(a.publish('host', { endpoint: 'http://x' }).seq, 1)
  t.is(a.publish('host', { endpoint: 'http://x' }).seq, 1)
  t.is(a.publish('host', { endpoint: 'http://y' }).seq, 2)
  t.is(a.publish('image/x', { digest: 'd' }).seq, 3)
  t.is(a.publish('image/x', null).seq, 4)
  t.deepEqual(a.byKey('image/x'), [])
  t.is(a.get('a', 'image/x')!.value, null)
  t.is(a.cursor('a'), 4)
})

test('facts travel through a relay, and a retraction travels too', t => {
  const a = store(t, 'a')
  const b = store(t, 'b')
  const c = store(t, 'c')
  a.publish('image/x', { digest: 'd1' })
  pull(b, a)
  pull(c, b) // c never talks to a
  t.deepEqual(
    c.byKey('image/x').map(f => f.value),
    [{ digest: 'd1' }]
  )
  a.publish('image/x', null)
  pull(b, a)
  pull(c, b)
  t.deepEqual(c.byKey('image/x'), [])
  t.is(c.cursor('a'), 2)
})

test("apply ignores a fact older than the one held and never takes our own origin's facts", t => {
  const a = store(t, 'a')
  const b = store(t, 'b')
  b.apply({ facts: [{ origin: 'a', seq: 5, key: 'k', value: 'new' }], complete: {} })
  b.apply({ facts: [{ origin: 'a', seq: 3, key: 'k', value: 'old' }], complete: {} })
  t.is(b.get('a', 'k')!.value, 'new')
  // a restored data dir hears its own facts back: it must not reuse their numbers
  a.apply({ facts: [{ origin: 'a', seq: 9, key: 'k', value: 'echo' }], complete: { a: 9 } })
  t.is(a.get('a', 'k'), undefined)
  t.is(a.publish('k', 'fresh').seq, 10)
  // malformed facts are dropped
  b.apply({
    facts: [
      { origin: '../x', seq: 1, key: 'k', value: 1 },
      { origin: 'z', seq: -1, key: 'k', value: 1 }
    ],
    complete: {}
  })
  t.deepEqual(
    b.byKey('k').map(f => f.origin),
    ['a']
  )
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
  let b = new FactStore(dbB, 'b')
  b.publish('host', { endpoint: 'http://b' })
  pull(b, a)
  dbB.close()
  // the restarted host asks only for what is new, and keeps numbering its own facts
  dbB = openDb(path.join(dir, 'b.sqlite'))
  t.teardown(() => dbB.close())
  b = new FactStore(dbB, 'b')
  t.deepEqual(b.cursors(), { a: 10, b: 1 })
  t.is(a.since(b.cursors()).facts.length, 0)
  a.publish('k10', 10)
  t.deepEqual(
    a.since(b.cursors()).facts.map(f => f.key),
    ['k10']
  )
  t.is(b.publish('image/x', { digest: 'd' }).seq, 2)
})
