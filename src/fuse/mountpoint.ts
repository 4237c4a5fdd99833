// Checks a mountpoint before mounting and recovers one left by a crashed agent.
import fs from 'node:fs'
import { execFileSync } from 'node:child_process'
import path from 'node:path'
import { VmifsError } from '../errors.js'

interface MountInfo {
  mountpoint: string
  fstype: string
  source: string
  /** the superblock's device, "major:minor": names the mount's backing device info in /sys/class/bdi */
  dev: string
}

export function mountsAt(dir: string): MountInfo[] {
  const real = path.resolve(dir)
  const out: MountInfo[] = []
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    if (!line) continue
    const [left, right] = line.split(' - ')
    const f = left!.split(' ')
    const mp = unescape(f[4]!)
    if (mp !== real) continue
    const r = right!.split(' ')
    out.push({ mountpoint: mp, fstype: r[0]!, source: unescape(r[1]!), dev: f[2]! })
  }
  return out
}

/**
 * The file that holds the kernel's read-ahead for the vmifs mount at `dir`:
 * /sys/class/bdi/<dev>/read_ahead_kb, found from mountinfo (nothing asks the mount itself).
 */
export function readaheadFile(dir: string): string | undefined {
  const m = mountsAt(dir)
    .filter(x => x.fstype === 'fuse.vmifs')
    .at(-1)
  return m && `/sys/class/bdi/${m.dev}/read_ahead_kb`
}

function unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)))
}

/** True when a FUSE mount's daemon is gone: any access fails with ENOTCONN. */
function isDead(dir: string): boolean {
  try {
    fs.statSync(dir)
    return false
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENOTCONN'
  }
}

/**
 * Throws MOUNTPOINT_MISSING / MOUNTPOINT_NOT_DIR / MOUNTPOINT_BUSY, or returns after lazily
 * unmounting a vmifs mount whose agent died (recovered: true).
 */
export function prepareMountpoint(dir: string): { recovered: boolean } {
  const mounts = mountsAt(dir)
  let recovered = false
  if (mounts.length > 0) {
    const top = mounts[mounts.length - 1]!
    if (top.fstype.startsWith('fuse') && isDead(dir)) {
      execFileSync('umount', ['-l', dir])
      recovered = true
    } else {
      throw new VmifsError('MOUNTPOINT_BUSY', `${dir} is busy: ${top.fstype} (${top.source}) is mounted there`, {
        dir,
        fstype: top.fstype
      })
    }
  }
  let st: fs.Stats
  try {
    st = fs.statSync(dir)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT')
      throw new VmifsError('MOUNTPOINT_MISSING', `mountpoint ${dir} does not exist`, { dir })
    throw new VmifsError('MOUNTPOINT_BUSY', `mountpoint ${dir} is not usable: ${(err as Error).message}`, { dir })
  }
  if (!st.isDirectory()) throw new VmifsError('MOUNTPOINT_NOT_DIR', `mountpoint ${dir} is not a directory`, { dir })
  if (fs.readdirSync(dir).length > 0) throw new VmifsError('MOUNTPOINT_BUSY', `mountpoint ${dir} is not empty`, { dir })
  return { recovered }
}
