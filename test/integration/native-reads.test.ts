// The mount's native threads: reads of cached chunks are answered natively (each chunk's record
// checked before any of it is served), everything else goes to the agent, and nothing a reader gets
// differs from the image.
import test from 'ava'
import fs from 'node:fs'
import path from 'node:path'
import { type AgentStats, readStats } from './agent-stats.js'
import { dropPages, fixture, isMounted, makeImage, nodeJson, run, vmifs } from './harness.js'
import { zeroAt } from '../helpers/chunks.js'

test.serial('byte-exact reads; reads of cached chunks past the page cache never enter the agent', async t => {
  const f = fixture(t)
  const img = path.join(f.dir, 'disk.raw')
  const bytes = makeImage(img, 12)
  t.is(vmifs(['import', img, '--name', 'disk', '--data-dir', f.data]).code, 0)
  await f.start()
  const file = path.join(f.mnt, 'images/disk')
  // the first read after start too: the open told the native side where the chunks are
  const s0: AgentStats = readStats(f.mnt)
  t.is(run('cmp', [img, file]).status, 0)
  t.is(run('cmp', [img, path.join(f.mnt, 'by-digest', fs.readdirSync(path.join(f.mnt, 'by-digest'))[0]!)]).status, 0)
  const s1: AgentStats = readStats(f.mnt)
  t.true(s1.read.ops > 0)
  t.is(s1.read.nativeOps - s0.read.nativeOps, s1.read.ops - s0.read.ops, 'the first reads were answered natively')
  dropPages(file)
  t.is(run('cmp', [img, file]).status, 0)
  const s2 = readStats(f.mnt)
  const ops = s2.read.ops - s1.read.ops
  t.true(ops > 0, 'the re-read reached the mount')
  t.is(s2.read.nativeOps - s1.read.nativeOps, ops, 'every read of the re-read was answered natively')
  t.is(s2.read.bytes - s1.read.bytes, bytes.length, 'and counted, bytes and all, before .stats was opened')
  t.is(s2.cache.hitBytes - s1.cache.hitBytes, bytes.length)
  t.is(s2.images.disk!.readOps - s1.images.disk!.readOps, ops)
  t.is(s2.cache.missOps, 0)
  // the packs' pages: none (read from the disk directly), then all (read from the page cache)
  const packs = fs.readdirSync(path.join(f.data, 'packs')).map(p => path.join(f.data, 'packs', p))
  for (const withPacks of [false, true]) {
    for (const p of packs)
      if (withPacks) fs.readFileSync(p)
      else dropPages(p)
    dropPages(file)
    const before = readStats(f.mnt)
    t.is(run('cmp', [img, file]).status, 0, withPacks ? 'packs in the page cache' : 'packs on the disk only')
    const after = readStats(f.mnt)
    t.is(after.read.nativeOps - before.read.nativeOps, after.read.ops - before.read.ops)
  }
})

test.serial(
  'a chunk damaged on disk after the agent started is never served: the agent finds it corrupt (EIO)',
  async t => {
    const f = fixture(t)
    const img = path.join(f.dir, 'disk.raw')
    const bytes = makeImage(img, 3)
    t.is(vmifs(['import', img, '--name', 'disk', '--data-dir', f.data]).code, 0)
    // the CRC the index keeps for the last chunk is damaged (its bytes sound) before the agent starts
    const [chunk, second] = nodeJson<Array<{ file: string; pos: number; len: number; start: number }>>(`
    import { DataDir } from ${JSON.stringify(path.resolve('dist/src/datadir.js'))}
    import { native } from ${JSON.stringify(path.resolve('dist/src/native/index.js'))}
    const dd = DataDir.open(${JSON.stringify(f.data)}, { capacityBytes: 1e12 })
    const m = dd.catalog.manifest(dd.catalog.listImages()[0].digest)
    const at = i => {
      const loc = dd.store.locate(m.hashHexAt(i))
      return { file: dd.store.packPath(loc.pack), pos: loc.off, len: m.lengthAt(i), start: m.offsets[i] }
    }
    const last = dd.store.locate(m.hashHexAt(m.count - 1))
    native().ixSetEntry(dd.store.index, m.hashAt(m.count - 1), last.pack, last.off, (last.crc ^ 1) >>> 0, -1)
    console.log(JSON.stringify([at(0), at(m.count - 1)]))
    dd.close()`) as [
      { file: string; pos: number; len: number },
      { file: string; pos: number; len: number; start: number }
    ]
    // no chunk kept in the agent's memory: a read the native side hands over must go to the disk
    const cfg = path.join(f.dir, 'config.json')
    fs.writeFileSync(cfg, JSON.stringify({ cache: { memory: 1 } }))
    await f.start(['--config', cfg])
    const file = path.join(f.mnt, 'images/disk')
    t.is(run('cmp', [img, file]).status, 0)
    // bit rot in the middle of the first chunk, after the agent started
    const fd = fs.openSync(chunk.file, 'r+')
    fs.writeSync(fd, Buffer.from('rot'), 0, 3, chunk.pos + 1000)
    fs.closeSync(fd)
    dropPages(file)
    const later = bytes.subarray(chunk.len + 8192, chunk.len + 8192 + 4096).toString('base64')
    const secondWant = bytes.subarray(second.start, second.start + second.len).toString('base64')
    const r = nodeJson<{ first: string; later: boolean; second: boolean }>(`
    import fs from 'node:fs'
    const fd = fs.openSync(${JSON.stringify(file)}, 'r')
    const b = Buffer.alloc(4096)
    let first = 'ok'
    try { fs.readSync(fd, b, 0, 4096, 0) } catch (e) { first = e.code }
    fs.readSync(fd, b, 0, 4096, ${chunk.len + 8192})
    const want = Buffer.from(${JSON.stringify(later)}, 'base64')
    const s = Buffer.alloc(${second.len})
    fs.readSync(fd, s, 0, s.length, ${second.start})
    const second = s.equals(Buffer.from(${JSON.stringify(secondWant)}, 'base64'))
    console.log(JSON.stringify({ first, later: b.equals(want), second }))`)
    t.is(r.first, 'EIO')
    t.true(r.later, 'the rest of the image still reads, natively')
    t.true(r.second, 'a chunk whose CRC in the index is damaged is read by hashing it')
    t.is(readStats(f.mnt).cache.corruptChunks, 1)
    t.true(zeroAt(chunk.file, chunk.pos, chunk.len), 'the corrupt chunk was dropped, its bytes freed')
  }
)

test.serial('an image imported while the agent runs is found at once; the mount is read-only', async t => {
  const f = fixture(t)
  const img = path.join(f.dir, 'disk.raw')
  makeImage(img, 3)
  t.is(vmifs(['import', img, '--name', 'first', '--data-dir', f.data]).code, 0)
  const a = await f.start()
  t.deepEqual(fs.readdirSync(path.join(f.mnt, 'images')), ['first'])
  t.is(vmifs(['import', img, '--name', 'second', '--data-dir', f.data]).code, 0)
  // no wait: a name the mount does not know makes the agent look at the catalog first
  t.is(run('cmp', [img, path.join(f.mnt, 'images/second')]).status, 0)
  t.deepEqual(fs.readdirSync(path.join(f.mnt, 'images')).sort(), ['first', 'second'])
  t.deepEqual(fs.readdirSync(f.mnt).sort(), ['.stats', 'by-digest', 'images'])
  const codes = nodeJson<Record<string, string>>(`
    import fs from 'node:fs'
    const out = {}
    const tryIt = (k, fn) => { try { fn(); out[k] = 'ok' } catch (e) { out[k] = e.code } }
    tryIt('openWrite', () => fs.openSync(${JSON.stringify(path.join(f.mnt, 'images/first'))}, 'r+'))
    tryIt('create', () => fs.writeFileSync(${JSON.stringify(path.join(f.mnt, 'images/new'))}, 'x'))
    tryIt('unlink', () => fs.unlinkSync(${JSON.stringify(path.join(f.mnt, 'images/first'))}))
    tryIt('missing', () => fs.statSync(${JSON.stringify(path.join(f.mnt, 'images/nope'))}))
    console.log(JSON.stringify(out))`)
  t.deepEqual(codes, { openWrite: 'EROFS', create: 'EROFS', unlink: 'EROFS', missing: 'ENOENT' })
  t.is(await a.stop('SIGTERM'), 0)
  t.false(isMounted(f.mnt), 'SIGTERM unmounted')
})
