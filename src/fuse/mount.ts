// The read-only FUSE filesystem:   /images/<name>   /by-digest/<digest>   /.stats
// Served by native threads (native/fuse_session.c, the kernel's protocol on /dev/fuse, no libfuse):
// lookups, attributes, listings and reads of cached chunks are answered there, on every core,
// without entering JavaScript: the native side reads a chunk from its pack file and hashes it
// whole before serving any of it. This side tells it where the chunks of each opened image are
// (from the chunk store, then as chunks are stored and evicted) and answers what needs the agent:
// reads that touch a chunk the native side cannot serve (not cached: fetched by the image reader;
// or its bytes there were wrong), the first open of an image (its manifest), every open of .stats
// (a fresh snapshot), and a lookup or listing while the image list may be behind the catalog.
// Contract: every request handed here is answered exactly once — bytes, or an errno after
// readTimeoutMs at the latest — and nothing throws back into the native side; the reason for an
// error is logged. Reads served natively come back as events (flushEvents) for statistics, usage
// traces, read-ahead and the cache's access times; a stats snapshot flushes them first, so a read
// that returned is counted. Images never change, so their pages stay in the kernel's page cache
// across opens; .stats is read with direct I/O.
import type { Logger } from '../util/log.js'
import { type FuseSession, native } from '../native/index.js'
import { VmifsError } from '../errors.js'
import type { Manifest } from '../manifests/manifest.js'
import { EIO, ENOENT, ETIMEDOUT, errnoOf } from './errno.js'
import { quitHolder, startHolder } from './holder.js'
import { readaheadFile } from './mountpoint.js'
import { type ChunkStore, LOCATION_BYTES, type StoredChunk, writeLocation } from '../cache/chunk-store.js'

export interface ImageEntry {
  name: string
  digest: string
  size: number
  createdAt: number
}

/** What the mount shows; owned by the agent. */
export interface MountView {
  /** name -> image, current as of this call */
  images(): ReadonlyMap<string, ImageEntry>
  manifest(digest: string): Manifest
  read(name: string, m: Manifest, dst: Buffer, pos: number, len: number, stream: object): Promise<number>
  statsJson(): Buffer
  /** an image file was opened / released (usage sessions) */
  opened?(name: string, digest: string): void
  released?(name: string, digest: string): void
  /** a read the native side served from cached, verified chunks (accounting only) */
  served?(name: string, m: Manifest, pos: number, len: number, stream: object, ms: number): void
  /** the chunk cache: where chunks are, and its events, for what the native side may serve */
  chunks?: Pick<ChunkStore, 'subscribe' | 'locateMany'>
}

export interface MountOptions {
  /** the chunk store's folder of pack files, read by the native threads */
  packDir: string
  /** where the connection's holder listens (holder.ts); none: the mount dies with the agent */
  holderSocket?: string
  allowOther?: boolean
  /** the kernel's read-ahead for this mount (KiB); the agent reads ahead itself where it pays */
  readaheadKb?: number
  /** a read the agent has not answered by then fails with ETIMEDOUT (ms) */
  readTimeoutMs?: number
  /** native worker threads (default 4) */
  workers?: number
}

const REQ_READ = 1
const REQ_OPEN = 2
const REQ_OPEN_STATS = 3
const REQ_EVENTS = 4
const REQ_REFRESH = 5
const REQ_READ_STATS = 6
const EV_READ = 1
const EV_OPEN = 2
const EV_RELEASE = 3
const EVENT_SIZE = 40

/** .stats is padded to a fixed size (doubling if the JSON outgrows it): see padStats(). */
const STATS_MIN_SIZE = 64 * 1024
/**
 * The kernel's read-ahead for the mount by default (KiB): eight requests of max_pages in flight.
 * The native threads read packs from the disk directly (no read-ahead of their own), so the
 * mount's read-ahead is what keeps a sequential reader's disk busy.
 */
const DEFAULT_READAHEAD_KB = 8192
/**
 * Manifest entries located when an image is first opened: the first ones before the open is
 * answered (~25 ms: a reader's first requests find them), the rest a batch a turn.
 */
const LOCATE_FIRST = 16384
const LOCATE_BATCH = 32768

/** The inode of an image, as native/fuse_session.c derives it from the digest. */
function inoOf(digest: string): bigint {
  return BigInt('0x' + digest.slice(0, 16)) | (1n << 63n)
}

interface Open {
  image: ImageEntry
  stream: object
}

export class VmifsMount {
  private session: FuseSession | undefined
  private readonly byIno = new Map<bigint, ImageEntry>()
  private readonly manifests = new Map<string, Manifest>()
  private readonly opens = new Map<number, Open>()
  private lastImages: ReadonlyMap<string, ImageEntry> | undefined
  private statsSize = STATS_MIN_SIZE
  /** chunk hash -> where it is stored, or null: gone; the last word of this tick */
  private pendingChunks = new Map<string, StoredChunk | null>()
  private flushScheduled = false
  private unsubscribe: (() => void) | undefined
  /** requests handed to this side and not answered yet */
  private answering = 0

  constructor(
    readonly mountpoint: string,
    private readonly view: MountView,
    private readonly log: Logger,
    private readonly opts: MountOptions
  ) {}

  get openHandles(): number {
    return this.opens.size
  }

  async mount(): Promise<void> {
    const n = native()
    try {
      this.session = n.fuseMount(
        this.mountpoint,
        this.opts.packDir,
        {
          allowOther: this.opts.allowOther ?? true,
          maxReadahead: (this.opts.readaheadKb ?? DEFAULT_READAHEAD_KB) * 1024,
          workers: this.opts.workers ?? 4
        },
        (kind, unique, ino, fh, off, size) => this.request(kind, unique, ino, fh, off, size)
      )
    } catch (err) {
      throw new VmifsError(
        'MOUNT_FAILED',
        `cannot mount ${this.mountpoint}: ${(err as Error).message}`,
        { mountpoint: this.mountpoint },
        { cause: err }
      )
    }
    this.started()
    if (this.opts.holderSocket !== undefined) {
      try {
        const pid = await startHolder(this.opts.holderSocket, n.fuseFd(this.session))
        this.log.info({ pid, socket: this.opts.holderSocket }, 'the FUSE holder keeps the connection')
      } catch (err) {
        // the mount works without it; it just does not survive a crash of this agent
        this.log.warn({ err: (err as Error).message }, 'no FUSE holder: the mount dies with this agent')
      }
    }
  }

  /**
   * Serves a live connection taken from the holder (a takeover, or a restart after a crash):
   * nothing is mounted again and open files stay open. The kernel is asked to queue again every
   * request the previous agent had read and not answered: after a crash, those in hand; after a
   * handover, any it had read but not yet passed to its JavaScript when it stopped (it answers
   * the others before it detaches, and answers nothing after).
   */
  adopt(fd: number): void {
    this.session = native().fuseAdopt(
      fd,
      this.mountpoint,
      this.opts.packDir,
      { maxReadahead: (this.opts.readaheadKb ?? DEFAULT_READAHEAD_KB) * 1024, workers: this.opts.workers ?? 4 },
      (kind, unique, ino, fh, off, size) => this.request(kind, unique, ino, fh, off, size)
    )
    this.started(true)
  }

  private started(resend = false): void {
    // the kernel caps the mount's read-ahead at 128 KiB, whatever INIT says, until it is raised
    const ra = readaheadFile(this.mountpoint)
    if (ra) native().fuseSetReadahead(this.session!, ra, this.opts.readaheadKb ?? DEFAULT_READAHEAD_KB)
    this.syncImages()
    native().fuseStart(this.session!, resend)
    this.unsubscribe = this.view.chunks?.subscribe({
      stored: chunks => this.queue(chunks.map(c => [c.hash, c])),
      gone: hashes => this.queue(hashes.map(h => [h, null])),
      packsDeleted: ids => this.session && native().fusePacksChanged(this.session, ids)
    })
  }

  /** The catalog changed (the agent watches it): the native side gets the new image list. */
  imagesChanged(): void {
    this.syncImages()
  }

  /**
   * Hands the mount over to a successor that takes the connection from the holder: stops reading
   * requests, answers those already handed to this side (at most `timeoutMs`), then closes this
   * descriptor. The mount, the connection and open files stay.
   */
  async detach(timeoutMs = 10_000): Promise<void> {
    this.unsubscribe?.()
    const s = this.session
    if (!s) return
    const n = native()
    n.fuseStopWorkers(s)
    const t0 = Date.now()
    while (this.answering > 0 && Date.now() - t0 < timeoutMs) await new Promise(r => setTimeout(r, 10))
    if (this.answering > 0) this.log.warn({ requests: this.answering }, 'handing over with requests unanswered')
    this.flushEvents()
    this.session = undefined
    n.fuseDetach(s)
  }

  /**
   * Stop serving, unmount (lazily: open handles fail from then on), close the connection and let
   * the holder go: there is no successor.
   */
  async unmount(): Promise<void> {
    this.unsubscribe?.()
    const s = this.session
    if (!s) return
    this.flushEvents()
    this.session = undefined
    native().fuseUnmount(s)
    if (this.opts.holderSocket !== undefined) quitHolder(this.opts.holderSocket)
    await Promise.resolve()
  }

  /** Accounts for the reads served natively so far (a stats snapshot calls this first). */
  flushEvents(): void {
    const s = this.session
    if (!s) return
    const buf = native().fuseDrainEvents(s)
    for (let at = 0; at + EVENT_SIZE <= buf.length; at += EVENT_SIZE) {
      const type = buf[at]!
      const len = buf.readUInt32LE(at + 4)
      const ino = buf.readBigUInt64LE(at + 8)
      const fh = Number(buf.readBigUInt64LE(at + 16))
      const off = Number(buf.readBigUInt64LE(at + 24))
      const micros = Number(buf.readBigUInt64LE(at + 32))
      try {
        if (type === EV_READ) this.servedRead(ino, fh, off, len, micros)
        else if (type === EV_OPEN) this.opened(ino, fh)
        else if (type === EV_RELEASE) this.released(fh)
      } catch (err) {
        this.log.warn({ err: (err as Error).message }, 'accounting for a natively served request failed')
      }
    }
  }

  private request(kind: number, unique: bigint, ino: bigint, fh: number, off: number, size: number): void {
    if (kind === REQ_EVENTS) return this.flushEvents()
    const s = this.session
    if (!s) return
    const n = native()
    try {
      if (kind === REQ_REFRESH) {
        this.syncImages()
        return n.fuseResubmit(s, unique)
      }
      if (kind === REQ_OPEN_STATS || kind === REQ_READ_STATS) {
        // accounts for the natively served reads first: a read that returned is in the snapshot
        this.flushEvents()
        const snapshot = this.padStats(this.view.statsJson())
        // a read of a handle opened under the agent this one took over from: snapshotted now
        if (kind === REQ_READ_STATS) return n.fuseReplyOpenStats(s, unique, fh, snapshot, off, size)
        return n.fuseReplyOpenStats(s, unique, fh, snapshot)
      }
      const image = this.byIno.get(ino)
      if (!image) return n.fuseReply(s, unique, ENOENT)
      if (kind === REQ_OPEN) {
        this.manifestOf(image)
        return n.fuseReplyOpen(s, unique, ino, fh)
      }
      if (kind === REQ_READ) return this.read(s, unique, image, fh, off, size)
      n.fuseReply(s, unique, EIO)
    } catch (err) {
      this.log.warn({ err: (err as Error).message, kind }, 'FUSE request failed')
      n.fuseReply(s, unique, errnoOf(err))
    }
  }

  private read(s: FuseSession, unique: bigint, image: ImageEntry, fh: number, off: number, size: number): void {
    const n = native()
    const m = this.manifestOf(image)
    const stream = this.opens.get(fh)?.stream ?? m
    const dst = Buffer.allocUnsafe(size)
    this.answering++
    let answered = false
    const answer = (fn: () => void): void => {
      if (answered) return
      answered = true
      this.answering--
      if (this.session === s) fn()
    }
    const timeoutMs = this.opts.readTimeoutMs ?? 120_000
    const timer = setTimeout(() => {
      answer(() => {
        this.log.warn({ image: image.name, off, size }, 'a read took longer than mount.readTimeoutMs')
        n.fuseReply(s, unique, ETIMEDOUT)
      })
    }, timeoutMs)
    timer.unref()
    this.view.read(image.name, m, dst, off, size, stream).then(
      got => {
        clearTimeout(timer)
        answer(() => n.fuseReplyData(s, unique, dst, got))
      },
      (err: unknown) => {
        clearTimeout(timer)
        answer(() => {
          this.log.warn({ image: image.name, off, size, err: (err as Error).message }, 'read failed')
          n.fuseReply(s, unique, errnoOf(err))
        })
      }
    )
  }

  private manifestOf(image: ImageEntry): Manifest {
    let m = this.manifests.get(image.digest)
    if (!m) {
      m = this.view.manifest(image.digest)
      this.manifests.set(image.digest, m)
      native().fuseSetManifest(this.session!, image.digest, m.offsets, m.zero, m.hashes)
      this.locate(m, 0)
    }
    return m
  }

  /** Tells the native side where the chunks of a newly opened image are, a batch a turn. */
  private locate(m: Manifest, from: number): void {
    const s = this.session
    const store = this.view.chunks
    if (!s || !store) return
    const to = Math.min(m.count, from + (from === 0 ? LOCATE_FIRST : LOCATE_BATCH))
    native().fuseMarkCached(s, store.locateMany(m.hashes, from, to))
    if (to < m.count) setImmediate(() => this.locate(m, to))
  }

  private servedRead(ino: bigint, fh: number, off: number, len: number, micros: number): void {
    const image = this.byIno.get(ino)
    const m = image && this.manifests.get(image.digest)
    if (!image || !m) return
    this.view.served?.(image.name, m, off, len, this.opens.get(fh)?.stream ?? m, micros / 1000)
  }

  private opened(ino: bigint, fh: number): void {
    const image = this.byIno.get(ino)
    if (!image || !this.manifests.has(image.digest)) return
    this.opens.set(fh, { image, stream: {} })
    this.view.opened?.(image.name, image.digest)
  }

  private released(fh: number): void {
    const o = this.opens.get(fh)
    if (!o) return
    this.opens.delete(fh)
    this.view.released?.(o.image.name, o.image.digest)
  }

  /** Pushes the image list to the native side when the catalog changed. */
  private syncImages(): void {
    const s = this.session
    if (!s) return
    const images = this.view.images()
    if (images === this.lastImages) return
    this.lastImages = images
    const list = [...images.values()]
    for (const im of list) this.byIno.set(inoOf(im.digest), im)
    native().fuseSetImages(
      s,
      list.map(i => i.name),
      list.map(i => i.digest),
      list.map(i => i.size),
      list.map(i => i.createdAt),
      this.statsSize
    )
  }

  private queue(items: Array<[string, StoredChunk | null]>): void {
    for (const [h, c] of items) this.pendingChunks.set(h, c)
    if (this.flushScheduled) return
    this.flushScheduled = true
    setImmediate(() => this.flushChunks())
  }

  private flushChunks(): void {
    this.flushScheduled = false
    const s = this.session
    const pending = this.pendingChunks
    this.pendingChunks = new Map()
    if (!s) return
    const stored: StoredChunk[] = []
    const gone: string[] = []
    for (const [h, c] of pending) {
      if (c) stored.push(c)
      else gone.push(h)
    }
    const n = native()
    if (gone.length > 0) n.fuseMarkUncached(s, Buffer.from(gone.join(''), 'hex'))
    if (stored.length > 0) {
      const records = Buffer.allocUnsafe(stored.length * LOCATION_BYTES)
      stored.forEach((c, i) => writeLocation(records, i * LOCATION_BYTES, Buffer.from(c.hash, 'hex'), c))
      n.fuseMarkCached(s, records)
    }
  }

  /**
   * .stats is snapshotted at each open; its size never changes but for growing: the JSON is padded
   * with spaces (valid JSON whitespace) to a fixed size that doubles if the JSON outgrows it.
   */
  private padStats(json: Buffer): Buffer {
    while (json.length + 1 > this.statsSize) this.statsSize *= 2
    const out = Buffer.alloc(this.statsSize, 0x20)
    json.copy(out)
    out[out.length - 1] = 0x0a
    return out
  }
}
