// A host whose data dir's filesystem is smaller than what it reads: the cache writes that hit
// ENOSPC evict to make room, the capacity in force drops to what fits, and what was read last
// stays cached, so reading it again fetches nothing. A real ext4 on a loop device, real agents.
import test from 'ava'
import fs from 'node:fs'
import path from 'node:path'
import { randomBytes } from 'node:crypto'
import { spawnSync } from 'node:child_process'
import { Fleet } from './fleet.js'
import { dropPages, run, tmpdir, vmifs } from './harness.js'

const FS_MIB = 48
const IMAGE_MIB = 96

test.serial('a full disk evicts and reads stop re-fetching', async t => {
  // the small filesystem outlives the fleet's teardown (registered first, it runs last)
  const small = tmpdir('vmifs-small-')
  const mnt = path.join(small, 'mnt')
  t.teardown(() => {
    spawnSync('umount', [mnt])
    fs.rmSync(small, { recursive: true, force: true })
  })
  fs.mkdirSync(mnt)
  const fsImg = path.join(small, 'fs.img')
  fs.writeFileSync(fsImg, '')
  fs.truncateSync(fsImg, FS_MIB * 1024 * 1024)
  t.is(spawnSync('mkfs.ext4', ['-q', '-F', fsImg]).status, 0)
  t.is(spawnSync('mount', ['-o', 'loop', fsImg, mnt]).status, 0)

  const f = await Fleet.create(t, ['a', 'b'])
  f.host('b').data = path.join(mnt, 'data')
  const img = path.join(f.dir, 'big.raw')
  fs.writeFileSync(img, randomBytes(IMAGE_MIB * 1024 * 1024))
  t.is(vmifs(['import', img, '--name', 'big', '--data-dir', f.host('a').data]).code, 0)
  await f.start('a')
  await f.start('b', { peers: ['a'] })
  await f.waitFor('the image on b', () => fs.existsSync(f.image('b', 'big')))

  t.is(run('cmp', [img, f.image('b', 'big')], 120_000).status, 0, 'read whole and right')
  const s = f.stats('b')
  t.true(s.cache.effectiveCapacityBytes < FS_MIB * 1024 * 1024, `in force: ${s.cache.effectiveCapacityBytes}`)
  t.true(s.cache.capacityBytes > IMAGE_MIB * 1024 * 1024)
  t.true(s.cache.evictions > 0)

  // the last 8 MiB were fetched last: they are cached, and reading them again fetches nothing
  dropPages(f.image('b', 'big'))
  const before = f.stats('b').fetch.bytes
  const tail = run('dd', [`if=${f.image('b', 'big')}`, 'of=/dev/null', 'bs=1M', `skip=${IMAGE_MIB - 8}`, 'count=8'])
  t.is(tail.status, 0, tail.stderr)
  t.is(f.stats('b').fetch.bytes - before, 0, 'the tail was fetched again')
})
