// Statements over many rows at once: a multi-row VALUES list, or an IN list. One statement runs
// a call's rows up to BULK_ROWS at a time, so that a row costs its B-tree work and not a call of
// its own into SQLite (about 2 µs each here: most of what recording an import's chunk cost).
import type { Statement } from 'better-sqlite3'
import type { Db } from './db.js'

export const BULK_ROWS = 64

/** "(?, ?), (?, ?)": `rows` copies of one row's text. */
export const valuesList = (row: string, rows: number): string => Array.from({ length: rows }, () => row).join(', ')

/** "(?, ?, ?)": an IN list of `n` parameters. */
export const inList = (n: number): string => `(${Array.from({ length: n }, () => '?').join(', ')})`

export class Bulk {
  private readonly stmts = new Map<number, Statement>()

  /** `sql(n)`: the statement's text for n rows; `width`: parameters a row. */
  constructor(
    private readonly db: Db,
    private readonly sql: (rows: number) => string,
    private readonly width: number,
    private readonly pluck = false
  ) {}

  private stmt(rows: number): Statement {
    let s = this.stmts.get(rows)
    if (!s) {
      s = this.db.prepare(this.sql(rows))
      if (this.pluck) s.pluck()
      this.stmts.set(rows, s)
    }
    return s
  }

  /** Runs over rows [0, count): `fill(i, args, at)` writes row i's parameters at args[at..]. Returns the changes. */
  run(count: number, fill: (i: number, args: unknown[], at: number) => void): number {
    let changes = 0
    this.each(count, fill, (s, args) => {
      changes += s.run(args).changes
    })
    return changes
  }

  /** all() over rows [0, count), the results of every statement in one list. */
  all(count: number, fill: (i: number, args: unknown[], at: number) => void): unknown[] {
    const out: unknown[] = []
    this.each(count, fill, (s, args) => {
      for (const r of s.all(args)) out.push(r)
    })
    return out
  }

  private each(
    count: number,
    fill: (i: number, args: unknown[], at: number) => void,
    exec: (s: Statement, args: unknown[]) => void
  ): void {
    for (let from = 0; from < count; from += BULK_ROWS) {
      const rows = Math.min(BULK_ROWS, count - from)
      const args = new Array<unknown>(rows * this.width)
      for (let k = 0; k < rows; k++) fill(from + k, args, k * this.width)
      exec(this.stmt(rows), args)
    }
  }
}
