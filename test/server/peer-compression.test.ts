// The batch endpoint over a real HTTP server: brotli on the wire when the client accepts it and
// it pays, the raw body otherwise; clients that do not ask get the raw body (compatibility). And
// the client's reading of a batch body as it arrives (BatchDecoder).
import test, { type ExecutionContext } from 'ava'
import { randomBytes } from 'node:crypto'
import { request } from 'undici'
import { PeerServer } from '../../src/server/peer-server.js'
import { PeerClient } from '../../src/peer/client.js'
import { BatchDecoder, encodeBatch } from '../../src/peer/wire.js'
import { blake3 } from '../../src/util/hash.js'
import { createLogger } from '../../src/util/log.js'

const TOKEN = 'compress-test'

async function serve(
  t: ExecutionContext,
  chunks: Buffer[]
): Promise<{ url: string; hashes: string[]; seen: Array<[number, number]> }> {
  const byHash = new Map(chunks.map(c => [blake3(c).toString('hex'), c]))
  const seen: Array<[number, number]> = []
  const s = new PeerServer(
    { host: '127.0.0.1', port: 0, token: TOKEN },
    {
      hostId: 'x',
      readChunk: h => Promise.resolve(byHash.get(h) ?? null),
      manifest: () => null,
      facts: () => ({ facts: [], complete: {} }),
      metrics: () => Promise.resolve({ contentType: 'text/plain', body: '' }),
      served: () => {},
      compressed: (raw, wire) => {
        seen.push([raw, wire])
      }
    },
    createLogger('test', 'silent')
  )
  await s.listen()
  t.teardown(async () => {
    await s.close()
  })
  return { url: `http://127.0.0.1:${s.port}`, hashes: [...byHash.keys()], seen }
}

const text = (n: number, seed: number): Buffer =>
  Buffer.from(Array.from({ length: n / 32 }, (_, i) => `line ${(i * seed) % 977} of config\n`.padEnd(32, '#')).join(''))

test('compressible chunks come brotli-compressed and decode to the same bytes', async t => {
  const chunks = [text(16384, 3), text(16384, 5), text(32768, 7)]
  const { url, hashes, seen } = await serve(t, chunks)
  const c = new PeerClient(url, { token: TOKEN })
  t.teardown(async () => {
    await c.close()
  })
  let wire = 0
  const handed: Array<[number, string]> = []
  const got = await c.chunks(
    hashes,
    AbortSignal.timeout(5000),
    n => {
      wire += n
    },
    { compress: true },
    (i, data) => handed.push([i, data ? blake3(data).toString('hex') : ''])
  )
  t.deepEqual(
    got.map(b => b && blake3(b).toString('hex')),
    hashes
  )
  t.deepEqual(
    handed,
    hashes.map((h, i) => [i, h]),
    'each chunk handed on once, in order'
  )
  t.is(seen.length, 1)
  t.true(wire < 0.5 * chunks.reduce((n, b) => n + b.length, 0), `wire ${wire}`)
})

test('random chunks go raw (compression does not pay); a client that does not ask never gets brotli', async t => {
  const { url, hashes, seen } = await serve(t, [randomBytes(16384), randomBytes(20000), text(16384, 11)])
  const c = new PeerClient(url, { token: TOKEN })
  t.teardown(async () => {
    await c.close()
  })
  const got = await c.chunks(hashes.slice(0, 2), AbortSignal.timeout(5000), undefined, { compress: true })
  t.deepEqual(
    got.map(b => b && blake3(b).toString('hex')),
    hashes.slice(0, 2)
  )
  t.is(seen.length, 0, 'sent raw')
  // an old client: no accept-encoding, raw batch body
  const r = await request(`${url}/v1/chunks`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ hashes: [hashes[2]] })
  })
  t.is(r.headers['content-encoding'], undefined)
  const body = Buffer.from(await r.body.arrayBuffer())
  t.is(body.readUInt32BE(0), 16384)
  t.is(seen.length, 0)
})

test('a batch body read piece by piece gives each entry once its bytes are in; a bad body throws', t => {
  const parts = [Buffer.from('first chunk'), null, Buffer.alloc(70_000, 7), Buffer.from('last')]
  const body = Buffer.concat(encodeBatch(parts))
  const got: Array<[number, Buffer | null]> = []
  const d = new BatchDecoder(parts.length, (i, data) => got.push([i, data]))
  // 3 bytes at a time: entry 0 is in after 4 + 11 bytes, long before the body ends
  for (let p = 0; p < body.length; p += 3) {
    d.push(body.subarray(p, p + 3))
    if (p + 3 >= 15) t.true(got.length >= 1, `entry 0 given once its bytes were in (${p + 3} bytes pushed)`)
    if (p + 3 < 15) t.is(got.length, 0)
  }
  d.finish()
  t.deepEqual(
    got,
    parts.map((b, i) => [i, b])
  )
  const truncated = new BatchDecoder(parts.length, () => {})
  truncated.push(body.subarray(0, body.length - 1))
  t.throws(() => truncated.finish(), { message: /truncated inside entry 3/ })
  const trailing = new BatchDecoder(parts.length, () => {})
  t.throws(() => trailing.push(Buffer.concat([body, Buffer.from([0])])), { message: /trailing bytes/ })
  const huge = new BatchDecoder(1, () => {})
  const header = Buffer.alloc(4)
  header.writeUInt32BE(0xfffffffe)
  huge.push(header)
  t.throws(() => huge.push(Buffer.alloc(64 * 1024 * 1024)), { message: /over its bound/ })
})
