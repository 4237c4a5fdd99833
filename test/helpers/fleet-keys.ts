// Keys for tests of a fleet: one admin key, a host key per id (made on first use), the admin's
// certificate for each host, and the trust that admits them.
import path from 'node:path'
import { openDb, type Db } from '../../src/index/db.js'
import { type FactPage, FactStore, type Trust } from '../../src/index/facts.js'
import { SigningKey } from '../../src/trust/keys.js'
import { type HostCert, issueCert } from '../../src/trust/certs.js'
import { tmpDir } from './tmp.js'

export class FleetKeys {
  readonly admin = SigningKey.generate()
  private readonly keys = new Map<string, SigningKey>()
  private readonly certs = new Map<string, HostCert>()

  key(id: string): SigningKey {
    let k = this.keys.get(id)
    if (!k) this.keys.set(id, (k = SigningKey.generate()))
    return k
  }

  cert(id: string): HostCert {
    let c = this.certs.get(id)
    if (!c) this.certs.set(id, (c = issueCert(this.admin, id, this.key(id).publicKey)))
    return c
  }

  trust(): Trust {
    return { admins: [this.admin.publicKey], hosts: {} }
  }

  /** A fact store for host `self` on db: signing with its key, admitting every host of these keys. */
  store(db: Db, self: string, trust: Trust = this.trust()): FactStore {
    return new FactStore(db, self, { signer: this.key(self), trust, cert: () => this.cert(self), owner: true })
  }
}

/** A fact store on a fresh database in the test's temp dir. */
export function factStore(t: Parameters<typeof tmpDir>[0], keys: FleetKeys, self: string, trust?: Trust): FactStore {
  const db = openDb(path.join(tmpDir(t), `${self}.sqlite`))
  t.teardown(() => db.close())
  return keys.store(db, self, trust)
}

/**
 * A page of facts as their origins serve them: each origin publishes its facts (in the order
 * given, so seqs 1, 2, 3…) signed with its key, with its head and certificate.
 */
export function signedPage(keys: FleetKeys, facts: Array<{ origin: string; key: string; value: unknown }>): FactPage {
  const stores = new Map<string, { db: Db; store: FactStore }>()
  for (const f of facts) {
    let s = stores.get(f.origin)
    if (!s) {
      const db = openDb(':memory:')
      stores.set(f.origin, (s = { db, store: keys.store(db, f.origin) }))
    }
    s.store.publish(f.key, f.value)
  }
  const page: FactPage = { facts: [], complete: {}, heads: {} }
  for (const { db, store } of stores.values()) {
    const p = store.since({})
    page.facts.push(...p.facts)
    Object.assign(page.complete, p.complete)
    Object.assign(page.heads!, p.heads)
    db.close()
  }
  return page
}
