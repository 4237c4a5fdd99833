// Monotonic counters, kept in memory and persisted to the counters table in batches, so that
// totals survive agent restarts. Several processes may add to one data dir: flush() adds deltas.
import type { Db } from '../index/db.js'

export class Counters {
  private readonly base = new Map<string, number>()
  private readonly delta = new Map<string, number>()

  constructor(private readonly db: Db) {
    for (const r of db.prepare('SELECT key, value FROM counters').all() as Array<{ key: string; value: number }>)
      this.base.set(r.key, r.value)
  }

  add(key: string, n = 1): void {
    this.delta.set(key, (this.delta.get(key) ?? 0) + n)
  }

  get(key: string): number {
    return (this.base.get(key) ?? 0) + (this.delta.get(key) ?? 0)
  }

  flush(): void {
    if (this.delta.size === 0) return
    const batch = [...this.delta]
    this.delta.clear()
    const up = this.db.prepare(
      'INSERT INTO counters (key, value) VALUES (?, ?) ' +
        'ON CONFLICT(key) DO UPDATE SET value = value + excluded.value RETURNING value'
    )
    this.db.transaction(() => {
      for (const [k, v] of batch) this.base.set(k, (up.get(k, v) as { value: number }).value)
    })()
  }
}
