// Content-addressed chunk cache, kept in append-only pack files.
// Layout: packs/<id>.pack, chunks' bytes appended one after the other (a run an import writes
// from its read buffer starts at the next 4 KiB boundary: native/pack_writer.c), and the index,
// store.mdb (LMDB, native/chunk_index.c): an entry per chunk saying where its bytes are, their
// CRC32C, when it was last used and whether it is pinned; a row per pack; the totals.
// Contract:
// - Verified before readable: bytes are hashed (or were, by the caller) before they are written,
//   and a chunk is readable only once its row exists, which is written after its bytes. Every
//   read checks the bytes' CRC against the row's (and hashes them where it does not bear them
//   out): wrong bytes are never returned — a corrupt or vanished chunk is dropped and the read
//   fails with CHUNK_HASH_MISMATCH / CHUNK_MISSING. fsck hashes them all.
// - kill -9 loses nothing recorded: entries are written after the bytes they point at, in
//   transactions a killed process leaves nothing of, and a pack whose writer died is cut back to
//   the end of its last recorded chunk.
// - Each process that writes appends to a pack of its own (its row names the writer), so several processes
//   (the agent, CLI commands) share one data dir without locks; a pack is sealed when its writer
//   closes it or is found dead, and deleted once no entry points into it.
// - Capacity is enforced by evicting unpinned entries, least recently used first: an evicted
//   chunk's bytes are freed at once by punching a hole in its pack (the file keeps its size).
//   Access times are kept in memory and persisted in batches. Pinned chunks (of images imported
//   on this host) are never evicted.
// The data dirs of the layout before packs (a file per chunk under chunks/) are refused with
// DATA_DIR_OLD_LAYOUT until `vmifs fsck` converts them (src/cache/fsck.ts). The index of the
// versions before store.mdb (the SQLite tables cache_entries and packs) is moved into it by the
// first process that opens the data dir (moveSqliteIndex).
// The index also counts, for the catalog, how many local images refer to each chunk and how many
// of those are pinned: eviction takes chunks no image refers to first, and an entry is pinned
// exactly when a pinned image holds its chunk (both change in one transaction).
import fs from 'node:fs'
import path from 'node:path'
import type { Db } from '../index/db.js'
import { VmifsError } from '../errors.js'
import { blake3 } from '../util/hash.js'
import { type PackWriter, native } from '../native/index.js'
import type { ChunkRun } from '../manifests/chunker.js'
import { readExactlySync } from '../util/files.js'

export interface ChunkStoreOptions {
  capacityBytes: number
  /** called with the number of chunks and bytes evicted */
  onEvict?: (chunks: number, bytes: number) => void
  /** the filesystem filled (once an episode): the cache now keeps at most `effectiveBytes` */
  onDiskFull?: (effectiveBytes: number) => void
}

/**
 * What a full disk's episode frees beyond the write that failed, for the index's pages and the
 * writes under way: 64 MiB, or an eighth of what the cache holds where that is less (a small disk).
 */
export const DISK_SLACK_BYTES = 64 * 1024 * 1024
function slack(held: number): number {
  return Math.min(DISK_SLACK_BYTES, Math.floor(held / 8))
}
/** How often, while the disk is full, the free space is looked at again (the capacity may rise). */
const DISK_RECHECK_MS = 5000
/**
 * Space a pack write always leaves free on the filesystem: the index (LMDB) and the metadata
 * table (SQLite) must never meet a full disk. An LMDB commit that fails for want of space leaves
 * its environment unsafe to use (a later read of it crashed the agent, SIGSEGV in mdb_get), so the
 * packs give way first: a write that would eat into this reserve makes room before it is made.
 */
export const DISK_RESERVE_BYTES = 8 * 1024 * 1024
/** How often the free space is looked at anyway, on a disk that is far from full. */
const FREE_RECHECK_MS = 1000

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
/**
 * putAsync() records what arrived within this long in one transaction. Each commit syncs the
 * index file, ~3 ms on this project's machines, on the thread that serves reads: recorded per
 * tick, the chunks of a range read as they arrive cost a commit each (measured replaying a boot
 * from the origin store: 1.6 s of the agent's 5 s in commits). Readers never wait for the record:
 * they have the bytes already.
 */
export const RECORD_DELAY_MS = 50
/** ... or once this many wait */
const RECORD_MAX = 4096
/** A pack is sealed and a new one started once it reaches this size. */
const PACK_MAX_BYTES = 1024 * 1024 * 1024

/** Access-time records kept before they are flushed anyway. */
const TOUCHED_MAX = 65536
/** Entries a page when the index is walked (eviction, fsck). */
const PAGE = 1024

/** An entry's flags in the index (native/chunk_index.c). */
const PINNED = 1

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

/** The index's 56-byte records (native/chunk_index.c; the FUSE session reads the first 52 bytes). */
function recordAt(b: Buffer, i: number): EntryRow & { crc: number; flags: number; atime: number } {
  const at = i * LOCATION_BYTES
  return {
    hash: b.subarray(at, at + 32),
    pack: b.readUInt32LE(at + 32),
    size: b.readUInt32LE(at + 36),
    off: Number(b.readBigUInt64LE(at + 40)),
    crc: b.readUInt32LE(at + 48),
    flags: b.readUInt32LE(at + 52),
    // records of ixLru carry the access time here instead of crc and flags
    atime: b.readDoubleLE(at + 48)
  }
}

/** Rows written as records of `size` bytes each (`write`), handed to `load` PAGE records at a time. */
function inPages<R>(
  rows: Iterable<R>,
  size: number,
  write: (out: Buffer, at: number, row: R) => void,
  load: (records: Buffer) => void
): void {
  let out = Buffer.alloc(PAGE * size)
  let n = 0
  for (const r of rows) {
    write(out, n * size, r)
    if (++n === PAGE) {
      load(out)
      out = Buffer.alloc(PAGE * size)
      n = 0
    }
  }
  if (n > 0) load(out.subarray(0, n * size))
}

export class ChunkStore {
  readonly packDir: string
  private readonly listeners = new Set<ChunkEvents>()
  /** Reads since the last flush of access times: runs of a manifest's entries, or single chunks (touch). */
  private touched: Touched[] = []
  private size = 0
  private readonly ix: unknown
  private evicting = false
  /** free bytes statfs last gave, when, and bytes written to packs since (freeBytes) */
  private freeSeen = 0
  private freeAt = 0
  private written = 0
  /** the capacity in force: the configured one, or less while the disk is full */
  private capacity: number
  private diskFull = false
  private diskCheckedAt = 0
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
  private recordTimer: NodeJS.Timeout | undefined
  private readonly me = processTag(process.pid)

  constructor(
    readonly dataDir: string,
    private readonly db: Db,
    private readonly opts: ChunkStoreOptions
  ) {
    this.packDir = path.join(dataDir, 'packs')
    this.ix = native().ixOpen(path.join(dataDir, 'store.mdb'))
    this.capacity = opts.capacityBytes
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
   * Creates the folder, moves an index of the versions before store.mdb in, seals the packs of
   * writers that died (cut back to their last recorded chunk), deletes sealed packs nothing points
   * into, loads the size. Refuses a data dir of the old layout unless `convert` (fsck, which
   * converts it).
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
    this.moveSqliteIndex()
    let leftovers = 0
    for (const p of this.packRows()) {
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
        native().ixPackSet(this.ix, p.id, 0)
      }
      if (p.live <= 0) this.deletePacks([p.id])
    }
    this.refreshSize()
    return { leftovers }
  }

  /**
   * Moves the index of the versions before store.mdb (SQLite's cache_entries, packs and the
   * catalog's chunks) into it, then drops those tables; the entries without a CRC (migration 5)
   * get theirs first (fillCrcs).
   * A process killed midway leaves the tables, and the next one moves them again: the moved
   * entries are written over.
   */
  private moveSqliteIndex(): void {
    const has = this.db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'cache_entries'").get()
    if (has === undefined) return
    this.fillCrcs()
    const packs = this.db.prepare('SELECT id, writer, size, live FROM packs').all() as PackRow[]
    for (const p of packs) {
      // as open() does below for the rows it keeps: a dead writer's pack is cut back
      if (p.writer !== null && !tagAlive(p.writer)) {
        try {
          if (fs.statSync(this.packPath(p.id)).size > p.size) fs.truncateSync(this.packPath(p.id), p.size)
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
        }
      }
      // moved in sealed: their live counts and ends come from the entries (ixLoad)
      native().ixPackSet(this.ix, p.id, 1)
    }
    const rows = this.db
      .prepare('SELECT hash, size, atime, pinned, pack, off, crc FROM cache_entries')
      .iterate() as IterableIterator<{
      hash: Buffer
      size: number
      atime: number
      pinned: number
      pack: number | null
      off: number | null
      crc: number | null
    }>
    inPages(
      rows,
      64,
      (out, at, r) => {
        r.hash.copy(out, at, 0, 32)
        out.writeUInt32LE(r.pack ?? 0, at + 32)
        out.writeUInt32LE(r.size, at + 36)
        out.writeBigUInt64LE(BigInt(r.off ?? 0), at + 40)
        out.writeDoubleLE(r.atime, at + 48)
        out.writeUInt32LE(r.crc ?? 0, at + 56)
        out.writeUInt32LE((r.pinned === 1 ? PINNED : 0) | (r.crc === null ? 2 : 0), at + 60)
      },
      records => native().ixLoad(this.ix, records)
    )
    // the catalog's counts of the chunks (its table chunks) come along: the index pins by them
    const refs = this.db.prepare('SELECT hash, size, refs, pins FROM chunks').iterate() as IterableIterator<{
      hash: Buffer
      size: number
      refs: number
      pins: number
    }>
    inPages(
      refs,
      44,
      (out, at, r) => {
        r.hash.copy(out, at, 0, 32)
        out.writeUInt32LE(r.size, at + 32)
        out.writeUInt32LE(r.refs, at + 36)
        out.writeUInt32LE(r.pins, at + 40)
      },
      records => native().ixLoadRefs(this.ix, records)
    )
    this.db.exec('DROP TABLE IF EXISTS cache_entries; DROP TABLE IF EXISTS packs; DROP TABLE IF EXISTS chunks')
  }

  /**
   * Gives the entries recorded before entries kept their chunk's CRC (migration 5) theirs: from
   * the record's header where it names the chunk, else by hashing the bytes (a first-format
   * record); an entry whose bytes are gone or are not its chunk is dropped. Reads one header an
   * entry, once per data dir (SQLite, before the entries move to store.mdb).
   */
  private fillCrcs(): void {
    const next = this.db.prepare(
      'SELECT hash, size, pack, off FROM cache_entries WHERE crc IS NULL AND pack IS NOT NULL LIMIT 4096'
    )
    const setCrc = this.db.prepare('UPDATE cache_entries SET crc = ? WHERE hash = ?')
    const drop = this.db.prepare('DELETE FROM cache_entries WHERE hash = ?')
    for (;;) {
      const rows = next.all() as EntryRow[]
      if (rows.length === 0) return
      const crcs = rows.map(r => {
        try {
          return recordCrc(this.fdOf(r.pack), r)
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
          return undefined
        }
      })
      this.db.transaction(() =>
        rows.forEach((r, i) => (crcs[i] === undefined ? drop.run(r.hash) : setCrc.run(crcs[i], r.hash)))
      )()
    }
  }

  /** The index's handle, for native calls on it (tests that damage it as a crash or bit rot would). */
  get index(): unknown {
    return this.ix
  }

  refreshSize(): void {
    this.size = native().ixTotals(this.ix)[0]!
  }

  get sizeBytes(): number {
    return this.size
  }
  get capacityBytes(): number {
    return this.opts.capacityBytes
  }
  /** The capacity in force: capacityBytes, or what fits while the filesystem is full. */
  get effectiveCapacityBytes(): number {
    return this.capacity
  }

  /**
   * Runs a write of `need` bytes; when the filesystem is full (ENOSPC), makes room once and runs
   * it again. Making room evicts unpinned chunks, least recently used first, down to what is held
   * less `need` and a slack (DISK_SLACK_BYTES, less on a small disk), and keeps the cache at most
   * there (the effective capacity) while the disk stays full. A write that fails again throws.
   * Retrying is safe: a pack write that fails leaves the pack's end where it was, and a failed
   * index transaction changes nothing.
   */
  private whileRoom<T>(need: number, write: () => T): T {
    const free = this.freeBytes(need)
    if (free !== undefined && free < need + DISK_RESERVE_BYTES) this.makeRoom(need + DISK_RESERVE_BYTES - free)
    try {
      const r = write()
      this.written += need
      return r
    } catch (err) {
      if (!this.isDiskFull(err)) throw err
      this.makeRoom(need)
      const r = write()
      this.written += need
      return r
    }
  }

  /** Evicts `deficit` bytes and a slack, and keeps the cache there while the disk stays full. */
  private makeRoom(deficit: number): void {
    const cap = Math.max(0, this.size - deficit - slack(this.size))
    if (cap < this.capacity) this.capacity = cap
    this.diskCheckedAt = Date.now()
    this.evict(this.capacity, true)
    this.freeAt = 0 // look again after the holes are punched
    if (!this.diskFull) {
      this.diskFull = true
      this.opts.onDiskFull?.(this.capacity)
    }
  }

  /**
   * The filesystem's free bytes, as last looked at less what was written since; looked at again
   * when that comes near `need` and the reserve, or a second has passed. Undefined if statfs fails.
   */
  private freeBytes(need: number): number | undefined {
    const now = Date.now()
    let est = this.freeSeen - this.written
    if (now - this.freeAt >= FREE_RECHECK_MS || est < need + 4 * DISK_RESERVE_BYTES) {
      const free = this.statFree()
      if (free === undefined) return undefined
      this.freeSeen = free
      this.freeAt = now
      this.written = 0
      est = this.freeSeen
    }
    return est
  }

  /**
   * Whether a write failed for want of space: ENOSPC, or EIO from a write the filesystem cut
   * short (LMDB reports a short page write so) while it has next to nothing free.
   */
  private isDiskFull(err: unknown): boolean {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOSPC') return true
    if (code !== 'EIO') return false
    const free = this.statFree()
    return free !== undefined && free < 4 * 1024 * 1024
  }

  /** The bytes the packs' filesystem has free for us now (statfs), or undefined if it cannot say. */
  private statFree(): number | undefined {
    try {
      const st = fs.statfsSync(this.packDir)
      return st.bavail * st.bsize
    } catch {
      return undefined
    }
  }

  /**
   * While the disk is full, looks at its free space now and then: the effective capacity rises
   * with it (to the configured one, which ends the episode: the next ENOSPC is told again).
   */
  private recheckDisk(): void {
    const now = Date.now()
    if (!this.diskFull || now - this.diskCheckedAt < DISK_RECHECK_MS) return
    this.diskCheckedAt = now
    const free = this.statFree()
    if (free === undefined) return
    const fits = Math.max(this.capacity, this.size + free - 2 * slack(this.size) - DISK_RESERVE_BYTES)
    this.capacity = Math.min(this.opts.capacityBytes, fits)
    if (this.capacity >= this.opts.capacityBytes) this.diskFull = false
  }

  packPath(id: number): string {
    return path.join(this.packDir, `${id}.pack`)
  }

  has(hashHex: string): boolean {
    return native().ixHolds(this.ix, Buffer.from(hashHex, 'hex'))[0] === 1
  }

  /** Which of the chunks the store holds, asked in one transaction. */
  holds(hashes: Buffer[]): boolean[] {
    if (hashes.length === 0) return []
    const h = native().ixHolds(this.ix, hashes.length === 1 ? hashes[0]! : Buffer.concat(hashes))
    const out = new Array<boolean>(hashes.length)
    for (let i = 0; i < hashes.length; i++) out[i] = h[i] === 1
    return out
  }

  /** holds() for hashes in one buffer (32 bytes each): 1 where the store holds the chunk. */
  holdsMany(hashes: Buffer): Uint8Array {
    return native().ixHolds(this.ix, hashes)
  }

  /** Where the chunk's bytes are, if the store holds it. */
  locate(hashHex: string): ChunkLocation | undefined {
    const r = native().ixLocate(this.ix, Buffer.from(hashHex, 'hex'))
    if (r.length === 0) return undefined
    const e = recordAt(r, 0)
    return { pack: e.pack, off: e.off, size: e.size, crc: e.crc }
  }

  /** Whether the store holds the chunk pinned (undefined: it does not hold it). */
  isPinned(hashHex: string): boolean | undefined {
    const r = native().ixLocate(this.ix, Buffer.from(hashHex, 'hex'))
    return r.length === 0 ? undefined : (recordAt(r, 0).flags & PINNED) !== 0
  }

  /**
   * The chunks of `hashes` (32 bytes each, concatenated) the store holds, as location records
   * (LOCATION_BYTES each): what the FUSE session reads them with.
   */
  locateMany(hashes: Buffer, from = 0, to = hashes.length / 32): Buffer {
    return native().ixLocate(this.ix, hashes, from, to)
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
   * put() for the fetch path: chunks stored within RECORD_DELAY_MS of each other are recorded in
   * one transaction. Resolves once the chunk is recorded; false when it was already there.
   */
  async putAsync(hashHex: string, data: Buffer, opts?: { verified?: boolean; pin?: boolean }): Promise<boolean> {
    const key = this.admit(hashHex, data, opts)
    if (key === undefined) return false
    const [loc] = this.append([{ hash: key, data }])
    return await new Promise<boolean>((resolve, reject) => {
      this.toRecord.push({ hash: key, loc: loc!, pin: opts?.pin ?? false, resolve, reject })
      if (this.toRecord.length >= RECORD_MAX) this.recordPending()
      else this.recordTimer ??= setTimeout(() => this.recordPending(), RECORD_DELAY_MS)
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
    if (native().ixHolds(this.ix, key)[0] !== 1) return key
    if (opts?.pin === true) native().ixSetPinned(this.ix, key, true)
    this.touch(hashHex)
    return undefined
  }

  private recordPending(): void {
    clearTimeout(this.recordTimer)
    this.recordTimer = undefined
    const batch = this.toRecord
    this.toRecord = []
    if (batch.length === 0) return
    try {
      const { fresh } = this.recordRows(
        batch.map(e => e.hash),
        batch.map(e => e.loc),
        batch.map(e => e.pin)
      )
      batch.forEach((e, i) => e.resolve(fresh[i] === 1))
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
      let bytes = 0
      for (const b of bufs) bytes += b.length
      const places = this.whileRoom(bytes, () => native().packAppend(w.w, bufs, opts?.bulk ?? false, crcs))
      for (let i = 0; i < n; i++)
        locs.push({ pack: w.id, off: places[2 * i]!, size: bufs[i]!.length, crc: places[2 * i + 1]! })
      w.tail = places[2 * n - 2]! + bufs[n - 1]!.length
    }
    return locs
  }

  /**
   * append() for chunks of a chunker's run (an import: bulk, with their CRCs taken in the pass):
   * chunks idx[0..] of the run, their bytes in `piece` or the run's spill. Returns the pack and
   * [offset, CRC32C] a chunk.
   */
  appendRun(run: ChunkRun, piece: Buffer, idx: Uint32Array): { pack: number; places: Float64Array } {
    let w = this.writer
    if (!w || w.tail >= PACK_MAX_BYTES) w = this.startPack()
    const crcs = new Uint32Array(idx.length)
    for (let k = 0; k < idx.length; k++) crcs[k] = run.crcs[idx[k]!]!
    let bytes = 0
    for (let k = 0; k < idx.length; k++) bytes += run.lengths[idx[k]!]!
    const places = this.whileRoom(bytes, () =>
      native().packAppendRun(w.w, piece, run.spill, run.offs, run.lengths, run.flags, idx, true, crcs)
    )
    if (idx.length > 0) w.tail = places[2 * idx.length - 2]! + run.lengths[idx[idx.length - 1]!]!
    return { pack: w.id, places }
  }

  /** A new pack of this process's, replacing (and sealing) the one it wrote to. */
  private startPack(): Writer {
    if (this.writer) this.sealWriter()
    const id = native().ixPackNew(this.ix, this.me)
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
    const [live] = native().ixPackSet(this.ix, w.id, 0)
    if (live <= 0) this.deletePacks([w.id])
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
    for (const f of fresh) chunks += f
    return { chunks, bytes }
  }

  /**
   * The index's transaction for record(): a chunk the store holds already keeps its entry (not
   * fresh), pinned where asked; a new one is pinned where asked or where a pinned image holds it.
   */
  private recordRows(
    hashes: Buffer[],
    locs: ChunkLocation[],
    pins: boolean | boolean[]
  ): { fresh: Uint8Array; bytes: number } {
    const n = hashes.length
    const h = Buffer.allocUnsafe(n * 32)
    const at = new Float64Array(n * 4)
    for (let i = 0; i < n; i++) {
      hashes[i]!.copy(h, i * 32, 0, 32)
      const l = locs[i]!
      at[4 * i] = l.pack
      at[4 * i + 1] = l.off
      at[4 * i + 2] = l.size
      at[4 * i + 3] = l.crc
    }
    return this.recordMany(h, at, pins)
  }

  /**
   * record() for chunks given as arrays: hashes (32 bytes each) and pack, offset, size, CRC32C a
   * chunk. A chunk the store holds already keeps its entry (not fresh), pinned where asked; a new
   * one is pinned where asked or where a pinned image holds it (the index's counts say). Returns 1
   * a chunk that was new.
   */
  recordMany(h: Buffer, at: Float64Array, pins: boolean | boolean[]): { fresh: Uint8Array; bytes: number } {
    const n = h.length / 32
    const pin = new Uint8Array(n)
    if (typeof pins === 'boolean') pin.fill(pins ? 1 : 0)
    else for (let i = 0; i < n; i++) pin[i] = pins[i]! ? 1 : 0
    const fresh = this.whileRoom(0, () => native().ixRecord(this.ix, h, at, pin, Date.now()))
    let bytes = 0
    for (let i = 0; i < n; i++) if (fresh[i] === 1) bytes += at[4 * i + 2]!
    this.size += bytes
    this.recheckDisk()
    if (this.size > this.capacity) this.evict()
    // subscribers are told in hex; nobody listens to an import's store
    if (this.listeners.size > 0) {
      const stored: StoredChunk[] = []
      for (let i = 0; i < n; i++)
        if (fresh[i] === 1)
          stored.push({
            hash: h.toString('hex', i * 32, i * 32 + 32),
            pack: at[4 * i]!,
            off: at[4 * i + 1]!,
            size: at[4 * i + 2]!,
            crc: at[4 * i + 3]!
          })
      this.emit('stored', stored)
    }
    return { fresh, bytes }
  }

  /**
   * Marks existing entries pinned (an import does this before its image row exists, and counts
   * them with the image: reconcilePins unpins them if it fails).
   */
  pinMany(hashes: Buffer[] | Buffer): void {
    const h = Buffer.isBuffer(hashes) ? hashes : Buffer.concat(hashes)
    if (h.length > 0) native().ixSetPinned(this.ix, h, true)
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
      this.repairCrc(hashHex, loc, crc)
      loc.crc = crc
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

  /** Persists access times gathered since the last flush, in one transaction. Returns the entries written. */
  flushAtimes(): number {
    if (this.touched.length === 0) return 0
    const batch = this.touched
    this.touched = []
    let n = 0
    for (const r of batch) for (let i = r.first; i <= r.last; i++) if (r.zero?.[i] !== 1) n++
    const h = Buffer.allocUnsafe(n * 32)
    const ats = new Float64Array(n)
    let k = 0
    for (const r of batch)
      for (let i = r.first; i <= r.last; i++) {
        if (r.zero?.[i] === 1) continue
        r.hashes.copy(h, k * 32, i * 32, i * 32 + 32)
        ats[k++] = r.at
      }
    return native().ixTouch(this.ix, h, ats)
  }

  /** Deletes chunks (collected, or found corrupt or missing by fsck): entries, then bytes. Returns the bytes. */
  discard(hashes: string[]): number {
    return this.forget(hashes)
  }

  /**
   * Records chunk files of the old layout (fsck, converting them) at the places in packs they were
   * moved to: an entry of that layout (pack 0) gets the place, a file without one a new entry;
   * the bytes were verified by the caller. Returns how many.
   */
  adopt(chunks: StoredChunk[]): number {
    let n = 0
    const fresh: StoredChunk[] = []
    for (const c of chunks)
      if (native().ixSetEntry(this.ix, Buffer.from(c.hash, 'hex'), c.pack, c.off, c.crc, 0)) n++
      else fresh.push(c)
    return (
      n +
      this.record(
        fresh.map(c => ({ hash: Buffer.from(c.hash, 'hex') })),
        fresh,
        false
      ).chunks
    )
  }

  /** Corrects the CRC an entry keeps (its bytes, at `loc`, were found sound and the CRC not theirs). */
  repairCrc(hashHex: string, loc: ChunkLocation, crc: number): void {
    native().ixSetEntry(this.ix, Buffer.from(hashHex, 'hex'), loc.pack, loc.off, crc, -1)
  }

  /** Makes a pack row for a pack file the index lost (fsck), sealed and empty. */
  ensurePackRow(id: number): void {
    native().ixPackSet(this.ix, id, 1)
  }

  /**
   * Sets every pack's live count and recorded end from the entries, and deletes the sealed packs
   * nothing points into (fsck, after its repairs).
   */
  recount(): void {
    native().ixRecount(this.ix)
    const empty: number[] = []
    for (const r of this.packRows()) if (r.live === 0 && (r.writer === null || !tagAlive(r.writer))) empty.push(r.id)
    this.deletePacks(empty)
  }

  /** The pack rows: id, writer (null once sealed). */
  packs(): Array<{ id: number; writer: string | null }> {
    return this.packRows().map(p => ({ id: p.id, writer: p.writer }))
  }

  private packRows(): PackRow[] {
    return native()
      .ixPacks(this.ix)
      .map(([id, size, live, writer]) => ({ id, size, live, writer }))
  }

  /**
   * Deletes entries and frees their bytes: the entries go first (in one transaction), subscribers
   * hear of it, then the holes are punched; a pack left with no entries is deleted once sealed.
   * Returns the bytes forgotten.
   */
  private forget(hashes: string[] | Buffer, punched = false): number {
    if (hashes.length === 0) return 0
    const h = Buffer.isBuffer(hashes) ? hashes : Buffer.from(hashes.join(''), 'hex')
    const [removed, empty] = native().ixForget(this.ix, h)
    const rows: EntryRow[] = []
    for (let i = 0; i < removed.length / LOCATION_BYTES; i++) rows.push(recordAt(removed, i))
    return this.release(rows, [...empty], punched)
  }

  private release(rows: EntryRow[], empty: number[], punched = false): number {
    if (rows.length === 0) return 0
    let bytes = 0
    const gone: string[] = []
    for (const r of rows) {
      bytes += r.size
      gone.push(r.hash.toString('hex'))
    }
    this.size -= bytes
    this.emit('gone', gone)
    if (!punched) this.punch(rows.filter(r => r.pack !== 0))
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
      native().ixPackSet(this.ix, id, 2)
    }
    this.emit('packsDeleted', ids)
  }

  /**
   * The unpinned entries least recently used first, a page at a time; with `unreferenced`, only
   * those no local image refers to.
   */
  private *lruPages(unreferenced: boolean): Generator<Array<EntryRow & { atime: number }>> {
    let after: Buffer | undefined
    do {
      const [page, next] = native().ixLru(this.ix, after, PAGE, unreferenced)
      const rows: Array<EntryRow & { atime: number }> = []
      for (let i = 0; i < page.length / LOCATION_BYTES; i++) rows.push(recordAt(page, i))
      if (rows.length > 0) yield rows
      after = next
    } while (after !== undefined)
  }

  /**
   * Evicts unpinned chunks until the cache is under `target` bytes (default: capacity).
   * Chunks no image refers to go before referenced ones; within each, least recently used first.
   * `diskFull`: the filesystem has no room for the index's own transaction, so each chunk's bytes
   * are punched out before its entry goes (a read of an entry whose bytes are gone finds them
   * wrong by their CRC, and drops it), and the access times not flushed yet wait.
   */
  evict(target = this.capacity, diskFull = false): { chunks: number; bytes: number } {
    if (this.evicting) return { chunks: 0, bytes: 0 }
    this.evicting = true
    let chunks = 0
    let bytes = 0
    try {
      if (!diskFull) this.flushAtimes()
      // chunks no image refers to first, then the least recently used of the rest
      for (const unreferenced of [true, false]) {
        if (this.size <= target) break
        for (const rows of this.lruPages(unreferenced)) {
          const take: Buffer[] = []
          let over = this.size - target
          for (const r of rows) {
            if (over <= 0) break
            take.push(r.hash)
            over -= r.size
          }
          const before = this.size
          if (diskFull) this.punch(rows.slice(0, take.length).filter(r => r.pack !== 0))
          bytes += this.forget(Buffer.concat(take), diskFull)
          chunks += take.length
          if (this.size <= target || this.size === before) break
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
    let over = this.size + bytes - this.capacity
    if (over <= 0) return true
    this.flushAtimes()
    const seen = new Set<string>()
    for (const unreferenced of [true, false])
      for (const rows of this.lruPages(unreferenced))
        for (const r of rows) {
          const hex = r.hash.toString('hex')
          if (seen.has(hex)) continue
          seen.add(hex)
          if (r.atime >= since) return false
          over -= r.size
          if (over <= 0) return true
        }
    return false
  }

  /** The pinned bytes and the number of chunks held. */
  totals(): { pinnedBytes: number; chunks: number } {
    const t = native().ixTotals(this.ix)
    return { pinnedBytes: t[2]!, chunks: t[1]! }
  }

  /** Entries: hash hex and location. */
  *entries(): Generator<StoredChunk> {
    let after: Buffer | undefined
    for (;;) {
      const page = native().ixEntries(this.ix, after, PAGE)
      const n = page.length / LOCATION_BYTES
      if (n === 0) return
      for (let i = 0; i < n; i++) {
        const r = recordAt(page, i)
        yield { hash: r.hash.toString('hex'), size: r.size, pack: r.pack, off: r.off, crc: r.crc }
      }
      after = Buffer.from(page.subarray((n - 1) * LOCATION_BYTES, (n - 1) * LOCATION_BYTES + 32))
    }
  }

  /** Forces the chunks appended so far to disk (packs written before were synced when sealed). */
  sync(): void {
    if (this.writer) native().packSync(this.writer.w)
  }

  /** Persists access times, seals this process's pack, closes the descriptors and the index (the data dir closes). */
  close(): void {
    this.recordPending() // appended and waiting for their transaction: kept (it never throws)
    try {
      this.flushAtimes()
    } finally {
      try {
        this.sealWriter()
      } finally {
        for (const fd of this.fds.values()) fs.closeSync(fd)
        this.fds.clear()
        native().ixClose(this.ix)
      }
    }
  }

  /** Re-derives every entry's pinned flag from the counts of pinned images (after a crash mid-import, and fsck). */
  reconcilePins(): number {
    return native().ixReconcilePins(this.ix)
  }

  /**
   * The catalog's counts of distinct chunks change: +1/-1 images referring to each, +1/-1 pinned
   * ones; sizes where the chunks may be new. Entries are pinned and unpinned with them, in one
   * transaction. Returns a flag a chunk: 1 no image refers to it any more, 2 no pinned one holds it.
   */
  countRefs(hashes: Buffer, sizes: Float64Array | undefined, refs: number, pins: number, entries = true): Uint8Array {
    return native().ixRefs(this.ix, hashes, sizes, refs, pins, entries)
  }

  /** The counts of the chunks: size, images referring to it, pinned ones (0, 0, 0 for none). */
  refCounts(hashes: Buffer): Float64Array {
    return native().ixRefsGet(this.ix, hashes)
  }

  /**
   * The counts made again from the images (fsck): each image's distinct chunks one after the
   * other, with their sizes and whether that image is pinned. Returns the rows.
   */
  rebuildRefs(hashes: Buffer, sizes: Float64Array, pinned: Uint8Array): number {
    return native().ixRefsRebuild(this.ix, hashes, sizes, pinned)
  }
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
 * length u32, offset u64, CRC32C u32, 4 bytes the session does not read (the index's records
 * keep the entry's flags there); little-endian.
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
