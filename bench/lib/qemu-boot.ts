// Boots a real Linux VM under qemu (TCG: /dev/kvm exists here but guests hang under it) with
// direct kernel boot, and times it to the marker line the guest prints on its serial console when
// multi-user.target is reached (bench/lib/bootable-family.sh installs that unit; it powers the VM
// off right after). The disk is read-only for the guest (root=/dev/vda ro, fsck.mode=skip) and
// qemu puts a throw-away qcow2 overlay over it (-snapshot), so any backing will do: a file (on a
// FUSE mount or a local disk), an NBD export, or qemu's curl driver.
//
// CLI (for trying things by hand):
//   node dist/bench/lib/qemu-boot.js --kernel K --initrd I --drive 'file=/x.img,format=raw' \
//     [--netns NS] [--timeout-s N]
import { spawn } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

export const MARKER = 'VMIFS-BOOT-MARKER'

export interface BootOptions {
  kernel: string
  initrd: string
  /** The -drive value without `if=`: `file=/path,format=raw`, `file=nbd+unix:///?socket=/s,format=raw`, `file=json:{…}`. */
  drive: string
  /** Run qemu in this network namespace (nsenter --net, which keeps the mount namespace). */
  netns?: string
  timeoutMs?: number
  memMiB?: number
  /** Extra kernel command-line words. */
  append?: string
  /** Leave out `vmifs.marker` (the guest then stays up) and wait for this serial text instead. */
  until?: string
  /** Called when the marker (or `until`) appears, while the VM still runs; qemu is killed after it
   * when `until` is set. A throw or a rejection is noted in the serial log. */
  onReady?: () => void | Promise<void>
}

export interface BootResult {
  ok: boolean
  /** Seconds from starting qemu to the marker (NaN if it never came). */
  seconds: number
  /** Seconds until qemu exited (the guest powers off after the marker). */
  exitSeconds: number
  /** Why it failed, and the last lines of the serial console. */
  error?: string
  tail: string
  /** console lines that report a failed disk read in the guest (at most 20) */
  ioErrors: string[]
}

/** What a guest kernel prints when a read of its disk failed. */
const IO_ERROR = /I\/O error|EXT4-fs error|Buffer I\/O|blk_update_request|critical medium error|SQUASHFS error/

export function bootArgs(o: BootOptions): string[] {
  const append = [
    'root=/dev/vda',
    'ro',
    'console=ttyS0',
    'fsck.mode=skip',
    o.until === undefined ? 'vmifs.marker' : '',
    'panic=1',
    o.append ?? ''
  ]
    .filter(w => w !== '')
    .join(' ')
    .trim()
  return [
    '-accel',
    'tcg',
    '-machine',
    'pc',
    '-cpu',
    'max',
    '-smp',
    '1',
    '-m',
    String(o.memMiB ?? 1024),
    '-display',
    'none',
    '-monitor',
    'none',
    '-serial',
    'stdio',
    '-nic',
    'none',
    '-no-reboot',
    '-snapshot',
    '-kernel',
    o.kernel,
    '-initrd',
    o.initrd,
    '-append',
    append,
    '-drive',
    `${o.drive},if=virtio`
  ]
}

export function bootVm(o: BootOptions): Promise<BootResult> {
  const qemu = ['qemu-system-x86_64', ...bootArgs(o)]
  const argv = o.netns === undefined ? qemu : ['nsenter', `--net=/run/netns/${o.netns}`, ...qemu]
  const t0 = performance.now()
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] })
  let log = ''
  let partial = ''
  const ioErrors: string[] = []
  let markerAt = NaN
  const tail = (): string => log.split('\n').slice(-25).join('\n')
  return new Promise(resolve => {
    let settled = false
    const finish = (r: Omit<BootResult, 'tail' | 'ioErrors'>): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      resolve({ ...r, tail: tail(), ioErrors })
    }
    const onData = (d: Buffer): void => {
      const text = d.toString('latin1')
      const lines = (partial + text).split('\n')
      partial = lines.pop() ?? ''
      for (const l of lines) if (IO_ERROR.test(l) && ioErrors.length < 20) ioErrors.push(l.trim())
      log += text
      if (log.length > 256 * 1024) log = log.slice(-128 * 1024)
      if (Number.isNaN(markerAt) && log.includes(o.until ?? MARKER)) {
        markerAt = (performance.now() - t0) / 1000
        // called from a promise, so that a throw is caught like a rejection
        const after =
          o.onReady === undefined
            ? Promise.resolve()
            : Promise.resolve()
                .then(o.onReady)
                .catch((e: unknown) => {
                  log += `\nonReady failed: ${e instanceof Error ? e.message : String(e)}\n`
                })
        // the guest powers off after the marker; give it a moment, then make sure qemu is gone
        void after.then(() => {
          if (o.until !== undefined) child.kill('SIGKILL')
          else
            setTimeout(() => {
              if (child.exitCode === null) child.kill('SIGKILL')
            }, 15_000).unref()
        })
      }
    }
    child.stdout.on('data', onData)
    child.stderr.on('data', onData)
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      finish({
        ok: false,
        seconds: NaN,
        exitSeconds: NaN,
        error: `no marker within ${(o.timeoutMs ?? 300_000) / 1000} s`
      })
    }, o.timeoutMs ?? 300_000)
    child.once('error', e => finish({ ok: false, seconds: NaN, exitSeconds: NaN, error: e.message }))
    child.once('exit', (code, sig) => {
      const exitSeconds = (performance.now() - t0) / 1000
      if (!Number.isNaN(markerAt)) finish({ ok: true, seconds: markerAt, exitSeconds })
      else
        finish({
          ok: false,
          seconds: NaN,
          exitSeconds,
          error: `qemu exited (${String(code ?? sig)}) before the marker`
        })
    })
  })
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const argv = process.argv.slice(2)
  const opt = (n: string): string | undefined => {
    const i = argv.indexOf(n)
    return i < 0 ? undefined : argv[i + 1]
  }
  const r = await bootVm({
    kernel: opt('--kernel')!,
    initrd: opt('--initrd')!,
    drive: opt('--drive')!,
    netns: opt('--netns'),
    timeoutMs: Number(opt('--timeout-s') ?? 300) * 1000
  })
  if (!r.ok) process.stderr.write(`${r.error ?? ''}\n${r.tail}\n`)
  process.stdout.write(
    JSON.stringify({ ok: r.ok, seconds: r.seconds, exitSeconds: r.exitSeconds, error: r.error }) + '\n'
  )
  process.exit(r.ok ? 0 : 1)
}
