// Facts as a shared engine holds them: each checked on its own against its origin's admitted key.
import test from 'ava'
import { FleetKeys, factStore } from '../helpers/fleet-keys.js'
import { decodeFact, encodeFact, redisOptions, scopeOf } from '../../src/metadata/redis.js'
import { aclRule } from '../../src/metadata/acl.js'
import type { Fact } from '../../src/index/facts.js'

const keys = new FleetKeys()
const D = 'd'.repeat(64)

/** a's facts, signed by a, as the engine gives them back (encoded and decoded) */
function fromEngine(facts: Fact[]): Fact[] {
  return facts.map(f => decodeFact(f.origin, f.key, encodeFact(f))!)
}

test('facts read from the engine are kept only when their origin signed them, and only if newer', t => {
  const a = factStore(t, keys, 'a')
  const b = factStore(t, keys, 'b')
  const host = a.publish('host', { endpoint: 'http://a', price: 0 })!
  const hold1 = a.publishAs('hold', D, { ranges: [[0, 4]] })!
  const r1 = b.applySigned('a', fromEngine([host, hold1]), keys.cert('a'))
  t.is(r1.changed.length, 2)
  t.deepEqual(b.getAs('hold', 'a', D), { ranges: [[0, 4]] })
  t.deepEqual(b.cursors().a, undefined, 'a partial copy moves no cursor')
  // newer replaces; the older one again changes nothing
  const hold2 = a.publishAs('hold', D, { ranges: [[0, 9]] })!
  b.applySigned('a', fromEngine([hold2]), keys.cert('a'))
  t.is(b.applySigned('a', fromEngine([hold1]), keys.cert('a')).changed.length, 0)
  t.deepEqual(b.getAs('hold', 'a', D), { ranges: [[0, 9]] })
  // a value changed in the engine, a fact moved to another key, another origin's name: refused
  const edited = { ...hold2, value: { ranges: [[0, 100]] }, seq: hold2.seq + 1 }
  const moved = { ...host, key: 'zz/evil' } // a kind this version does not know: only the signature can tell
  const r2 = b.applySigned('a', fromEngine([edited, moved]), keys.cert('a'))
  t.deepEqual(r2.refused, { badSignature: 2 })
  t.true(r2.blame)
  t.deepEqual(b.getAs('hold', 'a', D), { ranges: [[0, 9]] })
  t.deepEqual(b.applySigned('c', fromEngine([host]), keys.cert('a')).refused, { malformed: 1 })
  // no certificate and none kept: an origin this host does not know
  const c = factStore(t, keys, 'c')
  t.deepEqual(c.applySigned('a', fromEngine([host])).refused, { unknownOrigin: 1 })
  // forgotten (an image no longer followed): gone here, as a retraction for the listeners
  const gone: Fact[] = []
  b.onChange(ch => gone.push(...ch))
  b.forget([{ origin: 'a', key: `hold/${D}` }])
  t.is(b.getAs('hold', 'a', D), undefined)
  t.deepEqual(
    gone.map(f => [f.key, f.value]),
    [[`hold/${D}`, null]]
  )
})

test("this host's own facts from the engine only raise its seq (a restored data dir)", t => {
  const a = factStore(t, keys, 'a')
  const later = factStore(t, keys, 'a') // the same host's data dir of later, lost
  for (let i = 0; i < 5; i++) later.publish('host', { endpoint: `http://a${i}`, price: 0 })
  a.publish('host', { endpoint: 'http://old', price: 0 })
  a.applySigned('a', fromEngine(later.ownRows()))
  const next = a.publish('host', { endpoint: 'http://new', price: 0 })!
  t.true(next.seq > 5)
})

test('the engine format, scopes, URLs and a host ACL rule', t => {
  const f: Fact = { origin: 'a', seq: 7, key: 'hold/x', value: { ranges: [[1, 2]] }, sig: 'c2ln' }
  t.is(encodeFact(f), '7 c2ln {"ranges":[[1,2]]}')
  t.deepEqual(decodeFact('a', 'hold/x', encodeFact(f)), f)
  t.deepEqual(decodeFact('a', 'hold/x', '8 c2ln '), { origin: 'a', seq: 8, key: 'hold/x', value: null, sig: 'c2ln' })
  t.is(decodeFact('a', 'k', 'junk'), undefined)
  t.is(decodeFact('a', 'k', '1 s {not json'), undefined)
  t.is(scopeOf(`hold/${D}`), D)
  t.is(scopeOf(`model/${D}`), D)
  t.is(scopeOf('image/x'), undefined)
  t.is(scopeOf('inv'), undefined)
  t.like(redisOptions('redis://u:p@h:7000'), { host: 'h', port: 7000, username: 'u', password: 'p' })
  t.like(redisOptions('redis://h'), { host: 'h', port: 6379 })
  t.like(redisOptions('redis+sentinel://s1:26379,s2:26380/vm'), {
    name: 'vm',
    sentinels: [
      { host: 's1', port: 26379 },
      { host: 's2', port: 26380 }
    ]
  })
  t.throws(() => redisOptions('http://h'))
  t.throws(() => redisOptions('redis+sentinel://s1:26379'))
  t.throws(() => redisOptions('redis://h:1,h:2'))
  t.like(redisOptions('redis://[::1]:7001/2'), { host: '::1', port: 7001, db: 2 })
  const rule = aclRule('web-07', 'secret')
  t.regex(rule, /^user vmifs-web-07 on #[0-9a-f]{64} resetkeys %R~vmifs:\* ~vmifs:g:web-07 ~vmifs:s:web-07 /)
  t.false(rule.includes('secret'))
  t.regex(rule, / -@all .*\+hset/)
  t.throws(() => aclRule('bad id', 'x'))
})
