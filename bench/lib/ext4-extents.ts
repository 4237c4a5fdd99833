// Files of an ext4 image and where their bytes lie in it, read with debugfs (e2fsprogs) without
// mounting anything: directory listings (`ls -p`), inode details and extents (`stat`). Each call
// batches its commands into one read-only debugfs run (`-f CMDFILE`).
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { spawnSync } from 'node:child_process'

/** A byte range [start, end) of the image. */
export interface Range {
  start: number
  end: number
}

export interface DirEntry {
  name: string
  inode: number
  mode: number
}

export interface InodeInfo {
  inode: number
  /** debugfs's word: regular, directory, symlink, ... */
  type: string
  size: number
  /** a fast symlink's target */
  link?: string
  /** leaf extents, in blocks; uninitialized extents (read as zeros) are left out */
  extents: Array<{ logical: number; physical: number; blocks: number }>
}

const S_IFMT = 0o170000
export const isDir = (mode: number): boolean => (mode & S_IFMT) === 0o040000
export const isRegular = (mode: number): boolean => (mode & S_IFMT) === 0o100000
export const isSymlink = (mode: number): boolean => (mode & S_IFMT) === 0o120000

/** `<inode>` or a quoted path, as debugfs commands take them. */
export const spec = (x: number | string): string =>
  typeof x === 'number' ? `<${x}>` : `"${x.replace(/(["\\])/g, '\\$1')}"`

/** Runs `commands` in one read-only debugfs session on `image`; returns each command's output. */
export function debugfs(image: string, commands: string[]): string[] {
  if (commands.length === 0) return []
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vmifs-debugfs-'))
  try {
    const cmdFile = path.join(dir, 'commands')
    fs.writeFileSync(cmdFile, commands.join('\n') + '\n')
    const r = spawnSync('debugfs', ['-f', cmdFile, image], {
      encoding: 'utf8',
      maxBuffer: 1 << 30,
      env: { ...process.env, DEBUGFS_PAGER: '__none__' }
    })
    if (r.error) throw new Error(`debugfs: ${r.error.message} (apt-get install e2fsprogs)`)
    if (r.status !== 0) throw new Error(`debugfs -f ... ${image} failed (${r.status ?? r.signal}): ${r.stderr}`)
    // debugfs echoes every command as "debugfs: COMMAND" on stdout; errors go to stderr
    const parts = r.stdout.split(/^debugfs: /m).slice(1)
    if (parts.length !== commands.length)
      throw new Error(`debugfs ${image}: ${commands.length} commands but ${parts.length} outputs`)
    return parts.map((p, i) => {
      const nl = p.indexOf('\n')
      if (p.slice(0, nl < 0 ? p.length : nl) !== commands[i])
        throw new Error(`debugfs ${image}: output ${i} is not for "${commands[i]!}"`)
      return nl < 0 ? '' : p.slice(nl + 1)
    })
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

export function blockSize(image: string): number {
  const m = /^Block size:\s+(\d+)$/m.exec(debugfs(image, ['stats -h'])[0]!)
  if (!m) throw new Error(`debugfs ${image}: no block size in "stats -h"`)
  return Number(m[1])
}

/** `ls -p` lines: /INODE/MODE/UID/GID/NAME/SIZE/ (SIZE empty for directories). */
export function parseList(out: string): DirEntry[] {
  const entries: DirEntry[] = []
  for (const line of out.split('\n')) {
    const m = /^\/(\d+)\/([0-7]+)\/\d+\/\d+\/(.*)\/\d*\/$/.exec(line)
    if (!m || m[3] === '.' || m[3] === '..' || m[1] === '0') continue
    entries.push({ inode: Number(m[1]), mode: parseInt(m[2]!, 8), name: m[3]! })
  }
  return entries
}

/** `stat` output, or undefined when it is empty (no such file: the error went to stderr). */
export function parseStat(out: string): InodeInfo | undefined {
  const head = /^Inode: (\d+)\s+Type: (\S+)/m.exec(out)
  if (!head) return undefined
  const size = /^User:.*?\sSize: (\d+)/m.exec(out)
  if (!size) throw new Error(`debugfs stat: no size for inode ${head[1]!}`)
  const info: InodeInfo = { inode: Number(head[1]), type: head[2]!, size: Number(size[1]), extents: [] }
  const link = /^Fast link dest: "(.*)"$/m.exec(out)
  if (link) info.link = link[1]
  const at = out.search(/^EXTENTS:$/m)
  if (at >= 0) {
    // (L):P or (L1-L2):P1-P2, "[u]" after the logical part for uninitialized; (ETBn):P are tree blocks
    for (const e of out.slice(at).matchAll(/\((\d+)(?:-(\d+))?(\[u\])?\):(\d+)(?:-(\d+))?/g)) {
      if (e[3] !== undefined) continue
      const logical = Number(e[1])
      info.extents.push({
        logical,
        physical: Number(e[4]),
        blocks: (e[2] === undefined ? logical : Number(e[2])) - logical + 1
      })
    }
  }
  return info
}

/** Lists directories (one debugfs run for all). */
export function listDirs(image: string, dirs: Array<number | string>): DirEntry[][] {
  return debugfs(
    image,
    dirs.map(d => `ls -p ${spec(d)}`)
  ).map(parseList)
}

/** Stats inodes or paths (one debugfs run); undefined where there is no such file. */
export function statAll(image: string, what: Array<number | string>): Array<InodeInfo | undefined> {
  return debugfs(
    image,
    what.map(w => `stat ${spec(w)}`)
  ).map(parseStat)
}

/**
 * Every entry below the directory `root` (an absolute path in the image), by path; symlinks to
 * directories are not followed. One debugfs run per level of the tree.
 */
export function walk(image: string, root: string): Map<string, DirEntry> {
  const all = new Map<string, DirEntry>()
  const top = statAll(image, [root])[0]
  if (top?.type !== 'directory') return all
  let level: Array<{ path: string; inode: number }> = [{ path: root, inode: top.inode }]
  while (level.length > 0) {
    const lists = listDirs(
      image,
      level.map(d => d.inode)
    )
    const next: typeof level = []
    level.forEach((d, i) => {
      for (const e of lists[i]!) {
        const p = path.posix.join(d.path, e.name)
        all.set(p, e)
        if (isDir(e.mode)) next.push({ path: p, inode: e.inode })
      }
    })
    level = next
  }
  return all
}

/**
 * Stats absolute paths, following symlinks (fast ones, up to 8 deep) to what they point at.
 * Returns the final path and inode for each path that resolves to an existing file.
 */
export function resolveAll(image: string, paths: string[]): Array<{ path: string; info: InodeInfo } | undefined> {
  const out: Array<{ path: string; info: InodeInfo } | undefined> = paths.map(() => undefined)
  let todo = paths.map((p, i) => ({ i, path: p }))
  for (let depth = 0; depth <= 8 && todo.length > 0; depth++) {
    const infos = statAll(
      image,
      todo.map(t => t.path)
    )
    const next: typeof todo = []
    todo.forEach((t, k) => {
      const info = infos[k]
      if (info === undefined) return
      if (info.type !== 'symlink') {
        out[t.i] = { path: t.path, info }
        return
      }
      if (info.link !== undefined)
        next.push({ i: t.i, path: path.posix.resolve(path.posix.dirname(t.path), info.link) })
    })
    todo = next
  }
  return out
}

/** The image bytes holding a file's `size` bytes (the last block only up to the file's end). */
export function fileRanges(info: InodeInfo, block: number): Range[] {
  const ranges: Range[] = []
  for (const e of info.extents) {
    const from = e.logical * block
    const to = Math.min((e.logical + e.blocks) * block, info.size)
    if (to <= from) continue
    ranges.push({ start: e.physical * block, end: e.physical * block + (to - from) })
  }
  return ranges
}

/** Sorts ranges and merges the overlapping or touching ones. */
export function mergeRanges(ranges: Range[]): Range[] {
  const sorted = [...ranges].sort((a, b) => a.start - b.start)
  const out: Range[] = []
  for (const r of sorted) {
    const last = out[out.length - 1]
    if (last !== undefined && r.start <= last.end) last.end = Math.max(last.end, r.end)
    else out.push({ ...r })
  }
  return out
}
