import test from 'ava'
import { CHUNK_FRESH, CHUNK_ZERO, type ChunkRun, chunksOf, createChunker } from '../../src/manifests/chunker.js'
import { type Chunking, ZERO_BLOCK, zeroRunMin } from '../../src/manifests/chunking.js'
import { blake3, blake3Hex } from '../../src/util/hash.js'
import { native } from '../../src/native/index.js'
import { prng, randomBuffer } from '../helpers/random.js'
import { type CdcParams, makeCutter, referenceChunker, referenceCut } from '../helpers/reference-chunker.js'

interface Entry {
  offset: number
  length: number
  zero: boolean
  data?: Buffer
}

/**
 * Runs a chunker over input, pushed in pieces whose sizes cycle through `sizes` (one piece if
 * empty): the native one, or the reference (the TypeScript chunkers it replaced).
 */
function chunk(c: Chunking, input: Buffer, sizes: number[] = [], cuts?: Float64Array, reference = false): Entry[] {
  const nat = createChunker(c, cuts)
  const ref = referenceChunker(c, cuts)
  const ch = reference
    ? ref
    : { push: (b: Buffer) => chunksOf(nat.push(b), b), finish: () => chunksOf(nat.finish(), Buffer.alloc(0)) }
  const out: Entry[] = []
  const keep = (xs: Entry[]): void => {
    // data views are only valid until the next push: copy them now
    for (const x of xs)
      out.push(
        x.zero
          ? { offset: x.offset, length: x.length, zero: true }
          : { offset: x.offset, length: x.length, zero: false, data: Buffer.from(x.data!) }
      )
  }
  if (sizes.length === 0) {
    keep(ch.push(input))
  } else {
    for (let p = 0, k = 0; p < input.length; k++) {
      const n = sizes[k % sizes.length]!
      // a fresh copy each time, then scribbled over: the chunker must not keep views of it
      const piece = Buffer.from(input.subarray(p, p + n))
      keep(ch.push(piece))
      piece.fill(0xee)
      p += n
    }
  }
  keep(ch.finish())
  return out
}

/** Entries as comparable values: data replaced by its hash. */
const summary = (es: Entry[]): Array<{ offset: number; length: number; zero: boolean; hash?: string }> =>
  es.map(e =>
    e.zero
      ? { offset: e.offset, length: e.length, zero: true }
      : { offset: e.offset, length: e.length, zero: false, hash: blake3Hex(e.data!) }
  )

/** Contiguous, covering, and the data (zeros for zero entries) is the input. */
function reassemble(es: Entry[]): Buffer {
  const parts: Buffer[] = []
  let pos = 0
  for (const e of es) {
    if (e.offset !== pos) throw new Error(`entry at ${e.offset}, expected ${pos}`)
    if (e.zero) parts.push(Buffer.alloc(e.length))
    else {
      if (e.data!.length !== e.length)
        throw new Error(`entry at ${e.offset}: data ${e.data!.length} bytes, length ${e.length}`)
      parts.push(e.data!)
    }
    pos += e.length
  }
  return Buffer.concat(parts)
}

/** Maximal runs of all-zero aligned 4 KiB blocks (the last block may be short), as [start, length]. */
function zeroRuns(input: Buffer): Array<[number, number]> {
  const runs: Array<[number, number]> = []
  let start = -1
  for (let b = 0; b < input.length; b += ZERO_BLOCK) {
    const end = Math.min(b + ZERO_BLOCK, input.length)
    let zero = true
    for (let i = b; i < end; i++)
      if (input[i] !== 0) {
        zero = false
        break
      }
    if (zero && start < 0) start = b
    if (!zero && start >= 0) {
      runs.push([start, b - start])
      start = -1
    }
  }
  if (start >= 0) runs.push([start, input.length - start])
  return runs
}

const SIZES = [1, 4095, 7777, 1024 * 1024 + 3]

const CDC_DEFAULT: Chunking = { kind: 'cdc', min: 16384, avg: 65536, max: 262144 }
const CDC_SMALL: Chunking = { kind: 'cdc', min: 8192, avg: 16384, max: 65536 }

/** Random, long and short zero runs (aligned and not), a repeat, and a zero tail. */
function mixedInput(): Buffer {
  const a = randomBuffer(1_000_000, 1)
  return Buffer.concat([
    a,
    Buffer.alloc(300_000), // long zero run
    randomBuffer(123_457, 2),
    Buffer.alloc(9000), // short zero run: one or two aligned blocks
    randomBuffer(600_000, 3),
    a.subarray(5000, 405_000), // repeated region, unaligned
    Buffer.alloc(20_000),
    randomBuffer(77_777, 4),
    Buffer.alloc(16384 * 5), // aligned? no: wherever it falls
    randomBuffer(4096 * 3, 5),
    Buffer.alloc(5000) // the image ends in zeros (a short last block)
  ])
}

test('fixed: aligned chunks, all-zero chunks flagged, short last chunk', t => {
  const cs = 8192
  const input = Buffer.concat([
    randomBuffer(cs, 10), // data
    Buffer.alloc(cs), // zero
    Buffer.alloc(cs - 1),
    Buffer.from([1]), // one byte at the very end: data
    Buffer.alloc(4096),
    randomBuffer(4096, 11), // first block zero only: data
    randomBuffer(5000, 12) // short last chunk
  ])
  const es = chunk({ kind: 'fixed', chunkSize: cs }, input)
  t.deepEqual(
    es.map(e => [e.offset, e.length, e.zero]),
    [
      [0, cs, false],
      [cs, cs, true],
      [2 * cs, cs, false],
      [3 * cs, cs, false],
      [4 * cs, 5000, false]
    ]
  )
  t.is(es[1]!.data, undefined)
  t.true(reassemble(es).equals(input))
})

test('fixed: a short all-zero last chunk is a zero entry', t => {
  const input = Buffer.concat([randomBuffer(4096, 13), Buffer.alloc(100)])
  const es = chunk({ kind: 'fixed', chunkSize: 4096 }, input)
  t.deepEqual(
    es.map(e => [e.offset, e.length, e.zero]),
    [
      [0, 4096, false],
      [4096, 100, true]
    ]
  )
  t.true(reassemble(es).equals(input))
})

test('fixed: input smaller than one chunk gives one short chunk', t => {
  const input = randomBuffer(1, 14)
  const es = chunk({ kind: 'fixed', chunkSize: 65536 }, input)
  t.deepEqual(
    es.map(e => [e.offset, e.length, e.zero]),
    [[0, 1, false]]
  )
  t.true(reassemble(es).equals(input))
})

test('fixed: the result does not depend on push() sizes', t => {
  const input = mixedInput()
  for (const c of [
    { kind: 'fixed', chunkSize: 4096 },
    { kind: 'fixed', chunkSize: 65536 }
  ] as Chunking[]) {
    const one = chunk(c, input)
    t.true(reassemble(one).equals(input))
    const cs = (c as { chunkSize: number }).chunkSize
    for (const e of one.slice(0, -1)) t.is(e.length, cs)
    t.true(one.every(e => e.offset % cs === 0))
    t.true(one.some(e => e.zero) && one.some(e => !e.zero))
    for (const sizes of [SIZES, [4096], [65537, 3]]) {
      const streamed = chunk(c, input, sizes)
      t.deepEqual(summary(streamed), summary(one), `chunkSize ${cs}, sizes ${sizes.join(',')}`)
      t.true(reassemble(streamed).equals(input))
    }
  }
})

test('cdc: the result does not depend on push() sizes', t => {
  const input = mixedInput()
  for (const c of [CDC_DEFAULT, CDC_SMALL]) {
    const one = summary(chunk(c, input))
    for (const sizes of [SIZES, [4096], [1, 3, 4093, 8191], [262144 + 1]]) {
      const streamed = chunk(c, input, sizes)
      t.deepEqual(summary(streamed), one, `${JSON.stringify(c)}, sizes ${sizes.join(',')}`)
      t.true(reassemble(streamed).equals(input))
    }
  }
})

test('cdc: lengths within [min, max] but for the last chunk of a data segment; zero runs', t => {
  const input = mixedInput()
  for (const c of [CDC_DEFAULT, CDC_SMALL]) {
    if (c.kind !== 'cdc') throw new Error('cdc expected')
    const es = chunk(c, input)
    t.true(reassemble(es).equals(input))
    const zmin = zeroRunMin(c)
    for (let i = 0; i < es.length; i++) {
      const e = es[i]!
      const next = es[i + 1]
      if (e.zero) {
        t.true(e.length >= zmin, `zero entry ${i} is ${e.length} bytes`)
        t.false(next?.zero ?? false, `zero entries ${i} and ${i + 1} are adjacent`)
        continue
      }
      t.true(e.length > 0 && e.length <= c.max, `data entry ${i} is ${e.length} bytes`)
      const lastOfSegment = next === undefined || next.zero
      if (!lastOfSegment) t.true(e.length >= c.min, `data entry ${i} is ${e.length} bytes (min ${c.min})`)
    }
    // zero entries are exactly the aligned zero runs of at least zeroRunMin bytes
    const expected = zeroRuns(input).filter(([, len]) => len >= zmin)
    const got = es.filter(e => e.zero).map(e => [e.offset, e.length])
    t.deepEqual(got, expected)
    // and shorter zero runs (there are some) stayed inside data chunks
    const short = zeroRuns(input).filter(([, len]) => len < zmin)
    t.true(short.length > 0)
    for (const [s, len] of short) {
      const holder = es.find(e => e.offset <= s && s < e.offset + e.length)!
      t.false(holder.zero, `short zero run at ${s} (${len} bytes) became a zero entry`)
    }
    // segment ends: data right before a zero entry, and data longer than max got cut
    t.true(es.some((e, i) => !e.zero && es[i + 1]?.zero === true))
  }
})

test('cdc: a long random buffer is cut into chunks near avg', t => {
  const c = CDC_DEFAULT
  if (c.kind !== 'cdc') throw new Error('cdc expected')
  const input = randomBuffer(4 * 1024 * 1024, 20)
  const es = chunk(c, input)
  t.true(reassemble(es).equals(input))
  t.true(es.every(e => !e.zero))
  for (const e of es.slice(0, -1)) t.true(e.length >= c.min && e.length <= c.max)
  const mean = input.length / es.length
  t.true(mean > c.min && mean < c.max, `mean chunk ${mean}`)
})

test('cdc: native cut equals referenceCut', t => {
  const params: CdcParams[] = [
    { min: 1024, avg: 4096, max: 16384 },
    { min: 8192, avg: 16384, max: 65536 },
    { min: 16384, avg: 65536, max: 262144 },
    { min: 2048, avg: 4096, max: 5000 } // max reached often
  ]
  const buf = randomBuffer(1024 * 1024, 30)
  const same = Buffer.alloc(300_000, 0xab) // no cut point may exist: cut at max
  for (const p of params) {
    const cut = makeCutter(p)
    let n = 0
    for (let s = 0; s < buf.length; n++) {
      const a = cut(buf, s, buf.length)
      const b = referenceCut(buf, s, buf.length, p)
      t.is(a, b, `params ${JSON.stringify(p)} at ${s}`)
      t.true(a > s && a <= s + p.max)
      if (buf.length - s > p.min) t.true(a > s + p.min)
      s = a
    }
    t.true(n > 1)
    // a window inside the buffer, not starting at 0 and ending before its end
    for (const [s, e] of [
      [12345, 12345 + p.max * 2],
      [777, 777 + p.min + 10],
      [100, 100 + p.min],
      [5, 5]
    ]) {
      t.is(cut(buf, s!, e!), referenceCut(buf, s!, e!, p))
    }
    t.is(cut(buf, 100, 100 + p.min), 100 + p.min) // no more than min bytes: all of them
    t.is(cut(same, 0, same.length), referenceCut(same, 0, same.length, p))
  }
})

/** Changed chunk hashes between two chunkings of related inputs. */
function diff(a: Buffer, b: Buffer, c: Chunking): { before: number; after: number; changed: number; shared: number } {
  const ha = summary(chunk(c, a)).map(e => e.hash!)
  const hb = summary(chunk(c, b)).map(e => e.hash!)
  const setA = new Set(ha)
  const changed = hb.filter(h => !setA.has(h)).length
  return { before: ha.length, after: hb.length, changed, shared: hb.length - changed }
}

test('cdc: boundaries survive an insertion and a deletion', t => {
  for (const seed of [40, 41, 42]) {
    const base = randomBuffer(4 * 1024 * 1024, seed)
    const mid = 2 * 1024 * 1024 + 12345
    const inserted = Buffer.concat([base.subarray(0, mid), randomBuffer(100, seed + 100), base.subarray(mid)])
    const deleted = Buffer.concat([base.subarray(0, mid), base.subarray(mid + 100)])
    for (const [what, other] of [
      ['insertion', inserted],
      ['deletion', deleted]
    ] as const) {
      const d = diff(base, other, CDC_DEFAULT)
      t.true(d.before > 30, `${what}: ${d.before} chunks`)
      t.true(d.changed >= 1 && d.changed <= 3, `${what} (seed ${seed}): ${d.changed} of ${d.after} chunks changed`)
      t.true(d.shared >= d.before - 4, `${what} (seed ${seed}): only ${d.shared} of ${d.before} shared`)
    }
  }
  // fixed chunking, by contrast, loses every chunk after an insertion
  const base = randomBuffer(1024 * 1024, 43)
  const ins = Buffer.concat([base.subarray(0, 1000), Buffer.from([1]), base.subarray(1000)])
  const d = diff(base, ins, { kind: 'fixed', chunkSize: 65536 })
  t.is(d.changed, d.after)
})

/** Data of random lengths (block multiples) with zero runs of 1 to 3 blocks between some of them. */
function blocky(seed: number, parts: number): Buffer {
  const next = prng(seed)
  const out: Buffer[] = []
  for (let i = 0; i < parts; i++) {
    out.push(randomBuffer(4096 * (1 + (next() % 24)), seed * 1000 + i))
    if (next() % 4 === 0) out.push(Buffer.alloc(4096 * (1 + (next() % 3))))
  }
  return Buffer.concat(out)
}

test('cdc cuts: every forced cut ends an entry, the rest does not depend on push() sizes', t => {
  const cdc: Chunking = { kind: 'cdc', min: 4096, avg: 16384, max: 65536 }
  for (let seed = 1; seed <= 6; seed++) {
    const input = blocky(seed, 120)
    const next = prng(seed + 50)
    const blocks = input.length / 4096
    const cuts = Float64Array.from(
      [...new Set(Array.from({ length: 60 }, () => 4096 * (1 + (next() % (blocks - 1)))))].sort((a, b) => a - b)
    )
    const es = chunk(cdc, input, [], cuts)
    t.true(reassemble(es).equals(input))
    const ends = new Set(es.map(e => e.offset + e.length))
    const zeroAt = (pos: number): boolean => es.some(e => e.zero && e.offset < pos && pos < e.offset + e.length)
    for (const c of cuts) t.true(ends.has(c) || zeroAt(c), `seed ${seed}: cut at ${c} is inside a data entry`)
    for (let i = 1; i < es.length; i++) t.false(es[i - 1]!.zero && es[i]!.zero, 'two zero entries in a row')
    for (const e of es) if (!e.zero) t.true(e.length <= 65536)
    t.deepEqual(
      summary(chunk(cdc, input, [4096 * 7, 100_003, 1 << 20], cuts)),
      summary(es),
      `seed ${seed}: push sizes changed the result`
    )
  }
})

test('cdc cuts: the data between two cuts is chunked as if it stood alone', t => {
  // the property file cuts exist for: a file's chunks depend on its bytes, not on its neighbours
  const cdc: Chunking = { kind: 'cdc', min: 4096, avg: 16384, max: 65536 }
  const files = Array.from({ length: 30 }, (_, i) => randomBuffer(4096 * (1 + ((i * 7) % 40)), 500 + i))
  const layout = (order: number[]): { image: Buffer; cuts: Float64Array; at: number[] } => {
    const parts: Buffer[] = []
    const cuts: number[] = []
    const at: number[] = []
    let pos = 0
    for (const i of order) {
      at[i] = pos
      parts.push(files[i]!)
      pos += files[i]!.length
      cuts.push(pos)
    }
    return { image: Buffer.concat(parts), cuts: Float64Array.from(cuts.slice(0, -1)), at }
  }
  const a = layout(files.map((_, i) => i))
  const b = layout(files.map((_, i) => (i * 11) % files.length)) // another order: other offsets, other neighbours
  const ea = summary(chunk(cdc, a.image, [], a.cuts))
  const eb = summary(chunk(cdc, b.image, [], b.cuts))
  for (let i = 0; i < files.length; i++) {
    const alone = summary(chunk(cdc, files[i]!)).map(e => ({ length: e.length, hash: e.hash }))
    const inA = ea
      .filter(e => e.offset >= a.at[i]! && e.offset < a.at[i]! + files[i]!.length)
      .map(e => ({ length: e.length, hash: e.hash }))
    const inB = eb
      .filter(e => e.offset >= b.at[i]! && e.offset < b.at[i]! + files[i]!.length)
      .map(e => ({ length: e.length, hash: e.hash }))
    t.deepEqual(inA, alone, `file ${i} in layout a`)
    t.deepEqual(inB, alone, `file ${i} in layout b`)
  }
  // without the cuts, chunks straddle files and the two layouts share less
  const shared = (x: typeof ea, y: typeof ea): number => {
    const hs = new Set(y.map(e => e.hash))
    return x.filter(e => hs.has(e.hash)).reduce((n, e) => n + e.length, 0)
  }
  t.is(shared(eb, ea), b.image.length)
  t.true(shared(summary(chunk(cdc, b.image)), summary(chunk(cdc, a.image))) < b.image.length * 0.9)
})

test('cdc cuts: fixed chunking ignores cuts', t => {
  const input = randomBuffer(65536 * 3, 61)
  const fixed: Chunking = { kind: 'fixed', chunkSize: 65536 }
  t.deepEqual(
    summary(chunk(fixed, input, [], Float64Array.from([8192, 70000 - (70000 % 4096)]))),
    summary(chunk(fixed, input))
  )
})

test('native pass: the same chunks as the reference chunker, whatever the pieces and cuts', t => {
  const next = prng(77)
  const inputs = [mixedInput(), blocky(3, 200), Buffer.concat([blocky(9, 50), Buffer.alloc(70_000), blocky(10, 30)])]
  const chunkings: Chunking[] = [
    { kind: 'fixed', chunkSize: 4096 },
    { kind: 'fixed', chunkSize: 65536 },
    CDC_DEFAULT,
    CDC_SMALL,
    { kind: 'cdc', min: 4096, avg: 16384, max: 65536 },
    { kind: 'cdc', min: 2048, avg: 4096, max: 5000 }
  ]
  let compared = 0
  for (const [k, input] of inputs.entries()) {
    const blocks = Math.floor(input.length / 4096)
    const cuts = Float64Array.from(
      [...new Set(Array.from({ length: 40 }, () => 4096 * (1 + (next() % (blocks - 1)))))].sort((a, b) => a - b)
    )
    for (const c of chunkings)
      for (const withCuts of [false, true])
        for (const sizes of [[], SIZES, [4096 * 3], [1, 3, 4093, 8191, 65537]]) {
          const cs = withCuts ? cuts : undefined
          const want = summary(chunk(c, input, sizes, cs, true))
          const got = summary(chunk(c, input, sizes, cs))
          t.deepEqual(got, want, `input ${k}, ${JSON.stringify(c)}, cuts ${withCuts}, sizes ${sizes.join(',')}`)
          compared += want.length
        }
  }
  t.true(compared > 10_000)
})

test('native pass: hashes, fresh flags and CRCs of a run', t => {
  const a = randomBuffer(24 * 8192, 90)
  const input = Buffer.concat([a, Buffer.alloc(12 * 8192), a, randomBuffer(50_000, 91)])
  const ch = createChunker({ kind: 'fixed', chunkSize: 8192 }, undefined, { fresh: true, crc: true })
  const runs: Array<[ChunkRun, Buffer]> = []
  for (let p = 0; p < input.length; p += 100_000) {
    const piece = input.subarray(p, p + 100_000)
    runs.push([ch.push(piece), piece])
  }
  runs.push([ch.finish(), Buffer.alloc(0)])
  const seen = new Set<string>()
  let zero = 0
  for (const [run, piece] of runs) {
    const es = chunksOf(run, piece)
    for (let i = 0; i < run.n; i++) {
      const e = es[i]!
      if (e.zero) {
        t.is(run.flags[i]! & CHUNK_ZERO, CHUNK_ZERO)
        zero++
        continue
      }
      const h = blake3(e.data!)
      t.true(run.hashes.subarray(i * 32, i * 32 + 32).equals(h))
      const fresh = !seen.has(h.toString('hex'))
      seen.add(h.toString('hex'))
      t.is((run.flags[i]! & CHUNK_FRESH) !== 0, fresh, `chunk at ${e.offset}`)
      t.is(run.crcs[i], fresh ? native().crc32c(e.data!) : 0)
    }
  }
  t.is(zero, 12)
  // the second copy of `a` (aligned like the first) is all repeats
  t.is(seen.size, 24 + Math.ceil(50_000 / 8192))
})
