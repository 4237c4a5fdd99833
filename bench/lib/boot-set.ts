// A stand-in for what a VM boot reads from its disk, with no VM to boot: the bytes of the files a
// boot opens (init and its units, the shell, core libraries, the services, /etc), located in the
// image with debugfs, and what a lazy filesystem would fetch to serve them under a chunking
// (every chunk a read touches, whole; zero chunks are free).
//
// The set, in an image of the Debian family (whatever of it exists there):
//   - explicit files, symlinks followed: /usr/bin/{bash,dash,sh,systemctl,mount,ls,cat,login,
//     agetty,nginx,sshd}, /usr/sbin/{nginx,sshd,agetty}, /usr/lib/os-release
//   - /usr/lib/x86_64-linux-gnu/ (top level): ld-linux-x86-64.so* (every dynamic exec maps it)
//     and lib{c,m,systemd,udev,selinux,pcre2,lzma,zstd,gcrypt,gpg-error,cap,crypt,mount,blkid,
//     seccomp,acl,apparmor,kmod,audit,pam,tinfo,z}*.so* as a shell glob reads (so libc* also
//     takes libcrypto, libcom_err, libcbor, libc_malloc_debug; libm* libmd, libmnl, libmvec...)
//   - every regular file below /usr/lib/systemd/ and /etc/ (symlinks there are not followed:
//     they point into the set or out of it, e.g. /etc/alternatives)
// A file counts once (by inode) and for its size: whole-file reads, where a boot reads only the
// pages it touches of big libraries. Holes (mke2fs -d leaves a file's zero blocks unallocated)
// count as read but touch no image bytes.
import path from 'node:path'
import type { Manifest } from '../../src/manifests/manifest.js'
import {
  type InodeInfo,
  type Range,
  blockSize,
  fileRanges,
  isRegular,
  listDirs,
  mergeRanges,
  resolveAll,
  statAll,
  walk
} from './ext4-extents.js'

export const BOOT_FILES = [
  ...['bash', 'dash', 'sh', 'systemctl', 'mount', 'ls', 'cat', 'login', 'agetty', 'nginx', 'sshd'].map(
    b => `/usr/bin/${b}`
  ),
  ...['nginx', 'sshd', 'agetty'].map(b => `/usr/sbin/${b}`),
  '/usr/lib/os-release'
]
export const BOOT_LIB_DIR = '/usr/lib/x86_64-linux-gnu'
const LIBS = [
  'c',
  'm',
  'systemd',
  'udev',
  'selinux',
  'pcre2',
  'lzma',
  'zstd',
  'gcrypt',
  'gpg-error',
  'cap',
  'crypt',
  'mount',
  'blkid',
  'seccomp',
  'acl',
  'apparmor',
  'kmod',
  'audit',
  'pam',
  'tinfo',
  'z'
]
export const BOOT_LIBS = new RegExp(`^(ld-linux-x86-64|lib(${LIBS.join('|')}).*)\\.so`)
export const BOOT_TREES = ['/usr/lib/systemd', '/etc']

export interface ReadFile {
  path: string
  group: string
  inode: number
  size: number
  /** bytes in holes: read as zeros without touching the image (mke2fs -d leaves zero blocks out) */
  holes: number
}

export interface ReadSet {
  image: string
  files: ReadFile[]
  /** explicit files not in the image */
  missing: string[]
  /** image bytes read, sorted and merged */
  ranges: Range[]
  /** sum of the files' sizes */
  bytes: number
  /** of those, in holes */
  holes: number
}

/** Locates the boot read set in an ext4 image (a few debugfs runs, well under a second). */
export function bootReadSet(image: string): ReadSet {
  const block = blockSize(image)
  const seen = new Set<number>()
  const files: ReadFile[] = []
  const ranges: Range[] = []
  const add = (group: string, infos: Array<{ path: string; info: InodeInfo | undefined }>): void => {
    for (const { path: p, info } of infos) {
      if (info === undefined || info.type !== 'regular' || seen.has(info.inode)) continue
      seen.add(info.inode)
      const r = fileRanges(info, block)
      const mapped = r.reduce((s, x) => s + x.end - x.start, 0)
      files.push({ path: p, group, inode: info.inode, size: info.size, holes: info.size - mapped })
      ranges.push(...r)
    }
  }
  const resolved = resolveAll(image, BOOT_FILES)
  const missing = BOOT_FILES.filter((_, i) => resolved[i] === undefined)
  add(
    'binaries',
    resolved.flatMap(r => (r === undefined ? [] : [r]))
  )
  const libs = listDirs(image, [BOOT_LIB_DIR])[0]!.filter(e => isRegular(e.mode) && BOOT_LIBS.test(e.name))
  add(
    'libraries',
    statAll(
      image,
      libs.map(e => e.inode)
    ).map((info, i) => ({ path: path.posix.join(BOOT_LIB_DIR, libs[i]!.name), info }))
  )
  for (const tree of BOOT_TREES) {
    const regular = [...walk(image, tree)].filter(([, e]) => isRegular(e.mode))
    add(
      tree,
      statAll(
        image,
        regular.map(([, e]) => e.inode)
      ).map((info, i) => ({ path: regular[i]![0], info }))
    )
  }
  return {
    image,
    files,
    missing,
    ranges: mergeRanges(ranges),
    bytes: files.reduce((s, f) => s + f.size, 0),
    holes: files.reduce((s, f) => s + f.holes, 0)
  }
}

export interface FetchCost {
  /** distinct data chunks touched by the reads */
  chunks: number
  /** their bytes: what a lazy filesystem fetches */
  bytes: number
  /** of those, the bytes whose hash `have` lacks (what a host holding `have` still fetches) */
  newBytes?: number
}

/**
 * What serving `ranges` costs under manifest `m`: the distinct (by hash) data chunks overlapping
 * any range, whole. Zero entries cost nothing. Keys are hashes as latin1 strings.
 */
export function fetchCost(m: Manifest, ranges: Range[], have?: { has: (key: string) => boolean }): FetchCost {
  const fetched = new Map<string, number>()
  for (const r of ranges) {
    if (r.end <= r.start) continue
    for (let i = m.find(r.start); i < m.count && m.offsets[i]! < r.end; i++) {
      if (m.zero[i] === 0) fetched.set(m.hashAt(i).toString('latin1'), m.lengthAt(i))
    }
  }
  let bytes = 0
  let newBytes = 0
  for (const [key, len] of fetched) {
    bytes += len
    if (have !== undefined && !have.has(key)) newBytes += len
  }
  return have === undefined ? { chunks: fetched.size, bytes } : { chunks: fetched.size, bytes, newBytes }
}

/** Files and bytes of a read set by group, in the order the groups were added. */
export function groups(set: ReadSet): Array<{ group: string; files: number; bytes: number }> {
  const by = new Map<string, { group: string; files: number; bytes: number }>()
  for (const f of set.files) {
    const g = by.get(f.group) ?? { group: f.group, files: 0, bytes: 0 }
    g.files++
    g.bytes += f.size
    by.set(f.group, g)
  }
  return [...by.values()]
}
