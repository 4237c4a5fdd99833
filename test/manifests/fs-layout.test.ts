// File cuts on real ext4 images built by mke2fs -d, checked against debugfs (e2fsprogs) as the
// independent reader of the same filesystem; partition tables written by sfdisk.
import test, { type ExecutionContext } from 'ava'
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import fsp from 'node:fs/promises'
import path from 'node:path'
import { findFileLayout } from '../../src/manifests/fs-layout.js'
import { importImage } from '../../src/manifests/import.js'
import { readAt } from '../../src/util/files.js'
import { isRegular, statAll, walk } from '../../bench/lib/ext4-extents.js'
import { openDataDir, tmpDir } from '../helpers/tmp.js'
import { prng, randomBuffer } from '../helpers/random.js'

const MiB = 1024 * 1024

function run(t: ExecutionContext, cmd: string, args: string[], input?: string): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8', input })
  if (r.status !== 0) t.fail(`${cmd} ${args.join(' ')}: ${r.error?.message ?? r.stderr}`)
}

interface FileSpec {
  rel: string
  data: Buffer
}

/**
 * `count` files, most of 1 byte to 96 KiB (as in a root filesystem), every tenth up to 1.5 MiB,
 * in three directories.
 */
function makeFiles(seed: number, count: number, suffix = ''): FileSpec[] {
  const next = prng(seed)
  const out: FileSpec[] = []
  for (let i = 0; i < count; i++) {
    const where = i % 3 === 0 ? 'sub' : i % 5 === 0 ? 'sub/deeper' : '.'
    const size =
      i % 4 === 0 ? 1 + (next() % 4000) : i % 10 === 1 ? 1 + (next() % (1536 * 1024)) : 1 + (next() % (96 * 1024))
    out.push({ rel: path.join(where, `f${i}${suffix}`), data: randomBuffer(size, seed * 10_000 + i) })
  }
  return out
}

/** Writes the files (mke2fs -d lays each directory's files out in name order). */
function writeFiles(dir: string, files: FileSpec[]): void {
  fs.mkdirSync(path.join(dir, 'sub/deeper'), { recursive: true })
  for (const f of files) fs.writeFileSync(path.join(dir, f.rel), f.data)
}

/** makeFiles plus a sparse file: data blocks between holes, which mke2fs -d keeps, so it has 40 extents. */
function fillDir(dir: string, seed: number, count: number): void {
  writeFiles(dir, makeFiles(seed, count))
  const fd = fs.openSync(path.join(dir, 'sparse'), 'w')
  for (let k = 0; k < 40; k++)
    fs.writeSync(fd, randomBuffer(4096 * (1 + (k % 3)), seed + k), 0, undefined, k * 5 * 4096)
  fs.closeSync(fd)
}

function mkfs(t: ExecutionContext, dir: string, image: string, sizeMiB: number, features?: string): void {
  run(t, 'mke2fs', [
    '-q',
    '-F',
    '-t',
    'ext4',
    '-b',
    '4096',
    ...(features !== undefined ? ['-O', features] : []),
    '-d',
    dir,
    image,
    `${sizeMiB}M`
  ])
}

/** The cut offsets debugfs gives: each regular file's extents, in whole blocks, plus `base`. */
function expectedCuts(image: string, base: number, size: number): number[] {
  const files = [...walk(image, '/')].filter(([, e]) => isRegular(e.mode))
  const infos = statAll(
    image,
    files.map(([, e]) => e.inode)
  )
  const cuts = new Set<number>()
  for (const info of infos) {
    for (const e of info!.extents) {
      cuts.add(base + e.physical * 4096)
      cuts.add(base + (e.physical + e.blocks) * 4096)
    }
  }
  return [...cuts].filter(c => c > 0 && c < size).sort((a, b) => a - b)
}

async function layoutOf(image: string): Promise<Awaited<ReturnType<typeof findFileLayout>>> {
  const fh = await fsp.open(image, 'r')
  try {
    return await findFileLayout(async (pos, len) => await readAt(fh, pos, len), (await fh.stat()).size, 4096)
  } finally {
    await fh.close()
  }
}

for (const features of [undefined, '^64bit,^metadata_csum']) {
  test(
    `ext4 (${features ?? 'default features'}): ` + "the cuts are every file extent's ends, as debugfs lists them",
    async t => {
      const work = tmpDir(t)
      const dir = path.join(work, 'root')
      fillDir(dir, 1, 60)
      const image = path.join(work, 'fs.img')
      mkfs(t, dir, image, 96, features)
      const sparse = statAll(image, ['/sparse'])[0]!
      t.true(
        sparse.extents.length >= 40,
        'the sparse file has more extents than an inode holds (an extent tree of depth 1)'
      )
      const layout = await layoutOf(image)
      t.is(layout.filesystems.length, 1)
      t.like(layout.filesystems[0], { offset: 0, type: 'ext4', blockSize: 4096, files: 61 })
      t.is(layout.filesystems[0]!.incomplete, undefined)
      t.deepEqual([...layout.cuts], expectedCuts(image, 0, 96 * MiB))
    }
  )
}

for (const label of ['gpt', 'dos']) {
  test(`ext4 in a ${label} partition: cuts are offset by the partition's start`, async t => {
    const work = tmpDir(t)
    const dir = path.join(work, 'root')
    fillDir(dir, 2, 30)
    const fsImage = path.join(work, 'fs.img')
    mkfs(t, dir, fsImage, 48)
    const disk = path.join(work, 'disk.img')
    fs.writeFileSync(disk, '')
    fs.truncateSync(disk, 64 * MiB)
    // a small first partition holding nothing, then the filesystem at 8 MiB
    run(t, 'sfdisk', ['-q', disk], `label: ${label}\nstart=2048, size=4096\nstart=16384, size=${48 * 2048}\n`)
    const fd = fs.openSync(disk, 'r+')
    fs.writeSync(fd, fs.readFileSync(fsImage), 0, undefined, 8 * MiB)
    fs.closeSync(fd)
    const layout = await layoutOf(disk)
    t.deepEqual(
      layout.filesystems.map(f => f.offset),
      [8 * MiB]
    )
    t.deepEqual([...layout.cuts], expectedCuts(fsImage, 8 * MiB, 64 * MiB))
  })
}

test('no filesystem, or a damaged one: no error, and every cut is a block boundary inside the image', async t => {
  const work = tmpDir(t)
  const noise = path.join(work, 'noise.img')
  fs.writeFileSync(noise, randomBuffer(8 * MiB, 7))
  const none = await layoutOf(noise)
  t.deepEqual(none, { filesystems: [], cuts: new Float64Array(0) })

  const dir = path.join(work, 'root')
  fillDir(dir, 3, 40)
  const image = path.join(work, 'fs.img')
  mkfs(t, dir, image, 48)
  const whole = await layoutOf(image)
  // scribble over inode tables and extent blocks: the walk stops at what it cannot read
  const buf = fs.readFileSync(image)
  const next = prng(9)
  for (let k = 0; k < 400; k++) randomBuffer(256, 100 + k).copy(buf, 4096 * (1 + (next() % 2000)) + 256 * (next() % 16))
  fs.writeFileSync(image, buf)
  const damaged = await layoutOf(image)
  t.is(damaged.filesystems.length, 1)
  for (const c of damaged.cuts) t.true(c > 0 && c < 48 * MiB && c % 4096 === 0)
  t.true(whole.cuts.length > 0)
})

test(
  'import: a sibling image (new files among ours, so ours lie elsewhere) ' +
    'shares every chunk of the files the two have in common',
  async t => {
    const work = tmpDir(t)
    const ours = makeFiles(4, 60)
    const extra = makeFiles(5, 30, 'x') // f0x sorts after f0: laid out among ours, ours at other offsets
    const common = path.join(work, 'a')
    writeFiles(common, ours)
    const sibling = path.join(work, 'b')
    writeFiles(sibling, [...ours, ...extra])
    const imgA = path.join(work, 'a.img')
    const imgB = path.join(work, 'b.img')
    mkfs(t, common, imgA, 96)
    mkfs(t, sibling, imgB, 96)

    // the bytes of B inside files B shares with A, from debugfs
    const files = [...walk(imgB, '/')].filter(([p, e]) => isRegular(e.mode) && !p.endsWith('x'))
    const ranges = statAll(
      imgB,
      files.map(([, e]) => e.inode)
    ).flatMap(i => i!.extents.map(e => ({ start: e.physical * 4096, end: (e.physical + e.blocks) * 4096 })))
    const fileBytes = ranges.reduce((n, r) => n + r.end - r.start, 0)

    const sharedFileBytes = async (fileCuts: boolean): Promise<{ bytes: number; flag: boolean | undefined }> => {
      const dd = openDataDir(t)
      const chunking = {
        kind: 'cdc',
        min: 4096,
        avg: 16384,
        max: 65536,
        ...(fileCuts ? { fileCuts: true } : {})
      } as const
      const a = await importImage(dd, imgA, { name: 'a', chunking })
      const b = await importImage(dd, imgB, { name: 'b', chunking })
      const inA = new Set<string>()
      for (let i = 0; i < a.manifest.count; i++)
        if (!(a.manifest.zero[i] === 1)) inA.add(a.manifest.hashAt(i).toString('hex'))
      let bytes = 0
      for (let i = 0; i < b.manifest.count; i++) {
        if (b.manifest.zero[i] === 1 || !inA.has(b.manifest.hashAt(i).toString('hex'))) continue
        const s = b.manifest.offsets[i]!
        const e = s + b.manifest.lengthAt(i)
        for (const r of ranges) bytes += Math.max(0, Math.min(e, r.end) - Math.max(s, r.start))
      }
      return { bytes, flag: b.manifest.chunking.kind === 'cdc' ? b.manifest.chunking.fileCuts : undefined }
    }
    const withCuts = await sharedFileBytes(true)
    const without = await sharedFileBytes(false)
    t.is(withCuts.flag, true)
    t.is(without.flag, undefined)
    t.is(withCuts.bytes, fileBytes, 'with file cuts every byte of a common file is in a chunk A has')
    t.true(without.bytes < fileBytes * 0.97, `without file cuts: ${without.bytes} of ${fileBytes}`)
    t.log(
      `shared file bytes: with cuts ${((100 * withCuts.bytes) / fileBytes).toFixed(1)} %, ` +
        `without ${((100 * without.bytes) / fileBytes).toFixed(1)} %`
    )
  }
)

test('import: an image with no filesystem is plain cdc, and says so', async t => {
  const work = tmpDir(t)
  const image = path.join(work, 'noise.img')
  fs.writeFileSync(image, randomBuffer(2 * MiB, 11))
  const dd = openDataDir(t)
  const r = await importImage(dd, image, { name: 'noise' })
  t.deepEqual(r.manifest.chunking, { kind: 'cdc', min: 4096, avg: 16384, max: 65536 })
  t.deepEqual(r.filesystems, [])
})
