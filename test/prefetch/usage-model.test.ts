import test from 'ava'
import { UsageModel, inheritModel } from '../../src/prefetch/usage-model.js'
import { type Manifest, ManifestBuilder } from '../../src/manifests/manifest.js'
import { blake3 } from '../../src/util/hash.js'
import { TraceRecorder, type SessionTrace } from '../../src/prefetch/trace-recorder.js'
import { sleep } from '../helpers/tmp.js'

test('probabilities are smoothed counts; need times are medians; likely() orders by need time', t => {
  const m = new UsageModel()
  m.addSession(
    new Map([
      [1, 100],
      [2, 5],
      [3, 900]
    ]),
    1
  )
  t.is(m.probability(1), 1.5 / 2) // one session is not certainty
  t.is(m.probability(9), 0.5 / 2)
  m.addSession(
    new Map([
      [1, 300],
      [2, 7]
    ]),
    1
  )
  m.addSession(
    new Map([
      [1, 200],
      [2, 6]
    ]),
    1
  )
  t.is(m.n, 3)
  t.is(m.probability(2), 3.5 / 4)
  t.is(m.probability(3), 1.5 / 4)
  t.is(m.needTime(1), 200)
  t.deepEqual(m.likely(0.8), [2, 1])
  t.deepEqual(m.likely(0.3), [2, 1, 3])
  // by quanta of need time: 2 (6 ms) and 1 (200 ms) share the first 500 ms, in image order
  t.deepEqual(m.likely(0.3, 500), [1, 2, 3])
  t.deepEqual(m.likely(0.3, 100), [2, 1, 3])
})

test('old sessions decay, so a changed reading pattern takes over', t => {
  const m = new UsageModel()
  for (let i = 0; i < 10; i++) m.addSession(new Map([[1, 10]]))
  for (let i = 0; i < 10; i++) m.addSession(new Map([[2, 10]]))
  // with λ = 0.9 ten sessions carry 65 % of the weight: the new pattern dominates the old
  t.true(m.probability(2) > 0.7)
  t.true(m.probability(1) < 0.3)
  t.true(m.probability(2) > 2.5 * m.probability(1))
})

test('JSON round trip, rejection of malformed models, and merging hosts', t => {
  const a = new UsageModel()
  a.addSession(
    new Map([
      [1, 10],
      [2, 20]
    ]),
    1
  )
  const b = new UsageModel()
  b.addSession(new Map([[2, 30]]), 1)
  b.addSession(
    new Map([
      [2, 40],
      [3, 50]
    ]),
    1
  )
  const a2 = UsageModel.fromJson(JSON.parse(JSON.stringify(a.toJson())))!
  t.deepEqual(a2.toJson(), a.toJson())
  t.is(UsageModel.fromJson({ v: 2 }), undefined)
  t.is(UsageModel.fromJson({ v: 1, n: 1, e: [['x', 1, []]] }), undefined)
  const m = UsageModel.merge([a2, b])
  t.is(m.n, 3)
  t.is(m.entries.get(2)!.count, 3)
  t.is(m.probability(2), 3.5 / 4)
  t.is(m.needTime(2), 30)
})

test('a session records first accesses from first open until the last release plus the idle gap', async t => {
  const ended: SessionTrace[] = []
  const r = new TraceRecorder(tr => ended.push(tr), 50)
  r.access('d', 0, 0) // no session: ignored
  r.open('d')
  r.access('d', 3, 5)
  r.open('d')
  r.release('d')
  await sleep(80)
  t.is(ended.length, 0, 'one handle is still open')
  r.access('d', 4, 7) // 4 and 5 were already seen
  r.release('d')
  await sleep(20)
  r.open('d') // reopened within the gap: the same session
  r.access('d', 9, 9)
  r.release('d')
  await sleep(100)
  t.is(ended.length, 1)
  t.deepEqual(
    [...ended[0]!.firsts.keys()].sort((a, b) => a - b),
    [3, 4, 5, 6, 7, 9]
  )
  t.true(ended[0]!.firsts.get(9)! >= ended[0]!.firsts.get(3)!)
  r.open('d')
  r.access('d', 1, 1)
  r.endAll()
  t.is(ended.length, 2)
})

/** A manifest of 4 KiB data chunks whose hashes are named by the numbers given (0 = a zero run). */
function manifestOf(names: number[]): Manifest {
  const b = new ManifestBuilder({ kind: 'fixed', chunkSize: 4096 })
  for (const n of names) b.add(4096, n === 0 ? null : blake3(Buffer.from(`chunk ${n}`)))
  return b.build()
}

test('inheritModel: a new version gets its predecessor model, mapped by chunk hash onto its own entries', t => {
  // v1's chunks 1..8; v2 = an inserted chunk 99 at the front, chunk 5 changed to 55, so every
  // common chunk sits one entry later
  const v1 = manifestOf([1, 2, 3, 4, 5, 6, 7, 8])
  const v2 = manifestOf([99, 1, 2, 3, 4, 55, 6, 7, 8])
  const model = new UsageModel()
  for (let s = 0; s < 3; s++)
    model.addSession(
      new Map([
        [0, 10],
        [2, 20 + s],
        [4, 40],
        [7, 70]
      ])
    )
  const got = inheritModel(v2, [{ digest: 'v1', manifest: v1, model }], 0.3)
  t.truthy(got)
  t.is(got!.from, 'v1')
  t.is(got!.share, 0.75) // entries 0, 2, 7 of v1's four likely ones are in v2; 4 (chunk 5) is not
  t.is(got!.model.n, model.n)
  t.deepEqual(got!.model.likely(0.3), [1, 3, 8])
  const moved: Array<[number, number]> = [
    [0, 1],
    [2, 3],
    [7, 8]
  ]
  for (const [from, to] of moved) {
    t.is(got!.model.probability(to), model.probability(from))
    t.is(got!.model.needTime(to), model.needTime(from))
  }
  t.is(got!.model.probability(5), 0.5 / (model.n + 1), 'the changed chunk has no history')
})

test(
  'inheritModel: the donor whose likely chunks the image holds most of wins; ' +
    'none under the share floor; no model, no donor',
  t => {
    const target = manifestOf([1, 2, 3, 4, 0, 5, 6])
    const near = manifestOf([1, 2, 3, 9])
    const far = manifestOf([1, 7, 8, 9])
    const m = new UsageModel()
    m.addSession(
      new Map([
        [0, 1],
        [1, 2],
        [2, 3],
        [3, 4]
      ])
    )
    const got = inheritModel(
      target,
      [
        { digest: 'far', manifest: far, model: m },
        { digest: 'near', manifest: near, model: m }
      ],
      0.3
    )
    t.is(got?.from, 'near')
    t.is(got?.share, 0.75)
    t.is(
      inheritModel(target, [{ digest: 'far', manifest: far, model: m }], 0.3),
      undefined,
      'far shares 25 %, under the 50 % floor'
    )
    t.is(
      inheritModel(target, [{ digest: 'near', manifest: near, model: new UsageModel() }], 0.3),
      undefined,
      'a donor with no sessions'
    )
    t.is(inheritModel(target, [], 0.3), undefined)
  }
)
