import type { Database } from 'better-sqlite3'

export const version = 3

// The chunk store keeps chunks in append-only pack files (src/cache/chunk-store.ts) instead of a
// file per chunk. An entry's pack and off say where its bytes are; NULL: a chunk file of the old
// layout under chunks/, which `vmifs fsck` converts (the store refuses to open until then).
// packs.size is the end of the last recorded chunk (what a crashed writer's pack is cut back
// to), live the number of entries in it; writer names the live process appending to it
// ("pid:starttime"), NULL once sealed.
export function up(db: Database): void {
  db.exec(`
    ALTER TABLE cache_entries ADD COLUMN pack INTEGER;
    ALTER TABLE cache_entries ADD COLUMN off INTEGER;
    CREATE TABLE packs (
      id     INTEGER PRIMARY KEY AUTOINCREMENT,
      writer TEXT,
      size   INTEGER NOT NULL DEFAULT 0,
      live   INTEGER NOT NULL DEFAULT 0
    );
  `)
}
