import type { Database } from 'better-sqlite3'

export const version = 1

export function up(db: Database): void {
  db.exec(`
    CREATE TABLE manifests (
      digest      TEXT PRIMARY KEY,
      size        INTEGER NOT NULL,
      chunk_count INTEGER NOT NULL,
      data_bytes  INTEGER NOT NULL,
      chunking    TEXT NOT NULL,
      body        BLOB NOT NULL,
      created_at  INTEGER NOT NULL
    );
    CREATE TABLE images (
      name       TEXT PRIMARY KEY,
      digest     TEXT NOT NULL REFERENCES manifests(digest),
      pinned     INTEGER NOT NULL DEFAULT 0,
      source     TEXT,
      created_at INTEGER NOT NULL
    );
    CREATE INDEX images_digest ON images(digest);
    -- every data chunk some local image refers to; refs/pins count images
    CREATE TABLE chunks (
      hash BLOB PRIMARY KEY,
      size INTEGER NOT NULL,
      refs INTEGER NOT NULL DEFAULT 0,
      pins INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    -- what this host's cache holds; pinned mirrors chunks.pins > 0 so eviction scans one index
    CREATE TABLE cache_entries (
      hash   BLOB PRIMARY KEY,
      size   INTEGER NOT NULL,
      atime  INTEGER NOT NULL,
      pinned INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    CREATE INDEX cache_lru ON cache_entries(pinned, atime);
    CREATE TABLE counters (
      key   TEXT PRIMARY KEY,
      value INTEGER NOT NULL
    );
  `)
}
