import type { Database } from 'better-sqlite3'

export const version = 4

// Eviction only ever looks at unpinned entries, least recently used first: the LRU index keeps
// just those. A pinned entry (an import's chunks, a replica's) then costs no index entry, which
// was the costliest part of recording one: all of an import's rows share (pinned, atime), so
// each landed at a random place of the old index, by hash.
export function up(db: Database): void {
  db.exec(`
    DROP INDEX cache_lru;
    CREATE INDEX cache_lru ON cache_entries(atime) WHERE pinned = 0;
  `)
}
