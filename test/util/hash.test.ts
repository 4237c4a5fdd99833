import test from 'ava'
import { HashSet, blake3 } from '../../src/util/hash.js'

/**
 * Another hash (from `seed`) keyed as `of` is: the same first 4 bytes, but for `low` in the 2 low
 * bits of the first, which the key drops.
 */
function keyTwin(of: Buffer, seed: string, low = of[0]! & 3): Buffer {
  const h = Buffer.from(blake3(Buffer.from(seed)))
  of.copy(h, 0, 0, 4)
  h[0] = (of[0]! & ~3) | (low & 3)
  return h
}

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
  const b = keyTwin(a, 'b', a[0]! + 1)
  const c = keyTwin(a, 'c')
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
  const b = keyTwin(a, 'b')
  t.false(s.has(a))
  s.add(a)
  t.true(s.has(a))
  t.false(s.has(b))
  s.add(b)
  t.true(s.has(b))
  t.false(s.has(blake3(Buffer.from('c'))))
})
