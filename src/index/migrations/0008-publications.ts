import type { Database } from 'better-sqlite3'

export const version = 8

// Signed publications (src/trust/publications.ts). images.publication keeps an image's
// publication as JSON ({publishedAt, publisher, sig, byHost?}): for an image imported here, this
// host's (or an offline publisher's) signature, which its image/<name> fact and the origin store
// carry; for an adopted one, the publisher's, which `vmifs publish-store` passes on. Images of
// before have none: the agent signs those imported here with its host key at its first start.
// name_owners pins the publisher that owns an image name here where the config names none (the
// first seen): "host:<id>" for a host key, or the key itself.
export function up(db: Database): void {
  db.exec(`
    ALTER TABLE images ADD COLUMN publication TEXT;
    CREATE TABLE name_owners (
      name      TEXT PRIMARY KEY,
      owner     TEXT NOT NULL,
      pinned_at INTEGER NOT NULL
    ) WITHOUT ROWID;
  `)
}
