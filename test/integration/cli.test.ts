import test from 'ava'
import fs from 'node:fs'
import path from 'node:path'
import { spawnSync } from 'node:child_process'
import { makeImage, tmpdir, vmifs, VMIFS } from './harness.js'
import type { FsckReport } from '../../src/cache/fsck.js'

test('import rejects bad input with stable codes and exit status 1', t => {
  const dir = tmpdir()
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const data = path.join(dir, 'data')
  const code = (args: string[]): string | undefined =>
    /\[([A-Z_]+)\]\s*$/.exec(vmifs([...args, '--data-dir', data]).stderr)?.[1]
  t.is(code(['import', path.join(dir, 'missing.raw'), '--name', 'a']), 'INPUT_NOT_FOUND')
  t.is(code(['import', dir, '--name', 'a']), 'INPUT_IS_DIRECTORY')
  fs.writeFileSync(path.join(dir, 'empty.raw'), '')
  t.is(code(['import', path.join(dir, 'empty.raw'), '--name', 'a']), 'INPUT_EMPTY')
  spawnSync('mkfifo', [path.join(dir, 'fifo')])
  t.is(code(['import', path.join(dir, 'fifo'), '--name', 'a']), 'INPUT_UNREADABLE')
  const img = path.join(dir, 'a.raw')
  makeImage(img, 3)
  t.is(code(['import', img, '--name', '../etc']), 'NAME_INVALID')
  t.is(vmifs(['import', img, '--name', 'a', '--data-dir', data]).code, 0)
  t.is(code(['import', img, '--name', 'a']), 'NAME_TAKEN')
  const rep = vmifs(['import', img, '--name', 'a', '--replace', '--data-dir', data])
  t.is(rep.code, 0, rep.stderr)
  t.is(code(['import', img, '--name', 'b', '--chunking', 'weird']), 'USAGE')
  t.is(vmifs(['import', img, '--data-dir', data]).code, 2) // --name missing
  t.is(code(['export', 'nope', path.join(dir, 'out')]), 'IMAGE_NOT_FOUND')
  t.is(code(['export', 'a', img]), 'OUTPUT_EXISTS')
  t.is(code(['rm', 'nope']), 'IMAGE_NOT_FOUND')
  t.is(code(['stats']), 'AGENT_NOT_RUNNING')
  t.is(code(['import', img, '--name', 'c', '--config', path.join(dir, 'nope.json')]), 'CONFIG_INVALID')
  t.is(vmifs(['frobnicate']).code, 2)
})

test('import cuts at the files of an ext4 image unless told not to; --file-cuts is checked', t => {
  const dir = tmpdir()
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const data = path.join(dir, 'data')
  const root = path.join(dir, 'root')
  fs.mkdirSync(root)
  for (let i = 0; i < 20; i++) fs.writeFileSync(path.join(root, `f${i}`), Buffer.alloc(3000 + i * 5000, i + 1))
  const img = path.join(dir, 'fs.img')
  t.is(spawnSync('mke2fs', ['-q', '-F', '-t', 'ext4', '-d', root, img, '32M']).status, 0)
  const on = vmifs(['import', img, '--name', 'e', '--json', '--data-dir', data])
  t.is(on.code, 0, on.stderr)
  const r = JSON.parse(on.stdout) as { filesystems: Array<{ offset: number; type: string; files: number }> }
  t.like(r.filesystems, [{ offset: 0, type: 'ext4', files: 20 }])
  const chunkingOf = (name: string): unknown =>
    (JSON.parse(vmifs(['manifest', name, '--data-dir', data]).stdout) as { chunking: unknown }).chunking
  t.deepEqual(chunkingOf('e'), { kind: 'cdc', min: 4096, avg: 16384, max: 65536, fileCuts: true })
  t.is(vmifs(['import', img, '--name', 'e-plain', '--file-cuts', 'off', '--data-dir', data]).code, 0)
  t.deepEqual(chunkingOf('e-plain'), { kind: 'cdc', min: 4096, avg: 16384, max: 65536 })
  const code = (args: string[]): string | undefined =>
    /\[([A-Z_]+)\]\s*$/.exec(vmifs([...args, '--data-dir', data]).stderr)?.[1]
  t.is(code(['import', img, '--name', 'x', '--file-cuts', 'maybe']), 'USAGE')
  t.is(code(['import', img, '--name', 'x', '--chunking', 'fixed', '--file-cuts', 'on']), 'USAGE')
  const cfg = path.join(dir, 'cfg.json')
  fs.writeFileSync(
    cfg,
    JSON.stringify({ chunking: { kind: 'cdc', min: 4096, avg: 16384, max: 65536, fileCuts: 'yes' } })
  )
  t.is(code(['import', img, '--name', 'x', '--config', cfg]), 'CONFIG_INVALID')
})

test('every command has --help', t => {
  for (const c of ['import', 'ls', 'export', 'rm', 'fsck', 'agent', 'stats']) {
    const r = vmifs([c, '--help'])
    t.is(r.code, 0, c)
    t.regex(r.stdout, new RegExp(`^Usage: vmifs ${c}`), c)
  }
  const top = vmifs(['--help'])
  t.is(top.code, 0)
  t.regex(top.stdout, /import.*\n.*ls/s)
})

test('import, ls, export and rm round trip; rm collects chunks no other image uses', t => {
  const dir = tmpdir()
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const data = path.join(dir, 'data')
  const a = path.join(dir, 'a.raw')
  const bytes = makeImage(a, 9)
  const b = path.join(dir, 'b.raw')
  fs.writeFileSync(b, Buffer.concat([bytes.subarray(0, 4 * 1024 * 1024), Buffer.alloc(1024 * 1024, 7)]))
  for (const [file, name, chunking] of [
    [a, 'a', 'cdc'],
    [b, 'b', 'cdc'],
    [a, 'a-fixed', 'fixed']
  ] as const) {
    const r = vmifs(['import', file, '--name', name, '--chunking', chunking, '--json', '--data-dir', data])
    t.is(r.code, 0, r.stderr)
    t.is((JSON.parse(r.stdout) as { size: number }).size, fs.statSync(file).size)
  }
  const ls = JSON.parse(vmifs(['ls', '--json', '--data-dir', data]).stdout) as Array<{
    name: string
    cachedPct: number
    pinned: boolean
  }>
  t.deepEqual(
    ls.map(i => i.name),
    ['a', 'a-fixed', 'b']
  )
  t.true(ls.every(i => i.cachedPct === 100 && i.pinned))
  const out = path.join(dir, 'out.raw')
  const ex = vmifs(['export', 'a', out, '--data-dir', data])
  t.is(ex.code, 0, ex.stderr)
  t.true(fs.readFileSync(out).equals(bytes))
  t.true(fs.statSync(out).blocks * 512 < bytes.length, 'zero runs are holes')
  const sizeOf = (): number =>
    (JSON.parse(vmifs(['fsck', '--json', '--data-dir', data]).stdout) as FsckReport).checkedBytes
  const before = sizeOf()
  t.is(vmifs(['rm', 'a-fixed', '--data-dir', data]).code, 0)
  const afterFixed = sizeOf()
  t.true(afterFixed < before)
  t.is(vmifs(['rm', 'b', '--data-dir', data]).code, 0)
  const afterB = sizeOf()
  t.true(afterB < afterFixed)
  t.is(
    vmifs(['export', 'a', out, '--force', '--data-dir', data]).code,
    0,
    'a is intact after removing images sharing its chunks'
  )
  t.true(fs.readFileSync(out).equals(bytes))
})

test('import draws a progress bar with throughput on a terminal and prints only the digest otherwise', t => {
  const dir = tmpdir()
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const img = path.join(dir, 'a.raw')
  makeImage(img, 40)
  const data = path.join(dir, 'data')
  // `script` runs the command on a pseudo-terminal, as an operator's shell would
  const cmd = `${process.execPath} ${VMIFS} import ${img} --name tty --data-dir ${data}`
  const tty = spawnSync('script', ['-qec', cmd, '/dev/null'], { encoding: 'utf8', timeout: 60_000 })
  t.is(tty.status, 0, tty.stderr)
  t.regex(tty.stdout, /import \[[█░]+\] 100% \| [\d.]+ MiB\/[\d.]+ MiB \| [\d.]+ [KMG]iB\/s/)
  const quiet = vmifs(['import', img, '--name', 'notty', '--data-dir', data])
  t.is(quiet.code, 0)
  t.regex(quiet.stdout, /^[0-9a-f]{64}\n$/)
  t.is(quiet.stderr, '')
})
