// The read-only FUSE filesystem:
//   /images/<name>   /by-digest/<digest>   /.stats
// Every op answers a number (errno or byte count); nothing throws across this boundary and the
// reason for an error is logged. Images never change, so their pages stay in the kernel's page
// cache across opens (auto_cache keeps pages while mtime/size are unchanged, which for an image is
// forever; .stats gets a new mtime on every getattr, so each open sees a fresh snapshot).
import fs from 'node:fs'
import path from 'node:path'
import Fuse, { type FuseOps, type Stat } from 'fuse-native'
import { VmifsError } from '../errors.js'
import type { Manifest } from '../manifests/manifest.js'
import type { ChunkEvents } from '../cache/chunk-store.js'
import { EBADF, EIO, EISDIR, ENOENT, ENOTDIR, EROFS, errnoOf } from './errno.js'
import type { Logger } from '../util/log.js'

export interface ImageEntry {
  name: string
  digest: string
  size: number
  createdAt: number
}

/** What the mount shows; owned by the agent. */
export interface MountView {
  /** name -> image, current as of this call */
  images(): Map<string, ImageEntry>
  byDigest(digest: string): ImageEntry | undefined
  manifest(digest: string): Manifest
  read(name: string, m: Manifest, dst: Buffer, pos: number, len: number, stream: object): Promise<number>
  statsJson(): Buffer
  /** an image file was opened / released (usage sessions) */
  opened?(name: string, digest: string): void
  released?(name: string, digest: string): void
  /** a read the native side served from cached, verified chunks (accounting only) */
  served?(name: string, m: Manifest, pos: number, len: number, stream: object, ms: number): void
  /** the chunk cache's verified / gone events, for what the native side may serve */
  subscribeChunks?(l: ChunkEvents): () => void
}

export interface MountOptions {
  allowOther?: boolean
  /** the kernel's read-ahead for this mount (KiB); the agent reads ahead itself where it pays */
  readaheadKb?: number
  /** a read that takes longer answers EIO (ms) */
  readTimeoutMs?: number
  debug?: boolean
}

type Handle =
  { kind: 'image'; name: string; digest: string; manifest: Manifest } | { kind: 'stats'; data: Buffer | undefined }

/** .stats is padded to a fixed size (doubling if the JSON outgrows it): see padStats(). */
const STATS_MIN_SIZE = 64 * 1024

const O_ACCMODE = 3
const O_TRUNC = 0o1000
const DIR = 0o40555
const FILE = 0o100444

export class VmifsMount {
  private fuse: Fuse | undefined
  private readonly handles = new Map<number, Handle>()
  private nextFd = 1
  private statsSize = STATS_MIN_SIZE
  private readonly mountedAt = new Date()
  private stopping = false
  private lastStatsMtime = 0

  constructor(
    readonly mountpoint: string,
    private readonly view: MountView,
    private readonly log: Logger,
    private readonly opts: MountOptions = {}
  ) {}

  get openHandles(): number {
    return this.handles.size
  }

  async mount(): Promise<void> {
    const ops = this.ops()
    const fuse = new Fuse(this.mountpoint, ops, {
      force: false,
      mkdir: false,
      autoCache: true,
      fsname: 'vmifs',
      subtype: 'vmifs',
      allowOther: this.opts.allowOther ?? true,
      defaultPermissions: true,
      // auto_cache re-checks mtime/size on every open (not only once a second): .stats' mtime
      // changes on every lookup, so its old pages are dropped; an image's never changes, so its
      // pages stay (see padStats for why .stats' size is constant)
      acAttrTimeout: 0.001,
      debug: this.opts.debug ?? false,
      timeout: this.opts.readTimeoutMs ?? 120_000
    })
    await new Promise<void>((resolve, reject) => {
      fuse.mount(err => {
        if (err)
          reject(
            new VmifsError(
              'MOUNT_FAILED',
              `cannot mount ${this.mountpoint}: ${err.message}`,
              { mountpoint: this.mountpoint },
              { cause: err }
            )
          )
        else resolve()
      })
    })
    this.fuse = fuse
    if (this.opts.readaheadKb !== undefined) this.setReadahead(this.opts.readaheadKb)
  }

  /**
   * The kernel reads ahead 128 KiB past every read by default: past the end of a small file in
   * the image, that is bytes fetched for nothing. The mount's backing device info takes a smaller
   * value (as root); sequential streams get the agent's own read-ahead instead.
   */
  private setReadahead(kb: number): void {
    try {
      // never touch the mountpoint itself here: a stat of our own mount from this thread deadlocks
      const real = path.resolve(this.mountpoint)
      const line = fs
        .readFileSync('/proc/self/mountinfo', 'utf8')
        .split('\n')
        .find(l => l.split(' ')[4] === real && l.includes(' - fuse'))
      const dev = line?.split(' ')[2]
      if (dev) fs.writeFileSync(`/sys/class/bdi/${dev}/read_ahead_kb`, String(Math.round(kb)))
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'cannot set the kernel read-ahead of the mount')
    }
  }

  /** Stop answering reads (they fail with EIO), then unmount. */
  async unmount(): Promise<void> {
    this.stopping = true
    const fuse = this.fuse
    if (!fuse) return
    this.fuse = undefined
    await new Promise<void>((resolve, reject) => {
      fuse.unmount(err => {
        if (err) reject(err)
        else resolve()
      })
    })
  }

  /** A new, strictly increasing mtime on every lookup, so auto_cache drops the old snapshot. */
  private statsMtime(): Date {
    this.lastStatsMtime = Math.max(Date.now(), this.lastStatsMtime + 1)
    return new Date(this.lastStatsMtime)
  }

  /**
   * .stats is snapshotted at the first read of each open, so it is current however recently the
   * kernel looked the file up; its mtime changes on every lookup, so auto_cache drops its old
   * pages on every open. Its size never changes: the JSON is padded with spaces (valid JSON
   * whitespace) to a fixed size that only grows, doubling, if the JSON outgrows it. A size that
   * followed the content would race the kernel's cached size (a longer snapshot read under an
   * older, shorter size comes out cut) — fuse-native cannot set direct_io for one file.
   */
  private padStats(json: Buffer): Buffer {
    while (json.length + 1 > this.statsSize) this.statsSize *= 2
    const out = Buffer.alloc(this.statsSize, 0x20)
    json.copy(out)
    out[out.length - 1] = 0x0a
    return out
  }

  private lookup(
    p: string
  ): { kind: 'root' } | { kind: 'dir' } | { kind: 'stats' } | { kind: 'image'; image: ImageEntry } | undefined {
    if (p === '/') return { kind: 'root' }
    if (p === '/images' || p === '/by-digest') return { kind: 'dir' }
    if (p === '/.stats') return { kind: 'stats' }
    if (p.startsWith('/images/')) {
      const im = this.view.images().get(p.slice(8))
      return im && { kind: 'image', image: im }
    }
    if (p.startsWith('/by-digest/')) {
      const im = this.view.byDigest(p.slice(11))
      return im && { kind: 'image', image: im }
    }
    return undefined
  }

  private ops(): FuseOps {
    const stat = (mode: number, size: number, mtime: Date): Stat => ({
      mtime,
      atime: mtime,
      ctime: mtime,
      nlink: mode === DIR ? 2 : 1,
      size,
      mode,
      uid: 0,
      gid: 0,
      blocks: Math.ceil(size / 512),
      blksize: 4096
    })
    const guard = (what: string, cb: (n: number) => void, fn: () => void): void => {
      try {
        fn()
      } catch (err) {
        this.log.warn({ err, op: what }, 'fuse op failed')
        cb(errnoOf(err))
      }
    }
    return {
      getattr: (p, cb) =>
        guard('getattr', cb, () => {
          const e = this.lookup(p)
          if (!e) return cb(ENOENT)
          if (e.kind === 'root' || e.kind === 'dir') return cb(0, stat(DIR, 4096, this.mountedAt))
          if (e.kind === 'stats') return cb(0, stat(FILE, this.statsSize, this.statsMtime()))
          cb(0, stat(FILE, e.image.size, new Date(e.image.createdAt)))
        }),
      readdir: (p, cb) =>
        guard('readdir', cb, () => {
          if (p === '/') return cb(0, ['images', 'by-digest', '.stats'])
          if (p === '/images') return cb(0, [...this.view.images().keys()])
          if (p === '/by-digest') return cb(0, [...new Set([...this.view.images().values()].map(i => i.digest))])
          cb(this.lookup(p) ? ENOTDIR : ENOENT)
        }),
      open: (p, flags, cb) =>
        guard('open', cb, () => {
          const e = this.lookup(p)
          if (!e) return cb(ENOENT)
          if ((flags & O_ACCMODE) !== 0 || (flags & O_TRUNC) !== 0) return cb(EROFS)
          if (e.kind === 'root' || e.kind === 'dir') return cb(EISDIR)
          const fd = this.nextFd++
          if (e.kind === 'stats') this.handles.set(fd, { kind: 'stats', data: undefined })
          else if (e.kind === 'image') {
            this.handles.set(fd, {
              kind: 'image',
              name: e.image.name,
              digest: e.image.digest,
              manifest: this.view.manifest(e.image.digest)
            })
            this.view.opened?.(e.image.name, e.image.digest)
          }
          cb(0, fd)
        }),
      release: (_p, fd, cb) => {
        const h = this.handles.get(fd)
        this.handles.delete(fd)
        if (h?.kind === 'image') this.view.released?.(h.name, h.digest)
        cb(0)
      },
      read: (_p, fd, buf, len, pos, cb) => {
        const h = this.handles.get(fd)
        if (!h) return cb(EBADF)
        if (h.kind === 'stats') {
          try {
            h.data ??= this.padStats(this.view.statsJson())
          } catch (err) {
            this.log.warn({ err }, '.stats snapshot failed')
            return cb(EIO)
          }
          if (pos >= h.data.length) return cb(0)
          return cb(h.data.copy(buf, 0, pos, Math.min(h.data.length, pos + len)))
        }
        if (this.stopping) return cb(EIO)
        this.view.read(h.name, h.manifest, buf, pos, len, h).then(
          n => cb(n),
          (err: unknown) => {
            this.log.warn({ err, image: h.name, pos, len }, 'read failed')
            cb(errnoOf(err))
          }
        )
      },
      access: (p, mode, cb) =>
        guard('access', cb, () => {
          if (!this.lookup(p)) return cb(ENOENT)
          cb((mode & 2) !== 0 ? EROFS : 0)
        }),
      statfs: (_p, cb) => {
        cb(0, {
          bsize: 4096,
          frsize: 4096,
          blocks: 0,
          bfree: 0,
          bavail: 0,
          files: this.view.images().size,
          ffree: 0,
          favail: 0,
          fsid: 0x766d69,
          flag: 1,
          namemax: 255
        })
      },
      // read-only: every op that would change something answers EROFS
      write: (_p, _fd, _buf, _len, _pos, cb) => cb(EROFS),
      create: (_p, _mode, cb) => cb(EROFS),
      truncate: (_p, _size, cb) => cb(EROFS),
      ftruncate: (_p, _fd, _size, cb) => cb(EROFS),
      unlink: (_p, cb) => cb(EROFS),
      mkdir: (_p, _mode, cb) => cb(EROFS),
      rmdir: (_p, cb) => cb(EROFS),
      rename: (_src, _dest, cb) => cb(EROFS),
      link: (_src, _dest, cb) => cb(EROFS),
      symlink: (_src, _dest, cb) => cb(EROFS),
      chmod: (_p, _mode, cb) => cb(EROFS),
      chown: (_p, _uid, _gid, cb) => cb(EROFS),
      utimens: (_p, _atime, _mtime, cb) => cb(EROFS),
      setxattr: (_p, _name, _value, _position, _flags, cb) => cb(EROFS),
      removexattr: (_p, _name, cb) => cb(EROFS),
      mknod: (_p, _mode, _dev, cb) => cb(EROFS)
    }
  }
}
