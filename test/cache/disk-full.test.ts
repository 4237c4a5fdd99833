// A data dir on a filesystem that fills: cache writes evict unpinned chunks to make room instead
// of failing, the capacity in force drops to what fits, the operator is told once, and what was
// written last stays cached (so reads stop fetching it again). A real ext4 on a loop device.
import test from 'ava'
import fs from 'node:fs'
import path from 'node:path'
import { spawnSync } from 'node:child_process'
import { DataDir } from '../../src/datadir.js'
import { blake3Hex } from '../../src/util/hash.js'
import { randomBuffer } from '../helpers/random.js'
import { tmpDir } from '../helpers/tmp.js'

const FS_MIB = 48

function mountSmallFs(t: Parameters<typeof tmpDir>[0]): string {
  const dir = tmpDir(t, 'vmifs-full-')
  const img = path.join(dir, 'fs.img')
  const mnt = path.join(dir, 'mnt')
  fs.mkdirSync(mnt)
  fs.writeFileSync(img, '')
  fs.truncateSync(img, FS_MIB * 1024 * 1024)
  const mk = spawnSync('mkfs.ext4', ['-q', '-F', img], { encoding: 'utf8' })
  if (mk.status !== 0) throw new Error(`mkfs.ext4: ${mk.stderr}`)
  const m = spawnSync('mount', ['-o', 'loop', img, mnt], { encoding: 'utf8' })
  if (m.status !== 0) throw new Error(`mount: ${m.stderr}`)
  // registered after tmpDir's removal, so it runs before it
  t.teardown(() => {
    spawnSync('umount', [mnt])
  })
  return mnt
}

test('a full disk evicts to make room: writes go on, the effective capacity drops, one warning', async t => {
  const mnt = mountSmallFs(t)
  const data = path.join(mnt, 'data')
  fs.mkdirSync(data)
  const full: number[] = []
  const dd = DataDir.open(data, { capacityBytes: 1024 ** 3, onDiskFull: b => full.push(b) })
  t.teardown(() => dd.close())
  t.is(dd.store.effectiveCapacityBytes, 1024 ** 3)
  const hashes: string[] = []
  const size = 64 * 1024
  // three times what the filesystem holds, in the fetch path's writes (buffered, a turn at a time)
  for (let round = 0; round < (3 * FS_MIB * 16) / 8; round++) {
    const batch = Array.from({ length: 8 }, (_, k) => randomBuffer(size, 8 * round + k + 1))
    await Promise.all(
      batch.map(async b => {
        const h = blake3Hex(b)
        hashes.push(h)
        t.true(await dd.store.putAsync(h, b, { verified: true }))
      })
    )
  }
  t.is(full.length, 1, 'told once an episode')
  const eff = dd.store.effectiveCapacityBytes
  t.true(eff < FS_MIB * 1024 * 1024, `effective capacity ${eff}`)
  t.is(full[0], eff)
  t.true(dd.store.sizeBytes <= eff + 8 * size, `${dd.store.sizeBytes} held, ${eff} in force`)
  // the newest chunks are there and read back whole; the oldest were evicted for them
  for (const [i, h] of hashes.slice(-32).entries()) {
    t.true(dd.store.has(h))
    t.deepEqual(await dd.store.read(h), randomBuffer(size, hashes.length - 32 + i + 1))
  }
  t.false(dd.store.has(hashes[0]!))
})
