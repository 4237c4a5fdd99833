// The ways a cold host C can get at a remote VM image for qemu, each as a "session" that serves
// one or more images of the same host until closed: the lazy readers an operator would otherwise
// use (nbdkit curl + cache filter, httpfs2, qemu's http driver, rclone mount with a full VFS
// cache), all from Debian, and vmifs. Everything runs in C's network namespace (nsenter --net,
// which keeps the mount namespace, so FUSE mounts made there are seen by everyone).
import { spawnSync, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { stop } from './children.js'

export type ImageName = 'boot-a' | 'boot-b'

export interface ToolSession {
  /** The qemu -drive value (without if=) that boots this image through the tool. */
  drive: (image: ImageName) => Promise<string>
  /** A path a replay reader can read the image at (tools that expose a file), else undefined. */
  file?: (image: ImageName) => Promise<string>
  close: () => Promise<void>
}

export interface Ctx {
  dir: string
  /** C's namespace. */
  ns: string
  /** Base URL of the image directory as C reaches it (through the delay proxy). */
  url: string
  spawnIn: (ns: string, argv: string[], opts?: { env?: NodeJS.ProcessEnv; stdout?: 'pipe' | 'ignore' }) => ChildProcess
  log: (msg: string) => void
}

export const sleep = (ms: number): Promise<void> => new Promise(resolve => setTimeout(resolve, ms))

export async function waitFor(
  what: string,
  pred: () => boolean,
  timeoutMs = 30_000,
  child?: ChildProcess
): Promise<void> {
  const t0 = Date.now()
  while (!pred()) {
    if (child !== undefined && child.exitCode !== null)
      throw new Error(`${what}: process exited ${String(child.exitCode)}`)
    if (Date.now() - t0 > timeoutMs) throw new Error(`${what}: not ready after ${timeoutMs} ms`)
    await sleep(100)
  }
}

/** SIGTERM, SIGKILL after `graceMs`, and wait for the exit. */
export async function stopChild(c: ChildProcess | undefined, graceMs = 5000): Promise<void> {
  await stop(c, graceMs)
}

/** Unmounts; a FUSE mount whose server no longer answers has its connection aborted through
 * fusectl first (found in mountinfo: stat() on a stuck mount would hang), then is detached. */
export function detach(mnt: string): void {
  const line = fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .find(l => l.split(' ')[4] === mnt)
  if (line === undefined) return
  const minor = line.split(' ')[2]!.split(':')[1]!
  const r = spawnSync('umount', [mnt], { encoding: 'utf8', timeout: 5_000 })
  if (r.status === 0) return
  const abort = path.join('/sys/fs/fuse/connections', minor, 'abort')
  try {
    if (fs.existsSync(abort)) fs.writeFileSync(abort, '1')
  } catch {
    // best effort (the connection may be gone already): the lazy unmount below detaches it anyway
  }
  spawnSync('umount', ['-l', mnt], { timeout: 10_000 })
}

/** nbdkit's curl plugin with its cache filter (reads cached), qemu on an NBD Unix socket. One nbdkit
 * per image. */
export function nbdkitSession(ctx: Ctx, tag: string): ToolSession {
  const servers = new Map<string, ChildProcess>()
  const tmp = path.join(ctx.dir, `nbdkit-${tag}`)
  fs.mkdirSync(tmp, { recursive: true })
  return {
    drive: async image => {
      const sock = path.join(tmp, `${image}.sock`)
      if (!servers.has(image)) {
        fs.rmSync(sock, { force: true }) // a socket an earlier nbdkit left would pass for this one's
        const c = ctx.spawnIn(
          ctx.ns,
          [
            'nbdkit',
            '--foreground',
            '--readonly',
            '--unix',
            sock,
            '--filter=cache',
            'curl',
            `url=${ctx.url}/${image}.img`,
            'cache-on-read=true'
          ],
          { env: { ...process.env, TMPDIR: tmp } }
        )
        servers.set(image, c)
        await waitFor('nbdkit', () => fs.existsSync(sock), 20_000, c)
      }
      return `file=nbd+unix:///?socket=${sock},format=raw`
    },
    close: async () => {
      for (const c of servers.values()) await stopChild(c)
    }
  }
}

/** httpfs2: a FUSE file of the URL (one mount per image); qemu boots from the file. */
export function httpfs2Session(ctx: Ctx, tag: string): ToolSession {
  const mounts = new Map<string, { mnt: string; c: ChildProcess }>()
  const file = async (image: ImageName): Promise<string> => {
    let m = mounts.get(image)
    if (m === undefined) {
      const mnt = path.join(ctx.dir, `httpfs2-${tag}-${image}-mnt`)
      fs.mkdirSync(mnt, { recursive: true })
      const c = ctx.spawnIn(ctx.ns, ['httpfs2', '-f', '-c', '/dev/null', `${ctx.url}/${image}.img`, mnt])
      m = { mnt, c }
      mounts.set(image, m)
      const f = path.join(mnt, `${image}.img`)
      await waitFor('httpfs2', () => fs.existsSync(f), 20_000, c)
    }
    return path.join(m.mnt, `${image}.img`)
  }
  return {
    file,
    drive: async image => `file=${await file(image)},format=raw`,
    close: async () => {
      for (const m of mounts.values()) {
        await stopChild(m.c, 2000)
        detach(m.mnt)
      }
    }
  }
}

/** qemu's own http block driver (libcurl, qemu-block-extra), its default readahead. */
export function qemuHttpSession(ctx: Ctx): ToolSession {
  return {
    drive: image => Promise.resolve(`file.driver=http,file.url=${ctx.url}/${image}.img,format=raw`),
    close: async () => {}
  }
}

/** rclone mount of an `:http:` remote (nginx autoindex) with --vfs-cache-mode full. */
export async function rcloneSession(ctx: Ctx, tag: string): Promise<ToolSession> {
  const mnt = path.join(ctx.dir, `rclone-${tag}-mnt`)
  const cache = path.join(ctx.dir, `rclone-${tag}-cache`)
  fs.mkdirSync(mnt, { recursive: true })
  fs.mkdirSync(cache, { recursive: true })
  const c = ctx.spawnIn(ctx.ns, [
    'rclone',
    'mount',
    ':http:',
    mnt,
    '--http-url',
    `${ctx.url}/`,
    '--vfs-cache-mode',
    'full',
    '--cache-dir',
    cache,
    '--read-only',
    '--config',
    '/dev/null',
    '--log-level',
    'ERROR'
  ])
  await waitFor('rclone mount', () => fs.existsSync(path.join(mnt, 'boot-a.img')), 30_000, c)
  const file = (image: ImageName): Promise<string> => Promise.resolve(path.join(mnt, `${image}.img`))
  return {
    file,
    drive: async image => `file=${await file(image)},format=raw`,
    close: async () => {
      await stopChild(c, 3000)
      detach(mnt)
    }
  }
}
