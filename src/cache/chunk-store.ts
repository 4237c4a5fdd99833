// Content-addressed chunk cache.
// Contract: a chunk file exists under chunks/ only after its bytes hashed to its name (written to
// tmp/, verified, renamed), and every read re-verifies: wrong bytes are never returned — a corrupt
// or vanished chunk is dropped and the read fails with CHUNK_HASH_MISMATCH / CHUNK_MISSING.
// Capacity is enforced by evicting unpinned entries, least recently used first; access times are
// kept in memory and persisted in batches. Pinned chunks (of images imported on this host) are
// never evicted. Several processes (the agent, CLI commands) may share one data dir: files are
// renamed atomically and the index is SQLite in WAL mode.
import fs from 'node:fs'
import fsp from 'node:fs/promises'
import path from 'node:path'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import type { Statement } from 'better-sqlite3'
import type { Db } from '../index/db.js'
import { VmifsError } from '../errors.js'
import { blake3 } from '../util/hash.js'
import { readWholeSync } from '../util/files.js'

const execFileP = promisify(execFile)

export interface ChunkStoreOptions {
  capacityBytes: number
  /** called with the number of chunks and bytes evicted */
  onEvict?: (chunks: number, bytes: number) => void
}

/**
 * What the store tells its subscribers, synchronously and after the fact: chunks it holds whose
 * bytes it has just verified (written after a check, or read and hashed), and chunks it no longer
 * holds (evicted, dropped as corrupt, found missing). Hashes in hex.
 */
export interface ChunkEvents {
  verified?(hashes: string[]): void
  gone?(hashes: string[]): void
}

export class ChunkStore {
  readonly chunkDir: string
  private readonly listeners = new Set<ChunkEvents>()
  readonly tmpDir: string
  private readonly atimes = new Map<string, number>()
  private readonly dirsMade = new Set<string>()
  private size = 0
  private readonly q: {
    has: Statement
    get: Statement
    insert: Statement
    del: Statement
    touch: Statement
    lru: Statement
    lruUnref: Statement
    lruAt: Statement
    lruUnrefAt: Statement
    sum: Statement
    all: Statement
    pin: Statement
  }

  private evicting = false
  private toRecord: Array<{
    hash: Buffer
    size: number
    pin: boolean
    resolve: (fresh: boolean) => void
    reject: (err: unknown) => void
  }> = []
  private tmpSeq = 0

  constructor(
    readonly dataDir: string,
    private readonly db: Db,
    private readonly opts: ChunkStoreOptions
  ) {
    this.chunkDir = path.join(dataDir, 'chunks')
    this.tmpDir = path.join(dataDir, 'tmp')
    this.q = {
      has: db.prepare('SELECT 1 FROM cache_entries WHERE hash = ?').pluck(),
      get: db.prepare('SELECT size FROM cache_entries WHERE hash = ?').pluck(),
      insert: db.prepare(`INSERT OR IGNORE INTO cache_entries (hash, size, atime, pinned)
        VALUES (@hash, @size, @atime, coalesce((SELECT pins > 0 FROM chunks WHERE hash = @hash), 0))`),
      del: db.prepare('DELETE FROM cache_entries WHERE hash = ?'),
      touch: db.prepare('UPDATE cache_entries SET atime = ? WHERE hash = ?'),
      lruUnref: db.prepare(`SELECT e.hash, e.size FROM cache_entries e LEFT JOIN chunks c ON c.hash = e.hash
        WHERE e.pinned = 0 AND coalesce(c.refs, 0) = 0 ORDER BY e.atime LIMIT ?`),
      lru: db.prepare('SELECT hash, size FROM cache_entries WHERE pinned = 0 ORDER BY atime LIMIT ?'),
      lruUnrefAt: db.prepare(`SELECT e.hash, e.size, e.atime FROM cache_entries e LEFT JOIN chunks c ON c.hash = e.hash
        WHERE e.pinned = 0 AND coalesce(c.refs, 0) = 0 ORDER BY e.atime`),
      lruAt: db.prepare('SELECT hash, size, atime FROM cache_entries WHERE pinned = 0 ORDER BY atime'),
      sum: db.prepare('SELECT coalesce(sum(size), 0) FROM cache_entries').pluck(),
      all: db.prepare('SELECT hash, size FROM cache_entries'),
      pin: db.prepare('UPDATE cache_entries SET pinned = 1 WHERE hash = ?')
    }
  }

  /** Registers a subscriber; returns its unsubscribe. */
  subscribe(l: ChunkEvents): () => void {
    this.listeners.add(l)
    return () => this.listeners.delete(l)
  }

  private emit(kind: keyof ChunkEvents, hashes: string[]): void {
    if (hashes.length === 0) return
    for (const l of this.listeners) l[kind]?.(hashes)
  }

  /** Creates the folders, removes temp files left by a crash, loads the size. */
  open(): { leftovers: number } {
    fs.mkdirSync(this.chunkDir, { recursive: true })
    fs.mkdirSync(this.tmpDir, { recursive: true })
    let leftovers = 0
    for (const f of fs.readdirSync(this.tmpDir)) {
      // a temp file belongs to a writer; pid-prefixed names let a live writer's files survive
      const pid = Number(f.split('-')[0])
      if (Number.isInteger(pid) && pid !== process.pid && isAlive(pid)) continue
      fs.rmSync(path.join(this.tmpDir, f), { force: true })
      leftovers++
    }
    this.refreshSize()
    return { leftovers }
  }

  refreshSize(): void {
    this.size = this.q.sum.get() as number
  }

  get sizeBytes(): number {
    return this.size
  }
  get capacityBytes(): number {
    return this.opts.capacityBytes
  }

  pathOf(hashHex: string): string {
    return path.join(this.chunkDir, hashHex.slice(0, 2), hashHex)
  }

  has(hashHex: string): boolean {
    return this.q.has.get(Buffer.from(hashHex, 'hex')) !== undefined
  }

  /**
   * Stores verified bytes under their hash. Rejects data that does not hash to `hashHex`.
   * Returns false when the chunk was already there.
   */
  async put(hashHex: string, data: Buffer, opts?: { verified?: boolean; pin?: boolean }): Promise<boolean> {
    const key = this.admit(hashHex, data, opts)
    if (key === undefined) return false
    this.writeFile(hashHex, data)
    return this.record([{ hash: key, size: data.length }], opts?.pin ?? false).chunks > 0
  }

  /**
   * The checks every put makes: the bytes hash to the name (unless the caller verified them);
   * a chunk already cached is only touched (and pinned if asked). Returns the key to store
   * under, or undefined when there is nothing to write.
   */
  private admit(hashHex: string, data: Buffer, opts?: { verified?: boolean; pin?: boolean }): Buffer | undefined {
    if (!(opts?.verified ?? false)) {
      const got = blake3(data).toString('hex')
      if (got !== hashHex) throw VmifsError.hashMismatch(hashHex, got)
    }
    const key = Buffer.from(hashHex, 'hex')
    if (this.q.has.get(key) === undefined) return key
    if (opts?.pin === true) this.q.pin.run(key)
    this.touch(hashHex)
    return undefined
  }

  /**
   * put() for the fetch path: the file is written on the thread pool (creating a file costs
   * ~0.35 ms here, which on the event loop stalls every read the agent serves), and chunks
   * written in the same turn are recorded in one transaction. Resolves once the chunk is
   * recorded; false when it was already there.
   */
  async putAsync(hashHex: string, data: Buffer, opts?: { verified?: boolean; pin?: boolean }): Promise<boolean> {
    const key = this.admit(hashHex, data, opts)
    if (key === undefined) return false
    const { newDir, tmp, dest } = this.placeFor(hashHex)
    if (newDir !== undefined) {
      await fsp.mkdir(newDir, { recursive: true })
      this.dirsMade.add(newDir)
    }
    try {
      await fsp.writeFile(tmp, data)
      await fsp.rename(tmp, dest)
    } catch (err) {
      await fsp.rm(tmp, { force: true })
      throw err
    }
    return await new Promise<boolean>((resolve, reject) => {
      this.toRecord.push({ hash: key, size: data.length, pin: opts?.pin ?? false, resolve, reject })
      if (this.toRecord.length === 1) setImmediate(() => this.recordPending())
    })
  }

  private recordPending(): void {
    const batch = this.toRecord
    this.toRecord = []
    try {
      const now = Date.now()
      const fresh: boolean[] = []
      let bytes = 0
      this.db.transaction(() => {
        for (const e of batch) {
          const isNew = this.q.insert.run({ hash: e.hash, size: e.size, atime: now }).changes > 0
          if (isNew) bytes += e.size
          if (e.pin) this.q.pin.run(e.hash)
          fresh.push(isNew)
        }
      })()
      this.size += bytes
      if (this.size > this.opts.capacityBytes) this.evict()
      this.emit(
        'verified',
        batch.filter((_, i) => fresh[i]).map(e => e.hash.toString('hex'))
      )
      batch.forEach((e, i) => e.resolve(fresh[i]!))
    } catch (err) {
      for (const e of batch) e.reject(err)
    }
  }

  /**
   * Writes a chunk file (temp file, then rename) without recording it. The caller has verified
   * the bytes and must record() the chunk afterwards; until then only fsck would see the file.
   * Synchronous on purpose: chunk files are small and local, and open/write/close/rename on the
   * calling thread costs ~40 µs of CPU a file against ~220 µs through fs.promises (measured,
   * 16 KiB files), which made a full import cost several times its chunking and hashing.
   */
  writeFile(hashHex: string, data: Buffer): void {
    const { newDir, tmp, dest } = this.placeFor(hashHex)
    if (newDir !== undefined) {
      fs.mkdirSync(newDir, { recursive: true })
      this.dirsMade.add(newDir)
    }
    try {
      const fd = fs.openSync(tmp, 'w')
      try {
        for (let off = 0; off < data.length;) off += fs.writeSync(fd, data, off, data.length - off)
      } finally {
        fs.closeSync(fd)
      }
      fs.renameSync(tmp, dest)
    } catch (err) {
      fs.rmSync(tmp, { force: true })
      throw err
    }
  }

  /** Where a new chunk file goes: a fresh temp name, its final path, and its directory if not made yet. */
  private placeFor(hashHex: string): { newDir: string | undefined; tmp: string; dest: string } {
    const dir = path.join(this.chunkDir, hashHex.slice(0, 2))
    return {
      newDir: this.dirsMade.has(dir) ? undefined : dir,
      tmp: path.join(this.tmpDir, `${process.pid}-${this.tmpSeq++}`),
      dest: this.pathOf(hashHex)
    }
  }

  /** Records written chunk files in one transaction; returns what was new. Evicts if over capacity. */
  record(entries: Array<{ hash: Buffer; size: number }>, pin: boolean): { chunks: number; bytes: number } {
    let chunks = 0
    let bytes = 0
    const now = Date.now()
    const fresh: string[] = []
    this.db.transaction(() => {
      for (const e of entries) {
        if (this.q.insert.run({ hash: e.hash, size: e.size, atime: now }).changes > 0) {
          chunks++
          bytes += e.size
          if (this.listeners.size > 0) fresh.push(e.hash.toString('hex'))
        }
        if (pin) this.q.pin.run(e.hash)
      }
    })()
    this.size += bytes
    if (this.size > this.opts.capacityBytes) this.evict()
    this.emit('verified', fresh)
    return { chunks, bytes }
  }

  /** Marks existing entries pinned (import does this before its image row exists). */
  pinMany(hashes: Buffer[]): void {
    this.db.transaction(() => {
      for (const h of hashes) this.q.pin.run(h)
    })()
  }

  /** Reads and verifies a chunk. Drops it from the cache if it is corrupt or gone. */
  async read(hashHex: string): Promise<Buffer> {
    let data: Buffer
    try {
      // one synchronous open/read/close: four thread-pool round trips a chunk (fs.promises.readFile)
      // made the FUSE read path latency-bound (bench/read.ts, agent path: 175-230 -> 350-430 MB/s)
      data = readWholeSync(this.pathOf(hashHex))
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        this.forget(hashHex)
        throw VmifsError.chunkMissing(hashHex)
      }
      throw err
    }
    const got = blake3(data).toString('hex')
    if (got !== hashHex) {
      await this.drop(hashHex)
      throw VmifsError.hashMismatch(hashHex, got)
    }
    this.touch(hashHex)
    this.emit('verified', [hashHex])
    return data
  }

  touch(hashHex: string): void {
    this.atimes.set(hashHex, Date.now())
  }

  /** Persists access times gathered since the last flush, in one transaction. */
  flushAtimes(): number {
    if (this.atimes.size === 0) return 0
    const batch = [...this.atimes]
    this.atimes.clear()
    this.db.transaction(() => {
      for (const [h, t] of batch) this.q.touch.run(t, Buffer.from(h, 'hex'))
    })()
    return batch.length
  }

  /** Deletes a chunk file and its entry. */
  async drop(hashHex: string): Promise<void> {
    await fsp.rm(this.pathOf(hashHex), { force: true })
    this.forget(hashHex)
  }

  private forget(hashHex: string): void {
    const key = Buffer.from(hashHex, 'hex')
    const size = this.q.get.get(key) as number | undefined
    if (size === undefined) return
    this.q.del.run(key)
    this.size -= size
    this.atimes.delete(hashHex)
    this.emit('gone', [hashHex])
  }

  /**
   * Evicts unpinned chunks until the cache is under `target` bytes (default: capacity).
   * Chunks no image refers to go before referenced ones; within each, least recently used first.
   */
  evict(target = this.opts.capacityBytes): { chunks: number; bytes: number } {
    if (this.evicting) return { chunks: 0, bytes: 0 }
    this.evicting = true
    let chunks = 0
    let bytes = 0
    const gone: string[] = []
    try {
      this.flushAtimes()
      // chunks no image refers to first, then the least recently used of the rest
      for (const q of [this.q.lruUnref, this.q.lru]) {
        while (this.size > target) {
          const rows = q.all(256) as Array<{ hash: Buffer; size: number }>
          if (rows.length === 0) break
          for (const r of rows) {
            if (this.size <= target) break
            const hex = r.hash.toString('hex')
            fs.rmSync(this.pathOf(hex), { force: true })
            this.q.del.run(r.hash)
            this.size -= r.size
            this.atimes.delete(hex)
            gone.push(hex)
            chunks++
            bytes += r.size
          }
        }
      }
    } finally {
      this.evicting = false
      this.emit('gone', gone)
    }
    if (chunks > 0) this.opts.onEvict?.(chunks, bytes)
    return { chunks, bytes }
  }

  /**
   * Whether `bytes` more fit without evicting an entry used or added at or after `since` (ms
   * epoch): free space, or eviction (in evict()'s order) reaches only older entries. For the
   * prefetcher, which must not push out what its own session uses. Pinned entries never count:
   * they are never evicted.
   */
  hasRoomWithout(bytes: number, since: number): boolean {
    let over = this.size + bytes - this.opts.capacityBytes
    if (over <= 0) return true
    const seen = new Set<string>()
    const recent = (hex: string, atime: number): boolean => (this.atimes.get(hex) ?? atime) >= since
    for (const q of [this.q.lruUnrefAt, this.q.lruAt]) {
      for (const r of q.iterate() as IterableIterator<{ hash: Buffer; size: number; atime: number }>) {
        const hex = r.hash.toString('hex')
        if (seen.has(hex)) continue
        seen.add(hex)
        if (recent(hex, r.atime)) return false
        over -= r.size
        if (over <= 0) return true
      }
    }
    return false
  }

  /** Entries: [hash hex, size]. */
  *entries(): Generator<[string, number]> {
    for (const r of this.q.all.iterate() as IterableIterator<{ hash: Buffer; size: number }>)
      yield [r.hash.toString('hex'), r.size]
  }

  /** Forces chunk files written so far to disk (syncfs on the data dir's filesystem). */
  async sync(): Promise<void> {
    await execFileP('sync', ['-f', this.chunkDir])
  }

  /** Re-derives every entry's pinned flag from chunks.pins (after a crash mid-import). */
  reconcilePins(): number {
    return this.db
      .prepare(
        `UPDATE cache_entries
      SET pinned = coalesce((SELECT pins > 0 FROM chunks c WHERE c.hash = cache_entries.hash), 0)
      WHERE pinned != coalesce((SELECT pins > 0 FROM chunks c WHERE c.hash = cache_entries.hash), 0)`
      )
      .run().changes
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}
