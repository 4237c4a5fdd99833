declare module 'fuse-native' {
  /** Answers an op: 0, a byte count (read, write) or a negative errno; then the op's result, if any. */
  export type Reply<R extends unknown[] = []> = (code: number, ...result: R) => void

  /** What getattr answers; fuse-native fills in what is left out (nlink 1, the rest 0). */
  export interface Stat {
    mode: number
    size: number
    mtime: Date
    atime: Date
    ctime: Date
    nlink?: number
    uid?: number
    gid?: number
    blocks?: number
    blksize?: number
  }

  /** What statfs answers. */
  export interface StatFs {
    bsize: number
    frsize: number
    blocks: number
    bfree: number
    bavail: number
    files: number
    ffree: number
    favail: number
    fsid: number
    flag: number
    namemax: number
  }

  /**
   * The ops vmifs implements (fuse-native has a few more), with fuse-native's arguments: each
   * answers through its callback, the last argument.
   */
  export interface FuseOps {
    getattr?: (path: string, cb: Reply<[stat?: Stat]>) => void
    readdir?: (path: string, cb: Reply<[names?: string[]]>) => void
    open?: (path: string, flags: number, cb: Reply<[fd?: number]>) => void
    release?: (path: string, fd: number, cb: Reply) => void
    read?: (path: string, fd: number, buf: Buffer, len: number, pos: number, cb: Reply) => void
    access?: (path: string, mode: number, cb: Reply) => void
    statfs?: (path: string, cb: Reply<[statfs?: StatFs]>) => void
    write?: (path: string, fd: number, buf: Buffer, len: number, pos: number, cb: Reply) => void
    create?: (path: string, mode: number, cb: Reply<[fd?: number]>) => void
    truncate?: (path: string, size: number, cb: Reply) => void
    ftruncate?: (path: string, fd: number, size: number, cb: Reply) => void
    unlink?: (path: string, cb: Reply) => void
    mkdir?: (path: string, mode: number, cb: Reply) => void
    rmdir?: (path: string, cb: Reply) => void
    rename?: (src: string, dest: string, cb: Reply) => void
    link?: (src: string, dest: string, cb: Reply) => void
    symlink?: (src: string, dest: string, cb: Reply) => void
    chmod?: (path: string, mode: number, cb: Reply) => void
    chown?: (path: string, uid: number, gid: number, cb: Reply) => void
    utimens?: (path: string, atime: number, mtime: number, cb: Reply) => void
    setxattr?: (path: string, name: string, value: Buffer, position: number, flags: number, cb: Reply) => void
    removexattr?: (path: string, name: string, cb: Reply) => void
    mknod?: (path: string, mode: number, dev: number, cb: Reply) => void
  }

  export interface FuseOptions {
    debug?: boolean
    force?: boolean
    mkdir?: boolean
    allowOther?: boolean
    autoCache?: boolean
    kernelCache?: boolean
    fsname?: string
    subtype?: string
    defaultPermissions?: boolean
    maxRead?: number
    attrTimeout?: number
    acAttrTimeout?: number
    entryTimeout?: number
    timeout?: number | false
  }
  class Fuse {
    constructor(mnt: string, ops: FuseOps, opts?: FuseOptions)
    mount(cb: (err: Error | null) => void): void
    unmount(cb: (err: Error | null) => void): void
    static unmount(mnt: string, cb: (err: Error | null) => void): void
  }
  export default Fuse
}
