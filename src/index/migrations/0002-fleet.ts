import type { Database } from 'better-sqlite3'

export const version = 2

// The global metadata table. A fact is (origin, seq, key, value): the origin host is its only
// writer, seq numbers its facts 1, 2, 3…, and a newer fact of an origin replaces the older one
// with the same key, so only the latest per (origin, key) is kept. cursors[o] = every live fact of
// origin o with seq <= cursors[o] is here (for this host's own origin: the last seq it issued).
export function up(db: Database): void {
  db.exec(`
    CREATE TABLE facts (
      origin      TEXT NOT NULL,
      seq         INTEGER NOT NULL,
      key         TEXT NOT NULL,
      value       TEXT,              -- JSON; NULL retracts the key
      received_at INTEGER NOT NULL,
      PRIMARY KEY (origin, seq)
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX facts_origin_key ON facts(origin, key);
    CREATE INDEX facts_key ON facts(key);
    CREATE TABLE cursors (
      origin TEXT PRIMARY KEY,
      seq    INTEGER NOT NULL
    ) WITHOUT ROWID;
    -- which host published an image (NULL: imported here)
    ALTER TABLE images ADD COLUMN origin TEXT;
  `)
}
