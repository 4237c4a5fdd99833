// A data dir: the SQLite index (catalog, counters, fleet facts), the chunk cache and its index,
// opened together. Used by the agent and by CLI commands that work on the data dir directly
// (import, ls, export, rm, fsck).
import fs from 'node:fs'
import path from 'node:path'
import { VmifsError } from './errors.js'
import { type Db, openDb } from './index/db.js'
import { Catalog } from './index/catalog.js'
import { ChunkStore } from './cache/chunk-store.js'
import { Counters } from './stats/counters.js'
import { native } from './native/index.js'
import type { Manifest } from './manifests/manifest.js'
import type { ImageUsage } from './stats/stats.js'

export interface DataDirOptions {
  capacityBytes: number
  onEvict?: (chunks: number, bytes: number) => void
  /** the filesystem filled: the cache keeps at most `effectiveBytes` until space frees (once an episode) */
  onDiskFull?: (effectiveBytes: number) => void
  /** open a data dir of the layout before pack files too (fsck, which converts it) */
  convert?: boolean
}

export class DataDir {
  readonly db: Db
  readonly catalog: Catalog
  readonly store: ChunkStore
  readonly counters: Counters
  readonly leftovers: number
  private readonly lockFd: number

  private constructor(
    readonly dir: string,
    opts: DataDirOptions
  ) {
    // every process with the data dir open holds the lock shared: exclusively() knows it is alone
    this.lockFd = fs.openSync(path.join(dir, 'lock'), 'a')
    native().flock(this.lockFd, 0)
    try {
      this.db = openDb(path.join(dir, 'index.sqlite'))
    } catch (err) {
      fs.closeSync(this.lockFd)
      throw err
    }
    let store: ChunkStore | undefined
    try {
      this.counters = new Counters(this.db)
      store = new ChunkStore(dir, this.db, {
        capacityBytes: opts.capacityBytes,
        onEvict: (n, b) => {
          this.counters.add('cache.evictions', n)
          opts.onEvict?.(n, b)
        },
        onDiskFull: opts.onDiskFull
      })
      this.store = store
      this.catalog = new Catalog(this.db, store)
      this.leftovers = store.open(opts.convert ?? false).leftovers
    } catch (err) {
      try {
        store?.close()
      } catch {
        // the error that stopped the open is the one to report
      }
      this.db.close()
      fs.closeSync(this.lockFd)
      throw err
    }
  }

  /**
   * Runs fn if no other process (or other DataDir of this one) has the data dir open, holding it
   * alone meanwhile; undefined without running it otherwise.
   */
  exclusively<T>(fn: () => T): T | undefined {
    // flock converts a lock by dropping it first: whatever happens, it is shared again after
    const alone = native().flock(this.lockFd, 2)
    try {
      return alone ? fn() : undefined
    } finally {
      native().flock(this.lockFd, 0)
    }
  }

  static open(dir: string, opts: DataDirOptions): DataDir {
    try {
      fs.mkdirSync(dir, { recursive: true })
      fs.accessSync(dir, fs.constants.W_OK | fs.constants.R_OK)
    } catch (err) {
      throw new VmifsError(
        'DATA_DIR_UNUSABLE',
        `data dir ${dir} is not usable: ${(err as Error).message}`,
        { dir },
        { cause: err }
      )
    }
    if (!fs.statSync(dir).isDirectory())
      throw new VmifsError('DATA_DIR_UNUSABLE', `data dir ${dir} is not a directory`, { dir })
    return new DataDir(dir, opts)
  }

  /** Bytes of the manifest's distinct data chunks that the local cache holds. */
  cachedBytes(m: Manifest): number {
    return this.chunkBytes(m).cachedBytes
  }

  /** Bytes of the image's distinct data chunks, and of those the ones held in the cache. */
  chunkBytes(m: Manifest): { uniqueBytes: number; cachedBytes: number } {
    const chunks = [...m.distinctChunks()]
    const held = this.store.holds(chunks.map(([hex]) => Buffer.from(hex, 'hex')))
    let uniqueBytes = 0
    let cachedBytes = 0
    chunks.forEach(([, size], i) => {
      uniqueBytes += size
      if (held[i]) cachedBytes += size
    })
    return { uniqueBytes, cachedBytes }
  }

  /** Each image's size, data and cached bytes; the cache's pinned bytes and chunk count (the stats file's). */
  usage(): {
    images: ImageUsage[]
    pinnedBytes: number
    chunks: number
  } {
    const images = this.catalog.listImages().map(r => ({
      name: r.name,
      digest: r.digest,
      size: r.size,
      dataBytes: r.dataBytes,
      ...this.chunkBytes(this.catalog.manifest(r.digest)!)
    }))
    return { images, ...this.store.totals() }
  }

  /** Collects chunks that no image refers to and that are not pinned. */
  collect(hashes: Buffer[]): { chunks: number; bytes: number } {
    // one pass: the entries go in one transaction, adjacent records in one hole
    const held = this.store.holds(hashes)
    const gone = hashes.filter((_, i) => held[i]).map(h => h.toString('hex'))
    const bytes = this.store.discard(gone)
    return { chunks: gone.length, bytes }
  }

  close(): void {
    try {
      this.store.close()
    } catch {
      // best effort: a pack left unsealed is sealed by the next process that opens the data dir,
      // and access times only order eviction
    }
    try {
      this.counters.flush()
    } catch {
      // best effort: losing the last counter deltas is better than leaving the database open
    }
    this.db.close()
    fs.closeSync(this.lockFd)
  }
}
