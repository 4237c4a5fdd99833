import test, { type ExecutionContext } from 'ava'
import fs from 'node:fs'
import path from 'node:path'
import { spawn } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { Agent, request } from 'undici'
import { BACKENDS, Fleet, TOKEN, delayProxy, faultyProxy } from './fleet.js'
import { admitHost } from './admit.js'
import { startNginx } from '../helpers/nginx.js'
import { dropPages, makeImage, nodeJson, run, vmifs } from './harness.js'

/** Distinct data bytes of an image (what a cold host must fetch at most). */
function distinctDataBytes(data: string, name: string): number {
  const m = JSON.parse(vmifs(['manifest', name, '--data-dir', data]).stdout) as {
    chunks: Array<{ length: number; hash?: string }>
  }
  const seen = new Map<string, number>()
  for (const c of m.chunks) if (c.hash) seen.set(c.hash, c.length)
  return [...seen.values()].reduce((a, b) => a + b, 0)
}

/**
 * An image of `mib` MiB imported on A, read whole on B, listed on C, and C told that B holds all
 * of it: the start of the tests where C has two holders to choose from. Returns the image file.
 */
async function heldByAAndB(t: ExecutionContext, f: Fleet, mib: number): Promise<string> {
  const img = path.join(f.dir, 'disk.raw')
  makeImage(img, mib)
  t.is(vmifs(['import', img, '--name', 'disk', '--data-dir', f.host('a').data]).code, 0)
  await f.waitFor('the image on b', () => fs.existsSync(f.image('b', 'disk')))
  t.is(run('cmp', [img, f.image('b', 'disk')]).status, 0)
  await f.waitFor('the image on c', () => fs.existsSync(f.image('c', 'disk')))
  await f.holdsAll('c', 'b', 'disk', 'a')
  return img
}

for (const backend of BACKENDS) {
  test.serial(
    `an image imported on A appears on B and C; C reads it byte-exact from A, ` +
      `fetching each chunk once and no zero chunk (${backend})`,
    async t => {
      const f = await Fleet.create(t, ['a', 'b', 'c'], { backend })
      await f.start('a', { peers: ['b'] })
      await f.start('b', { peers: ['a', 'c'] })
      await f.start('c', { peers: ['b'] }) // C hears of A only through B
      const img = path.join(f.dir, 'disk.raw')
      const bytes = makeImage(img, 24)
      t.is(vmifs(['import', img, '--name', 'disk', '--data-dir', f.host('a').data]).code, 0) // while the fleet runs
      const t0 = Date.now()
      await f.waitFor(
        'the image on b and c',
        () => fs.existsSync(f.image('b', 'disk')) && fs.existsSync(f.image('c', 'disk'))
      )
      t.log(`published to every mount in ${Date.now() - t0} ms`)
      // three readers at once (separate processes): every missing chunk is still fetched once
      const readers = [0, 1, 2].map(() => spawn('cmp', [img, f.image('c', 'disk')]))
      const codes = await Promise.all(readers.map(r => new Promise<number | null>(resolve => r.once('exit', resolve))))
      t.deepEqual(codes, [0, 0, 0])
      const s = f.stats('c')
      const distinct = distinctDataBytes(f.host('a').data, 'disk')
      t.true(distinct < bytes.length)
      t.is(s.fetch.bytes, distinct, 'every distinct data chunk fetched exactly once, zero runs never')
      t.is(s.fetch.byHolder.a!.bytes, distinct)
      const m = JSON.parse(vmifs(['manifest', 'disk', '--data-dir', f.host('a').data]).stdout) as {
        chunks: Array<{ hash?: string }>
      }
      const nChunks = new Set(m.chunks.filter(c => c.hash).map(c => c.hash)).size
      t.log(
        `three readers: ${nChunks} chunks in ${s.fetch.byHolder.a!.requests} requests ` +
          `(${s.fetch.readAheadChunks} read ahead)`
      )
      t.true(s.cache.missBytes + s.cache.hitBytes >= bytes.length) // three readers: the kernel may ask for a page twice
      t.true(s.cache.missBytes > 0)
      // read again past the page cache: served from C's own cache, nothing fetched
      dropPages(f.image('c', 'disk'))
      t.is(run('cmp', [img, f.image('c', 'disk')]).status, 0)
      const s2 = f.stats('c')
      t.is(s2.fetch.bytes, distinct)
      t.is(s2.cache.missBytes, s.cache.missBytes)
      // C now announces what it holds; A sees C as a holder of the image's entries
      await f.synced('b', 'c')
      t.true(s2.images.disk!.cachedBytes > 0)
      // one sequential reader on B: adjacent missing chunks travel together, far fewer requests than
      // chunks (the read-ahead asks for a run of chunks at once, whatever the machine's load)
      t.is(run('cmp', [img, f.image('b', 'disk')]).status, 0)
      const sb = f.stats('b')
      const requests = Object.values(sb.fetch.byHolder).reduce((n, h) => n + h.requests, 0)
      t.log(`one reader: ${nChunks} chunks in ${requests} requests (${sb.fetch.readAheadChunks} read ahead)`)
      t.is(sb.fetch.bytes, distinct)
      t.true(requests > 0 && requests < nChunks / 4)
    }
  )
}

for (const backend of BACKENDS) {
  test.serial(`with B configured cheaper than A and holding the data, C fetches from B (${backend})`, async t => {
    const f = await Fleet.create(t, ['a', 'b', 'c'], { backend })
    await f.start('a', { peers: ['b'] })
    await f.start('b', { peers: ['a'] })
    // α = 0: price alone decides (with α > 0 the queue term, bytes in flight / B, does not shrink
    // with the chunk, so under load a small chunk may rightly go to the idle, dearer holder)
    await f.start('c', {
      peers: ['a', 'b'],
      config: { links: { a: { price: 1e-4 }, b: { price: 0 } }, fetch: { alpha: 0, hedge: false } }
    })
    const img = await heldByAAndB(t, f, 9) // B now holds every chunk
    t.is(run('cmp', [img, f.image('c', 'disk')]).status, 0)
    const s = f.stats('c')
    t.is(s.fetch.byHolder.b!.bytes, s.fetch.bytes)
    t.is(s.fetch.byHolder.a?.bytes ?? 0, 0)
  })
}

for (const backend of BACKENDS) {
  test.serial(`A killed with SIGKILL in the middle of C's read: the read completes from B (${backend})`, async t => {
    const f = await Fleet.create(t, ['a', 'b', 'c'], { backend })
    // C reaches A through a throttled proxy, so the read is slow enough to kill A in the middle
    const slowA = await delayProxy(f.host('a').port, 1, 8e6)
    t.teardown(() => slowA.close())
    await f.start('a', { peers: ['b'], advertise: `http://127.0.0.1:${slowA.port}` })
    await f.start('b', { peers: ['a'] })
    await f.start('c', { peers: ['a', 'b'], config: { links: { a: { price: 0 }, b: { price: 1e-5 } } } })
    const img = await heldByAAndB(t, f, 48)
    const cmp = spawn('cmp', [img, f.image('c', 'disk')])
    const done = new Promise<number | null>(resolve => cmp.once('exit', resolve))
    await f.waitFor('C to fetch from A', () => (f.stats('c').fetch.byHolder.a?.bytes ?? 0) > 1e6)
    f.host('a').agent!.child.kill('SIGKILL')
    t.is(await done, 0, 'the read completed with the right bytes')
    const s = f.stats('c')
    t.true(s.fetch.byHolder.a!.bytes > 0)
    t.true(s.fetch.byHolder.b!.bytes > 0, 'the rest came from B')
    t.is(s.read.errors, 0)
  })
}

for (const fault of ['corrupt', 'truncate', 'blackhole'] as const) {
  const answers = { corrupt: 'corrupted', truncate: 'truncated', blackhole: 'never sent' }[fault]
  test.serial(
    `a peer whose chunk answers are ${answers} is skipped and demoted; the right bytes come from another holder`,
    async t => {
      const f = await Fleet.create(t, ['a', 'b', 'c'])
      const bad = await faultyProxy(f.host('b').port, fault)
      t.teardown(() => bad.close())
      await f.start('a', { peers: ['b'] })
      await f.start('b', { peers: ['a'], advertise: bad.url })
      await f.start('c', {
        peers: ['a', 'b'],
        config: { links: { a: { price: 1e-6 }, b: { price: 0 } }, fetch: { timeoutMs: 400 } }
      })
      const img = await heldByAAndB(t, f, 6)
      const t0 = Date.now()
      t.is(run('cmp', [img, f.image('c', 'disk')]).status, 0, 'right bytes')
      t.log(`read in ${Date.now() - t0} ms`)
      const s = f.stats('c')
      t.true((await bad.stats()).spoiled > 0, 'B was asked first (cheaper)')
      t.true(s.fetch.byHolder.b!.errors > 0)
      if (fault === 'truncate') {
        // a batch is read as it arrives: the chunks that came whole before the cut hash right
        // and are kept; the cut one comes from A
        t.true(s.fetch.byHolder.a!.bytes > 0, 'the cut chunks came from A')
        t.is(s.fetch.byHolder.a!.bytes + s.fetch.byHolder.b!.bytes, s.fetch.bytes)
      } else {
        t.is(s.fetch.byHolder.b!.bytes, 0, 'nothing accepted from B')
        t.is(s.fetch.byHolder.a!.bytes, s.fetch.bytes)
      }
      t.true(s.fleet!.links.b!.demoted)
      t.is(s.read.errors, 0)
      if (fault === 'blackhole') t.true(s.fetch.hedges > 0, "a hedged request went to A before B's request timed out")
    }
  )
}

test.serial('a read whose chunk no live holder has fails with EIO after the deadline, never hangs', async t => {
  const f = await Fleet.create(t, ['a', 'c'])
  await f.start('a', { peers: [] })
  await f.start('c', { peers: ['a'], config: { fetch: { timeoutMs: 300, deadlineMs: 1500 } } })
  const img = path.join(f.dir, 'disk.raw')
  makeImage(img, 3)
  t.is(vmifs(['import', img, '--name', 'disk', '--data-dir', f.host('a').data]).code, 0)
  await f.waitFor('the image on c', () => fs.existsSync(f.image('c', 'disk')))
  await f.host('a').agent!.stop('SIGKILL')
  const t0 = Date.now()
  const r = run('cat', [f.image('c', 'disk')], 30_000)
  const ms = Date.now() - t0
  t.not(r.status, 0)
  t.regex(r.stderr, /Input\/output error/)
  t.true(ms < 10_000, `failed after ${ms} ms`)
  const s = f.stats('c')
  t.true(s.fetch.failures > 0)
  t.true(s.read.errors > 0)
})

test.serial(
  'the peer protocol: 401 without the token, 400 on malformed ids and oversized batches, /metrics',
  async t => {
    const f = await Fleet.create(t, ['a'])
    await f.start('a', { peers: [] })
    const u = f.url('a')
    const auth = { authorization: `Bearer ${TOKEN}` }
    const status = async (
      p: string,
      o: { method?: 'GET' | 'POST'; headers?: Record<string, string>; body?: string } = {}
    ): Promise<number> => {
      const r = await request(u + p, { method: o.method ?? 'GET', headers: o.headers, body: o.body })
      await r.body.dump()
      return r.statusCode
    }
    t.is(await status('/v1/health'), 401)
    t.is(await status('/v1/health', { headers: { authorization: 'Bearer wrong' } }), 401)
    t.is(await status('/v1/health', { headers: { authorization: TOKEN } }), 401)
    t.is(await status('/metrics'), 401)
    t.is(await status('/v1/health', { headers: auth }), 200)
    t.is(await status('/v1/chunks/xyz', { headers: auth }), 400)
    t.is(await status(`/v1/chunks/${'A'.repeat(64)}`, { headers: auth }), 400)
    t.is(await status(`/v1/chunks/${'a'.repeat(64)}`, { headers: auth }), 404)
    t.is(await status('/v1/manifests/not-a-digest', { headers: auth }), 400)
    t.is(await status(`/v1/manifests/${'0'.repeat(63)}`, { headers: auth }), 400)
    const json = { ...auth, 'content-type': 'application/json' }
    t.is(
      await status('/v1/chunks', {
        method: 'POST',
        headers: json,
        body: JSON.stringify({ hashes: Array(65).fill('a'.repeat(64)) })
      }),
      400
    )
    t.is(await status('/v1/chunks', { method: 'POST', headers: json, body: JSON.stringify({ hashes: ['nope'] }) }), 400)
    t.is(await status('/v1/chunks', { method: 'POST', headers: json, body: '{' }), 400)
    t.is(
      await status('/v1/chunks', {
        method: 'POST',
        headers: json,
        body: JSON.stringify({ hashes: ['a'.repeat(64)], pad: 'x'.repeat(2 * 1024 * 1024) })
      }),
      413
    )
    t.is(
      await status('/v1/facts', { method: 'POST', headers: json, body: JSON.stringify({ cursors: { a: -1 } }) }),
      400
    )
    const m = await request(u + '/metrics', { headers: auth })
    const text = await m.body.text()
    t.is(m.statusCode, 200)
    t.regex(text, /^# TYPE vmifs_cache_hit_bytes_total counter$/m)
    t.regex(text, /^vmifs_metadata_cursor\{origin="a"\} \d+$/m)
  }
)

test.serial('an agent refuses fleet mode without a token, or without knowing whose facts to believe', async t => {
  const f = await Fleet.create(t, ['a'])
  const args = ['agent', '--mount', f.host('a').mnt, '--data-dir', f.host('a').data, '--listen', '127.0.0.1:0']
  const r = vmifs(args, { VMIFS_TOKEN: '' })
  t.is(r.code, 1)
  t.regex(r.stderr, /\[TOKEN_MISSING\]/)
  const u = vmifs(args, { VMIFS_TOKEN: TOKEN })
  t.is(u.code, 1)
  t.regex(u.stderr, /trust\.admins.*\[TRUST_MISSING\]/s)
  t.false(fs.existsSync(f.host('a').data), 'the refusal made no data dir')
})

test.serial('the origin store behind nginx serves a host nobody else can, never seeing the fleet token', async t => {
  const f = await Fleet.create(t, ['a', 'd'])
  const img = path.join(f.dir, 'disk.raw')
  makeImage(img, 6)
  t.is(vmifs(['import', img, '--name', 'disk', '--data-dir', f.host('a').data]).code, 0)
  const store = path.join(f.dir, 'store')
  admitHost(f.host('a').data, 'a') // the publisher is an admitted host: its certificate goes with its signatures
  const pub = vmifs(['publish-store', store, '--data-dir', f.host('a').data])
  t.is(pub.code, 0, pub.stderr)
  // whoever can change the store's files adds images: one unsigned, one under a's signature of another image
  const listFile = path.join(store, 'images.json')
  const list = JSON.parse(fs.readFileSync(listFile, 'utf8')) as Record<string, Record<string, unknown>>
  t.truthy(list.disk!.sig, 'published signed')
  const { publisher: _p, sig: _s, ...unsigned } = list.disk!
  list.evil = unsigned
  list.copy = list.disk!
  fs.writeFileSync(listFile, JSON.stringify(list))
  // a real nginx serving the store as static files
  const ngx = await startNginx(t, f.dir, store, f.host('a').port)
  // D has no peers: only the origin, with a credential of its own for it
  await f.start('d', {
    listen: false,
    extra: ['--origin', ngx.url],
    config: { originHeaders: { 'X-Store-Key': 'store-credential' } }
  })
  await f.waitFor('the image on d', () => fs.existsSync(f.image('d', 'disk')))
  // read in 1 MiB reads, each a tick's worth of misses: with cmp's small reads the count of
  // requests followed how the kernel's reads of them fell into ticks (26 to 40 for 160 chunks)
  t.is(run('sh', ['-c', `dd if=${f.image('d', 'disk')} bs=1M status=none | cmp - ${img}`]).status, 0)
  const s = f.stats('d')
  t.false(fs.existsSync(f.image('d', 'evil')))
  t.false(fs.existsSync(f.image('d', 'copy')))
  t.like(s.fleet!.imagesRefused, { unsigned: 1, badSignature: 1 })
  t.true(s.fetch.byHolder.origin!.bytes > 0)
  t.is(s.fetch.bytes, s.fetch.byHolder.origin!.bytes)
  // every request D made (store.json, images.json, the manifest, index, packs) carried the
  // origin's credential, none the fleet token
  const lines = ngx.log()
  const creds = lines.map(l => l.split('|').slice(0, 2).join('|'))
  t.true(creds.length >= 5, lines.join('\n'))
  t.false(
    lines.some(l => l.includes(TOKEN)),
    'the fleet token reached the origin store'
  )
  t.deepEqual(new Set(creds), new Set(['-|store-credential']))
  // chunks came as range requests over packs: far fewer requests than chunks
  const ranges = lines.filter(l => l.includes('/packs/'))
  t.true(
    ranges.every(l => /\|bytes=\d+-\d+\|206\|/.test(l)),
    ranges.join('\n')
  )
  const chunks = new Set(
    (
      JSON.parse(vmifs(['manifest', 'disk', '--data-dir', f.host('a').data]).stdout) as {
        chunks: Array<{ hash?: string }>
      }
    ).chunks
      .map(c => c.hash)
      .filter(Boolean)
  ).size
  t.log(`${ranges.length} range requests for ${chunks} chunks`)
  t.is(s.fetch.byHolder.origin!.requests, ranges.length)
  t.true(ranges.length * 4 < chunks, `${ranges.length} range requests for ${chunks} chunks`)
})

test.serial('peers, and the remote dashboard, talk over TLS (cert, key and the fleet CA in the config)', async t => {
  const f = await Fleet.create(t, ['a', 'c'])
  const cert = path.join(f.dir, 'cert.pem')
  const key = path.join(f.dir, 'key.pem')
  const gen = run('openssl', [
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-subj',
    '/CN=vmifs-test',
    '-addext',
    'subjectAltName=IP:127.0.0.1',
    '-days',
    '1',
    '-keyout',
    key,
    '-out',
    cert
  ])
  t.is(gen.status, 0, gen.stderr)
  const tls = { tls: { cert, key, ca: cert } }
  await f.start('a', { peers: [], config: tls })
  const https = (id: string): string => f.url(id).replace('http:', 'https:')
  // c's remote dashboard goes over the same certificate
  const tokenFile = path.join(f.dir, 'dashboard-token')
  fs.writeFileSync(tokenFile, 'dashboard-remote-secret\n')
  await f.start('c', {
    config: { ...tls, dashboard: { listen: '127.0.0.1:0', tokenFile } },
    extra: ['--peer', https('a')]
  })
  t.is(f.host('a').agent!.info.endpoint, https('a'))
  const img = path.join(f.dir, 'disk.raw')
  makeImage(img, 3)
  t.is(vmifs(['import', img, '--name', 'disk', '--data-dir', f.host('a').data]).code, 0)
  await f.waitFor('the image on c', () => fs.existsSync(f.image('c', 'disk')))
  t.is(run('cmp', [img, f.image('c', 'disk')]).status, 0)
  t.true(f.stats('c').fetch.byHolder.a!.bytes > 0)
  const { remote } = JSON.parse(vmifs(['dashboard', '--json', '--data-dir', f.host('c').data]).stdout) as {
    remote: string
  }
  t.regex(remote, /^https:\/\/127\.0\.0\.1:\d+$/)
  const dispatcher = new Agent({ connect: { ca: fs.readFileSync(cert) } })
  t.teardown(async () => await dispatcher.close())
  const state = await request(`${remote}/api/state`, {
    dispatcher,
    headers: { authorization: 'Bearer dashboard-remote-secret' }
  })
  t.is(state.statusCode, 200)
  t.is(((await state.body.json()) as { hostId: string }).hostId, 'c')
  // plain HTTP to a TLS port gets nowhere
  await t.throwsAsync(
    request(`${f.url('a')}/v1/health`, { headers: { authorization: `Bearer ${TOKEN}` } }).then(async r => {
      await r.body.dump()
      if (r.statusCode !== 200) throw new Error(String(r.statusCode))
    })
  )
})

test.serial('a host with a small cache evicts what it fetched and its announced holdings shrink with it', async t => {
  const f = await Fleet.create(t, ['a', 'c'])
  await f.start('a', { peers: ['c'] })
  await f.start('c', { peers: ['a'], extra: ['--cache-size', '2MiB'] })
  const img = path.join(f.dir, 'disk.raw')
  makeImage(img, 24) // ~8 MiB of distinct data, four times C's cache
  t.is(vmifs(['import', img, '--name', 'disk', '--data-dir', f.host('a').data]).code, 0)
  await f.waitFor('the image on c', () => fs.existsSync(f.image('c', 'disk')))
  t.is(run('cmp', [img, f.image('c', 'disk')]).status, 0, 'right bytes even while evicting')
  // a read is answered from the fetched bytes at once and the chunk is cached after it (on the
  // thread pool): under load the last writes may still be under way when cmp is done. Once every
  // fetch is recorded, the cache has evicted and holds at most its capacity (nothing is pinned).
  await f.waitFor('every fetched chunk recorded in the cache', () => f.stats('c').fleet!.inFlight === 0)
  const s = f.stats('c')
  t.true(s.cache.evictions > 0)
  t.is(s.cache.pinnedBytes, 0)
  t.true(s.cache.sizeBytes <= 2 * 1024 * 1024)
  // what C announces (its own hold/ fact, as any peer would pull it) covers only what it kept
  await new Promise(resolve => setTimeout(resolve, 600))
  const r = await request(`${f.url('c')}/v1/facts`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ cursors: {} })
  })
  const page = (await r.body.json()) as {
    facts: Array<{ origin: string; key: string; value: { ranges: Array<[number, number]> } | null }>
  }
  const hold = page.facts.find(x => x.origin === 'c' && x.key.startsWith('hold/'))
  t.truthy(hold?.value)
  const held = hold!.value!.ranges.reduce((n, [a, b]) => n + b - a, 0)
  const m = JSON.parse(vmifs(['manifest', 'disk', '--data-dir', f.host('a').data]).stdout) as {
    chunks: Array<{ hash?: string }>
  }
  const dataEntries = m.chunks.filter(c => c.hash).length
  t.log(`C announces ${held} of ${dataEntries} data entries`)
  t.true(held > 0 && held < dataEntries / 2)
})

for (const backend of BACKENDS) {
  test.serial(
    `a read session on A becomes a usage model that B sees (images.<name>.modelSessions) (${backend})`,
    async t => {
      const f = await Fleet.create(t, ['a', 'b'], { backend })
      await f.start('a', { peers: ['b'], config: { sessionIdleMs: 300 } })
      await f.start('b', { peers: ['a'] })
      const img = path.join(f.dir, 'disk.raw')
      makeImage(img, 6)
      t.is(vmifs(['import', img, '--name', 'disk', '--data-dir', f.host('a').data]).code, 0)
      await f.waitFor('the image on b', () => fs.existsSync(f.image('b', 'disk')))
      if (backend === 'redis') f.use('b', 'disk') // on Redis, B follows models of the images it uses
      t.is(run('cmp', [img, f.image('a', 'disk')]).status, 0) // one session on A
      await f.waitFor('A to learn the session', () => f.stats('a').images.disk?.modelSessions === 1)
      await f.waitFor('B to see the model', () => f.stats('b').images.disk?.modelSessions === 1)
      const r = await request(`${f.url('a')}/v1/facts`, {
        method: 'POST',
        headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
        body: JSON.stringify({ cursors: {} })
      })
      const page = (await r.body.json()) as {
        facts: Array<{ key: string; value: { n: number; e: Array<[number, number, number[]]> } }>
      }
      const model = page.facts.find(x => x.key.startsWith('model/'))!.value
      const m = JSON.parse(vmifs(['manifest', 'disk', '--data-dir', f.host('a').data]).stdout) as {
        chunks: Array<{ hash?: string }>
      }
      const dataEntries = m.chunks.map((c, i) => (c.hash ? i : -1)).filter(i => i >= 0)
      t.deepEqual(
        model.e.map(x => x[0]).sort((x, y) => x - y),
        dataEntries,
        'every data entry read, no zero run recorded'
      )
    }
  )
}

test.serial(
  "a host that never read an image prefetches what the fleet's model expects; " +
    'precision and recall match an independent count',
  async t => {
    const f = await Fleet.create(t, ['a', 'b'])
    const cfg = { sessionIdleMs: 300, syncIntervalMs: 100 }
    await f.start('a', { peers: ['b'], config: cfg })
    await f.start('b', { peers: ['a'], config: cfg })
    const img = path.join(f.dir, 'disk.raw')
    const bytes = makeImage(img, 48) // 16 MiB of random data first
    t.is(vmifs(['import', img, '--name', 'disk', '--data-dir', f.host('a').data]).code, 0)
    await f.waitFor('the image on b', () => fs.existsSync(f.image('b', 'disk')))
    const MiB = 1024 * 1024
    const readRange = (host: string, from: number, to: number): { ok: boolean } => {
      const r = nodeJson<{ sha: string }>(`
      import fs from 'node:fs'
      import { createHash } from 'node:crypto'
      const fd = fs.openSync(${JSON.stringify(f.image(host, 'disk'))}, 'r')
      const b = Buffer.alloc(${to - from})
      let n = 0
      while (n < b.length) n += fs.readSync(fd, b, n, b.length - n, ${from} + n)
      fs.closeSync(fd)
      console.log(JSON.stringify({ sha: createHash('sha256').update(b).digest('hex') }))`)
      return { ok: r.sha === createHash('sha256').update(bytes.subarray(from, to)).digest('hex') }
    }
    // A's session: the first 12 MiB
    t.true(readRange('a', 0, 12 * MiB).ok)
    await f.waitFor('A to learn the session', () => f.stats('a').images.disk?.modelSessions === 1)
    await f.waitFor('B to see the model', () => f.stats('b').images.disk?.modelSessions === 1)
    const model = (
      (await (
        await request(`${f.url('a')}/v1/facts`, {
          method: 'POST',
          headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
          body: JSON.stringify({ cursors: {} })
        })
      ).body.json()) as { facts: Array<{ key: string; value: { e: Array<[number]> } }> }
    ).facts
      .find(x => x.key.startsWith('model/'))!
      .value.e.map(x => x[0])
    // B opens the image (a session starts, prefetch runs), waits for it, then reads 6..18 MiB
    const m = JSON.parse(vmifs(['manifest', 'disk', '--data-dir', f.host('a').data]).stdout) as {
      chunks: Array<{ offset: number; length: number; hash?: string }>
    }
    const holder = spawn(process.execPath, [
      '-e',
      `const fs = require('fs'); const fd = fs.openSync(${JSON.stringify(f.image('b', 'disk'))}, 'r'); ` +
        'setTimeout(() => fs.closeSync(fd), 60000)'
    ])
    t.teardown(() => {
      holder.kill()
    })
    await f.waitFor('B to prefetch the model', () => {
      const s = f.stats('b')
      return s.prefetch.issued === model.length && s.fleet!.inFlight === 0
    })
    t.true(readRange('b', 6 * MiB, 18 * MiB).ok, 'prefetch never changes the bytes read')
    holder.kill()
    await f.waitFor("B's session to end", () => f.stats('b').prefetch.wasted > 0)
    const s = f.stats('b')
    // independently: chunks B read = data entries overlapping B's reads (the kernel's 16 KiB read-ahead aside)
    const readEntries = m.chunks
      .map((c, i) => ({ c, i }))
      .filter(({ c }) => c.hash && c.offset < 18 * MiB && c.offset + c.length > 6 * MiB)
      .map(({ i }) => i)
    const P = new Set(model)
    const used = readEntries.filter(i => P.has(i)).length
    t.log(
      `model ${P.size} chunks, B read ${readEntries.length}, overlap ${used}; ` +
        `B reports issued ${s.prefetch.issued}, used ${s.prefetch.used}, wasted ${s.prefetch.wasted}, ` +
        `precision ${s.prefetch.precision.toFixed(3)}, recall ${s.prefetch.recall.toFixed(3)}`
    )
    t.true(Math.abs(s.prefetch.used - used) <= 2)
    t.true(Math.abs(s.prefetch.precision - used / P.size) < 0.02)
    t.true(Math.abs(s.prefetch.recall - used / readEntries.length) < 0.03)
    t.is(s.prefetch.wasted, s.prefetch.issued - s.prefetch.used)
    t.true(s.prefetch.demandFetchedChunks < readEntries.length * 0.6, 'demand misses dropped')
  }
)

test.serial(
  "a new version no host has read yet inherits its predecessor's model: " +
    'its first session prefetches, and its reads are hits',
  async t => {
    const f = await Fleet.create(t, ['a', 'b'])
    const cfg = { sessionIdleMs: 300, syncIntervalMs: 100 }
    await f.start('a', { peers: ['b'], config: cfg })
    await f.start('b', { peers: ['a'], config: cfg })
    const MiB = 1024 * 1024
    const v1file = path.join(f.dir, 'v1.raw')
    const v1 = makeImage(v1file, 24) // 8 MiB of random data first
    // v2: 200 KiB of new data in front, so every byte of v1 sits at another offset
    const v2 = Buffer.concat([randomBytes(200 * 1024), v1])
    const v2file = path.join(f.dir, 'v2.raw')
    fs.writeFileSync(v2file, v2)
    const files: Array<[string, string]> = [
      [v1file, 'v1'],
      [v2file, 'v2']
    ]
    for (const [file, name] of files)
      t.is(vmifs(['import', file, '--name', name, '--data-dir', f.host('a').data]).code, 0)
    await f.waitFor('both images on b', () => fs.existsSync(f.image('b', 'v1')) && fs.existsSync(f.image('b', 'v2')))
    const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex')
    const readRange = (host: string, name: string, from: number, to: number): string =>
      nodeJson<{ sha: string }>(`
      import fs from 'node:fs'
      import { createHash } from 'node:crypto'
      const fd = fs.openSync(${JSON.stringify(f.image(host, name))}, 'r')
      const b = Buffer.alloc(${to - from})
      let n = 0
      while (n < b.length) n += fs.readSync(fd, b, n, b.length - n, ${from} + n)
      fs.closeSync(fd)
      console.log(JSON.stringify({ sha: createHash('sha256').update(b).digest('hex') }))`).sha
    // A's session of v1: its first 6 MiB
    t.is(readRange('a', 'v1', 0, 6 * MiB), sha(v1.subarray(0, 6 * MiB)))
    await f.waitFor("B to see v1's model", () => f.stats('b').images.v1?.modelSessions === 1)
    t.is(f.stats('b').images.v2!.modelSessions, 0)
    // B opens v2: no model of v2 anywhere, v1's is inherited
    const holder = spawn(process.execPath, [
      '-e',
      `const fs = require('fs'); const fd = fs.openSync(${JSON.stringify(f.image('b', 'v2'))}, 'r'); ` +
        'setTimeout(() => fs.closeSync(fd), 60000)'
    ])
    t.teardown(() => {
      holder.kill()
    })
    await f.waitFor('B to inherit a model and prefetch it', () => {
      const s = f.stats('b')
      return s.prefetch.inherited === 1 && s.prefetch.issued > 0 && s.fleet!.inFlight === 0
    })
    // the same 6 MiB of content, 200 KiB further into v2
    const from = 200 * 1024
    t.is(
      readRange('b', 'v2', from, from + 6 * MiB),
      sha(v2.subarray(from, from + 6 * MiB)),
      'prefetch never changes the bytes read'
    )
    const s = f.stats('b')
    const m = JSON.parse(vmifs(['manifest', 'v2', '--data-dir', f.host('a').data]).stdout) as {
      chunks: Array<{ offset: number; length: number; hash?: string }>
    }
    const readEntries = m.chunks.filter(c => c.hash && c.offset < from + 6 * MiB && c.offset + c.length > from).length
    t.log(
      `B read ${readEntries} chunks of v2; prefetch issued ${s.prefetch.issued}, used ${s.prefetch.used}; ` +
        `v2's reads hit ${(100 * s.images.v2!.hitRate).toFixed(1)} % of bytes`
    )
    t.true(s.prefetch.used >= readEntries * 0.9, 'the inherited model covered the read')
    t.true(s.images.v2!.hitRate >= 0.9, 'the reads were hits')
  }
)
