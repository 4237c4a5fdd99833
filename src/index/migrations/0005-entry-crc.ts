import type { Database } from 'better-sqlite3'

export const version = 5

// An entry keeps the CRC32C of its chunk's bytes, which every read checks (the FUSE session's
// threads and the store alike): the reads no longer need a header in front of the bytes. Entries
// made before have none (NULL); the store fills them in from their records' headers when it
// opens (src/cache/chunk-store.ts, fillCrcs), and find them by a partial index that holds only
// those: every open looks, and finds the index empty once they are done.
export function up(db: Database): void {
  db.exec(`
    ALTER TABLE cache_entries ADD COLUMN crc INTEGER;
    CREATE INDEX cache_crc_missing ON cache_entries(hash) WHERE crc IS NULL;
  `)
}
