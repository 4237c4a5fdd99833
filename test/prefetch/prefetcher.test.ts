// The prefetcher's queue on real chunk stores: a "remote" data dir holds the image, the local
// one starts empty, and fetch() moves verified bytes from one store to the other (the network
// path itself is covered by test/integration/fleet*.test.ts).
import test, { type ExecutionContext } from 'ava'
import fs from 'node:fs'
import path from 'node:path'
import { Prefetcher } from '../../src/prefetch/prefetcher.js'
import { UsageModel } from '../../src/prefetch/usage-model.js'
import { newPrefetchStats } from '../../src/stats/stats.js'
import { importImage } from '../../src/manifests/import.js'
import type { Manifest } from '../../src/manifests/manifest.js'
import type { DataDir } from '../../src/datadir.js'
import { openDataDir, sleep, tmpDir } from '../helpers/tmp.js'
import { randomBuffer } from '../helpers/random.js'

const CHUNK = 4096

async function remoteImage(t: ExecutionContext, chunks: number): Promise<{ remote: DataDir; m: Manifest }> {
  const remote = openDataDir(t)
  const file = path.join(tmpDir(t), 'img.raw')
  fs.writeFileSync(file, randomBuffer(chunks * CHUNK, 7))
  const r = await importImage(remote, file, { name: 'img', chunking: { kind: 'fixed', chunkSize: CHUNK } })
  return { remote, m: r.manifest }
}

interface Rig {
  p: Prefetcher
  local: DataDir
  order: number[]
  stats: ReturnType<typeof newPrefetchStats>
  /** the counters of the image's own sessions */
  imageStats: ReturnType<typeof newPrefetchStats>
  release: () => void
  hold: () => void
}

/** A prefetcher moving chunks remote -> local; `order` gets the entry index of each fetch. */
function rig(
  t: ExecutionContext,
  remote: DataDir,
  m: Manifest,
  model: UsageModel,
  local: DataDir,
  concurrency = 1,
  delayMs = 0
): Rig {
  const index = new Map<string, number>()
  for (let i = 0; i < m.count; i++) index.set(m.hashHexAt(i), i)
  const order: number[] = []
  let gate: Promise<void> = Promise.resolve()
  let open = (): void => {}
  const stats = newPrefetchStats()
  const imageStats = newPrefetchStats()
  const p = new Prefetcher(
    {
      model: () => model,
      manifest: d => (d === m.digest() ? m : undefined),
      has: h => local.store.has(h),
      fetch: async hash => {
        await gate
        if (delayMs > 0) await sleep(delayMs)
        order.push(index.get(hash)!)
        await local.store.put(hash, await remote.store.read(hash), { verified: false })
      },
      demandActive: () => false,
      room: (size, since) => local.store.hasRoomWithout(size, since),
      stats,
      imageStats: d => (d === m.digest() ? imageStats : newPrefetchStats())
    },
    { threshold: 0.3, concurrency }
  )
  t.teardown(() => p.close())
  return {
    p,
    local,
    order,
    stats,
    imageStats,
    hold: () => {
      gate = new Promise(resolve => {
        open = resolve
      })
    },
    release: () => open()
  }
}

function modelOf(sessions: Array<Array<[number, number]>>): UsageModel {
  const u = new UsageModel()
  for (const s of sessions) u.addSession(new Map(s))
  return u
}

const until = async (what: string, cond: () => boolean): Promise<void> => {
  for (let i = 0; !cond(); i++) {
    if (i > 500) throw new Error(`timed out waiting for ${what}`)
    await sleep(10)
  }
}

test('a session fetches the likely chunks by expected need time; a hint goes first, in its order', async t => {
  const { remote, m } = await remoteImage(t, 32)
  // entries 10..19 read in three sessions, at decreasing times a second apart (19 first); 25 once
  // only: below 0.3
  const s = Array.from({ length: 10 }, (_, k) => [10 + k, 10_000 - k * 1000] as [number, number])
  const model = modelOf([[[25, 5]], s, s, s])
  const r = rig(t, remote, m, model, openDataDir(t))
  r.hold()
  const hint = [3, 1, 2].map(i => ({ hash: m.hashHexAt(i) }))
  t.deepEqual(r.p.hint(m.digest(), [...hint, { hash: 'ab'.repeat(32) }]), { queued: 3, cached: 0, unknown: 1 })
  r.p.start(m.digest())
  r.release()
  await until('the queue to drain', () => r.order.length === 13 && r.p.pending === 0)
  t.deepEqual(r.order, [3, 1, 2, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10])
  t.is(r.stats.issued, 13)
  t.is(r.stats.bytes, 13 * CHUNK)
  t.is(r.stats.hinted, 3)
})

test('the end of a session drops what is queued; wasted = prefetched and never read', async t => {
  const { remote, m } = await remoteImage(t, 40)
  const model = modelOf([Array.from({ length: 40 }, (_, i) => [i, i] as [number, number])])
  const r = rig(t, remote, m, model, openDataDir(t), 1, 20)
  r.p.start(m.digest())
  await until('five fetches', () => r.order.length >= 5)
  r.p.demand(m.digest(), m.hashHexAt(0))
  r.p.demand(m.digest(), m.hashHexAt(1))
  r.p.end(m.digest())
  const n = r.order.length
  await sleep(200)
  t.true(r.order.length <= n + 1, 'at most the fetch under way finishes') // concurrency 1
  t.is(r.p.pending, 0)
  t.is(r.stats.used, 2)
  // the fetch under way when the session ended counts as wasted when it lands
  t.is(r.stats.wasted, r.order.length - 2)
  t.is(r.stats.wastedBytes, (r.order.length - 2) * CHUNK)
  t.is(r.stats.issued, r.order.length)
  t.true(r.order.length < 40)
  // the image's own counters count the same (its only session)
  t.deepEqual(r.imageStats, r.stats)
})

test(
  'a demand read of a chunk whose prefetch is under way counts as used and late; ' +
    'one already demanded is not prefetched',
  async t => {
    const { remote, m } = await remoteImage(t, 8)
    const model = modelOf([
      [
        [0, 1],
        [1, 2],
        [2, 3]
      ]
    ])
    const r = rig(t, remote, m, model, openDataDir(t))
    r.p.demand(m.digest(), m.hashHexAt(9)) // no session yet: ignored
    r.hold()
    r.p.start(m.digest())
    r.p.demand(m.digest(), m.hashHexAt(2)) // the read got there before the prefetch
    await sleep(20) // entry 0's fetch is waiting at the gate
    r.p.demand(m.digest(), m.hashHexAt(0))
    r.release()
    await until('the queue to drain', () => r.p.pending === 0 && r.order.length === 2)
    await sleep(20)
    t.deepEqual(r.order, [0, 1])
    t.is(r.stats.used, 1)
    t.is(r.stats.late, 1)
    r.p.demand(m.digest(), m.hashHexAt(1))
    t.is(r.stats.used, 2)
    t.is(r.stats.late, 1)
  }
)

test('prefetch evicts older chunks for room but never what its own session cached; it stops instead', async t => {
  const { remote, m } = await remoteImage(t, 48)
  const local = openDataDir(t, 24 * CHUNK)
  // 12 old chunks from before the session
  for (let i = 36; i < 48; i++) await local.store.put(m.hashHexAt(i), await remote.store.read(m.hashHexAt(i)))
  await sleep(20)
  const model = modelOf([Array.from({ length: 36 }, (_, i) => [i, i] as [number, number])])
  const r = rig(t, remote, m, model, local, 4)
  r.p.start(m.digest())
  await until('the prefetcher to stop', () => r.p.pending === 0 && r.stats.skippedNoRoom > 0)
  await sleep(50)
  const cached = (from: number, to: number): number => {
    let n = 0
    for (let i = from; i < to; i++) if (local.store.has(m.hashHexAt(i))) n++
    return n
  }
  t.log(`prefetched ${r.stats.issued}, skipped ${r.stats.skippedNoRoom}, cache ${local.store.sizeBytes / CHUNK} chunks`)
  t.true(local.store.sizeBytes <= 24 * CHUNK)
  t.is(cached(0, 36), r.stats.issued, 'every chunk the session prefetched is still cached')
  t.true(r.stats.issued >= 20 && r.stats.issued <= 24, `filled the cache (${r.stats.issued})`)
  t.true(cached(36, 48) <= 24 - r.stats.issued, 'old chunks made the room')
})

test('prefetches go out in groups: a new one once half the window has landed, never more than the window', async t => {
  const { remote, m } = await remoteImage(t, 64)
  const local = openDataDir(t)
  const model = modelOf([Array.from({ length: 64 }, (_, i) => [i, i] as [number, number])])
  // one tick counter: fetches begun in the same turn of the event loop see the same value
  let tick = 0
  let ticking = true
  const bump = (): void => {
    tick++
    if (ticking) setImmediate(bump)
  }
  bump()
  t.teardown(() => {
    ticking = false
  })
  const groups = new Map<number, number>()
  let inFlight = 0
  let most = 0
  let started = 0
  const p = new Prefetcher(
    {
      model: () => model,
      manifest: d => (d === m.digest() ? m : undefined),
      has: h => local.store.has(h),
      fetch: async hash => {
        groups.set(tick, (groups.get(tick) ?? 0) + 1)
        inFlight++
        most = Math.max(most, inFlight)
        // chunks land one by one, as a range's do
        await sleep(2 + (started++ % 8))
        await local.store.put(hash, await remote.store.read(hash))
        inFlight--
      },
      demandActive: () => false,
      room: () => true,
      stats: newPrefetchStats()
    },
    { threshold: 0.3, concurrency: 8 }
  )
  t.teardown(() => p.close())
  p.start(m.digest())
  await until('the queue to drain', () => p.pending === 0 && inFlight === 0 && started === 64)
  const sizes = [...groups.values()]
  t.log(`groups: ${sizes.join(' ')}`)
  t.is(
    sizes.reduce((a, b) => a + b, 0),
    64
  )
  t.true(most <= 8, `at most the window in flight (${most})`)
  t.true(
    sizes.slice(0, -1).every(n => n >= 4),
    'every group but the last is at least half the window'
  )
  t.true(sizes.length <= 16, `${sizes.length} groups for 64 chunks`)
})

test('a session that started with no model follows one arriving later, once (an image looked up on use)', async t => {
  const { remote, m } = await remoteImage(t, 16)
  const model = new UsageModel()
  const r = rig(t, remote, m, model, openDataDir(t))
  r.p.start(m.digest())
  r.p.modelArrived(m.digest()) // still none: nothing to follow
  await sleep(50)
  t.is(r.stats.issued, 0)
  for (let k = 0; k < 2; k++)
    model.addSession(
      new Map([
        [4, 0],
        [5, 100],
        [6, 200]
      ])
    )
  r.p.modelArrived(m.digest())
  await until("the model's chunks", () => r.order.length === 3 && r.p.pending === 0)
  t.deepEqual(r.order, [4, 5, 6])
  model.addSession(new Map([[9, 0]]))
  r.p.modelArrived(m.digest()) // the session follows the first model that came, not every change
  await sleep(50)
  t.is(r.stats.issued, 3)
})
