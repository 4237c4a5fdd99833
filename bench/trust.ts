// `npm run bench -- trust [--hosts N] [--facts F]`: signing and verifying the metadata table at
// sync rates. N origins (default 1,000) publish F facts each (default 100: a host record, a status,
// images with their signed publications, and holdings of the sizes the agent publishes), signed; a
// relay takes them all; then a new host pulls the whole table from the relay the way sync does
// (pages of 5,000 facts) and every fact is checked. Reported: Ed25519 signs and verifies a second
// on one core; facts verified a second on one core, when pages complete their origins (one head
// signature and a digest cover an origin's facts) and when every fact's own signature is checked
// (pages that stop short of their origins' heads); and the new host's full copy, end to end.
import { openDb, type Db } from '../src/index/db.js'
import { type FactPage, FactStore, factMessage } from '../src/index/facts.js'
import { SigningKey, verifySignature } from '../src/trust/keys.js'
import { issueCert } from '../src/trust/certs.js'
import { signPublication } from '../src/trust/publications.js'
import { markdownTable, num, takeOption } from './lib/report.js'

function cpuSeconds(t0: NodeJS.CpuUsage): number {
  const d = process.cpuUsage(t0)
  return (d.user + d.system) / 1e6
}

/**
 * Pulls everything from `from` into `to` in pages of `limit`, through JSON as on the wire;
 * returns the facts received and the CPU seconds the receiver spent applying them.
 */
function pull(to: FactStore, from: FactStore, limit: number): { n: number; applyCpu: number } {
  let n = 0
  let applyCpu = 0
  for (let i = 0; i < 1_000_000; i++) {
    const page = JSON.parse(JSON.stringify(from.since(to.cursors(), limit))) as FactPage
    const t = process.cpuUsage()
    const r = to.apply(page)
    applyCpu += cpuSeconds(t)
    if (Object.keys(r.refused).length > 0) throw new Error(`refused: ${JSON.stringify(r.refused)}`)
    n += page.facts.length
    if (page.facts.length === 0) return { n, applyCpu }
  }
  throw new Error('pull did not end')
}

export async function main(args: string[]): Promise<void> {
  const hosts = Number(takeOption(args, '--hosts') ?? 1000)
  const perHost = Number(takeOption(args, '--facts') ?? 100)
  if (!(hosts >= 1 && perHost >= 3)) throw new Error('--hosts >= 1, --facts >= 3')
  const admin = SigningKey.generate()
  const trust = { admins: [admin.publicKey], hosts: {} }
  const dbs: Db[] = []
  const store = (id: string, key = SigningKey.generate()): FactStore => {
    const db = openDb(':memory:')
    dbs.push(db)
    const cert = issueCert(admin, id, key.publicKey)
    return new FactStore(db, id, { signer: key, trust, cert: () => cert, owner: true })
  }

  // raw Ed25519 rates on one core
  const k = SigningKey.generate()
  const msgs = Array.from({ length: 20_000 }, (_, i) =>
    factMessage('host-0042', i + 1, `hold/${i.toString(16).padStart(64, '0')}`, '{"ranges":[[0,4096]]}')
  )
  let t = process.cpuUsage()
  const sigs = msgs.map(m => k.sign(m))
  const signRate = msgs.length / cpuSeconds(t)
  t = process.cpuUsage()
  for (let i = 0; i < msgs.length; i++) if (!verifySignature(k.publicKey, msgs[i]!, sigs[i])) throw new Error('verify')
  const verifyRate = msgs.length / cpuSeconds(t)

  // the origins, and a relay holding all of them
  console.error(`trust: ${hosts} origins publishing ${perHost} facts each`)
  const relay = store('relay')
  t = process.cpuUsage()
  let published = 0
  for (let h = 0; h < hosts; h++) {
    const id = `host-${String(h).padStart(4, '0')}`
    const key = SigningKey.generate()
    const o = store(id, key)
    o.publish('host', { endpoint: `https://${id}.example:7070`, price: 0, version: 1 })
    o.publish('status', { cacheCapacityBytes: 5e11, cacheSizeBytes: 1.2e11, load: 0.35 })
    for (let i = 0; i < perHost - 2; i++) {
      const digest = ((h * 7919 + i) * 2654435761).toString(16).padStart(64, '0').slice(-64)
      if (i % 10 === 0) {
        const name = `img-${h}-${i}`
        const { byHost: _b, ...p } = signPublication(key, { name, digest, size: 2 ** 31 }, { now: 1.7e12 })
        o.publish(`image/${name}`, { digest, size: 2 ** 31, ...p })
      } else o.publish(`hold/${digest}`, { ranges: [[0, 4096 + i]] })
    }
    published += perHost
    pull(relay, o, 5000)
  }
  const setup = cpuSeconds(t)
  console.error(`trust: published and relayed ${published} facts in ${setup.toFixed(1)} CPU s`)

  // a new host's full copy, as sync pulls it: pages of 5,000, most origins complete in their page
  const fresh = store('new-host')
  t = process.cpuUsage()
  const t0 = performance.now()
  const full = pull(fresh, relay, 5000)
  const fullCpu = cpuSeconds(t)
  const fullWall = (performance.now() - t0) / 1000
  // the same copy with every fact's own signature checked: pages shorter than an origin
  const slow = store('new-host-2')
  const short = Math.max(1, Math.floor(perHost / 2) - 1)
  const partial = pull(slow, relay, short)
  for (const [a, b] of [
    [fresh, relay],
    [slow, relay]
  ] as const) {
    for (const o of ['host-0000', `host-${String(hosts - 1).padStart(4, '0')}`])
      if (a.digestOf(o) !== b.digestOf(o)) throw new Error(`the copy of ${o} differs`)
  }
  for (const db of dbs) db.close()

  const rate = full.n / full.applyCpu
  const rows = [
    ['Ed25519 sign (node:crypto)', `${num(signRate)} /s`, '20,000 messages'],
    ['Ed25519 verify (node:crypto)', `${num(verifyRate)} /s`, '20,000 messages'],
    [
      'facts applied and verified, pages completing their origins (a head and a digest an origin)',
      `${num(rate)} /s`,
      `${full.applyCpu.toFixed(2)} CPU s for ${num(full.n)} facts of ${hosts} origins`
    ],
    [
      `facts applied and verified one by one (pages of ${short}, short of every head)`,
      `${num(partial.n / partial.applyCpu)} /s`,
      `${partial.applyCpu.toFixed(2)} CPU s for ${num(partial.n)} facts`
    ],
    [
      "a new host's full copy from one peer, end to end (serving, JSON both ways, applying)",
      `${fullWall.toFixed(2)} s`,
      `${fullCpu.toFixed(2)} CPU s, pages of 5,000`
    ]
  ]
  console.log(`\n${markdownTable(['what', 'one core', 'detail'], rows)}\n`)
  console.log(
    `goals: >= 20,000 facts verified a second a core: ${num(rate)} (${rate >= 20_000 ? 'met' : 'not met'}); ` +
      `a ${hosts}-host table copied in under 2 s: ${fullWall.toFixed(2)} s (${fullWall < 2 ? 'met' : 'not met'})`
  )
}
