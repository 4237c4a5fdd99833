import test, { type ExecutionContext } from 'ava'
import { type Chunking } from '../../src/manifests/chunking.js'
import { chunksOf, createChunker } from '../../src/manifests/chunker.js'
import {
  type Manifest,
  type ManifestJson,
  ManifestBuilder,
  MAGIC,
  VERSION,
  decode,
  fromJson
} from '../../src/manifests/manifest.js'
import { blake3 } from '../../src/util/hash.js'
import { randomBuffer } from '../helpers/random.js'

const CDC: Chunking = { kind: 'cdc', min: 16384, avg: 65536, max: 262144 }
const FIXED: Chunking = { kind: 'fixed', chunkSize: 4096 }

const hashOf = (seed: number): Buffer => blake3(Buffer.from(`chunk ${seed}`))

function build(c: Chunking, entries: Array<[number, number | null]>): Manifest {
  const b = new ManifestBuilder(c)
  for (const [len, seed] of entries) b.add(len, seed === null ? null : hashOf(seed))
  return b.build()
}

/** LEB128, as the spec writes lengths. */
function varint(v: number): Buffer {
  const out: number[] = []
  while (v >= 0x80) {
    out.push((v % 0x80) | 0x80)
    v = Math.floor(v / 0x80)
  }
  out.push(v)
  return Buffer.from(out)
}

// cdc: data 100000 | zero 200000 | data 5000
//   header 0..32; entry 0: tag 32, varint 33..36, hash 36..68; entry 1: tag 68, varint 69..72;
//   entry 2: tag 72, varint 73..75, hash 75..107
const cdcManifest = (): Manifest =>
  build(CDC, [
    [100_000, 1],
    [200_000, null],
    [5000, 2]
  ])
// fixed 4096: data 4096 | data 4096 | zero 8192 | data 100
//   entry 0: tag 32, varint 33..35, hash 35..67; entry 1: tag 67, varint 68..70, hash 70..102;
//   entry 2: tag 102, varint 103..105; entry 3: tag 105, varint 106, hash 107..139
const fixedManifest = (): Manifest =>
  build(FIXED, [
    [4096, 1],
    [4096, 2],
    [8192, null],
    [100, 3]
  ])

const splice = (b: Buffer, at: number, del: number, ins: Buffer = Buffer.alloc(0)): Buffer =>
  Buffer.concat([b.subarray(0, at), ins, b.subarray(at + del)])

const edit = (b: Buffer, f: (c: Buffer) => void): Buffer => {
  const c = Buffer.from(b)
  f(c)
  return c
}
const setSize = (b: Buffer, size: number): Buffer =>
  edit(b, c => {
    c.writeBigUInt64LE(BigInt(size), 8)
  })
const setCount = (b: Buffer, n: number): Buffer =>
  edit(b, c => {
    c.writeUInt32LE(n, 16)
  })

function rejects(t: ExecutionContext, buf: Buffer, code: string, what: string): void {
  const err = t.throws(() => decode(buf), undefined, what)
  t.is((err as { code?: string } | undefined)?.code, code, what)
}

function rejectsJson(t: ExecutionContext, j: unknown, code: string, what: string): void {
  const err = t.throws(() => fromJson(j), undefined, what)
  t.is((err as { code?: string } | undefined)?.code, code, what)
}

test('the good encodings have the documented layout', t => {
  const b = cdcManifest().encode()
  t.is(b.length, 107)
  t.true(b.subarray(0, 4).equals(MAGIC))
  t.is(b.toString('latin1', 0, 4), 'VMIM')
  t.deepEqual([b[4], b[5], b[6], b[7]], [VERSION, 32, 2, 0])
  t.is(b.readBigUInt64LE(8), 305_000n)
  t.is(b.readUInt32LE(16), 3)
  t.deepEqual([b.readUInt32LE(20), b.readUInt32LE(24), b.readUInt32LE(28)], [16384, 65536, 262144])
  t.is(b[32], 0)
  t.true(b.subarray(33, 36).equals(varint(100_000)))
  t.true(b.subarray(36, 68).equals(hashOf(1)))
  t.is(b[68], 1)
  t.true(b.subarray(69, 72).equals(varint(200_000)))
  t.is(b[72], 0)
  t.true(b.subarray(73, 75).equals(varint(5000)))
  t.true(b.subarray(75, 107).equals(hashOf(2)))

  const f = fixedManifest().encode()
  t.is(f.length, 139)
  t.deepEqual([f[6], f.readUInt32LE(20), f.readUInt32LE(24), f.readUInt32LE(28)], [1, 4096, 0, 0])
  t.deepEqual([f[32], f[67], f[102], f[105], f[106]], [0, 0, 1, 0, 100])
})

test('encode/decode round trip', t => {
  const cases: Manifest[] = [
    cdcManifest(),
    fixedManifest(),
    build(FIXED, [[1, 7]]), // a 1-byte image
    build(CDC, [[1, 8]]),
    build(FIXED, [[1, null]]), // a 1-byte zero image
    build(CDC, [
      [300_000, null],
      [262144, 9],
      [1, 10],
      [5_000_000, null]
    ]),
    build({ kind: 'fixed', chunkSize: 16 * 1024 * 1024 }, [
      [16 * 1024 * 1024, 11],
      [3, 12]
    ])
  ]
  for (const m of cases) {
    const d = decode(m.encode())
    t.is(d.size, m.size)
    t.deepEqual(d.chunking, m.chunking)
    t.deepEqual(d.entries(), m.entries())
    t.is(d.digest(), m.digest())
    t.true(d.encode().equals(m.encode()))
  }
})

test('the file-cuts flag: header byte 7 bit 0, in both forms, and part of the digest', t => {
  const cut: Chunking = { kind: 'cdc', min: 16384, avg: 65536, max: 262144, fileCuts: true }
  const entries: Array<[number, number | null]> = [
    [100_000, 1],
    [200_000, null],
    [5000, 2]
  ]
  const m = build(cut, entries)
  const buf = m.encode()
  t.is(buf[7], 1)
  t.is(cdcManifest().encode()[7], 0)
  t.deepEqual(decode(buf).chunking, cut)
  t.deepEqual(decode(cdcManifest().encode()).chunking, CDC)
  t.is(fromJson(m.toJson()).digest(), m.digest())
  t.deepEqual(m.toJson().chunking, cut)
  t.not(m.digest(), cdcManifest().digest())
  // false is the same as absent: one canonical form
  t.is(fromJson({ ...cdcManifest().toJson(), chunking: { ...CDC, fileCuts: false } }).digest(), cdcManifest().digest())
  rejectsJson(
    t,
    { ...cdcManifest().toJson(), chunking: { ...CDC, fileCuts: 'yes' } },
    'MANIFEST_BAD_CHUNKING',
    'fileCuts not a boolean'
  )
})

test('find() returns the entry holding a byte', t => {
  const m = build(CDC, [
    [100_000, 1],
    [200_000, null],
    [5000, 2],
    [1, 3]
  ])
  const cases: Array<[number, number]> = [
    [0, 0],
    [99_999, 0],
    [100_000, 1],
    [299_999, 1],
    [300_000, 2],
    [304_999, 2],
    [305_000, 3]
  ]
  for (const [pos, i] of cases) t.is(m.find(pos), i, `byte ${pos}`)
  t.is(build(FIXED, [[1, 7]]).find(0), 0)
})

test('the builder merges adjacent zero runs', t => {
  const m = build(CDC, [
    [1000, 1],
    [4096, null],
    [8192, null],
    [1000, 2]
  ])
  t.deepEqual(
    m.entries().map(e => [e.offset, e.length, e.zero]),
    [
      [0, 1000, false],
      [1000, 12288, true],
      [13288, 1000, false]
    ]
  )
  t.is(m.size, 14288)
})

test('a manifest made by the chunker round-trips', t => {
  const input = Buffer.concat([randomBuffer(700_000, 1), Buffer.alloc(200_000), randomBuffer(99_999, 2)])
  for (const c of [CDC, FIXED]) {
    const ch = createChunker(c)
    const b = new ManifestBuilder(c)
    const one = new ManifestBuilder(c) // the same chunks added one at a time
    for (const [run, piece] of [
      [ch.push(input), input],
      [ch.finish(), Buffer.alloc(0)]
    ] as const) {
      b.addRun(run)
      for (const x of chunksOf(run, piece)) one.add(x.length, x.zero ? null : blake3(x.data!))
    }
    const m = b.build()
    t.is(one.build().digest(), m.digest())
    t.is(m.size, input.length)
    t.true(m.entries().some(e => e.zero))
    t.is(decode(m.encode()).digest(), m.digest())
    t.is(fromJson(JSON.parse(JSON.stringify(m.toJson()))).digest(), m.digest())
  }
})

test('JSON round trip gives the same digest', t => {
  for (const m of [cdcManifest(), fixedManifest(), build(FIXED, [[1, 7]])]) {
    const j = m.toJson()
    t.is(j.format, 'vmifs-manifest')
    t.is(j.digest, m.digest())
    const back = fromJson(JSON.parse(JSON.stringify(j)))
    t.is(back.digest(), m.digest())
    t.true(back.encode().equals(m.encode()))
    // the digest field is optional
    const { digest: _, ...rest } = j
    t.is(fromJson(rest).digest(), m.digest())
  }
})

test('the digest is the BLAKE3 of the binary form', t => {
  const m = cdcManifest()
  t.is(m.digest(), blake3(m.encode()).toString('hex'))
  t.regex(m.digest(), /^[0-9a-f]{64}$/)
  // content matters: another hash in one entry gives another digest
  t.not(
    build(CDC, [
      [100_000, 1],
      [200_000, null],
      [5000, 3]
    ]).digest(),
    m.digest()
  )
  // so does the chunking
  t.not(
    build({ kind: 'cdc', min: 16384, avg: 65536, max: 262145 }, [
      [100_000, 1],
      [200_000, null],
      [5000, 2]
    ]).digest(),
    m.digest()
  )
})

test('at most 40 bytes per data chunk', t => {
  const big = 16 * 1024 * 1024
  const m = build(
    { kind: 'fixed', chunkSize: big },
    Array.from({ length: 100 }, (_, i) => [big, i] as [number, number])
  )
  t.true(m.encode().length - 32 <= 40 * 100, `${m.encode().length} bytes`)
  const c = build(
    CDC,
    Array.from({ length: 1000 }, (_, i) => [262144, i] as [number, number])
  )
  t.true(c.encode().length - 32 <= 40 * 1000)
})

test('decode rejects a bad header', t => {
  const good = cdcManifest().encode()
  rejects(
    t,
    edit(good, c => {
      c[0] = 0x58
    }),
    'MANIFEST_BAD_MAGIC',
    'bad magic'
  )
  rejects(t, Buffer.alloc(0), 'MANIFEST_BAD_MAGIC', 'empty')
  rejects(t, Buffer.from('VMI'), 'MANIFEST_BAD_MAGIC', 'three bytes')
  rejects(
    t,
    edit(good, c => {
      c[4] = 2
    }),
    'MANIFEST_BAD_VERSION',
    'version 2'
  )
  rejects(
    t,
    edit(good, c => {
      c[4] = 0
    }),
    'MANIFEST_BAD_VERSION',
    'version 0'
  )
  rejects(
    t,
    edit(good, c => {
      c[5] = 31
    }),
    'MANIFEST_BAD_HASH_SIZE',
    'hash size 31'
  )
  rejects(
    t,
    edit(good, c => {
      c[5] = 64
    }),
    'MANIFEST_BAD_HASH_SIZE',
    'hash size 64'
  )
  rejects(t, good.subarray(0, 20), 'MANIFEST_TRUNCATED', 'truncated header')
  rejects(t, good.subarray(0, 31), 'MANIFEST_TRUNCATED', 'header one byte short')
  rejects(
    t,
    edit(good, c => {
      c[6] = 3
    }),
    'MANIFEST_BAD_CHUNKING',
    'chunking code 3'
  )
  rejects(
    t,
    edit(good, c => {
      c[6] = 0
    }),
    'MANIFEST_BAD_CHUNKING',
    'chunking code 0'
  )
  rejects(
    t,
    edit(good, c => {
      c.writeUInt32LE(65535, 24)
    }),
    'MANIFEST_BAD_CHUNKING',
    'avg not a power of two'
  )
  rejects(
    t,
    edit(good, c => {
      c.writeUInt32LE(65536, 20)
    }),
    'MANIFEST_BAD_CHUNKING',
    'min = avg'
  )
  rejects(
    t,
    edit(good, c => {
      c[7] = 2
    }),
    'MANIFEST_NOT_CANONICAL',
    'unknown flag'
  )
  rejects(
    t,
    edit(good, c => {
      c[7] = 0x81
    }),
    'MANIFEST_NOT_CANONICAL',
    'unknown flag beside file cuts'
  )
  const fixed = fixedManifest().encode()
  rejects(
    t,
    edit(fixed, c => {
      c[7] = 1
    }),
    'MANIFEST_NOT_CANONICAL',
    'file cuts on a fixed manifest'
  )
  rejects(
    t,
    edit(fixed, c => {
      c.writeUInt32LE(1, 28)
    }),
    'MANIFEST_NOT_CANONICAL',
    'unused fixed params'
  )
  rejects(
    t,
    edit(fixed, c => {
      c.writeUInt32LE(3000, 20)
    }),
    'MANIFEST_BAD_CHUNKING',
    'fixed size not a power of two'
  )
})

test('decode rejects truncation and trailing bytes', t => {
  const good = cdcManifest().encode()
  rejects(t, good.subarray(0, 32), 'MANIFEST_TRUNCATED', 'no entries')
  rejects(t, good.subarray(0, 34), 'MANIFEST_TRUNCATED', 'inside the first varint')
  rejects(t, good.subarray(0, 36 + 10), 'MANIFEST_TRUNCATED', 'inside the first hash')
  rejects(t, good.subarray(0, 73), 'MANIFEST_TRUNCATED', 'after the tag of the last entry')
  rejects(t, good.subarray(0, good.length - 1), 'MANIFEST_TRUNCATED', 'inside the last hash')
  rejects(t, setCount(good, 4), 'MANIFEST_TRUNCATED', 'count one too many')
  rejects(t, Buffer.concat([good, Buffer.from([0])]), 'MANIFEST_BAD_LENGTH', 'one trailing byte')
  rejects(t, Buffer.concat([good, Buffer.from([1, 5])]), 'MANIFEST_BAD_LENGTH', 'a trailing entry not counted')
  rejects(t, setCount(good, 2), 'MANIFEST_BAD_LENGTH', 'count one too few')
})

test('decode rejects bad entries', t => {
  const good = cdcManifest().encode()
  t.notThrows(() => decode(good))
  // a zero-length data entry after entry 0 (size unchanged)
  rejects(
    t,
    setCount(splice(good, 68, 0, Buffer.concat([Buffer.from([0, 0]), hashOf(5)])), 4),
    'MANIFEST_BAD_LENGTH',
    'zero-length data entry'
  )
  rejects(t, setCount(splice(good, 72, 0, Buffer.from([1, 0])), 4), 'MANIFEST_BAD_LENGTH', 'zero-length zero entry')
  rejects(t, setSize(good, 305_001), 'MANIFEST_SIZE_MISMATCH', 'size one more')
  rejects(t, setSize(good, 304_999), 'MANIFEST_SIZE_MISMATCH', 'size one less')
  rejects(t, setSize(setCount(good.subarray(0, 32), 0), 1), 'MANIFEST_RANGE_GAP', 'no entries for a non-empty image')
  // the zero run split in two adjacent zero runs
  const two = Buffer.concat([Buffer.from([1]), varint(100_000), Buffer.from([1]), varint(100_000)])
  rejects(t, setCount(splice(good, 68, 4, two), 4), 'MANIFEST_NOT_CANONICAL', 'adjacent zero runs')
  // 5000 = 0x88 0x27; the same value with a redundant byte
  t.true(good.subarray(73, 75).equals(Buffer.from([0x88, 0x27])))
  rejects(t, splice(good, 73, 2, Buffer.from([0x88, 0xa7, 0x00])), 'MANIFEST_NOT_CANONICAL', 'non-minimal varint')
  rejects(
    t,
    splice(good, 73, 2, Buffer.from([0x88, 0xa7, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00])),
    'MANIFEST_BAD_LENGTH',
    'varint over 8 bytes'
  )
  rejects(
    t,
    edit(good, c => {
      c[68] = 2
    }),
    'MANIFEST_BAD_LENGTH',
    'unknown tag'
  )
  // a data entry longer than max: 100000 -> 300000 (both 3-byte varints), size adjusted
  rejects(t, setSize(splice(good, 33, 3, varint(300_000)), 505_000), 'MANIFEST_BAD_LENGTH', 'data entry over max')
  t.notThrows(() => decode(setSize(splice(good, 33, 3, varint(262_144)), 467_144)), 'exactly max is fine')
})

test('decode rejects a fixed manifest that is not aligned', t => {
  const good = fixedManifest().encode()
  t.notThrows(() => decode(good))
  // entry 0: 4096 -> 2048 (a data entry of the wrong length, not the last)
  t.true(good.subarray(33, 35).equals(varint(4096)))
  rejects(
    t,
    setSize(splice(good, 33, 2, varint(2048)), 16484 - 2048),
    'MANIFEST_BAD_LENGTH',
    'short data entry in the middle'
  )
  // entry 1: 4096 -> 8192 (data entry longer than the chunk size)
  rejects(t, setSize(splice(good, 68, 2, varint(8192)), 16484 + 4096), 'MANIFEST_BAD_LENGTH', 'long data entry')
  // entry 2 (zero): 8192 -> 8000: the last entry starts off the grid
  t.true(good.subarray(103, 105).equals(varint(8192)))
  rejects(t, setSize(splice(good, 103, 2, varint(8000)), 16484 - 192), 'MANIFEST_BAD_LENGTH', 'misaligned entry')
  // last entry: 100 -> 5000, longer than the chunk size
  rejects(
    t,
    setSize(splice(good, 106, 1, varint(5000)), 16484 + 4900),
    'MANIFEST_BAD_LENGTH',
    'last entry over chunk size'
  )
  // the last entry may be short, and zero runs may span several chunks
  t.notThrows(() => decode(setSize(splice(good, 106, 1, varint(4096)), 16484 + 3996)))
})

test('fromJson rejects bad ranges', t => {
  const j = (): ManifestJson => JSON.parse(JSON.stringify(cdcManifest().toJson())) as ManifestJson
  t.notThrows(() => fromJson(j()))
  rejectsJson(
    t,
    (() => {
      const x = j()
      x.chunks[1]!.offset -= 1
      return x
    })(),
    'MANIFEST_RANGE_OVERLAP',
    'overlap'
  )
  rejectsJson(
    t,
    (() => {
      const x = j()
      x.chunks[1]!.offset += 1
      return x
    })(),
    'MANIFEST_RANGE_GAP',
    'gap'
  )
  rejectsJson(
    t,
    (() => {
      const x = j()
      x.chunks.pop()
      return x
    })(),
    'MANIFEST_RANGE_GAP',
    'missing tail'
  )
  rejectsJson(
    t,
    (() => {
      const x = j()
      x.chunks = []
      return x
    })(),
    'MANIFEST_RANGE_GAP',
    'no chunks'
  )
  rejectsJson(
    t,
    (() => {
      const x = j()
      x.chunks[2]!.length += 1
      return x
    })(),
    'MANIFEST_SIZE_MISMATCH',
    'over-long'
  )
  rejectsJson(
    t,
    (() => {
      const x = j()
      x.size -= 1
      return x
    })(),
    'MANIFEST_SIZE_MISMATCH',
    'size too small'
  )
  rejectsJson(
    t,
    (() => {
      const x = j()
      x.chunks[0]!.offset = 1
      return x
    })(),
    'MANIFEST_RANGE_GAP',
    'first chunk not at 0'
  )
  rejectsJson(
    t,
    (() => {
      const x = j()
      x.chunks[0]!.length = 0
      x.chunks[1]!.offset = 0
      return x
    })(),
    'MANIFEST_BAD_LENGTH',
    'zero length'
  )
  // a zero run split in two
  rejectsJson(
    t,
    (() => {
      const x = j()
      x.chunks.splice(
        1,
        1,
        { offset: 100_000, length: 100_000, zero: true },
        { offset: 200_000, length: 100_000, zero: true }
      )
      return x
    })(),
    'MANIFEST_NOT_CANONICAL',
    'adjacent zero runs'
  )
})

test('fromJson rejects bad hashes, digests and headers', t => {
  const j = (): ManifestJson => JSON.parse(JSON.stringify(cdcManifest().toJson())) as ManifestJson
  const h = (x: ManifestJson, i: number): { hash: string } => x.chunks[i] as { hash: string }
  rejectsJson(
    t,
    (() => {
      const x = j()
      h(x, 0).hash = h(x, 0).hash.slice(2)
      return x
    })(),
    'MANIFEST_BAD_HASH_SIZE',
    '31-byte hash'
  )
  rejectsJson(
    t,
    (() => {
      const x = j()
      h(x, 0).hash += 'ab'
      return x
    })(),
    'MANIFEST_BAD_HASH_SIZE',
    '33-byte hash'
  )
  rejectsJson(
    t,
    (() => {
      const x = j()
      delete (x.chunks[0] as { hash?: string }).hash
      return x
    })(),
    'MANIFEST_BAD_JSON',
    'no hash'
  )
  rejectsJson(
    t,
    (() => {
      const x = j()
      ;(x.chunks[1] as { hash?: string }).hash = h(x, 0).hash
      return x
    })(),
    'MANIFEST_BAD_JSON',
    'zero run with a hash'
  )
  rejectsJson(
    t,
    (() => {
      const x = j()
      x.digest = x.digest!.replace(/^./, c => (c === '0' ? '1' : '0'))
      return x
    })(),
    'MANIFEST_DIGEST_MISMATCH',
    'wrong digest'
  )
  rejectsJson(
    t,
    (() => {
      const x = j()
      h(x, 2).hash = hashOf(99).toString('hex')
      return x
    })(),
    'MANIFEST_DIGEST_MISMATCH',
    'digest of other chunks'
  )
  rejectsJson(
    t,
    (() => {
      const x = j()
      ;(x as { format: string }).format = 'vmifs'
      return x
    })(),
    'MANIFEST_BAD_JSON',
    'format'
  )
  rejectsJson(
    t,
    (() => {
      const x = j()
      x.version = 2
      return x
    })(),
    'MANIFEST_BAD_VERSION',
    'version 2'
  )
  rejectsJson(
    t,
    (() => {
      const x = j()
      ;(x as { hash: string }).hash = 'sha256'
      return x
    })(),
    'MANIFEST_BAD_HASH_SIZE',
    'hash algorithm'
  )
  rejectsJson(
    t,
    (() => {
      const x = j()
      x.chunking = { kind: 'cdc', min: 1, avg: 3, max: 2 }
      return x
    })(),
    'MANIFEST_BAD_CHUNKING',
    'chunking'
  )
  rejectsJson(
    t,
    (() => {
      const x = j()
      ;(x as { size: unknown }).size = '305000'
      return x
    })(),
    'MANIFEST_BAD_JSON',
    'size a string'
  )
  rejectsJson(t, null, 'MANIFEST_BAD_JSON', 'null')
  rejectsJson(t, 'manifest', 'MANIFEST_BAD_JSON', 'a string')
  rejectsJson(
    t,
    (() => {
      const x = j()
      ;(x as { chunks: unknown }).chunks = {}
      return x
    })(),
    'MANIFEST_BAD_JSON',
    'chunks not an array'
  )
  // upper-case hex is the same hash
  const up = j()
  h(up, 0).hash = h(up, 0).hash.toUpperCase()
  t.is(fromJson(up).digest(), cdcManifest().digest())
})

test('the builder keeps its own copy of each hash, past its first table, zero runs as zero hashes', t => {
  const b = new ManifestBuilder(FIXED)
  const scratch = Buffer.alloc(32)
  const n = 3000
  for (let i = 0; i < n; i++) {
    if (i % 100 === 50) b.add(4096, null)
    else {
      hashOf(i).copy(scratch)
      b.add(4096, scratch) // the caller reuses its buffer
    }
  }
  scratch.fill(0xff)
  const m = b.build()
  t.is(m.count, n)
  for (let i = 0; i < n; i++) {
    if (i % 100 === 50) {
      t.true(m.zero[i] === 1 && m.hashAt(i).equals(Buffer.alloc(32)), `entry ${i}`)
    } else if (!m.hashAt(i).equals(hashOf(i))) {
      t.fail(`entry ${i}`)
    }
  }
})
