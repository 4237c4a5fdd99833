// The image reader on real chunk stores: a "remote" data dir holds the image behind a real peer
// server, the local one starts empty, and the chunk source fetches from it; the server records
// what each request asked for (the chunks asked for in one tick travel as one batch request).
import test, { type ExecutionContext } from 'ava'
import { ImageReader, MISS_AHEAD } from '../../src/fuse/image-reader.js'
import type { Manifest } from '../../src/manifests/manifest.js'
import type { DataDir } from '../../src/datadir.js'
import type { Stats } from '../../src/stats/stats.js'
import { openDataDir } from '../helpers/tmp.js'
import { holderServer, remoteImage, sourceFor } from '../helpers/holders.js'

const CHUNK = 4096

async function rig(
  t: ExecutionContext
): Promise<{ reader: ImageReader; img: Buffer; m: Manifest; ticks: number[][]; stats: Stats; local: DataDir }> {
  const { remote, img, m } = await remoteImage(t, 64, CHUNK, 3)
  const local = openDataDir(t)
  const index = new Map<string, number>()
  for (let i = 0; i < m.count; i++) index.set(m.hashHexAt(i), i)
  const ticks: number[][] = []
  let request: number[] = []
  const url = await holderServer(
    t,
    async hash => {
      request.push(index.get(hash)!)
      return await remote.store.read(hash)
    },
    () => {
      ticks.push(request)
      request = []
    }
  )
  const { source, stats } = sourceFor(t, local, m, [{ id: 'r', url, price: 0 }])
  const reader = new ImageReader(local.store, source, stats, true)
  return { reader, img, m, ticks, stats, local }
}

test('a read that misses also asks for the uncached chunks within MISS_AHEAD after it, in the same tick', async t => {
  const { reader, img, m, ticks, stats, local } = await rig(t)
  const ahead = MISS_AHEAD / CHUNK
  // chunk 14 is already here: it is not asked for again
  await local.store.put(m.hashHexAt(14), img.subarray(14 * CHUNK, 15 * CHUNK), { verified: false })
  const dst = Buffer.alloc(CHUNK)
  t.is(await reader.read('img', m, dst, 10 * CHUNK, CHUNK), CHUNK)
  t.true(dst.equals(img.subarray(10 * CHUNK, 11 * CHUNK)))
  const want = Array.from({ length: ahead + 1 }, (_, k) => 10 + k).filter(i => i !== 14)
  t.deepEqual(ticks, [want], 'the read and the chunks after it, as one batch')
  t.is(stats.missAheadChunks, want.length - 1)
  // the chunks it brought serve the next reads: no fetch, same bytes
  await new Promise(resolve => setTimeout(resolve, 50))
  const next = Buffer.alloc(3 * CHUNK)
  t.is(await reader.read('img', m, next, 11 * CHUNK, 3 * CHUNK), 3 * CHUNK)
  t.true(next.equals(img.subarray(11 * CHUNK, 14 * CHUNK)))
  t.is(ticks.length, 1)
})

test('a read served from the cache asks for nothing', async t => {
  const { reader, img, m, ticks, stats, local } = await rig(t)
  for (const i of [30, 31])
    await local.store.put(m.hashHexAt(i), img.subarray(i * CHUNK, (i + 1) * CHUNK), { verified: false })
  const dst = Buffer.alloc(2 * CHUNK)
  t.is(await reader.read('img', m, dst, 30 * CHUNK, 2 * CHUNK), 2 * CHUNK)
  t.true(dst.equals(img.subarray(30 * CHUNK, 32 * CHUNK)))
  t.deepEqual(ticks, [])
  t.is(stats.missAheadChunks, 0)
})

test('near the end of the image only what is there is asked for', async t => {
  const { reader, img, m, ticks } = await rig(t)
  const dst = Buffer.alloc(100)
  t.is(await reader.read('img', m, dst, 62 * CHUNK + 5, 100), 100)
  t.true(dst.equals(img.subarray(62 * CHUNK + 5, 62 * CHUNK + 105)))
  t.deepEqual(ticks, [[62, 63]])
})
