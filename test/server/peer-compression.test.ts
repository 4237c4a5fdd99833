// The batch endpoint over a real HTTP server: brotli on the wire when the client accepts it and
// it pays, the raw body otherwise; clients that do not ask get the raw body (compatibility).
import test, { type ExecutionContext } from 'ava'
import { randomBytes } from 'node:crypto'
import { request } from 'undici'
import { PeerServer } from '../../src/server/peer-server.js'
import { PeerClient } from '../../src/peer/client.js'
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
  const got = await c.chunks(
    hashes,
    AbortSignal.timeout(5000),
    n => {
      wire += n
    },
    { compress: true }
  )
  t.deepEqual(
    got.map(b => b && blake3(b).toString('hex')),
    hashes
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
