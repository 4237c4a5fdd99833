// The global metadata table, this host's copy. Contract:
// - this host writes facts only under its own origin (publish); facts of other origins arrive
//   through apply(), from any peer, in any order between origins but in seq order within one;
// - only the latest fact per (origin, key) is kept; a NULL value retracts the key;
// - since() answers a peer's cursors with every live fact past them (seq order per origin) and,
//   per origin, how far the answer is complete; apply() takes such an answer and moves the cursors.
// Convergence: each host holds, per origin, every live fact up to its cursor. A pull from any peer
// moves a cursor up to the peer's, so in a connected fleet that keeps pulling every cursor reaches
// every origin's last seq, and with one writer per origin there is nothing to merge.
import type { Statement } from 'better-sqlite3'
import type { Db } from './db.js'

export interface Fact {
  origin: string
  seq: number
  key: string
  value: unknown
}
export type Cursors = Record<string, number>
export interface FactPage {
  facts: Fact[]
  complete: Cursors
}

const ORIGIN_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/
const KEY_MAX = 256
const VALUE_MAX = 1024 * 1024

export function validOrigin(s: unknown): s is string {
  return typeof s === 'string' && ORIGIN_RE.test(s)
}

export class FactStore {
  private readonly q: Record<string, Statement>
  private readonly listeners = new Set<(changed: Fact[]) => void>()

  constructor(
    private readonly db: Db,
    readonly self: string
  ) {
    this.q = {
      cursor: db.prepare('SELECT seq FROM cursors WHERE origin = ?').pluck(),
      setCursor: db.prepare(
        'INSERT INTO cursors (origin, seq) VALUES (?, ?) ON CONFLICT(origin) DO UPDATE SET seq = max(seq, excluded.seq)'
      ),
      cursors: db.prepare('SELECT origin, seq FROM cursors'),
      existing: db.prepare('SELECT seq FROM facts WHERE origin = ? AND key = ?').pluck(),
      del: db.prepare('DELETE FROM facts WHERE origin = ? AND key = ?'),
      insert: db.prepare('INSERT INTO facts (origin, seq, key, value, received_at) VALUES (?, ?, ?, ?, ?)'),
      get: db.prepare('SELECT origin, seq, key, value FROM facts WHERE origin = ? AND key = ?'),
      byKey: db.prepare('SELECT origin, seq, key, value FROM facts WHERE key = ?'),
      byPrefix: db.prepare("SELECT origin, seq, key, value FROM facts WHERE key >= ? AND key < ? || '\uffff'"),
      since: db.prepare('SELECT origin, seq, key, value FROM facts WHERE origin = ? AND seq > ? ORDER BY seq LIMIT ?'),
      origins: db.prepare('SELECT DISTINCT origin FROM facts')
    }
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

  /** Writes a fact about this host (null retracts the key). Returns it. */
  publish(key: string, value: unknown): Fact {
    const json = value === null || value === undefined ? null : JSON.stringify(value)
    const cur = this.get(this.self, key)
    if (cur && JSON.stringify(cur.value ?? null) === (json ?? 'null')) return cur // unchanged
    let fact!: Fact
    this.db
      .transaction(() => {
        const seq = this.cursor(this.self) + 1
        this.q.del!.run(this.self, key)
        this.q.insert!.run(this.self, seq, key, json, Date.now())
        this.q.setCursor!.run(this.self, seq)
        fact = { origin: this.self, seq, key, value: json === null ? null : value }
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

  /** Every live fact past `cursors` (retractions included, so they propagate), at most `limit`. */
  since(cursors: Cursors, limit = 5000): FactPage {
    const facts: Fact[] = []
    const complete: Cursors = {}
    const origins = new Set([
      ...Object.keys(this.cursors()),
      ...(this.q.origins!.all() as Array<{ origin: string }>).map(r => r.origin)
    ])
    for (const o of [...origins].sort()) {
      const mine = this.cursor(o)
      const from = cursors[o] ?? 0
      if (from >= mine) continue
      const room = limit - facts.length
      if (room <= 0) break
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
    return { facts, complete }
  }

  /** Applies a page from a peer; returns the facts that changed this host's table. */
  apply(page: FactPage): Fact[] {
    const changed: Fact[] = []
    const now = Date.now()
    this.db
      .transaction(() => {
        for (const f of page.facts) {
          if (
            !validOrigin(f.origin) ||
            !Number.isSafeInteger(f.seq) ||
            f.seq <= 0 ||
            typeof f.key !== 'string' ||
            f.key.length > KEY_MAX
          )
            continue
          if (f.origin === this.self) {
            // our own facts echoed back (e.g. after this data dir was restored): never reuse a seq
            this.q.setCursor!.run(this.self, f.seq)
            continue
          }
          const json = f.value === null || f.value === undefined ? null : JSON.stringify(f.value)
          if (json !== null && json.length > VALUE_MAX) continue
          const have = this.q.existing!.get(f.origin, f.key) as number | undefined
          if (have !== undefined && have >= f.seq) continue
          this.q.del!.run(f.origin, f.key)
          this.q.insert!.run(f.origin, f.seq, f.key, json, now)
          changed.push({ ...f, value: json === null ? null : f.value })
        }
        for (const [o, seq] of Object.entries(page.complete)) {
          if (o !== this.self && validOrigin(o) && Number.isSafeInteger(seq)) this.q.setCursor!.run(o, seq)
        }
      })
      .immediate()
    if (changed.length > 0) this.emit(changed)
    return changed
  }

  private emit(changed: Fact[]): void {
    for (const l of this.listeners) l(changed)
  }
}

interface RawFact {
  origin: string
  seq: number
  key: string
  value: string | null
}
function parse(r: RawFact): Fact {
  return { origin: r.origin, seq: r.seq, key: r.key, value: r.value === null ? null : JSON.parse(r.value) }
}
