// Content-addressed chunk cache, kept in append-only pack files.
// Layout: packs/<id>.pack, chunks' bytes appended one after the other (a run an import writes
// from its read buffer starts at the next 4 KiB boundary: native/pack_writer.c), and one row per
// chunk in cache_entries saying where its bytes are and their CRC32C.
// Contract:
// - Verified before readable: bytes are hashed (or were, by the caller) before they are written,
//   and a chunk is readable only once its row exists, which is written after its bytes. Every
//   read checks the bytes' CRC against the row's (and hashes them where it does not bear them
//   out): wrong bytes are never returned — a corrupt or vanished chunk is dropped and the read
//   fails with CHUNK_HASH_MISMATCH / CHUNK_MISSING. fsck hashes them all.
// - kill -9 loses nothing recorded: rows are written after the bytes they point at (SQLite in WAL
//   mode), and a pack whose writer died is cut back to the end of its last recorded chunk.
// - Each process that writes appends to a pack of its own (packs.writer), so several processes
//   (the agent, CLI commands) share one data dir without locks; a pack is sealed when its writer
//   closes it or is found dead, and deleted once no entry points into it.
// - Capacity is enforced by evicting unpinned entries, least recently used first: an evicted
//   chunk's bytes are freed at once by punching a hole in its pack (the file keeps its size).
//   Access times are kept in memory and persisted in batches. Pinned chunks (of images imported
//   on this host) are never evicted.
// The data dirs of the layout before packs (a file per chunk under chunks/) are refused with
// DATA_DIR_OLD_LAYOUT until `vmifs fsck` converts them (src/cache/fsck.ts).
import fs from 'node:fs'
import path from 'node:path'
import type { Statement, Transaction } from 'better-sqlite3'
import type { Db } from '../index/db.js'
import { HASH_ROWS, PIN_ENTRIES, hashOrder, hashRows } from '../index/bulk.js'
import { VmifsError } from '../errors.js'
import { blake3 } from '../util/hash.js'
import { type PackWriter, native } from '../native/index.js'
import { readExactlySync } from '../util/files.js'

export interface ChunkStoreOptions {
  capacityBytes: number
  /** called with the number of chunks and bytes evicted */
  onEvict?: (chunks: number, bytes: number) => void
}

/** Where a chunk's bytes are: pack id, offset of the bytes in the pack, length, and their CRC32C. */
export interface ChunkLocation {
  pack: number
  off: number
  size: number
  crc: number
}

/** A chunk the store holds, by hash (hex), and where. */
export interface StoredChunk extends ChunkLocation {
  hash: string
}

/**
 * What the store tells its subscribers, synchronously and after the fact: chunks it holds and
 * where (just written, or read and verified), chunks it no longer holds (evicted, dropped as
 * corrupt, found missing), and packs it deleted. Hashes in hex.
 */
export interface ChunkEvents {
  stored?(chunks: StoredChunk[]): void
  gone?(hashes: string[]): void
  packsDeleted?(ids: number[]): void
}

/** The folder of the layout before pack files (a file per chunk): refused by open(), converted by fsck. */
export const OLD_LAYOUT_DIR = 'chunks'

/**
 * Packs written before entries kept their chunk's CRC (migration 5) put a 40-byte header in front
 * of each chunk (little-endian): magic "VMC2", length u32, CRC32C of the bytes u32, the hash's
 * first 28 bytes; or, the first format's, magic "VMC1", length, the whole hash. The bytes stay
 * where they are; only fillCrcs reads the headers, once.
 */
const RECORD_HEADER = 40
const RECORD_MAGIC = 0x32434d56
const HASH_IN_HEADER = 28

/**
 * The CRC32C of the chunk at `loc` in an open pack, for an entry recorded without it: its record's
 * header's where that names the chunk (length and hash), else the bytes' once they hash to it;
 * undefined when the bytes are gone or are not the chunk's.
 */
function recordCrc(fd: number, loc: EntryRow): number | undefined {
  if (loc.off < RECORD_HEADER) return undefined
  const rec = readExactlySync(fd, loc.off - RECORD_HEADER, loc.size + RECORD_HEADER)
  if (!rec) return undefined
  const h = rec.subarray(0, RECORD_HEADER)
  const data = rec.subarray(RECORD_HEADER)
  if (
    h.readUInt32LE(0) === RECORD_MAGIC &&
    h.readUInt32LE(4) === loc.size &&
    h.compare(loc.hash, 0, HASH_IN_HEADER, 12, 40) === 0
  )
    return h.readUInt32LE(8)
  return blake3(data).equals(loc.hash) ? native().crc32c(data) : undefined
}

/** Chunks a write at most (native/pack_writer.c takes 2048). */
const APPEND_MAX = 1024
/** A pack is sealed and a new one started once it reaches this size. */
const PACK_MAX_BYTES = 1024 * 1024 * 1024

/** Access-time records kept before they are flushed anyway. */
const TOUCHED_MAX = 65536

interface Touched {
  hashes: Buffer
  zero: Uint8Array | undefined
  first: number
  last: number
  at: number
}

interface Writer {
  id: number
  w: PackWriter
  tail: number
}

interface EntryRow {
  hash: Buffer
  size: number
  pack: number
  off: number
}

export class ChunkStore {
  readonly packDir: string
  private readonly listeners = new Set<ChunkEvents>()
  /** Reads since the last flush of access times: runs of a manifest's entries, or single chunks (touch). */
  private touched: Touched[] = []
  private size = 0
  private readonly q: Record<
    | 'has'
    | 'loc'
    | 'del'
    | 'touch'
    | 'lru'
    | 'lruUnref'
    | 'lruAt'
    | 'lruUnrefAt'
    | 'sum'
    | 'totals'
    | 'all'
    | 'pin'
    | 'newPack'
    | 'packGrew'
    | 'packShrank'
    | 'seal'
    | 'pack'
    | 'delPack'
    | 'setCrc',
    Statement
  >

  /** the statements that record and look up many chunks at once (src/index/bulk.ts) */
  private readonly bulk: Record<'held' | 'pin' | 'insert' | 'insertPinned', Statement>
  private readonly recordTx: Transaction<
    (
      hashes: Buffer[],
      locs: ChunkLocation[],
      pins: boolean | boolean[],
      now: number
    ) => {
      fresh: boolean[]
      bytes: number
    }
  >
  private evicting = false
  private writer: Writer | undefined
  /** descriptors of packs read or punched, opened on first use */
  private readonly fds = new Map<number, number>()
  private toRecord: Array<{
    hash: Buffer
    loc: ChunkLocation
    pin: boolean
    resolve: (fresh: boolean) => void
    reject: (err: unknown) => void
  }> = []
  private readonly me = processTag(process.pid)

  constructor(
    readonly dataDir: string,
    private readonly db: Db,
    private readonly opts: ChunkStoreOptions
  ) {
    this.packDir = path.join(dataDir, 'packs')
    this.recordTx = db.transaction((hashes: Buffer[], locs: ChunkLocation[], pins: boolean | boolean[], now: number) =>
      this.writeRows(hashes, locs, pins, now)
    )
    this.bulk = {
      held: db.prepare(`SELECT r.i FROM ${HASH_ROWS} r JOIN cache_entries e ON e.hash = r.hash`).pluck(),
      pin: db.prepare(PIN_ENTRIES),
      // v: [size, pack, off, crc]; pinned as chunks.pins says
      insert: db.prepare(`INSERT OR IGNORE INTO cache_entries (hash, size, atime, pinned, pack, off, crc)
        SELECT r.hash, r.v ->> 0, @now, coalesce((SELECT pins > 0 FROM chunks c WHERE c.hash = r.hash), 0),
          r.v ->> 1, r.v ->> 2, r.v ->> 3 FROM ${HASH_ROWS} r`),
      // a chunk pinned on the way in (an import) is pinned whatever chunks.pins says yet
      insertPinned: db.prepare(`INSERT OR IGNORE INTO cache_entries (hash, size, atime, pinned, pack, off, crc)
        SELECT r.hash, r.v ->> 0, @now, 1, r.v ->> 1, r.v ->> 2, r.v ->> 3 FROM ${HASH_ROWS} r`)
    }
    this.q = {
      has: db.prepare('SELECT 1 FROM cache_entries WHERE hash = ?').pluck(),
      loc: db.prepare('SELECT size, pack, off, crc FROM cache_entries WHERE hash = ?'),
      del: db.prepare('DELETE FROM cache_entries WHERE hash = ? RETURNING size, pack, off'),
      touch: db.prepare('UPDATE cache_entries SET atime = ? WHERE hash = ?'),
      lruUnref:
        db.prepare(`SELECT e.hash, e.size, e.pack, e.off FROM cache_entries e LEFT JOIN chunks c ON c.hash = e.hash
        WHERE e.pinned = 0 AND coalesce(c.refs, 0) = 0 ORDER BY e.atime LIMIT ?`),
      lru: db.prepare('SELECT hash, size, pack, off FROM cache_entries WHERE pinned = 0 ORDER BY atime LIMIT ?'),
      lruUnrefAt: db.prepare(`SELECT e.hash, e.size, e.atime FROM cache_entries e LEFT JOIN chunks c ON c.hash = e.hash
        WHERE e.pinned = 0 AND coalesce(c.refs, 0) = 0 ORDER BY e.atime`),
      lruAt: db.prepare('SELECT hash, size, atime FROM cache_entries WHERE pinned = 0 ORDER BY atime'),
      sum: db.prepare('SELECT coalesce(sum(size), 0) FROM cache_entries').pluck(),
      totals: db.prepare(
        'SELECT coalesce(sum(CASE WHEN pinned = 1 THEN size END), 0) AS pinned, count(*) AS n FROM cache_entries'
      ),
      all: db.prepare('SELECT hash, size, pack, off, crc FROM cache_entries'),
      pin: db.prepare('UPDATE cache_entries SET pinned = 1 WHERE hash = ? AND pinned = 0'),
      newPack: db.prepare('INSERT INTO packs (writer) VALUES (?) RETURNING id').pluck(),
      packGrew: db.prepare('UPDATE packs SET size = max(size, ?), live = live + ? WHERE id = ?'),
      packShrank: db.prepare('UPDATE packs SET live = live - ? WHERE id = ? RETURNING live, writer'),
      seal: db.prepare('UPDATE packs SET writer = NULL WHERE id = ?'),
      pack: db.prepare('SELECT id, writer, size, live FROM packs WHERE id = ?'),
      delPack: db.prepare('DELETE FROM packs WHERE id = ?'),
      setCrc: db.prepare('UPDATE cache_entries SET crc = ? WHERE hash = ?')
    }
  }

  /** Registers a subscriber; returns its unsubscribe. */
  subscribe(l: ChunkEvents): () => void {
    this.listeners.add(l)
    return () => this.listeners.delete(l)
  }

  private emit<K extends keyof ChunkEvents>(kind: K, items: Parameters<NonNullable<ChunkEvents[K]>>[0]): void {
    if (items.length === 0) return
    for (const l of this.listeners) (l[kind] as ((x: typeof items) => void) | undefined)?.call(l, items)
  }

  /**
   * Creates the folder, seals the packs of writers that died (cut back to their last recorded
   * chunk), deletes sealed packs nothing points into, loads the size. Refuses a data dir of the
   * old layout unless `convert` (fsck, which converts it).
   */
  open(convert = false): { leftovers: number } {
    const legacy = path.join(this.dataDir, OLD_LAYOUT_DIR)
    if (!convert && fs.existsSync(legacy)) {
      throw new VmifsError(
        'DATA_DIR_OLD_LAYOUT',
        `data dir ${this.dataDir} keeps chunks a file each (chunks/), the layout before pack files; ` +
          `convert it with: vmifs fsck --data-dir ${this.dataDir}`,
        { dir: this.dataDir }
      )
    }
    fs.mkdirSync(this.packDir, { recursive: true })
    let leftovers = 0
    const packs = this.db.prepare('SELECT id, writer, size, live FROM packs').all() as PackRow[]
    for (const p of packs) {
      if (p.writer !== null && tagAlive(p.writer)) continue
      if (p.writer !== null) {
        // its writer died (kill -9, a crash): what follows its last recorded chunk is not a chunk
        const file = this.packPath(p.id)
        try {
          if (fs.statSync(file).size > p.size) {
            fs.truncateSync(file, p.size)
            leftovers++
          }
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
        }
        this.q.seal.run(p.id)
      }
      if (p.live <= 0) this.deletePacks([p.id])
    }
    this.fillCrcs()
    this.refreshSize()
    return { leftovers }
  }

  /**
   * Gives the entries recorded before entries kept their chunk's CRC (migration 5) theirs: from
   * the record's header where it names the chunk, else by hashing the bytes (a first-format
   * record); an entry whose bytes are gone or are not its chunk is dropped. Reads one header an
   * entry, once per data dir.
   */
  private fillCrcs(): void {
    const next = this.db.prepare(
      'SELECT hash, size, pack, off FROM cache_entries WHERE crc IS NULL AND pack IS NOT NULL LIMIT 4096'
    )
    for (;;) {
      const rows = next.all() as EntryRow[]
      if (rows.length === 0) return
      const bad: string[] = []
      const crcs = rows.map(r => {
        let crc: number | undefined
        try {
          crc = recordCrc(this.fdOf(r.pack), r)
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
        }
        if (crc === undefined) bad.push(r.hash.toString('hex'))
        return crc
      })
      this.db.transaction(() => rows.forEach((r, i) => crcs[i] !== undefined && this.q.setCrc.run(crcs[i], r.hash)))()
      this.forget(bad)
    }
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

  packPath(id: number): string {
    return path.join(this.packDir, `${id}.pack`)
  }

  has(hashHex: string): boolean {
    return this.q.has.get(Buffer.from(hashHex, 'hex')) !== undefined
  }

  /** Which of the chunks the store holds, asked in one statement. */
  holds(hashes: Buffer[]): boolean[] {
    const out = new Array<boolean>(hashes.length).fill(false)
    if (hashes.length === 0) return out
    for (const i of this.bulk.held.all(hashRows(hashes)) as number[]) out[i] = true
    return out
  }

  /** Where the chunk's bytes are, if the store holds it. */
  locate(hashHex: string): ChunkLocation | undefined {
    return this.q.loc.get(Buffer.from(hashHex, 'hex')) as ChunkLocation | undefined
  }

  /**
   * The chunks of `hashes` (32 bytes each, concatenated) the store holds, as location records
   * (writeLocation): what the FUSE session reads them with.
   */
  locateMany(hashes: Buffer, from = 0, to = hashes.length / 32): Buffer {
    const out = Buffer.allocUnsafe((to - from) * LOCATION_BYTES)
    let n = 0
    // one read transaction: a lookup outside one takes a snapshot of its own, several times the cost
    this.db.transaction(() => {
      for (let i = from; i < to; i++) {
        const h = hashes.subarray(i * 32, i * 32 + 32)
        const loc = this.q.loc.get(h) as ChunkLocation | undefined
        if (!loc) continue
        writeLocation(out, n++ * LOCATION_BYTES, h, loc)
      }
    })()
    return out.subarray(0, n * LOCATION_BYTES)
  }

  /**
   * Stores verified bytes under their hash. Rejects data that does not hash to `hashHex`.
   * Returns false when the chunk was already there.
   */
  async put(hashHex: string, data: Buffer, opts?: { verified?: boolean; pin?: boolean }): Promise<boolean> {
    const key = this.admit(hashHex, data, opts)
    if (key === undefined) return false
    const item = [{ hash: key, data }]
    return this.record(item, this.append(item), opts?.pin ?? false).chunks > 0
  }

  /**
   * put() for the fetch path: chunks stored in the same turn are recorded in one transaction.
   * Resolves once the chunk is recorded; false when it was already there.
   */
  async putAsync(hashHex: string, data: Buffer, opts?: { verified?: boolean; pin?: boolean }): Promise<boolean> {
    const key = this.admit(hashHex, data, opts)
    if (key === undefined) return false
    const [loc] = this.append([{ hash: key, data }])
    return await new Promise<boolean>((resolve, reject) => {
      this.toRecord.push({ hash: key, loc: loc!, pin: opts?.pin ?? false, resolve, reject })
      if (this.toRecord.length === 1) setImmediate(() => this.recordPending())
    })
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

  private recordPending(): void {
    const batch = this.toRecord
    this.toRecord = []
    try {
      const { fresh } = this.recordRows(
        batch.map(e => e.hash),
        batch.map(e => e.loc),
        batch.map(e => e.pin)
      )
      batch.forEach((e, i) => e.resolve(fresh[i]!))
    } catch (err) {
      for (const e of batch) e.reject(err)
    }
  }

  /**
   * Appends verified chunks to this process's pack without recording them: the caller records
   * them afterwards (record()); until then nothing reads them. Returns where each one
   * went. `bulk`: many chunks (an import, a replication), written with O_DIRECT: copying them
   * into the page cache would cost more CPU than hashing them, for pages nobody reads soon. An
   * item's `crc`, where every item has one, is its bytes' CRC32C as the caller took it.
   */
  append(items: Array<{ hash: Buffer; data: Buffer; crc?: number }>, opts?: { bulk?: boolean }): ChunkLocation[] {
    const locs: ChunkLocation[] = []
    for (let k = 0; k < items.length; k += APPEND_MAX) {
      let w = this.writer
      if (!w || w.tail >= PACK_MAX_BYTES) w = this.startPack()
      const n = Math.min(APPEND_MAX, items.length - k)
      const bufs = new Array<Buffer>(n)
      let crcs: Uint32Array | undefined = new Uint32Array(n)
      for (let i = 0; i < n; i++) {
        const it = items[k + i]!
        bufs[i] = it.data
        if (it.crc === undefined) crcs = undefined
        else if (crcs) crcs[i] = it.crc
      }
      const places = native().packAppend(w.w, bufs, opts?.bulk ?? false, crcs)
      for (let i = 0; i < n; i++)
        locs.push({ pack: w.id, off: places[2 * i]!, size: bufs[i]!.length, crc: places[2 * i + 1]! })
      w.tail = places[2 * n - 2]! + bufs[n - 1]!.length
    }
    return locs
  }

  /** A new pack of this process's, replacing (and sealing) the one it wrote to. */
  private startPack(): Writer {
    if (this.writer) this.sealWriter()
    const id = this.q.newPack.get(this.me) as number
    this.writer = { id, w: native().packCreate(this.packPath(id)), tail: 0 }
    return this.writer
  }

  /** Seals this process's pack (fsck does, so that it may read every pack whole); the next write starts a new one. */
  seal(): void {
    this.sealWriter()
  }

  private sealWriter(): void {
    const w = this.writer
    if (!w) return
    this.writer = undefined
    native().packClose(w.w)
    this.q.seal.run(w.id)
    const row = this.q.pack.get(w.id) as PackRow | undefined
    if (row && row.live <= 0) this.deletePacks([w.id])
  }

  /**
   * Records appended chunks (the items given to append(), and the places it returned) in one
   * transaction; returns what was new. Evicts if over capacity.
   */
  record(
    items: ReadonlyArray<{ hash: Buffer }>,
    locs: ChunkLocation[],
    pin: boolean
  ): { chunks: number; bytes: number } {
    const { fresh, bytes } = this.recordRows(
      items.map(it => it.hash),
      locs,
      pin
    )
    let chunks = 0
    for (const f of fresh) if (f) chunks++
    return { chunks, bytes }
  }

  private recordRows(
    hashes: Buffer[],
    locs: ChunkLocation[],
    pins: boolean | boolean[]
  ): { fresh: boolean[]; bytes: number } {
    // immediate: the rows are written and, where fewer were new than given, settled under one
    // write lock, so that another process's chunks recorded meanwhile are told apart from this
    // call's new ones
    const { fresh, bytes } = this.recordTx.immediate(hashes, locs, pins, Date.now())
    this.size += bytes
    if (this.size > this.opts.capacityBytes) this.evict()
    // subscribers are told in hex; nobody listens to an import's store
    if (this.listeners.size > 0) {
      const stored: StoredChunk[] = []
      for (let i = 0; i < hashes.length; i++)
        if (fresh[i]) stored.push({ hash: hashes[i]!.toString('hex'), ...locs[i]! })
      this.emit('stored', stored)
    }
    return { fresh, bytes }
  }

  /** recordRows' transaction (made once: see src/index/bulk.ts). */
  private writeRows(
    hashes: Buffer[],
    locs: ChunkLocation[],
    pins: boolean | boolean[],
    now: number
  ): { fresh: boolean[]; bytes: number } {
    const n = hashes.length
    const added: number[] = []
    const addedPinned: number[] = []
    const values = new Array<string>(n)
    for (const i of hashOrder(hashes)) {
      ;(pinned(pins, i) ? addedPinned : added).push(i)
      const l = locs[i]!
      values[i] = `[${l.size},${l.pack},${l.off},${l.crc}]`
    }
    let changes = 0
    if (addedPinned.length > 0)
      changes += this.bulk.insertPinned.run({ ...hashRows(hashes, addedPinned, values), now }).changes
    if (added.length > 0) changes += this.bulk.insert.run({ ...hashRows(hashes, added, values), now }).changes
    const fresh = new Array<boolean>(n).fill(true)
    // fewer rows than chunks: some were held, or came twice in this call; each one's row says
    const pinHeld: Buffer[] = []
    if (changes !== n) this.settle(hashes, locs, fresh, pins, pinHeld)
    if (pinHeld.length > 0) this.pinAll(pinHeld)
    let bytes = 0
    const grew = new Map<number, { end: number; n: number }>()
    for (let i = 0; i < n; i++) {
      if (!fresh[i]) continue
      const c = locs[i]!
      bytes += c.size
      const g = grew.get(c.pack) ?? { end: 0, n: 0 }
      g.end = Math.max(g.end, c.off + c.size)
      g.n++
      grew.set(c.pack, g)
    }
    for (const [id, g] of grew) this.q.packGrew.run(g.end, g.n, id)
    return { fresh, bytes }
  }

  /**
   * After record() wrote fewer rows than it was given chunks: a chunk is new where its row points
   * at this call's copy of it. Those not new that were to be pinned go to pinHeld.
   */
  private settle(
    hashes: Buffer[],
    locs: ChunkLocation[],
    fresh: boolean[],
    pins: boolean | boolean[],
    pinHeld: Buffer[]
  ): void {
    hashes.forEach((h, i) => {
      const row = this.q.loc.get(h) as ChunkLocation | undefined
      fresh[i] = row !== undefined && row.pack === locs[i]!.pack && row.off === locs[i]!.off
      if (!fresh[i] && pinned(pins, i)) pinHeld.push(h)
    })
  }

  /** Marks existing entries pinned (import does this before its image row exists). */
  pinMany(hashes: Buffer[]): void {
    this.db.transaction(() => this.pinAll(hashes))()
  }

  private pinAll(hashes: Buffer[]): void {
    if (hashes.length > 0) this.bulk.pin.run(hashRows(hashes))
  }

  /**
   * Reads and verifies a chunk: by the CRC32C its entry keeps, or by hashing it where that does
   * not bear it out. Drops it from the cache if it is corrupt or gone.
   */
  async read(hashHex: string): Promise<Buffer> {
    const loc = this.locate(hashHex)
    if (!loc) throw VmifsError.chunkMissing(hashHex)
    let data: Buffer | undefined
    try {
      data = readExactlySync(this.fdOf(loc.pack), loc.off, loc.size)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    }
    if (!data) {
      this.forget([hashHex])
      throw VmifsError.chunkMissing(hashHex)
    }
    const crc = native().crc32c(data)
    if (crc !== loc.crc) {
      const got = blake3(data).toString('hex')
      if (got !== hashHex) {
        this.forget([hashHex])
        throw VmifsError.hashMismatch(hashHex, got)
      }
      // the bytes are the chunk's and its CRC is not: the CRC is what was damaged
      loc.crc = crc
      this.repairCrc(hashHex, crc)
    }
    this.touch(hashHex)
    this.emit('stored', [{ hash: hashHex, ...loc }])
    return data
  }

  private fdOf(pack: number): number {
    let fd = this.fds.get(pack)
    if (fd === undefined) {
      fd = fs.openSync(this.packPath(pack), fs.constants.O_RDWR)
      this.fds.set(pack, fd)
    }
    return fd
  }

  /** The chunk was used now. */
  touch(hashHex: string): void {
    this.touchRun(Buffer.from(hashHex, 'hex'), undefined, 0, 0)
  }

  /**
   * Chunks first..last of `hashes` (a manifest's, 32 bytes each) were read now; entries where
   * `zero` is 1 are not chunks. A read that continues the last one extends it: a stream of reads
   * costs one record, and no hash is turned into a string.
   */
  touchRun(hashes: Buffer, zero: Uint8Array | undefined, first: number, last: number): void {
    if (last < first) return
    const at = Date.now()
    const prev = this.touched[this.touched.length - 1]
    if (prev && prev.hashes === hashes && first <= prev.last + 1 && last + 1 >= prev.first) {
      prev.first = Math.min(prev.first, first)
      prev.last = Math.max(prev.last, last)
      prev.at = at
      return
    }
    this.touched.push({ hashes, zero, first, last, at })
    if (this.touched.length >= TOUCHED_MAX) this.flushAtimes()
  }

  /** Persists access times gathered since the last flush, in one transaction. Returns the rows written. */
  flushAtimes(): number {
    if (this.touched.length === 0) return 0
    const batch = this.touched
    this.touched = []
    let n = 0
    this.db.transaction(() => {
      for (const r of batch)
        for (let i = r.first; i <= r.last; i++) {
          if (r.zero?.[i] === 1) continue
          this.q.touch.run(r.at, r.hashes.subarray(i * 32, i * 32 + 32))
          n++
        }
    })()
    return n
  }

  /** Deletes chunks (collected, or found corrupt or missing by fsck): entries, then bytes. Returns the bytes. */
  discard(hashes: string[]): number {
    return this.forget(hashes)
  }

  /**
   * Records chunk files of the old layout (fsck, converting them) at the places in packs they were
   * moved to: a row of that layout (pack NULL) gets the place, a file without a row a new entry;
   * the bytes were verified by the caller. Returns how many.
   */
  adopt(chunks: StoredChunk[]): number {
    const move = this.db.prepare('UPDATE cache_entries SET pack = ?, off = ?, crc = ? WHERE hash = ? AND pack IS NULL')
    let n = 0
    const fresh: StoredChunk[] = []
    this.db.transaction(() => {
      for (const c of chunks) {
        const hash = Buffer.from(c.hash, 'hex')
        if (move.run(c.pack, c.off, c.crc, hash).changes > 0) {
          this.q.packGrew.run(c.off + c.size, 1, c.pack)
          n++
        } else fresh.push(c)
      }
    })()
    return (
      n +
      this.record(
        fresh.map(c => ({ hash: Buffer.from(c.hash, 'hex') })),
        fresh,
        false
      ).chunks
    )
  }

  /** Corrects the CRC an entry keeps (fsck, which found its bytes sound and the CRC not theirs). */
  repairCrc(hashHex: string, crc: number): void {
    this.q.setCrc.run(crc, Buffer.from(hashHex, 'hex'))
  }

  /** Makes a pack row for a pack file the index lost (fsck), sealed and empty. */
  ensurePackRow(id: number): void {
    this.db.prepare('INSERT OR IGNORE INTO packs (id, writer, size, live) VALUES (?, NULL, 0, 0)').run(id)
  }

  /**
   * Sets every pack's live count and recorded end from the entries, and deletes the sealed packs
   * nothing points into (fsck, after its repairs).
   */
  recount(): void {
    const per = new Map<number, { live: number; end: number }>()
    for (const e of this.entries()) {
      const p = per.get(e.pack) ?? { live: 0, end: 0 }
      p.live++
      p.end = Math.max(p.end, e.off + e.size)
      per.set(e.pack, p)
    }
    const rows = this.db.prepare('SELECT id, writer, size, live FROM packs').all() as PackRow[]
    const set = this.db.prepare('UPDATE packs SET live = ?, size = max(size, ?) WHERE id = ?')
    const empty: number[] = []
    this.db.transaction(() => {
      for (const r of rows) {
        const p = per.get(r.id) ?? { live: 0, end: 0 }
        set.run(p.live, p.end, r.id)
        if (p.live === 0 && (r.writer === null || !tagAlive(r.writer))) empty.push(r.id)
      }
    })()
    this.deletePacks(empty)
  }

  /** The pack rows: id, writer (null once sealed). */
  packs(): Array<{ id: number; writer: string | null }> {
    return this.db.prepare('SELECT id, writer FROM packs').all() as Array<{ id: number; writer: string | null }>
  }

  /**
   * Deletes entries and frees their bytes: the rows go first (in one transaction), subscribers
   * hear of it, then the holes are punched; a pack left with no entries is deleted once sealed.
   * Returns the bytes forgotten.
   */
  private forget(hashes: string[]): number {
    const rows: EntryRow[] = []
    this.db.transaction(() => {
      for (const hex of hashes) {
        const hash = Buffer.from(hex, 'hex')
        const r = this.q.del.get(hash) as Omit<EntryRow, 'hash'> | undefined
        if (r) rows.push({ hash, ...r })
      }
    })()
    return this.release(rows)
  }

  private release(rows: EntryRow[]): number {
    if (rows.length === 0) return 0
    let bytes = 0
    const gone: string[] = []
    for (const r of rows) {
      bytes += r.size
      gone.push(r.hash.toString('hex'))
    }
    this.size -= bytes
    this.emit('gone', gone)
    this.punch(rows)
    const empty: number[] = []
    this.db.transaction(() => {
      const per = new Map<number, number>()
      for (const r of rows) per.set(r.pack, (per.get(r.pack) ?? 0) + 1)
      for (const [id, n] of per) {
        const p = this.q.packShrank.get(n, id) as { live: number; writer: string | null } | undefined
        if (p && p.live <= 0 && p.writer === null) empty.push(id)
      }
    })()
    this.deletePacks(empty)
    return bytes
  }

  /** Frees the chunks' bytes, adjacent chunks in one hole. */
  private punch(rows: EntryRow[]): void {
    const sorted = [...rows].sort((a, b) => a.pack - b.pack || a.off - b.off)
    let i = 0
    while (i < sorted.length) {
      const first = sorted[i]!
      const start = first.off
      let end = first.off + first.size
      let j = i + 1
      while (j < sorted.length && sorted[j]!.pack === first.pack && sorted[j]!.off <= end) {
        end = Math.max(end, sorted[j]!.off + sorted[j]!.size)
        j++
      }
      try {
        native().punchHole(this.fdOf(first.pack), start, end - start)
      } catch (err) {
        // a pack already gone has nothing to free; anything else leaves bytes that nothing points to
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
      }
      i = j
    }
  }

  private deletePacks(candidates: number[]): void {
    const ids = candidates.filter(id => this.writer?.id !== id)
    if (ids.length === 0) return
    for (const id of ids) {
      const fd = this.fds.get(id)
      if (fd !== undefined) fs.closeSync(fd)
      this.fds.delete(id)
      fs.rmSync(this.packPath(id), { force: true })
      this.q.delPack.run(id)
    }
    this.emit('packsDeleted', ids)
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
    try {
      this.flushAtimes()
      // chunks no image refers to first, then the least recently used of the rest
      for (const q of [this.q.lruUnref, this.q.lru]) {
        while (this.size > target) {
          const rows = q.all(256) as EntryRow[]
          if (rows.length === 0) break
          const take: EntryRow[] = []
          let over = this.size - target
          for (const r of rows) {
            if (over <= 0) break
            take.push(r)
            over -= r.size
          }
          this.db.transaction(() => {
            for (const r of take) this.q.del.get(r.hash)
          })()
          bytes += this.release(take)
          chunks += take.length
        }
      }
    } finally {
      this.evicting = false
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
    this.flushAtimes()
    const seen = new Set<string>()
    for (const q of [this.q.lruUnrefAt, this.q.lruAt]) {
      for (const r of q.iterate() as IterableIterator<{ hash: Buffer; size: number; atime: number }>) {
        const hex = r.hash.toString('hex')
        if (seen.has(hex)) continue
        seen.add(hex)
        if (r.atime >= since) return false
        over -= r.size
        if (over <= 0) return true
      }
    }
    return false
  }

  /** The pinned bytes and the number of chunks held (one scan of the entries). */
  totals(): { pinnedBytes: number; chunks: number } {
    const r = this.q.totals.get() as { pinned: number; n: number }
    return { pinnedBytes: r.pinned, chunks: r.n }
  }

  /** Entries: hash hex and location. */
  *entries(): Generator<StoredChunk> {
    for (const r of this.q.all.iterate() as IterableIterator<EntryRow & { crc: number }>)
      yield { hash: r.hash.toString('hex'), size: r.size, pack: r.pack, off: r.off, crc: r.crc }
  }

  /** Forces the chunks appended so far to disk (packs written before were synced when sealed). */
  sync(): void {
    if (this.writer) native().packSync(this.writer.w)
  }

  /** Seals this process's pack and closes the descriptors (the data dir is closing). */
  close(): void {
    for (const e of this.toRecord) e.reject(new VmifsError('CLOSED', 'the chunk store closed'))
    this.toRecord = []
    this.sealWriter()
    for (const fd of this.fds.values()) fs.closeSync(fd)
    this.fds.clear()
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

/** Whether chunk i of a record() call is to be pinned: `pins` is one answer for all, or one a chunk. */
function pinned(pins: boolean | boolean[], i: number): boolean {
  return typeof pins === 'boolean' ? pins : pins[i]!
}

interface PackRow {
  id: number
  writer: string | null
  size: number
  live: number
}

/** The size of a location record (writeLocation). */
export const LOCATION_BYTES = 56

/**
 * A location record for the FUSE session (native/fuse_session.c reads them): hash, pack u32,
 * length u32, offset u64, CRC32C u32, 4 zero bytes; little-endian.
 */
export function writeLocation(out: Buffer, at: number, hash: Buffer, loc: ChunkLocation): void {
  hash.copy(out, at, 0, 32)
  out.writeUInt32LE(loc.pack, at + 32)
  out.writeUInt32LE(loc.size, at + 36)
  out.writeBigUInt64LE(BigInt(loc.off), at + 40)
  out.writeUInt32LE(loc.crc, at + 48)
  out.writeUInt32LE(0, at + 52)
}

/** "pid:starttime": names a process so that a later one with the same pid is not taken for it. */
export function processTag(pid: number): string {
  return `${pid}:${startTime(pid) ?? 0}`
}

function startTime(pid: number): string | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    // the command name (field 2) may hold spaces and parentheses: count fields after its last ')'
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]
  } catch {
    return undefined
  }
}

/** Whether the process a tag names still runs. */
export function tagAlive(tag: string): boolean {
  const [pid, start] = tag.split(':')
  const now = startTime(Number(pid))
  return now !== undefined && now === start
}
