import type { Database } from 'better-sqlite3'

export const version = 6

// The chunk store's index leaves SQLite for store.mdb (LMDB: native/chunk_index.c), where an
// import records its chunks for a fraction of the CPU. Nothing changes here: the store moves the
// tables cache_entries, packs and chunks (the catalog's counts, which the store keeps now) when
// it opens the data dir, with the packs at hand (it reads their old records' headers first), and
// drops them (src/cache/chunk-store.ts, moveSqliteIndex). The version says that a vmifs of
// before must not open this data dir.
export function up(_db: Database): void {}
