import test from 'ava'
import fs from 'node:fs'
import path from 'node:path'
import { randomBytes } from 'node:crypto'
import { ManifestBuilder, type Manifest } from '../../src/manifests/manifest.js'
import {
  CODEC_BROTLI,
  CODEC_RAW,
  type ChunkLoc,
  checkStatement,
  decodeIndex,
  encodeIndex,
  planRanges,
  signStatement
} from '../../src/origin/store.js'
import { StoreWriter, convertV1 } from '../../src/origin/writer.js'
import { SigningKey } from '../../src/trust/keys.js'
import { blake3 } from '../../src/util/hash.js'
import { tmpDir } from '../helpers/tmp.js'

const CDC = { kind: 'cdc', min: 1024, avg: 4096, max: 65536, fileCuts: false } as const

function manifestOf(chunks: Buffer[]): Manifest {
  const b = new ManifestBuilder(CDC)
  for (const c of chunks) b.add(c.length, blake3(c))
  return b.build()
}

const hash = (b: Buffer): string => blake3(b).toString('hex')
/** Text-like data: compresses well. */
const texty = (n: number, seed: number): Buffer =>
  Buffer.from(Array.from({ length: n }, (_, i) => `line ${seed} ${i % 97} of the log\n`).join('')).subarray(0, n)

test('an index encodes and decodes losslessly, and a damaged one is refused with ORIGIN_INDEX_INVALID', t => {
  const entries = [
    { hash: 'aa'.repeat(32), pack: '01'.repeat(16), offset: 0, stored: 100, size: 300, codec: CODEC_BROTLI },
    { hash: 'bb'.repeat(32), pack: '02'.repeat(16), offset: 2 ** 40, stored: 4096, size: 4096, codec: CODEC_RAW },
    { hash: 'cc'.repeat(32), pack: '01'.repeat(16), offset: 100, stored: 7, size: 7, codec: CODEC_RAW }
  ] as const
  const ix = { manifest: 'dd'.repeat(32), entries: entries.map(e => ({ ...e })) }
  const b = encodeIndex(ix)
  t.deepEqual(decodeIndex(b), ix)
  t.is(b.length, 48 + 2 * 16 + 3 * 53, 'pack ids once each')
  const bad = (f: (c: Buffer) => Buffer, why: RegExp): void => {
    const e = t.throws(() => decodeIndex(f(Buffer.from(b))))
    t.is((e as { code?: string }).code, 'ORIGIN_INDEX_INVALID')
    t.regex(e.message, why)
  }
  bad(c => Buffer.concat([Buffer.from('XXXX'), c.subarray(4)]), /magic/)
  bad(c => c.subarray(0, c.length - 1), /length/)
  bad(c => ((c[4] = 9), c), /version/)
  const e0 = 48 + 32 // the first entry
  bad(c => (c.writeUInt32LE(5, e0 + 32), c), /pack 5/)
  bad(c => ((c[e0 + 52] = 7), c), /codec 7/)
  bad(c => (c.writeUInt32LE(301, e0 + 44), c), /stores 301/) // compressed larger than the chunk
  bad(c => (c.writeUInt32LE(17 * 1024 * 1024, e0 + 48), c), /bytes/) // past the largest chunk
  const e1 = e0 + 53
  bad(c => (c.writeUInt32LE(4000, e1 + 44), c), /stores 4000 bytes of 4096/) // raw must be whole
})

test('planRanges merges a pack’s chunks across gaps up to gapBytes, within maxBytes, never across packs', t => {
  const at = (pack: string, offset: number, stored: number): { hash: string; loc: ChunkLoc } => ({
    hash: `${pack}:${offset}`,
    loc: { pack, offset, stored, size: stored, codec: CODEC_RAW }
  })
  const list = [at('p', 0, 100), at('p', 100, 100), at('p', 250, 50), at('q', 300, 10), at('p', 1000, 10)]
  const r = planRanges(list, 50, 10_000)
  t.deepEqual(
    r.map(x => [x.pack, x.start, x.end, x.chunks.length]),
    [
      ['p', 0, 300, 3],
      ['p', 1000, 1010, 1],
      ['q', 300, 310, 1]
    ]
  )
  t.deepEqual(
    planRanges(list, 0, 10_000).map(x => [x.start, x.end]),
    [
      [0, 200],
      [250, 300],
      [1000, 1010],
      [300, 310]
    ],
    'no gap: only adjacent chunks merge'
  )
  t.deepEqual(
    planRanges(list, 1000, 250).map(x => [x.start, x.end]),
    [
      [0, 200],
      [250, 300],
      [1000, 1010],
      [300, 310]
    ],
    'bounded: a range stops before it passes maxBytes'
  )
  t.is(
    planRanges([...list, ...list], 50, 10_000).reduce((n, x) => n + x.chunks.length, 0),
    5,
    'each chunk once'
  )
})

test('the store statement is signed: an edited one is refused, a format-1 one named as such', t => {
  const key = SigningKey.generate()
  const images = { ['ab'.repeat(32)]: { index: 'cd'.repeat(32), model: 'ef'.repeat(32) } }
  const s = signStatement(key, images)
  t.deepEqual(checkStatement(JSON.parse(JSON.stringify(s))).images, images)
  const edited = { ...s, images: { ['ab'.repeat(32)]: { index: '00'.repeat(32) } } }
  t.throws(() => checkStatement(edited), { code: 'ORIGIN_STORE_INVALID', message: /does not verify/ } as never)
  t.throws(() => checkStatement({ ...s, format: 1 }), { code: 'ORIGIN_STORE_INVALID', message: /format 1/ } as never)
  const { sig: _sig, ...unsigned } = s
  t.throws(() => checkStatement(unsigned), { message: /not signed/ } as never)
})

test('the writer packs new chunks in image order, compressed where it pays; a sibling adds only its own', async t => {
  const dir = tmpDir(t)
  const key = SigningKey.generate()
  const shared = [texty(20_000, 1), randomBytes(9000), texty(5000, 2)]
  const own1 = [randomBytes(3000)]
  const own2 = [texty(12_000, 3), randomBytes(64 * 1024)]
  const base = manifestOf([...shared, ...own1, shared[0]!]) // a chunk twice: stored once
  const sib = manifestOf([...own2, ...shared])
  const bytes = new Map([...shared, ...own1, ...own2].map(c => [hash(c), c]))
  const read = async (h: string): Promise<Buffer> => bytes.get(h)!
  const w = new StoreWriter(dir)
  await w.addImage(base, read)
  t.like(w.report, { chunks: 4, bytes: 20_000 + 9000 + 5000 + 3000, packs: 1 })
  t.true(w.report.storedBytes < 9000 + 3000 + 5000, 'text compressed')
  w.finish(key)
  const w2 = new StoreWriter(dir) // the store as written: its chunks known from the indexes
  await w2.addImage(sib, read)
  t.like(w2.report, { chunks: 2, bytes: 12_000 + 64 * 1024 })
  w2.finish(key)
  const s = checkStatement(JSON.parse(fs.readFileSync(path.join(dir, 'store.json'), 'utf8')))
  t.deepEqual(Object.keys(s.images).sort(), [base.digest(), sib.digest()].sort())
  const ix = decodeIndex(fs.readFileSync(path.join(dir, 'indexes', sib.digest())))
  t.is(blake3(fs.readFileSync(path.join(dir, 'indexes', sib.digest()))).toString('hex'), s.images[sib.digest()]!.index)
  t.deepEqual(
    ix.entries.map(e => e.hash),
    [...sib.distinctChunks().keys()],
    'every distinct chunk, in image order'
  )
  // each entry's bytes are where the index says, decompressing to the chunk
  const zlib = await import('node:zlib')
  for (const e of ix.entries) {
    const pack = fs.readFileSync(path.join(dir, 'packs', `${e.pack}.pack`))
    const stored = pack.subarray(e.offset, e.offset + e.stored)
    const data = e.codec === CODEC_BROTLI ? zlib.brotliDecompressSync(stored) : stored
    t.is(hash(data), e.hash)
  }
  const codecs = new Map(ix.entries.map(e => [e.hash, e.codec]))
  t.is(codecs.get(hash(own2[1]!)), CODEC_RAW, 'random bytes stored raw')
  t.is(codecs.get(hash(own2[0]!)), CODEC_BROTLI)
  t.is(fs.readdirSync(path.join(dir, 'packs')).length, 2)
})

test('wrong bytes from the reader stop the writer before anything names them', async t => {
  const dir = tmpDir(t)
  const good = randomBytes(5000)
  const m = manifestOf([good])
  const w = new StoreWriter(dir)
  await t.throwsAsync(
    w.addImage(m, async () => randomBytes(5000)),
    { code: 'CHUNK_HASH_MISMATCH' } as never
  )
  t.false(fs.existsSync(path.join(dir, 'store.json')))
  t.false(fs.existsSync(path.join(dir, 'indexes', m.digest())))
})

test('a format-1 store is refused by the writer (ORIGIN_FORMAT_OLD) and converted in place by convertV1', async t => {
  const dir = tmpDir(t)
  const key = SigningKey.generate()
  const chunks = [texty(8000, 4), randomBytes(7000)]
  const m = manifestOf(chunks)
  for (const c of chunks) {
    const h = hash(c)
    fs.mkdirSync(path.join(dir, 'chunks', h.slice(0, 2)), { recursive: true })
    fs.writeFileSync(path.join(dir, 'chunks', h.slice(0, 2), h), c)
  }
  fs.mkdirSync(path.join(dir, 'manifests'))
  fs.writeFileSync(path.join(dir, 'manifests', m.digest()), m.encode())
  fs.writeFileSync(path.join(dir, 'images.json'), JSON.stringify({ disk: { digest: m.digest(), size: m.size } }))
  const e = t.throws(() => new StoreWriter(dir))
  t.is((e as { code?: string }).code, 'ORIGIN_FORMAT_OLD')
  t.regex(e.message, /vmifs publish-store --convert/)
  // a damaged chunk stops the conversion and leaves the old store as it was
  const h1 = hash(chunks[1]!)
  const f1 = path.join(dir, 'chunks', h1.slice(0, 2), h1)
  fs.writeFileSync(f1, randomBytes(7000))
  await t.throwsAsync(convertV1(dir, key), { code: 'CHUNK_HASH_MISMATCH' } as never)
  t.true(fs.existsSync(f1))
  t.false(fs.existsSync(path.join(dir, 'store.json')))
  fs.writeFileSync(f1, chunks[1]!)
  const r = await convertV1(dir, key)
  t.like(r, { images: 1, chunks: 2, packs: 1 })
  t.false(fs.existsSync(path.join(dir, 'chunks')))
  const s = checkStatement(JSON.parse(fs.readFileSync(path.join(dir, 'store.json'), 'utf8')))
  t.truthy(s.images[m.digest()])
})
