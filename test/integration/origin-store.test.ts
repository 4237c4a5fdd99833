// The origin store of format 2 behind a real nginx: replication with the store as a donor, a
// published boot profile, a store of format 1 refused and converted, and what a hostile store
// can send (ranges ignored, a decompression bomb) against the client itself.
import test from 'ava'
import fs from 'node:fs'
import path from 'node:path'
import zlib from 'node:zlib'
import { randomBytes } from 'node:crypto'
import { Fleet } from './fleet.js'
import { admitHost } from './admit.js'
import { run, vmifs } from './harness.js'
import { startNginx } from '../helpers/nginx.js'
import { tmpDir } from '../helpers/tmp.js'
import { freePort } from '../../src/util/ports.js'
import { ManifestBuilder } from '../../src/manifests/manifest.js'
import { OriginClient } from '../../src/peer/origin-client.js'
import { StoreWriter } from '../../src/origin/writer.js'
import { CODEC_BROTLI, decodeIndex, encodeIndex, packId, signStatement } from '../../src/origin/store.js'
import { SigningKey } from '../../src/trust/keys.js'
import { blake3 } from '../../src/util/hash.js'
import { writeFileAtomic } from '../../src/util/files.js'

/** A base image and a sibling: the base's bytes with 2 MiB of its own inserted in the middle. */
function family(dir: string): { base: string; sib: string } {
  const a = randomBytes(5 * 1024 * 1024)
  const b = Buffer.from(Array.from({ length: 70_000 }, (_, i) => `log line ${i} of the service\n`).join(''))
  const c = randomBytes(3 * 1024 * 1024)
  const own = randomBytes(2 * 1024 * 1024)
  const base = path.join(dir, 'base.raw')
  const sib = path.join(dir, 'sib.raw')
  fs.writeFileSync(base, Buffer.concat([a, b, c]))
  fs.writeFileSync(sib, Buffer.concat([a, own, b, c]))
  return { base, sib }
}

test.serial(
  'replicate takes its share from the origin as range requests: no chunk fails, nothing falls back',
  async t => {
    const f = await Fleet.create(t, ['a', 'd'])
    const { base, sib } = family(f.dir)
    for (const [file, name] of [
      [base, 'base'],
      [sib, 'sib']
    ] as const)
      t.is(vmifs(['import', file, '--name', name, '--data-dir', f.host('a').data]).code, 0)
    admitHost(f.host('a').data, 'a')
    const store = path.join(f.dir, 'store')
    const pub = vmifs(['publish-store', store, '--data-dir', f.host('a').data])
    t.is(pub.code, 0, pub.stderr)
    t.regex(pub.stderr, /chunks \(.*\) written to .* in 2 packs of/) // a pack an image
    const ngx = await startNginx(t, f.dir, store, f.host('a').port)
    // d holds the base (imported here): the sibling's shared chunks are local already
    t.is(vmifs(['import', base, '--name', 'base', '--data-dir', f.host('d').data]).code, 0)
    await f.start('d', { listen: false, extra: ['--origin', ngx.url] })
    await f.waitFor('the sibling on d', () => fs.existsSync(f.image('d', 'sib')))
    const r = vmifs(['replicate', 'sib', '--json', '--data-dir', f.host('d').data])
    t.is(r.code, 0, r.stderr)
    const rep = JSON.parse(r.stdout) as {
      fallbackChunks: number
      perDonor: Array<{
        donor: string
        chunks: number
        bytes: number
        wireBytes: number
        requests: number
        failed: number
      }>
    }
    const o = rep.perDonor.find(x => x.donor === 'origin')!
    t.is(o.failed, 0)
    t.is(rep.fallbackChunks, 0)
    t.true(o.chunks > 50, JSON.stringify(o))
    // about 2 MiB of new random chunks: one range (at most 4 MiB) or two, not a request a chunk
    t.true(o.requests <= 3, JSON.stringify(o))
    t.true(o.wireBytes <= o.bytes * 1.05, JSON.stringify(o))
    const ranges = ngx.log().filter(l => l.includes('/packs/'))
    t.is(ranges.length, o.requests)
    t.is(run('cmp', [sib, f.image('d', 'sib')]).status, 0)
  }
)

test.serial(
  'a boot profile published to the store (by a host that read the image) makes a new host prefetch from it',
  async t => {
    const f = await Fleet.create(t, ['a', 'd', 'e'])
    const { base } = family(f.dir)
    t.is(vmifs(['import', base, '--name', 'base', '--data-dir', f.host('a').data]).code, 0)
    admitHost(f.host('a').data, 'a')
    admitHost(f.host('d').data, 'd')
    const store = path.join(f.dir, 'store')
    t.is(vmifs(['publish-store', store, '--data-dir', f.host('a').data]).code, 0)
    const ngx = await startNginx(t, f.dir, store, f.host('a').port)
    const cfg = { sessionIdleMs: 300 }
    await f.start('d', { listen: false, extra: ['--origin', ngx.url], config: cfg })
    await f.waitFor('the image on d', () => fs.existsSync(f.image('d', 'base')))
    // d boots it: the first 3 MiB are read, and the session ends
    t.is(run('sh', ['-c', `head -c ${3 * 1024 * 1024} ${f.image('d', 'base')} > /dev/null`]).status, 0)
    await f.waitFor('a session learnt on d', () => (f.stats('d').images.base?.modelSessions ?? 0) >= 1)
    // d, which holds only what it read, publishes its model on its own
    const p = vmifs(['publish-store', store, 'base', '--models-only', '--data-dir', f.host('d').data])
    t.is(p.code, 0, p.stderr)
    t.regex(p.stderr, /with its usage model \(1 sessions\)/)
    // e, a new host with nothing but the store, has the model before it reads a byte, and
    // prefetches what d read once the image is opened
    await f.start('e', { listen: false, extra: ['--origin', ngx.url], config: cfg })
    await f.waitFor('the image on e', () => fs.existsSync(f.image('e', 'base')))
    await f.waitFor('the profile on e', () => (f.stats('e').images.base?.modelSessions ?? 0) >= 1)
    const fd = fs.openSync(f.image('e', 'base'), 'r')
    try {
      const one = Buffer.alloc(4096)
      fs.readSync(fd, one, 0, 4096, 0)
      await f.waitFor(
        'e prefetched what d read',
        () => {
          const p = f.stats('e').prefetch
          return p.issued > 100 && p.pending === 0 && f.stats('e').fleet!.inFlight === 0
        },
        30_000
      )
    } finally {
      fs.closeSync(fd)
    }
    const s = f.stats('e')
    t.true(s.prefetch.bytes >= 2.5 * 1024 * 1024, JSON.stringify(s.prefetch))
    t.true(s.prefetch.bytes < 4 * 1024 * 1024, 'what d read, not the whole image')
  }
)

test.serial('a store of format 1 serves nothing until `publish-store --convert` converts it', async t => {
  const f = await Fleet.create(t, ['a', 'd'])
  const { base } = family(f.dir)
  t.is(vmifs(['import', base, '--name', 'base', '--data-dir', f.host('a').data]).code, 0)
  admitHost(f.host('a').data, 'a')
  const store = path.join(f.dir, 'store')
  t.is(vmifs(['publish-store', store, '--data-dir', f.host('a').data]).code, 0)
  // the same store as the version before wrote it: a file per chunk, no statement
  const ix = decodeIndex(fs.readFileSync(path.join(store, 'indexes', fs.readdirSync(path.join(store, 'indexes'))[0]!)))
  for (const e of ix.entries) {
    const pack = fs.readFileSync(path.join(store, 'packs', `${e.pack}.pack`)).subarray(e.offset, e.offset + e.stored)
    const data = e.codec === CODEC_BROTLI ? zlib.brotliDecompressSync(pack) : pack
    fs.mkdirSync(path.join(store, 'chunks', e.hash.slice(0, 2)), { recursive: true })
    fs.writeFileSync(path.join(store, 'chunks', e.hash.slice(0, 2), e.hash), data)
  }
  for (const d of ['packs', 'indexes', 'models', 'store.json']) fs.rmSync(path.join(store, d), { recursive: true })
  const again = vmifs(['publish-store', store, '--data-dir', f.host('a').data])
  t.is(again.code, 1)
  t.regex(again.stderr, /format 1.*vmifs publish-store --convert.*\[ORIGIN_FORMAT_OLD\]/s)
  const ngx = await startNginx(t, f.dir, store, f.host('a').port)
  const d = await f.start('d', { listen: false, extra: ['--origin', ngx.url] })
  await f.waitFor('d read the store', () => f.stats('d').fleet!.origin?.format === 1)
  t.like(f.stats('d').fleet!.origin, { format: 1, images: 0, problem: 'format 1' })
  // the log line follows the stats (the agent's log reaches this process after its .stats answer may)
  await f.waitFor('the log of ORIGIN_FORMAT_OLD', () => /ORIGIN_FORMAT_OLD/.test(d.output + d.err))
  const conv = vmifs(['publish-store', '--convert', store, '--data-dir', f.host('a').data])
  t.is(conv.code, 0, conv.stderr)
  t.regex(conv.stderr, /converted to format 2: 1 images/)
  t.false(fs.existsSync(path.join(store, 'chunks')))
  await f.waitFor('d reads the converted store', () => f.stats('d').fleet!.origin?.format === 2)
  await f.waitFor('the image on d', () => fs.existsSync(f.image('d', 'base')))
  t.is(run('cmp', [base, f.image('d', 'base')]).status, 0)
})

test.serial('the client refuses a server that ignores ranges, and caps what a chunk decompresses to', async t => {
  const dir = tmpDir(t)
  const store = path.join(dir, 'store')
  const key = SigningKey.generate()
  // one honest chunk, and a "bomb": 8 MiB of zeros in brotli, indexed as a 4 KiB chunk
  const honest = randomBytes(4096)
  const bomb = zlib.brotliCompressSync(Buffer.alloc(8 * 1024 * 1024))
  const b = new ManifestBuilder({ kind: 'cdc', min: 1024, avg: 4096, max: 65536, fileCuts: false })
  b.add(4096, blake3(honest))
  const bombHash = blake3(Buffer.alloc(4096)).toString('hex')
  b.add(4096, Buffer.from(bombHash, 'hex'))
  const m = b.build()
  fs.mkdirSync(path.join(store, 'packs'), { recursive: true })
  fs.mkdirSync(path.join(store, 'indexes'))
  const pack = Buffer.concat([honest, bomb])
  const id = packId(pack)
  fs.writeFileSync(path.join(store, 'packs', `${id}.pack`), pack)
  const index = encodeIndex({
    manifest: m.digest(),
    entries: [
      { hash: blake3(honest).toString('hex'), pack: id, offset: 0, stored: 4096, size: 4096, codec: 0 },
      { hash: bombHash, pack: id, offset: 4096, stored: bomb.length, size: 4096, codec: CODEC_BROTLI }
    ]
  })
  fs.writeFileSync(path.join(store, 'indexes', m.digest()), index)
  writeFileAtomic(
    path.join(store, 'store.json'),
    JSON.stringify(signStatement(key, { [m.digest()]: { index: blake3(index).toString('hex') } }))
  )
  t.true(new StoreWriter(store).has(m.digest()), 'a store the writer reads')
  const port = await freePort()
  const ngx = await startNginx(t, dir, store, port, 'location /noranges/ { alias ' + store + '/; max_ranges 0; }')
  const c = new OriginClient(ngx.url)
  t.teardown(() => c.close())
  const refusal = c.refresh(AbortSignal.timeout(5000), () => 'not ours')
  await t.throwsAsync(refusal, { code: 'ORIGIN_STORE_INVALID', message: /not ours/ } as never)
  t.is(c.locate(bombHash), undefined, 'a refused signer loads nothing')
  t.like(await c.refresh(AbortSignal.timeout(5000), () => undefined), { format: 2, images: 1, chunks: 2 })
  const { ranges } = c.plan([blake3(honest).toString('hex'), bombHash], 0, 1 << 20)
  t.is(ranges.length, 1)
  const got = await c.fetchRange(ranges[0]!, AbortSignal.timeout(5000))
  t.deepEqual(got.get(blake3(honest).toString('hex')), honest)
  t.false(got.has(bombHash), 'the bomb stops at 4 KiB and is left out')
  // the same store where the server answers ranges with the whole file
  const nr = new OriginClient(`http://127.0.0.1:${port}/noranges`)
  t.teardown(() => nr.close())
  await nr.refresh(AbortSignal.timeout(5000), () => undefined)
  await t.throwsAsync(nr.fetchRange(nr.plan([bombHash], 0, 1 << 20).ranges[0]!, AbortSignal.timeout(5000)), {
    code: 'HOLDER_BAD_RESPONSE',
    message: /ignores Range/
  } as never)
})
