// Holders of equal cost are taken in an order of each host's own: the users of a popular image
// spread over its holders instead of all following the same ones.
import test from 'ava'
import { tieOrder } from '../../src/metadata/redis.js'

test('each host orders equal holders its own way, the same every time, and the firsts spread over all of them', t => {
  const holders = Array.from({ length: 40 }, (_, i) => `h${i}`)
  const firsts = new Map<string, number>()
  const seen = new Set<string>()
  for (let s = 0; s < 200; s++) {
    const key = tieOrder(`user${s}`)
    const order = [...holders].sort((a, b) => (key(a) < key(b) ? -1 : 1))
    t.deepEqual(
      [...holders].reverse().sort((a, b) => (key(a) < key(b) ? -1 : 1)),
      order
    )
    seen.add(order.slice(0, 8).join(','))
    for (const h of order.slice(0, 8)) firsts.set(h, (firsts.get(h) ?? 0) + 1)
  }
  // 200 hosts × 8 followed over 40 holders: 40 each on average; by id order, 8 holders would get 200
  t.is(firsts.size, 40, 'every holder is followed by some host')
  t.true(Math.max(...firsts.values()) <= 80, `the most followed holder: ${Math.max(...firsts.values())}`)
  t.true(seen.size > 190, 'hosts follow different sets')
})
