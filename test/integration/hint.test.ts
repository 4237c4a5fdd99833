// Live-migration hints between real agents on loopback: B runs a "VM" (a child process reading
// ranges of the image in a known order), `vmifs hint export` on B lists what it read most recent
// first, `vmifs hint import` on C makes C fetch exactly that before the VM moves, and the moved
// VM's reads on C are all cache hits with the original bytes.
import test from 'ava'
import fs from 'node:fs'
import path from 'node:path'
import { createHash } from 'node:crypto'
import { Fleet } from './fleet.js'
import { makeImage, nodeJson, vmifs } from './harness.js'

const MiB = 1024 * 1024

interface Entry {
  offset: number
  length: number
  hash?: string
}

/** Reads [start, end) ranges of a file in order in a child process; sha256 of each. */
function readRanges(file: string, ranges: Array<[number, number]>): string[] {
  return nodeJson<string[]>(`
    import fs from 'node:fs'
    import { createHash } from 'node:crypto'
    const fd = fs.openSync(${JSON.stringify(file)}, 'r')
    const out = []
    for (const [s, e] of ${JSON.stringify(ranges)}) {
      const b = Buffer.alloc(e - s)
      let n = 0
      while (n < b.length) n += fs.readSync(fd, b, n, b.length - n, s + n)
      out.push(createHash('sha256').update(b).digest('hex'))
    }
    fs.closeSync(fd)
    console.log(JSON.stringify(out))`)
}

test.serial(
  'a hint exported on the source lists what its VM read, most recent first; ' +
    "imported on the target, the VM's reads there are all hits",
  async t => {
    const f = await Fleet.create(t, ['a', 'b', 'c'])
    await f.start('a', { peers: ['b', 'c'] })
    await f.start('b', { peers: ['a'] })
    await f.start('c', { peers: ['a'] })
    const img = path.join(f.dir, 'disk.raw')
    const bytes = makeImage(img, 48) // the first 16 MiB random
    t.is(vmifs(['import', img, '--name', 'disk', '--data-dir', f.host('a').data]).code, 0)
    await f.waitFor(
      'the image on b and c',
      () => fs.existsSync(f.image('b', 'disk')) && fs.existsSync(f.image('c', 'disk'))
    )
    const ranges: Array<[number, number]> = [
      [1, 1.25],
      [9, 9.25],
      [5, 5.25],
      [13, 13.25]
    ].map(([s, e]) => [s! * MiB, e! * MiB])
    const sha = (s: number, e: number): string => createHash('sha256').update(bytes.subarray(s, e)).digest('hex')
    t.deepEqual(
      readRanges(f.image('b', 'disk'), ranges),
      ranges.map(([s, e]) => sha(s, e))
    )

    const hintFile = path.join(f.dir, 'disk.hint.json')
    const ex = vmifs(['hint', 'export', 'disk', '--out', hintFile, '--data-dir', f.host('b').data])
    t.is(ex.code, 0, ex.stderr)
    const hint = JSON.parse(fs.readFileSync(hintFile, 'utf8')) as {
      format: string
      digest: string
      chunks: Array<{ hash: string; size: number }>
    }
    const m = JSON.parse(vmifs(['manifest', 'disk', '--data-dir', f.host('a').data]).stdout) as {
      digest: string
      chunks: Entry[]
    }
    t.is(hint.format, 'vmifs-hint')
    t.is(hint.digest, m.digest)
    // independently: the chunks each range overlaps (plus up to 256 KiB of the kernel's read-ahead
    // past its end)
    const rangeOf = new Map<string, number>()
    const needed = new Set<string>()
    ranges.forEach(([s, e], k) => {
      for (const c of m.chunks) {
        if (!c.hash || c.offset >= e + 256 * 1024 || c.offset + c.length <= s) continue
        if (!rangeOf.has(c.hash)) rangeOf.set(c.hash, k)
        if (c.offset < e) needed.add(c.hash)
      }
    })
    const order = hint.chunks.map(c => rangeOf.get(c.hash))
    t.false(order.includes(undefined), 'the hint holds only chunks the VM read')
    t.deepEqual([...new Set(order)], [3, 2, 1, 0], 'most recent range first')
    t.true(
      [...needed].every(h => hint.chunks.some(c => c.hash === h)),
      'every chunk the VM read is in the hint'
    )
    t.true(
      vmifs(['hint', 'export', 'disk', '--max', '3', '--data-dir', f.host('b').data]).stdout.includes(
        hint.chunks[2]!.hash
      )
    )
    t.is(
      (
        JSON.parse(vmifs(['hint', 'export', 'disk', '--max', '3', '--data-dir', f.host('b').data]).stdout) as {
          chunks: unknown[]
        }
      ).chunks.length,
      3
    )

    // the target takes the hint before the VM moves
    const im = vmifs(['hint', 'import', hintFile, '--data-dir', f.host('c').data])
    t.is(im.code, 0, im.stderr)
    const took = JSON.parse(im.stdout) as { image: string; queued: number; cached: number; unknown: number }
    t.deepEqual(took, { image: 'disk', queued: hint.chunks.length, cached: 0, unknown: 0 })
    await f.waitFor('C to fetch the hinted chunks', () => {
      const s = f.stats('c')
      return s.prefetch.issued === hint.chunks.length && s.prefetch.pending === 0
    })
    const before = f.stats('c')
    t.is(before.prefetch.hinted, hint.chunks.length)
    t.is(
      before.fetch.bytes,
      hint.chunks.reduce((n, c) => n + c.size, 0),
      'C fetched exactly the hint'
    )
    // the VM moves: its reads on C are hits, byte-exact
    t.deepEqual(
      readRanges(f.image('c', 'disk'), ranges.slice().reverse()),
      ranges
        .slice()
        .reverse()
        .map(([s, e]) => sha(s, e))
    )
    const after = f.stats('c')
    t.log(
      `hint ${hint.chunks.length} chunks; C after the reads: missOps ${after.cache.missOps}, ` +
        `demand fetches ${after.prefetch.demandFetchedChunks}, used ${after.prefetch.used}`
    )
    t.is(after.prefetch.demandFetchedChunks, 0, 'no read on C waited for the network')
    t.is(after.cache.missOps, 0)
    t.true(after.prefetch.used >= needed.size)
    t.is(after.fetch.bytes, before.fetch.bytes)

    // bad input gets a stable code, and changes nothing
    const junk = path.join(f.dir, 'junk.json')
    fs.writeFileSync(junk, '{"format":"vmifs-hint","version":1,"image":"disk","digest":"xyz","chunks":[]}')
    const bad = vmifs(['hint', 'import', junk, '--data-dir', f.host('c').data])
    t.is(bad.code, 1)
    t.regex(bad.stderr, /\[HINT_INVALID\]/)
    fs.writeFileSync(junk, 'not json')
    t.regex(vmifs(['hint', 'import', junk, '--data-dir', f.host('c').data]).stderr, /\[HINT_INVALID\]/)
    fs.writeFileSync(junk, JSON.stringify({ ...hint, digest: 'f'.repeat(64) }))
    t.regex(vmifs(['hint', 'import', junk, '--data-dir', f.host('c').data]).stderr, /\[IMAGE_NOT_FOUND\]/)
    t.regex(vmifs(['hint', 'export', 'nope', '--data-dir', f.host('b').data]).stderr, /\[IMAGE_NOT_FOUND\]/)
    t.is(vmifs(['hint', 'export', 'disk', '--max', '0', '--data-dir', f.host('b').data]).code, 2)
    t.is(vmifs(['hint', 'frobnicate', 'x', '--data-dir', f.host('b').data]).code, 2)
    t.regex(
      vmifs(['hint', 'import', hintFile, '--data-dir', path.join(f.dir, 'no-agent')]).stderr,
      /\[AGENT_NOT_RUNNING\]/
    )
    t.is(f.stats('c').prefetch.issued, hint.chunks.length)
  }
)
