import type { Database } from 'better-sqlite3'

export const version = 7

// Signed facts (src/index/facts.ts). Every fact keeps its origin's signature; heads holds each
// origin's latest signed head; origin_keys the key each origin's facts here were verified with,
// and the host certificate that admitted it (NULL where the config lists the host by key);
// revocations the fleet admin's revocations of host keys. The
// facts of before have no signature: the store signs its own host's on open and drops the others
// (and their cursors), which are pulled again, signed.
export function up(db: Database): void {
  db.exec(`
    ALTER TABLE facts ADD COLUMN sig TEXT;
    CREATE TABLE heads (
      origin TEXT PRIMARY KEY,
      seq    INTEGER NOT NULL,
      digest TEXT NOT NULL,
      sig    TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE origin_keys (
      origin TEXT PRIMARY KEY,
      key    TEXT NOT NULL,
      cert   TEXT
    ) WITHOUT ROWID;
    -- host keys a fleet admin revoked (the revocation as JSON): never believed again
    CREATE TABLE revocations (
      key        TEXT PRIMARY KEY,
      revocation TEXT NOT NULL
    ) WITHOUT ROWID;
  `)
}
