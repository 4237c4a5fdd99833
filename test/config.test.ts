// The config file: every key is checked against one schema before anything is applied, so a
// misspelt, mistyped or out-of-range key is CONFIG_INVALID naming the key, never ignored.
import test from 'ava'
import fs from 'node:fs'
import path from 'node:path'
import { defaults, loadConfigFile } from '../src/config.js'
import { isVmifsError } from '../src/errors.js'
import { tmpDir } from './helpers/tmp.js'

function load(t: Parameters<typeof tmpDir>[0], body: unknown): ReturnType<typeof loadConfigFile> {
  const file = path.join(tmpDir(t), 'config.json')
  fs.writeFileSync(file, typeof body === 'string' ? body : JSON.stringify(body))
  return loadConfigFile(file)
}

function refusal(t: Parameters<typeof tmpDir>[0], body: unknown): string {
  try {
    load(t, body)
  } catch (err) {
    if (isVmifsError(err) && err.code === 'CONFIG_INVALID') return err.message
    throw err
  }
  t.fail(`accepted ${JSON.stringify(body)}`)
  return ''
}

test('an empty config file keeps every default', t => {
  t.deepEqual(load(t, {}), defaults())
})

test('every section is applied: sizes, rates, URLs, links, policies, chunking', t => {
  const c = load(t, {
    dataDir: '/srv/vmifs',
    hostId: 'h1',
    cache: { capacity: '2GiB', memory: 1048576 },
    chunking: { kind: 'cdc', min: 4096, avg: 16384, max: 65536 },
    mount: { allowOther: false, readTimeoutMs: 30000, readaheadKb: 128 },
    token: 's3cret',
    listen: '[::1]:7000',
    advertise: 'https://h1.example:7000/',
    peers: ['http://10.0.0.2:7000'],
    origin: 'http://origin.example/store',
    tls: { cert: '/etc/c.pem', key: '/etc/k.pem' },
    price: 0.5,
    links: { h2: { price: 1e-4, bandwidth: '100Mbit', rttMs: 20 } },
    fetch: { alpha: 1, prefetchAlpha: 0, sigma: 2, timeoutMs: 1000, deadlineMs: 9000, hedge: false, missAheadKb: 0 },
    syncIntervalMs: 500,
    sessionIdleMs: 2000,
    site: { rttMs: 3, storagePrice: 0.1 },
    policies: { web: { minReplicas: 2, dr: 'h3', maxRttMs: 50 } },
    replication: { drTimeoutMs: 1000, intervalMs: 5 }
  })
  t.is(c.dataDir, '/srv/vmifs')
  t.is(c.capacityBytes, 2 * 1024 ** 3)
  t.is(c.memoryCacheBytes, 1048576)
  t.deepEqual(c.chunking, { kind: 'cdc', min: 4096, avg: 16384, max: 65536, fileCuts: true })
  t.deepEqual(c.mount, { allowOther: false, readTimeoutMs: 30000, readaheadKb: 128 })
  t.deepEqual(c.fleet.listen, { host: '::1', port: 7000 })
  t.is(c.fleet.advertise, 'https://h1.example:7000')
  t.deepEqual(c.fleet.peers, ['http://10.0.0.2:7000'])
  t.deepEqual(c.fleet.links.h2, { price: 1e-4, bandwidthBps: 12.5e6, rttMs: 20 })
  t.deepEqual(c.fetch, {
    alpha: 1,
    prefetchAlpha: 0,
    sigma: 2,
    timeoutMs: 1000,
    deadlineMs: 9000,
    hedge: false,
    missAheadKb: 0
  })
  t.deepEqual(c.policies.web, { minReplicas: 2, dr: 'h3', maxRttMs: 50 })
  t.is(c.replication.intervalMs, 100, 'the replication interval has a floor')
  t.deepEqual(c.site, { rttMs: 3, storagePrice: 0.1 })
})

test('a misspelt key at any depth is refused, naming it', t => {
  t.regex(refusal(t, { cache: { size: '20GiB' } }), /unknown key "cache\.size"/)
  t.regex(refusal(t, { fetch: { deadlinMs: 10 } }), /unknown key "fetch\.deadlinMs"/)
  t.regex(refusal(t, { links: { b: { bandwith: '1Gbit' } } }), /unknown key "links\.b\.bandwith"/)
  t.regex(refusal(t, { peer: [] }), /unknown key "peer"/)
  t.regex(refusal(t, { policies: { web: { minReplica: 1 } } }), /policies\.web/)
})

test('a value of the wrong type is refused, not coerced', t => {
  t.regex(refusal(t, { cache: '20GiB' }), /^config file .*: cache: /)
  t.regex(refusal(t, { mount: { allowOther: 'false' } }), /mount\.allowOther/)
  t.regex(refusal(t, { fetch: { hedge: 'no' } }), /fetch\.hedge/)
  t.regex(refusal(t, { token: 42 }), /token/)
  t.regex(refusal(t, { peers: 'http://a:1' }), /peers/)
  t.regex(refusal(t, { syncIntervalMs: '200' }), /syncIntervalMs/)
  t.regex(refusal(t, { originHeaders: { 'X-Key': 7 } }), /originHeaders\.X-Key/)
  t.regex(refusal(t, { originHeaders: { 'X-Key': 'a\r\nInjected: 1' } }), /CR, LF or NUL/)
  t.regex(refusal(t, { originHeaders: { 'bad header': 'v' } }), /not an HTTP header name/)
  t.regex(refusal(t, { trust: { admins: ['nope'] } }), /trust\.admins\.0: is not a public key/)
})

test('a value out of range is refused', t => {
  t.regex(refusal(t, { mount: { readTimeoutMs: -5 } }), /mount\.readTimeoutMs/)
  t.regex(refusal(t, { fetch: { alpha: 1.5 } }), /fetch\.alpha/)
  t.regex(refusal(t, { fetch: { timeoutMs: 0 } }), /fetch\.timeoutMs/)
  t.regex(refusal(t, { cache: { capacity: '12 parsecs' } }), /cache\.capacity/)
  t.regex(refusal(t, { links: { b: { bandwidth: 'fast' } } }), /links\.b\.bandwidth/)
  t.regex(refusal(t, { chunking: { kind: 'cdc', min: 4096, avg: 5000, max: 65536 } }), /chunking/)
  t.regex(refusal(t, { chunking: { kind: 'rabin' } }), /chunking/)
  t.regex(refusal(t, { listen: 'nowhere' }), /listen/)
  t.regex(refusal(t, { policies: { web: { minReplicas: 0, dr: 'h3' } } }), /policies\.web/)
})

test('a file that is not a JSON object is refused', t => {
  t.regex(refusal(t, '{ "token": '), /^config file /)
  t.regex(refusal(t, '[1, 2]'), /must hold a JSON object/)
})

test('dashboard: a remote listener needs a token file of its own', t => {
  const c = load(t, { dashboard: { listen: '0.0.0.0:7443', tokenFile: '/etc/vmifs/dashboard-token' } })
  t.deepEqual(c.dashboard, { listen: { host: '0.0.0.0', port: 7443 }, tokenFile: '/etc/vmifs/dashboard-token' })
  t.regex(refusal(t, { dashboard: { listen: '0.0.0.0:7443' } }), /dashboard\.listen needs dashboard\.tokenFile/)
  t.regex(refusal(t, { dashboard: { listen: 'nowhere' } }), /dashboard\.listen: "nowhere" is not host:port/)
  t.regex(refusal(t, { dashboard: { token: 'x' } }), /unknown key "dashboard\.token"/)
})
