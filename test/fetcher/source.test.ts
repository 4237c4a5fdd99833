// The chunk source on real holders (peer servers on loopback): one flight per chunk whoever asks,
// and a read that joins a prefetch's slow fetch raises it: it hedges to the next holder.
import test, { type ExecutionContext } from 'ava'
import { ChunkSource } from '../../src/fetcher/source.js'
import { Stats } from '../../src/stats/stats.js'
import { createLogger } from '../../src/util/log.js'
import { openDataDir } from '../helpers/tmp.js'
import { holderServer, remoteImage, sourceFor } from '../helpers/holders.js'

const CHUNK = 4096

const image = async (t: ExecutionContext): ReturnType<typeof remoteImage> => await remoteImage(t, 8, CHUNK, 11)

/** The image behind one holder that records what it is asked for; a chunk source fetching from it. */
async function oneHolder(t: ExecutionContext) {
  const { remote, img, m } = await image(t)
  const asked: string[] = []
  const url = await holderServer(t, async hash => {
    asked.push(hash)
    return await remote.store.read(hash)
  })
  const local = openDataDir(t)
  return { img, m, asked, local, ...sourceFor(t, local, m, [{ id: 'r', url, price: 0 }]) }
}

test('a read that joins a prefetch stuck on a slow holder raises the fetch: it hedges to the next holder', async t => {
  const { remote, img, m } = await image(t)
  // the cheapest holder answers only when let go (at the latest after 5 s, so that a source that
  // does not hedge fails this test rather than hanging it)
  let letGo: () => void = () => {}
  const released = new Promise<void>(resolve => {
    letGo = resolve
    setTimeout(resolve, 5000).unref()
  })
  t.teardown(() => letGo())
  const slowAsked: string[] = []
  let asked: () => void = () => {}
  const askedOnce = new Promise<void>(resolve => {
    asked = resolve
  })
  const slow = await holderServer(t, async hash => {
    slowAsked.push(hash)
    asked()
    await released
    return await remote.store.read(hash)
  })
  const fast = await holderServer(t, async hash => await remote.store.read(hash))
  const local = openDataDir(t)
  const { source, stats } = sourceFor(t, local, m, [
    { id: 'slow', url: slow, price: 0 },
    { id: 'fast', url: fast, price: 1 }
  ])
  const want = { hash: m.hashHexAt(3), size: CHUNK }
  const prefetch = source.ensure(want, 'prefetch')
  await askedOnce
  t.deepEqual(slowAsked, [want.hash], 'the prefetch asked the cheapest holder, which does not answer')
  t.is(stats.hedges, 0, 'a prefetch does not hedge')
  const got = await source.get(want, 'demand')
  t.true(got.equals(img.subarray(3 * CHUNK, 4 * CHUNK)))
  t.is(stats.raisedFlights, 1)
  t.is(stats.hedges, 1)
  t.is(stats.holder('fast').bytes, CHUNK, 'the bytes came from the next holder')
  t.is(stats.demandFetchedChunks, 1, 'a read that joins a prefetch counts as fetched for reads')
  await prefetch
  t.true(local.store.has(want.hash), 'one flight: the prefetch is done too, the chunk cached once')
  t.is(source.inFlight, 0)
})

test('one flight per chunk: concurrent reads and a prefetch of it ask a holder once', async t => {
  const { img, m, asked, source, stats } = await oneHolder(t)
  const want = { hash: m.hashHexAt(5), size: CHUNK }
  const [a, b] = await Promise.all([
    source.get(want, 'demand'),
    source.get(want, 'ahead'),
    source.ensure(want, 'prefetch')
  ])
  t.true(a.equals(img.subarray(5 * CHUNK, 6 * CHUNK)))
  t.true(a.equals(b))
  t.deepEqual(asked, [want.hash])
  t.is(stats.raisedFlights, 0, 'the read began the flight: nothing of higher priority joined it')
  // now it is local: read from the store (then memory), never asked for again
  await new Promise(resolve => setTimeout(resolve, 20))
  t.true((await source.get(want, 'demand')).equals(a))
  t.deepEqual(asked, [want.hash])
})

test('on a single host a chunk that is not local is CHUNK_MISSING; a local one is read and kept in memory', async t => {
  const { remote, img, m } = await image(t)
  const stats = new Stats()
  const source = new ChunkSource(remote.store, stats, createLogger('test', 'silent'), 1 << 20)
  t.true((await source.get({ hash: m.hashHexAt(0), size: CHUNK }, 'demand')).equals(img.subarray(0, CHUNK)))
  t.true((await source.get({ hash: m.hashHexAt(0), size: CHUNK }, 'demand')).equals(img.subarray(0, CHUNK)))
  t.is(stats.memHits, 1)
  const missing = 'ab'.repeat(32)
  const code = (err: unknown): unknown => (err as { code?: string }).code
  t.is(code(await t.throwsAsync(source.get({ hash: missing, size: 10 }, 'demand'))), 'CHUNK_MISSING')
  t.is(code(await t.throwsAsync(source.ensure({ hash: missing, size: 10 }, 'prefetch'))), 'CHUNK_MISSING')
})

test("a read of a chunk a replication's batch is bringing joins it; a slow batch hedges to the holders", async t => {
  const { img, m, asked, local, source, stats } = await oneHolder(t)
  const bytesOf = (i: number): Buffer => img.subarray(i * CHUNK, (i + 1) * CHUNK)
  const [w0, w1, w2] = [0, 1, 2].map(i => ({ hash: m.hashHexAt(i), size: CHUNK }))
  const batch = source.expect([w0!, w1!, w2!], 'donor')

  // chunk 0: the batch brings it first; the read that joined gets those bytes, no holder is asked
  const read0 = source.get(w0!, 'demand')
  await local.store.put(w0!.hash, bytesOf(0), { verified: true }) // as replication stores its batch
  batch.settle(w0!.hash, bytesOf(0))
  t.true((await read0).equals(bytesOf(0)))
  t.deepEqual(asked, [])

  // chunk 1: the batch is slow: after the donor's hedge delay the holders are asked too (the
  // batch comes after 5 s at the latest, so that a source that does not hedge fails, not hangs)
  const late = setTimeout(() => batch.settle(w1!.hash, bytesOf(1)), 5000)
  t.true((await source.get(w1!, 'demand')).equals(bytesOf(1)))
  clearTimeout(late)
  t.deepEqual(asked, [w1!.hash])
  t.is(stats.raisedFlights, 2)
  batch.settle(w1!.hash, bytesOf(1)) // late: changes nothing
  // joins the hedge's flight until it is recorded (a second fetch would show in `asked`)
  await source.ensure(w1!, 'prefetch')
  t.true(local.store.has(w1!.hash), 'what the hedge fetched is cached here')

  // chunk 2: the donor did not give it and nobody joined: a read later fetches it itself
  batch.settle(w2!.hash, null)
  t.true((await source.get(w2!, 'demand')).equals(bytesOf(2)))
  t.deepEqual(asked, [w1!.hash, w2!.hash])
  await source.ensure(w2!, 'prefetch') // once it is cached
  t.is(source.inFlight, 0)
})
