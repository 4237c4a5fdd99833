import test from 'ava'
import { placeReplicas, validatePolicy } from '../../src/planner/replica-placement.js'
import { isVmifsError } from '../../src/errors.js'

const GB = 1e9
const sites = [
  { id: 'near-cheap', rttMs: 10, storagePrice: 1e-12, heldBytes: 0 },
  { id: 'near-dear', rttMs: 12, storagePrice: 5e-12, heldBytes: 0 },
  { id: 'far-cheapest', rttMs: 150, storagePrice: 1e-13, heldBytes: 0 },
  { id: 'near-holds-most', rttMs: 20, storagePrice: 4e-12, heldBytes: 0.9 * GB }
]

test('replicas go to the cheapest sites within the latency limit; chunks already held are credited', t => {
  const p = placeReplicas(validatePolicy({ minReplicas: 2, maxRttMs: 50 }), sites, GB)
  // near-holds-most: 4e-12 × 0.1 GB = 4e-4, cheaper than near-cheap's 1e-12 × 1 GB = 1e-3
  t.deepEqual(
    p.replicas.map(r => r.id),
    ['near-holds-most', 'near-cheap']
  )
  t.deepEqual(
    p.excluded.map(e => e.id),
    ['far-cheapest']
  )
  t.is(p.short, 0)
  t.is(p.replicas[0]!.missingBytes, 0.1 * GB)
})

test('without limits the cheapest storage wins; ties go to the host id', t => {
  const p = placeReplicas(validatePolicy({ minReplicas: 1 }), sites, GB)
  t.deepEqual(
    p.replicas.map(r => r.id),
    ['far-cheapest']
  )
  const tie = placeReplicas(
    { minReplicas: 2 },
    [
      { id: 'y', heldBytes: 0 },
      { id: 'x', heldBytes: 0 },
      { id: 'z', heldBytes: 0 }
    ],
    GB
  )
  t.deepEqual(
    tie.replicas.map(r => r.id),
    ['x', 'y']
  )
})

test('the DR host comes first and is exempt from the limits; a price limit excludes dear sites', t => {
  const p = placeReplicas(
    validatePolicy({ minReplicas: 2, dr: 'far-cheapest', maxRttMs: 50, maxPrice: 2e-12 }),
    sites,
    GB
  )
  t.deepEqual(
    p.replicas.map(r => [r.id, r.dr]),
    [
      ['far-cheapest', true],
      ['near-cheap', false]
    ]
  )
  t.deepEqual(p.excluded.map(e => e.id).sort(), ['near-dear', 'near-holds-most'])
})

test('too few eligible sites: the placement says how many replicas are short', t => {
  const p = placeReplicas(validatePolicy({ minReplicas: 3, maxRttMs: 11 }), sites, GB)
  t.deepEqual(
    p.replicas.map(r => r.id),
    ['near-cheap']
  )
  t.is(p.short, 2)
})

test('the same inputs give the same placement on every host (order of the sites does not matter)', t => {
  const pol = validatePolicy({ minReplicas: 3 })
  const a = placeReplicas(pol, sites, GB).replicas.map(r => r.id)
  const b = placeReplicas(pol, [...sites].reverse(), GB).replicas.map(r => r.id)
  t.deepEqual(a, b)
})

test('bad policies are refused with PARAM_INVALID', t => {
  for (const bad of [
    null,
    [],
    {},
    { minReplicas: -1 },
    { minReplicas: 1.5 },
    { minReplicas: 1, dr: '' },
    { minReplicas: 0, dr: 'x' },
    { minReplicas: 1, maxRttMs: -3 },
    { minReplicas: 1, maxPrice: 'cheap' },
    { minReplicas: 1, other: 1 }
  ]) {
    const err = t.throws(() => validatePolicy(bad))
    t.true(isVmifsError(err, 'PARAM_INVALID'), JSON.stringify(bad))
  }
})
