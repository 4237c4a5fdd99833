// kill -9 while chunks are being written loses nothing recorded and leaves nothing for fsck to
// repair: a pack's bytes are written before the rows that point at them, and a dead writer's pack
// is cut back to its last recorded chunk by the next process that opens the data dir.
import test from 'ava'
import { spawn } from 'node:child_process'
import { randomFillSync } from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { fixture, makeImage, run, sleep, vmifs } from './harness.js'
import { Fleet, delayProxy } from './fleet.js'
import type { FsckReport } from '../../src/cache/fsck.js'

function fsckReport(data: string): { code: number | null; r: FsckReport } {
  const out = vmifs(['fsck', '--json', '--data-dir', data])
  return { code: out.code, r: JSON.parse(out.stdout) as FsckReport }
}

/** Writes `size` random bytes to `file`, 16 MiB at a time; returns the size. */
function randomFile(file: string, size: number): number {
  const fd = fs.openSync(file, 'w')
  try {
    const buf = Buffer.alloc(16 * 1024 * 1024)
    for (let off = 0; off < size; off += buf.length) fs.writeSync(fd, randomFillSync(buf), 0, buf.length, off)
  } finally {
    fs.closeSync(fd)
  }
  return size
}

function packBytes(data: string): number {
  const dir = path.join(data, 'packs')
  if (!fs.existsSync(dir)) return 0
  return fs.readdirSync(dir).reduce((n, f) => n + fs.statSync(path.join(dir, f)).size, 0)
}

test.serial('kill -9 during an import: fsck finds nothing to repair, and the import runs again', async t => {
  const f = fixture(t)
  const img = path.join(f.dir, 'disk.raw')
  // all new data, so that the import still writes long after its first transaction (256 MiB)
  const bytes = randomFile(img, 512 * 1024 * 1024)
  const child = spawn(
    process.execPath,
    [path.resolve('bin/vmifs.js'), 'import', img, '--name', 'disk', '--data-dir', f.data, '--quiet'],
    {
      stdio: 'ignore'
    }
  )
  const exited = new Promise(resolve => child.once('exit', resolve))
  // kill it once the first transaction of chunks is recorded (256 MiB of them), well before the end
  for (let i = 0; i < 3000 && packBytes(f.data) < 320 * 1024 * 1024; i++) await sleep(10)
  child.kill('SIGKILL')
  await exited
  const written = packBytes(f.data)
  t.true(written > 0 && written < bytes, `killed with ${written} bytes in packs`)
  const { code, r } = fsckReport(f.data)
  t.deepEqual([r.corrupt, r.missing, r.strays, r.incompleteImages], [[], [], 0, []])
  t.true(r.checked > 0, 'the chunks recorded before the kill are kept')
  t.is(code, 0)
  const again = vmifs(['import', img, '--name', 'disk', '--data-dir', f.data, '--json'])
  t.is(again.code, 0)
  const imported = JSON.parse(again.stdout) as { newChunks: number; chunks: number }
  t.true(imported.newChunks < imported.chunks, 'what was recorded before the kill is not written again')
  const a = await f.start()
  t.is(run('cmp', [img, path.join(f.mnt, 'images/disk')]).status, 0)
  t.is(await a.stop('SIGTERM'), 0)
  t.is(fsckReport(f.data).code, 0)
})

test.serial('kill -9 of an agent while it fetches: fsck finds nothing to repair, and a restart reads on', async t => {
  const f = await Fleet.create(t, ['a', 'b'])
  const a = await f.start('a', { peers: ['b'] })
  const img = path.join(f.dir, 'disk.raw')
  makeImage(img, 48)
  t.is(vmifs(['import', img, '--name', 'disk', '--data-dir', f.host('a').data]).code, 0)
  // B fetches A's chunks through a link of 8 MB/s: the whole image takes seconds
  const slow = await delayProxy(f.host('a').port, 0, 8_000_000)
  t.teardown(() => slow.close())
  await a.stop('SIGTERM')
  await f.start('a', { peers: ['b'], advertise: slow.url })
  const b = await f.start('b', { peers: ['a'] })
  await f.waitFor('the image on b', () => fs.existsSync(f.image('b', 'disk')))
  await f.synced('b', 'a')
  const reader = spawn('cat', [f.image('b', 'disk')], { stdio: 'ignore' })
  const readerExited = new Promise(resolve => reader.once('exit', resolve))
  const data = f.host('b').data
  for (let i = 0; i < 500 && packBytes(data) < 4 * 1024 * 1024; i++) await sleep(10)
  b.child.kill('SIGKILL')
  await b.exited
  t.true(packBytes(data) > 0, 'B had stored fetched chunks')
  const { r } = fsckReport(data)
  t.deepEqual([r.corrupt, r.missing, r.strays], [[], [], 0])
  t.true(r.checked > 0)
  // the same agent command resumes the mount; the reader, still waiting, is answered
  await f.start('b', { peers: ['a'] })
  await readerExited
  t.is(run('cmp', [img, f.image('b', 'disk')]).status, 0)
})
