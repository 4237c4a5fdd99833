import test from 'ava'
import { HashSet, blake3 } from '../../src/util/hash.js'

test('HashSet says which hashes it has seen, across its table growing', t => {
  const s = new HashSet()
  const hashes = Array.from({ length: 5000 }, (_, i) => blake3(Buffer.from(`chunk ${i}`)))
  for (const h of hashes) t.true(s.add(h))
  t.is(s.size, 5000)
  for (const h of hashes) t.false(s.add(h))
  // a hash given inside a larger buffer, at an offset
  const inside = Buffer.concat([Buffer.alloc(7), hashes[123]!, Buffer.alloc(5)])
  t.false(s.add(inside, 7))
  t.is(s.size, 5000)
})

test('HashSet tells apart hashes that share the bits it is keyed by', t => {
  const s = new HashSet()
  const a = blake3(Buffer.from('a'))
  // same first 4 bytes but for the 2 low bits it drops, and the rest different
  const b = Buffer.from(blake3(Buffer.from('b')))
  a.copy(b, 0, 0, 4)
  b[0] = (b[0]! & ~3) | ((a[0]! + 1) & 3)
  const c = Buffer.from(blake3(Buffer.from('c')))
  a.copy(c, 0, 0, 4)
  t.true(s.add(a))
  t.true(s.add(b))
  t.true(s.add(c))
  t.false(s.add(a))
  t.false(s.add(b))
  t.false(s.add(Buffer.from(c)))
  t.is(s.size, 3)
})

test('HashSet.has answers for members, those sharing a key, and strangers', t => {
  const s = new HashSet()
  const a = blake3(Buffer.from('a'))
  const b = Buffer.from(blake3(Buffer.from('b')))
  a.copy(b, 0, 0, 4)
  t.false(s.has(a))
  s.add(a)
  t.true(s.has(a))
  t.false(s.has(b))
  s.add(b)
  t.true(s.has(b))
  t.false(s.has(blake3(Buffer.from('c'))))
})
