// The global metadata table, this host's copy. Contract:
// - this host writes facts only under its own origin (publish), each signed with its host key:
//   Ed25519 of factMessage(origin, seq, key, value text);
// - only the latest fact per (origin, key) is kept; a NULL value retracts the key; seqs are safe
//   integers, strictly increasing per origin;
// - each origin also signs its head: its latest seq and the digest of all its rows (one per key it
//   ever published, in seq order: rowsDigest). since() answers a peer's cursors with every fact
//   past them, per origin how far the answer is complete, and the origin's latest head as this
//   host has it (with the certificate that admits the origin's key);
// - apply() takes such a page from any peer and believes only what the origins signed: an origin
//   whose key this host does not admit (trust.hosts, or a certificate of a trust.admins key) is
//   refused; a page that completes an origin up to its head is applied in a savepoint and kept only
//   if the origin's rows then hash to the head's digest (one signature covers every fact of the
//   origin, and a peer can neither hide a fact nor add one); a page that stops short of the head
//   has each of its facts' signatures checked. A peer cannot move a cursor past a head the origin
//   signed. Facts of this host's own origin are never taken from a peer: an echo of them signed by
//   this host's own key moves its own cursor (a restored data dir), so a seq is never reused;
// - a fleet admin's revocation of a host key travels with every page (the set of all a host
//   knows): the origins whose facts here the key signed are dropped, and it is never believed again.
// Convergence: each host holds, per origin, every live fact up to its cursor. A pull from any peer
// moves a cursor up to the peer's, so in a connected fleet that keeps pulling every cursor reaches
// every origin's head, and with one writer per origin there is nothing to merge. Where a complete
// page does not hash to the head (this host's copy of the origin was wrong: a peer had hidden a
// fact from an earlier partial page, or the origin's data dir was restored), the origin is dropped
// here and pulled again whole.
import type { Statement } from 'better-sqlite3'
import type { Db } from './db.js'
import { type SigningKey, isSignatureText, verifySignature } from '../trust/keys.js'
import { type HostCert, type Revocation, checkCert, checkRevocation } from '../trust/certs.js'
import { validHostId } from '../trust/host-id.js'
import { blake3, isHashHex } from '../util/hash.js'
import { VmifsError } from '../errors.js'
import { type Kind, type ValueOf, decodeAs, keyOf, kindOf, problemOf as valueProblem, validValue } from './schema.js'

export interface Fact {
  origin: string
  seq: number
  key: string
  value: unknown
  /** the origin's signature of factMessage() */
  sig?: string
}
export type Cursors = Record<string, number>
/** An origin's signed statement of its latest seq and of the digest of its rows at that seq. */
export interface Head {
  seq: number
  digest: string
  sig: string
  /** the certificate that admits the origin's key (absent where the config lists the host) */
  cert?: HostCert
}
export interface FactPage {
  facts: Fact[]
  complete: Cursors
  heads?: Record<string, Head>
  /** every revocation of a host key this host knows (a grow-only set: each host passes all on) */
  revoked?: Revocation[]
}

/** Whom this host believes: fleet admin keys (their host certificates) and hosts listed by key. */
export interface Trust {
  admins: readonly string[]
  hosts: Readonly<Record<string, string>>
}

/**
 * Refusals that only a peer that forges, corrupts or misreports sends: the peer is demoted.
 */
const BLAMED_REFUSALS = [
  'unsigned',
  'badSignature',
  'badHead',
  'badCert',
  'malformed',
  'badValue',
  'beyondHead'
] as const
/**
 * Refusals that can come from honest peers: an origin this host does not admit (another config),
 * an older certificate or a revoked key (a rotation or revocation not yet everywhere), a digest
 * that does not match (a restored origin). Counted, not blamed.
 */
const UNBLAMED_REFUSALS = ['unknownOrigin', 'oldCert', 'revoked', 'digestMismatch'] as const
/** Why facts from a peer were not applied (counted per reason). */
export const REFUSALS = [...BLAMED_REFUSALS, ...UNBLAMED_REFUSALS] as const
export type Refusal = (typeof REFUSALS)[number]
const BLAMED: ReadonlySet<Refusal> = new Set(BLAMED_REFUSALS)

export interface Applied {
  /** the facts that changed this host's table */
  changed: Fact[]
  refused: Partial<Record<Refusal, number>>
  /** whether the peer sent something only a forger (or a broken peer) sends */
  blame: boolean
  /** origins dropped here, to be pulled again whole */
  resets: string[]
}

/** No honest host publishes 2^52 facts (at a thousand a second, 142,000 years): past it, a seq is refused. */
export const SEQ_LIMIT = 2 ** 52
const KEY_RE = /^[\x20-\x7e]{1,256}$/
const VALUE_MAX = 1024 * 1024

export function validOrigin(s: unknown): s is string {
  return validHostId(s)
}

/** What an origin signs for one fact (a retraction's value text is empty). */
export function factMessage(origin: string, seq: number, key: string, json: string | null): string {
  return `vmifs-fact/1\n${origin}\n${seq}\n${key}\n${json ?? ''}`
}

/** What an origin signs for its head. */
export function headMessage(origin: string, seq: number, digest: string): string {
  return `vmifs-head/1\n${origin}\n${seq}\n${digest}`
}

interface RawFact {
  origin: string
  seq: number
  key: string
  value: string | null
  sig: string | null
}

/** BLAKE3 (hex) of an origin's rows in seq order, each "seq\nkey\nvalue\nsig\n". */
export function rowsDigest(rows: ReadonlyArray<Pick<RawFact, 'seq' | 'key' | 'value' | 'sig'>>): string {
  let text = ''
  for (const r of rows) text += `${r.seq}\n${r.key}\n${r.value ?? ''}\n${r.sig ?? ''}\n`
  return blake3(Buffer.from(text)).toString('hex')
}

export interface FactStoreOptions {
  /** this host's key: without one the store only reads (a planner command's view) */
  signer?: SigningKey
  /** whom to believe in apply(); without it every other origin is refused */
  trust?: Trust
  /** this host's certificate, as installed (shown with its head) */
  cert?: () => unknown
  /**
   * the agent, which owns the table: on open it repairs its own seqs and drops the origins its
   * trust does not admit (a command that only publishes or reads leaves them, whatever its config)
   */
  owner?: boolean
}

/** Thrown in the savepoint of a complete page whose rows do not hash to the head: it rolls back. */
class DigestMismatch extends Error {}

/** A fact from a peer, with its value's text (what its origin signed, and what is stored). */
interface Received {
  f: Fact
  json: string | null
}

/** An origin_keys row: the key an origin's facts are verified with, and the certificate that admitted it. */
interface StoredKey {
  key: string
  cert: string | null
}

export class FactStore {
  private readonly q: Record<string, Statement>
  private readonly listeners = new Set<(changed: Fact[]) => void>()
  private readonly signer: SigningKey | undefined
  private readonly trust: Trust
  private ownHeadCache: { seq: number; head: Head } | undefined
  /** own facts renumbered on open (their seqs had been pushed past SEQ_LIMIT) */
  readonly renumbered: number
  /** origins dropped on open: unsigned facts of before, or keys the config no longer admits */
  readonly dropped: string[]

  constructor(
    private readonly db: Db,
    readonly self: string,
    private readonly opts: FactStoreOptions = {}
  ) {
    this.signer = opts.signer
    this.trust = opts.trust ?? { admins: [], hosts: {} }
    this.q = {
      cursor: db.prepare('SELECT seq FROM cursors WHERE origin = ?').pluck(),
      setCursor: db.prepare(
        'INSERT INTO cursors (origin, seq) VALUES (?, ?) ON CONFLICT(origin) DO UPDATE SET seq = max(seq, excluded.seq)'
      ),
      forceCursor: db.prepare(
        'INSERT INTO cursors (origin, seq) VALUES (?, ?) ON CONFLICT(origin) DO UPDATE SET seq = excluded.seq'
      ),
      cursors: db.prepare('SELECT origin, seq FROM cursors'),
      del: db.prepare('DELETE FROM facts WHERE origin = ? AND key = ?'),
      delOlder: db.prepare('DELETE FROM facts WHERE origin = ? AND key = ? AND seq < ?'),
      insertNew: db.prepare(
        'INSERT OR IGNORE INTO facts (origin, seq, key, value, sig, received_at) VALUES (?, ?, ?, ?, ?, ?)'
      ),
      insert: db.prepare('INSERT INTO facts (origin, seq, key, value, sig, received_at) VALUES (?, ?, ?, ?, ?, ?)'),
      get: db.prepare('SELECT origin, seq, key, value, sig FROM facts WHERE origin = ? AND key = ?'),
      byKey: db.prepare('SELECT origin, seq, key, value, sig FROM facts WHERE key = ?'),
      byPrefix: db.prepare("SELECT origin, seq, key, value, sig FROM facts WHERE key >= ? AND key < ? || '\uffff'"),
      since: db.prepare(
        'SELECT origin, seq, key, value, sig FROM facts WHERE origin = ? AND seq > ? ORDER BY seq LIMIT ?'
      ),
      rows: db.prepare('SELECT origin, seq, key, value, sig FROM facts WHERE origin = ? ORDER BY seq'),
      origins: db.prepare('SELECT DISTINCT origin FROM facts'),
      hasRows: db.prepare('SELECT 1 FROM facts WHERE origin = ? LIMIT 1').pluck(),
      head: db.prepare('SELECT seq, digest, sig FROM heads WHERE origin = ?'),
      setHead: db.prepare(
        'INSERT INTO heads (origin, seq, digest, sig) VALUES (?, ?, ?, ?) ON CONFLICT(origin) DO UPDATE SET ' +
          'seq = excluded.seq, digest = excluded.digest, sig = excluded.sig WHERE excluded.seq > heads.seq'
      ),
      originKey: db.prepare('SELECT key, cert FROM origin_keys WHERE origin = ?'),
      originKeys: db.prepare('SELECT origin, key, cert FROM origin_keys'),
      setOriginKey: db.prepare('INSERT OR REPLACE INTO origin_keys (origin, key, cert) VALUES (?, ?, ?)'),
      dropFacts: db.prepare('DELETE FROM facts WHERE origin = ?'),
      dropCursor: db.prepare('DELETE FROM cursors WHERE origin = ?'),
      dropHead: db.prepare('DELETE FROM heads WHERE origin = ?'),
      dropKey: db.prepare('DELETE FROM origin_keys WHERE origin = ?'),
      revocations: db.prepare('SELECT revocation FROM revocations').pluck(),
      isRevoked: db.prepare('SELECT 1 FROM revocations WHERE key = ?').pluck(),
      addRevocation: db.prepare('INSERT OR IGNORE INTO revocations (key, revocation) VALUES (?, ?)'),
      originsWithKey: db.prepare('SELECT origin FROM origin_keys WHERE key = ?').pluck(),
      certOfKey: db.prepare('SELECT cert FROM origin_keys WHERE key = ? AND cert IS NOT NULL').pluck()
    }
    let renumbered = 0
    let dropped: string[] = []
    if (this.signer && opts.owner === true) {
      this.db
        .transaction(() => {
          renumbered = this.repairOwn()
          dropped = this.checkKeys()
        })
        .immediate()
    }
    this.renumbered = renumbered
    this.dropped = dropped
  }

  onChange(fn: (changed: Fact[]) => void): () => void {
    this.listeners.add(fn)
    return () => this.listeners.delete(fn)
  }

  cursor(origin: string): number {
    return (this.q.cursor!.get(origin) as number | undefined) ?? 0
  }

  cursors(): Cursors {
    const out: Cursors = {}
    for (const r of this.q.cursors!.all() as Array<{ origin: string; seq: number }>) out[r.origin] = r.seq
    return out
  }

  /**
   * Writes and signs a fact about this host (null retracts the key). Returns it, or undefined for
   * the retraction of a key this host never said (nothing is written: there is nothing to retract).
   */
  publish(key: string, value: unknown): Fact | undefined {
    const signer = this.signer
    if (!signer) throw new Error('this view of the table has no host key: it cannot publish')
    if (!KEY_RE.test(key)) throw new Error(`a fact key is 1-256 printable ASCII characters: ${JSON.stringify(key)}`)
    const kind = value === null || value === undefined ? undefined : kindOf(key)?.kind
    const problem = kind === undefined ? undefined : valueProblem(kind, value)
    if (problem !== undefined)
      throw new Error(`a ${key} fact that does not decode (${problem}): ${JSON.stringify(value)}`)
    const json = value === null || value === undefined ? null : JSON.stringify(value)
    const cur = this.get(this.self, key)
    if (json === null && !cur) return undefined
    if (cur && JSON.stringify(cur.value ?? null) === (json ?? 'null')) return cur // unchanged
    let fact!: Fact
    this.db
      .transaction(() => {
        const seq = this.cursor(this.self) + 1
        if (seq > SEQ_LIMIT) throw new Error(`this host's seq ${seq} is past ${SEQ_LIMIT}`)
        const sig = signer.sign(factMessage(this.self, seq, key, json))
        this.q.del!.run(this.self, key)
        this.q.insert!.run(this.self, seq, key, json, sig, Date.now())
        this.q.setCursor!.run(this.self, seq)
        fact = { origin: this.self, seq, key, value: json === null ? null : value, sig }
      })
      .immediate()
    this.emit([fact])
    return fact
  }

  get(origin: string, key: string): Fact | undefined {
    const r = this.q.get!.get(origin, key) as RawFact | undefined
    return r && parse(r)
  }

  /** Live facts with this key, one per origin (retractions excluded). */
  byKey(key: string): Fact[] {
    return (this.q.byKey!.all(key) as RawFact[]).filter(r => r.value !== null).map(parse)
  }

  /** Live facts whose key starts with `prefix`. */
  byPrefix(prefix: string): Fact[] {
    return (this.q.byPrefix!.all(prefix, prefix) as RawFact[]).filter(r => r.value !== null).map(parse)
  }

  /** Publishes a fact of `kind` about `name` (its codec checks the value: an error if it does not decode). */
  publishAs<K extends Kind>(kind: K, name: string, value: ValueOf<K> | null): Fact | undefined {
    return this.publish(keyOf(kind, name), value)
  }

  /** The live value of origin's fact of `kind` about `name`, decoded (undefined if none, or it does not decode). */
  getAs<K extends Kind>(kind: K, origin: string, name = ''): ValueOf<K> | undefined {
    const f = this.get(origin, keyOf(kind, name))
    return f && f.value !== null ? decodeAs(kind, f.value) : undefined
  }

  /**
   * Every live fact of `kind` (about `name`, or about any name when it is undefined), decoded;
   * those that do not decode are left out.
   */
  allAs<K extends Kind>(
    kind: K,
    name?: string
  ): Array<{ origin: string; name: string; seq: number; value: ValueOf<K> }> {
    const key = keyOf(kind, name ?? '')
    const facts = name === undefined && key.endsWith('/') ? this.byPrefix(key) : this.byKey(key)
    const out: Array<{ origin: string; name: string; seq: number; value: ValueOf<K> }> = []
    const prefix = keyOf(kind).length
    for (const f of facts) {
      const value = decodeAs(kind, f.value)
      if (value !== undefined) out.push({ origin: f.origin, name: f.key.slice(prefix), seq: f.seq, value })
    }
    return out
  }

  /** The digest of an origin's rows here (rowsDigest). */
  digestOf(origin: string): string {
    return rowsDigest(this.q.rows!.all(origin) as RawFact[])
  }

  /** This host's head, signed (undefined for a store without a key). */
  ownHead(): Head | undefined {
    if (!this.signer) return undefined
    const seq = this.cursor(this.self)
    if (this.ownHeadCache?.seq !== seq) {
      const digest = this.digestOf(this.self)
      this.ownHeadCache = { seq, head: { seq, digest, sig: this.signer.sign(headMessage(this.self, seq, digest)) } }
    }
    const head = this.ownHeadCache.head
    let cert: unknown
    try {
      cert = this.opts.cert?.()
    } catch {
      cert = undefined // an unreadable certificate file: the head goes without, as with none installed
    }
    return cert === undefined || cert === null ? head : { ...head, cert: cert as HostCert }
  }

  /** The latest head this host verified for another origin, with the certificate that admitted its key. */
  head(origin: string): Head | undefined {
    if (origin === this.self) return this.ownHead()
    const h = this.q.head!.get(origin) as { seq: number; digest: string; sig: string } | undefined
    if (!h) return undefined
    const k = this.q.originKey!.get(origin) as StoredKey | undefined
    return k?.cert ? { ...h, cert: JSON.parse(k.cert) as HostCert } : { ...h }
  }

  /** Every fact past `cursors` (retractions included, so they propagate), at most `limit`, with heads. */
  since(cursors: Cursors, limit = 5000): FactPage {
    const facts: Fact[] = []
    const complete: Cursors = {}
    const heads: Record<string, Head> = {}
    // every origin with facts here has a cursor: apply() and publish() move one with every fact
    const mineAll = this.cursors()
    for (const o of Object.keys(mineAll).sort()) {
      const mine = mineAll[o]!
      const from = cursors[o] ?? 0
      if (from >= mine) continue
      const room = limit - facts.length
      if (room <= 0) break
      const head = this.head(o)
      if (!head) continue // nothing here this host could show was signed
      heads[o] = head
      const rows = this.q.since!.all(o, from, room + 1) as RawFact[]
      if (rows.length > room) {
        const page = rows.slice(0, room)
        facts.push(...page.map(parse))
        complete[o] = page[page.length - 1]!.seq
        break
      }
      facts.push(...rows.map(parse))
      complete[o] = mine
    }
    const page: FactPage = { facts, complete, heads }
    const revoked = this.revocations()
    if (revoked.length > 0) page.revoked = revoked
    return page
  }

  /** The revocations of host keys this host knows. */
  revocations(): Revocation[] {
    return (this.q.revocations!.all() as string[]).map(t => JSON.parse(t) as Revocation)
  }

  /**
   * The hosts this public key speaks for here (sorted): this host with its own key, origins whose
   * facts are verified with it, hosts trust.hosts lists with it; none for a revoked key.
   */
  hostsOfKey(key: string, cert?: unknown): string[] {
    if (this.isRevoked(key)) return []
    const ids = new Set(this.q.originsWithKey!.all(key) as string[])
    if (this.signer?.publicKey === key) ids.add(this.self)
    for (const [id, k] of Object.entries(this.trust.hosts)) if (k === key) ids.add(id)
    if (ids.size === 0 && cert !== undefined) {
      // a host this one has no facts of yet, shown by the certificate that came with its signature
      const c = checkCert(cert, this.trust.admins)
      if ('cert' in c && c.cert.key === key && this.trust.hosts[c.cert.host] === undefined) ids.add(c.cert.host)
    }
    return [...ids].sort()
  }

  /** The certificate that admits this public key here (this host's own, or one kept with an origin's key). */
  certOfKey(key: string): HostCert | undefined {
    if (this.signer?.publicKey === key) {
      const own = this.opts.cert?.()
      return own === undefined ? undefined : (own as HostCert)
    }
    const row = this.q.certOfKey!.get(key) as string | undefined
    return row === undefined ? undefined : (JSON.parse(row) as HostCert)
  }

  /** Whether a fleet admin revoked this public key. */
  isRevoked(key: string): boolean {
    return this.q.isRevoked!.get(key) !== undefined
  }

  /**
   * Records a fleet admin's revocation (one of trust.admins must have signed it: CERT_INVALID
   * otherwise) and drops what the key signed here; returns the origins dropped.
   */
  revoke(v: unknown): string[] {
    const c = checkRevocation(v, this.trust.admins)
    if ('problem' in c) {
      const why =
        c.problem === 'unknown admin' ? "signed by a key that is not among this host's trust.admins" : c.problem
      throw new VmifsError('CERT_INVALID', `not a revocation this host believes: ${why}`)
    }
    const gone: Fact[] = []
    const origins = this.db.transaction(() => this.recordRevocation(c.revocation, gone)).immediate()
    if (gone.length > 0) this.emit(gone)
    return origins
  }

  /**
   * Stores a checked revocation and drops the origins whose facts here the key signed (their live
   * facts go to `gone`, as retractions); returns those origins (none for a revocation known here).
   */
  private recordRevocation(r: Revocation, gone: Fact[]): string[] {
    if (this.q.addRevocation!.run(r.key, JSON.stringify(r)).changes === 0) return []
    const origins = this.q.originsWithKey!.all(r.key) as string[]
    for (const o of origins) gone.push(...this.dropOrigin(o, true))
    return origins
  }

  /** Applies a page from a peer: only what its origins signed (see the contract above). */
  apply(page: FactPage): Applied {
    const out: Applied = { changed: [], refused: {}, blame: false, resets: [] }
    const refuse = (why: Refusal, n = 1): void => {
      out.refused[why] = (out.refused[why] ?? 0) + Math.max(1, n)
      if (BLAMED.has(why)) out.blame = true
    }
    const facts: unknown = page?.facts
    const heads = (typeof page?.heads === 'object' && page.heads !== null ? page.heads : {}) as Record<string, unknown>
    const complete = (typeof page?.complete === 'object' && page.complete !== null ? page.complete : {}) as Record<
      string,
      unknown
    >
    if (!Array.isArray(facts)) {
      refuse('malformed')
      return out
    }
    // each fact with its value's text, made once: checked, signed over and stored as it is
    const byOrigin = new Map<string, Received[]>()
    for (const f of facts as Fact[]) {
      if (typeof f !== 'object' || f === null || !validOrigin(f.origin)) {
        refuse('malformed')
        continue
      }
      let l = byOrigin.get(f.origin)
      if (!l) byOrigin.set(f.origin, (l = []))
      l.push({ f, json: jsonOf(f.value) })
    }
    for (const o of Object.keys(heads)) if (validOrigin(o) && !byOrigin.has(o)) byOrigin.set(o, [])
    const now = Date.now()
    const revoked: unknown = page?.revoked
    this.db
      .transaction(() => {
        for (const v of Array.isArray(revoked) ? (revoked as unknown[]) : []) {
          const key = typeof v === 'object' && v !== null ? (v as { key?: unknown }).key : undefined
          if (typeof key === 'string' && this.isRevoked(key)) continue // known here already
          const c = checkRevocation(v, this.trust.admins)
          if ('problem' in c) {
            if (c.problem !== 'unknown admin') refuse('badCert') // one of ours, forged or broken
            continue
          }
          this.recordRevocation(c.revocation, out.changed)
        }
        for (const [o, fs] of byOrigin) {
          if (o === this.self) {
            this.applyOwn(fs, heads[o], refuse)
            continue
          }
          const h = heads[o]
          if (h === undefined) {
            if (fs.length > 0) refuse(fs.every(x => x.f.sig === undefined) ? 'unsigned' : 'badHead', fs.length)
            continue
          }
          const r = this.keyFor(o, h, out.changed)
          if ('reset' in r) {
            out.resets.push(o)
            continue
          }
          if ('refuse' in r) {
            refuse(r.refuse, fs.length)
            continue
          }
          const k = r.key
          if (!validHead(h) || !verifySignature(k, headMessage(o, h.seq, h.digest), h.sig)) {
            refuse('badHead', fs.length)
            continue
          }
          const c = this.cursor(o)
          const claimed = complete[o] ?? c
          if (!Number.isSafeInteger(claimed) || (claimed as number) < 0) {
            refuse('malformed', fs.length)
            continue
          }
          const upto = claimed as number
          const bad = fs.map(x => problemOf(x, upto, h.seq)).find(p => p !== undefined)
          if (bad !== undefined || upto > h.seq) {
            refuse(bad ?? 'beyondHead', fs.length)
            continue
          }
          this.q.setHead!.run(o, h.seq, h.digest, h.sig)
          const fresh = fs.filter(x => x.f.seq > c)
          if (upto <= c) continue // the peer is not ahead of this host for o
          if (upto === h.seq && this.isFirstCopy(o, fresh)) {
            // all of an origin this host holds nothing of: the page's rows are the ones to hash
            const digest = rowsDigest(
              fresh.map(({ f, json }) => ({ seq: f.seq, key: f.key, value: json, sig: f.sig ?? null }))
            )
            if (digest !== h.digest) {
              refuse('digestMismatch')
              out.changed.push(...this.dropOrigin(o, false))
              out.resets.push(o)
              continue
            }
            for (const { f, json } of fresh) {
              this.q.insertNew!.run(o, f.seq, f.key, json, f.sig ?? null, now)
              out.changed.push({ origin: o, seq: f.seq, key: f.key, value: json === null ? null : f.value, sig: f.sig })
            }
            this.q.setCursor!.run(o, upto)
          } else if (upto === h.seq) {
            // complete up to the head: the origin's rows must then be the ones it signed
            const changed: Fact[] = []
            try {
              this.db.transaction(() => {
                for (const x of fresh) this.put(x, now, changed)
                if (this.digestOf(o) !== h.digest) throw new DigestMismatch(o)
                this.q.setCursor!.run(o, upto)
              })()
              out.changed.push(...changed)
            } catch (err) {
              if (!(err instanceof DigestMismatch)) throw err
              refuse('digestMismatch')
              out.changed.push(...this.dropOrigin(o, false))
              out.resets.push(o)
            }
          } else {
            // short of the head: every fact is checked on its own
            if (!fresh.every(({ f, json }) => verifySignature(k, factMessage(o, f.seq, f.key, json), f.sig))) {
              refuse('badSignature', fresh.length)
              continue
            }
            for (const x of fresh) this.put(x, now, out.changed)
            this.q.setCursor!.run(o, upto)
          }
        }
      })
      .immediate()
    if (out.changed.length > 0) this.emit(out.changed)
    return out
  }

  /**
   * Applies facts their origin signed one by one, as a shared engine holds them (src/metadata/):
   * there is no head, since this host keeps only some of an origin's keys. The origin's key is the
   * config's (trust.hosts) or the one `cert`, a fleet admin's certificate, names; each fact's
   * signature is checked, and a fact older than the one kept for its key changes nothing. Facts
   * of this host's own origin only raise its seq (a restored data dir). Cursors do not move: they
   * say how far an origin is complete here, and this copy of it is not.
   */
  applySigned(origin: string, facts: Fact[], cert?: unknown): Applied {
    const out: Applied = { changed: [], refused: {}, blame: false, resets: [] }
    const refuse = (why: Refusal, n = 1): void => {
      out.refused[why] = (out.refused[why] ?? 0) + Math.max(1, n)
      if (BLAMED.has(why)) out.blame = true
    }
    if (!validOrigin(origin) || !Array.isArray(facts)) {
      refuse('malformed')
      return out
    }
    const received: Received[] = []
    for (const f of facts) {
      if (typeof f !== 'object' || f === null || f.origin !== origin) refuse('malformed')
      else received.push({ f, json: jsonOf(f.value) })
    }
    if (received.length === 0) return out
    const now = Date.now()
    this.db
      .transaction(() => {
        if (origin === this.self) {
          this.applyOwn(received, undefined, refuse)
          return
        }
        const head = cert === undefined ? {} : { cert }
        let r = this.keyFor(origin, head, out.changed)
        if ('reset' in r) {
          // a newer certificate for another key: what the old key signed is gone, the new one speaks
          out.resets.push(origin)
          r = this.keyFor(origin, head, out.changed)
        }
        if (!('key' in r)) {
          refuse('refuse' in r ? r.refuse : 'badCert', received.length)
          return
        }
        const k = r.key
        for (const x of received) {
          const p = problemOf(x, SEQ_LIMIT, SEQ_LIMIT)
          if (p !== undefined) refuse(p)
          else if (!verifySignature(k, factMessage(origin, x.f.seq, x.f.key, x.json), x.f.sig)) refuse('badSignature')
          else this.put(x, now, out.changed)
        }
      })
      .immediate()
    if (out.changed.length > 0) this.emit(out.changed)
    return out
  }

  /**
   * Forgets other origins' facts here without a retraction from them (this host stopped following
   * them: an image no longer used, a host that expired); the listeners get them as retractions.
   */
  forget(which: ReadonlyArray<{ origin: string; key: string }>): void {
    const gone: Fact[] = []
    this.db
      .transaction(() => {
        for (const { origin, key } of which) {
          if (origin === this.self) continue
          const r = this.q.get!.get(origin, key) as RawFact | undefined
          if (!r) continue
          this.q.del!.run(origin, key)
          if (r.value !== null) gone.push({ origin, seq: r.seq, key, value: null })
        }
      })
      .immediate()
    if (gone.length > 0) this.emit(gone)
  }

  /** Every origin other than this host with facts here. */
  otherOrigins(): string[] {
    return (this.q.origins!.all() as Array<{ origin: string }>).map(r => r.origin).filter(o => o !== this.self)
  }

  /** This host's own live facts and retractions, in seq order (what a shared engine must hold of it). */
  ownRows(): Fact[] {
    return (this.q.rows!.all(this.self) as RawFact[]).map(parse)
  }

  /** Echoes of this host's own facts and head: only this host's own signature moves its cursor. */
  private applyOwn(fs: Received[], h: unknown, refuse: (why: Refusal, n?: number) => void): void {
    const signer = this.signer
    if (!signer) return
    // the own head is made again for the new seq (ownHead() keys it by the cursor)
    const raise = (seq: number): void => void this.q.setCursor!.run(this.self, seq)
    for (const x of fs) {
      const p = problemOf(x, SEQ_LIMIT, SEQ_LIMIT)
      if (p !== undefined) refuse(p)
      else if (!verifySignature(signer.publicKey, factMessage(this.self, x.f.seq, x.f.key, x.json), x.f.sig))
        refuse('badSignature')
      else raise(x.f.seq)
    }
    if (h !== undefined) {
      if (!validHead(h) || !verifySignature(signer.publicKey, headMessage(this.self, h.seq, h.digest), h.sig))
        refuse('badHead')
      else raise(h.seq)
    }
  }

  /**
   * The key that speaks for origin o: the config's (trust.hosts), or the one a fleet admin's
   * certificate names (the head's, or the one kept from before). A newer certificate for another
   * key is a rotation: the origin is dropped here and pulled again under the new key.
   */
  private keyFor(o: string, h: unknown, gone: Fact[]): { key: string } | { reset: true } | { refuse: Refusal } {
    const r = this.admittedKey(o, h, gone)
    return 'key' in r && this.isRevoked(r.key) ? { refuse: 'revoked' } : r
  }

  private admittedKey(o: string, h: unknown, gone: Fact[]): { key: string } | { reset: true } | { refuse: Refusal } {
    const stored = this.q.originKey!.get(o) as StoredKey | undefined
    const listed = this.trust.hosts[o]
    if (listed !== undefined) {
      this.keep(o, listed, null, stored)
      return { key: listed }
    }
    const offered = typeof h === 'object' && h !== null ? (h as { cert?: unknown }).cert : undefined
    // the certificate this host checked when it kept it (and checks again on open, against the config)
    if (stored?.cert != null && offered !== undefined && JSON.stringify(offered) === stored.cert)
      return { key: stored.key }
    const storedCert = stored?.cert ? (JSON.parse(stored.cert) as HostCert) : undefined
    const admin = typeof offered === 'object' && offered !== null ? (offered as { admin?: unknown }).admin : undefined
    if (offered === undefined || (typeof admin === 'string' && !this.trust.admins.includes(admin)))
      // no certificate, or one of an admin this host does not know (a peer with another config)
      return storedCert ? { key: storedCert.key } : { refuse: 'unknownOrigin' }
    const r = checkCert(offered, this.trust.admins)
    if ('problem' in r || r.cert.host !== o) return { refuse: 'badCert' }
    if (!storedCert) {
      this.keep(o, r.cert.key, r.cert, stored)
      return { key: r.cert.key }
    }
    if (storedCert.key === r.cert.key) {
      if (r.cert.issuedAt > storedCert.issuedAt) this.keep(o, r.cert.key, r.cert, stored)
      return { key: r.cert.key }
    }
    if (r.cert.issuedAt <= storedCert.issuedAt) return { refuse: 'oldCert' }
    if (this.isRevoked(r.cert.key)) return { refuse: 'revoked' }
    gone.push(...this.dropOrigin(o, true))
    this.keep(o, r.cert.key, r.cert, undefined)
    return { reset: true }
  }

  /** Keeps the key (and certificate) an origin is verified with, where it is not what is kept already. */
  private keep(o: string, key: string, cert: HostCert | null, stored: StoredKey | undefined): void {
    const text = cert === null ? null : JSON.stringify(cert)
    if (stored?.key !== key || stored.cert !== text) this.q.setOriginKey!.run(o, key, text)
  }

  /**
   * Forgets an origin's facts, cursor and head here (and its key, when `key`); returns its live
   * facts as retractions, for the listeners.
   */
  private dropOrigin(o: string, key: boolean): Fact[] {
    const gone = (this.q.rows!.all(o) as RawFact[]).filter(r => r.value !== null)
    this.q.dropFacts!.run(o)
    this.q.dropCursor!.run(o)
    this.q.dropHead!.run(o)
    if (key) this.q.dropKey!.run(o)
    return gone.map(r => ({ origin: o, seq: r.seq, key: r.key, value: null }))
  }

  /**
   * Whether `fresh` is an origin's first copy here: nothing of it is stored, and the page has each
   * key once in the order of its seqs (as an origin's since() gives it), so the rows stored from it
   * will be exactly its facts.
   */
  private isFirstCopy(o: string, fresh: Received[]): boolean {
    if (this.q.hasRows!.get(o) !== undefined) return false
    const keys = new Set<string>()
    let seq = 0
    for (const { f } of fresh) {
      if (f.seq <= seq || keys.has(f.key)) return false
      seq = f.seq
      keys.add(f.key)
    }
    return true
  }

  private put({ f, json }: Received, now: number, changed: Fact[]): void {
    // an older fact of the key goes; a newer one stays, and the insert is then ignored
    this.q.delOlder!.run(f.origin, f.key, f.seq)
    if (this.q.insertNew!.run(f.origin, f.seq, f.key, json, f.sig ?? null, now).changes === 0) return
    changed.push({ origin: f.origin, seq: f.seq, key: f.key, value: json === null ? null : f.value, sig: f.sig })
  }

  /**
   * On open: own facts whose seqs a forged echo pushed past SEQ_LIMIT are numbered again after the
   * last good one and signed again, the cursor with them; own facts of before signing get signed.
   */
  private repairOwn(): number {
    const signer = this.signer!
    const rows = this.q.rows!.all(this.self) as RawFact[]
    const good = rows.filter(r => r.seq <= SEQ_LIMIT)
    let seq = good.length > 0 ? good[good.length - 1]!.seq : 0
    let renumbered = 0
    for (const r of rows) {
      const stuck = r.seq > SEQ_LIMIT
      if (!stuck && r.sig !== null) continue
      const n = stuck ? ++seq : r.seq
      this.q.del!.run(this.self, r.key)
      this.q.insert!.run(
        this.self,
        n,
        r.key,
        r.value,
        signer.sign(factMessage(this.self, n, r.key, r.value)),
        Date.now()
      )
      if (stuck) renumbered++
    }
    if (this.cursor(this.self) > SEQ_LIMIT) this.q.forceCursor!.run(this.self, seq)
    return renumbered
  }

  /**
   * On open: origins are kept only under a key the config still admits (trust.hosts, or a
   * certificate of a trust.admins key); facts of an origin without a kept key (those of before
   * signing) are dropped, to be pulled again signed.
   */
  private checkKeys(): string[] {
    const dropped: string[] = []
    for (const r of this.q.originKeys!.all() as Array<{ origin: string; key: string; cert: string | null }>) {
      const listed = this.trust.hosts[r.origin]
      let ok: boolean
      if (this.isRevoked(r.key)) ok = false
      else if (listed !== undefined) ok = listed === r.key
      else if (r.cert === null) ok = false
      else {
        const c = checkCert(JSON.parse(r.cert), this.trust.admins)
        ok = 'cert' in c && c.cert.host === r.origin && c.cert.key === r.key
      }
      if (!ok) {
        this.dropOrigin(r.origin, true)
        dropped.push(r.origin)
      }
    }
    const kept = new Set((this.q.originKeys!.all() as Array<{ origin: string }>).map(r => r.origin))
    const origins = new Set([
      ...Object.keys(this.cursors()),
      ...(this.q.origins!.all() as Array<{ origin: string }>).map(r => r.origin)
    ])
    for (const o of origins) {
      if (o === this.self || kept.has(o)) continue
      this.dropOrigin(o, false)
      dropped.push(o)
    }
    return dropped
  }

  private emit(changed: Fact[]): void {
    for (const l of this.listeners) l(changed)
  }
}

function jsonOf(value: unknown): string | null {
  return value === null || value === undefined ? null : JSON.stringify(value)
}

function validHead(h: unknown): h is Head {
  if (typeof h !== 'object' || h === null) return false
  const x = h as Record<string, unknown>
  return (
    Number.isSafeInteger(x.seq) &&
    (x.seq as number) >= 0 &&
    (x.seq as number) <= SEQ_LIMIT &&
    isHashHex(x.digest) &&
    isSignatureText(x.sig)
  )
}

/** What is wrong with a fact from a peer, if anything, for a page complete up to `upto` under a head at `head`. */
function problemOf({ f, json }: Received, upto: number, head: number): Refusal | undefined {
  if (!Number.isSafeInteger(f.seq) || f.seq <= 0 || typeof f.key !== 'string' || !KEY_RE.test(f.key)) return 'malformed'
  if (f.seq > upto || f.seq > head || f.seq > SEQ_LIMIT) return 'beyondHead'
  if (f.sig === undefined) return 'unsigned'
  if (!isSignatureText(f.sig)) return 'malformed'
  if (json !== null && json.length > VALUE_MAX) return 'malformed'
  if (!validValue(f.key, f.value)) return 'badValue'
  return undefined
}

function parse(r: RawFact): Fact {
  const f: Fact = { origin: r.origin, seq: r.seq, key: r.key, value: r.value === null ? null : JSON.parse(r.value) }
  if (r.sig !== null) f.sig = r.sig
  return f
}
