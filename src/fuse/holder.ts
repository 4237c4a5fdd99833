// The holder of a mount's FUSE connection (native/fuse_holder.c): a tiny process started by the
// agent that mounted, which outlives it. After a crash the connection stays open, readers wait,
// and the next agent takes the descriptor from it and answers them; on a takeover the successor
// takes it the same way. Its socket is <data dir>/fuse.sock (mode 0600).
import { spawn } from 'node:child_process'
import path from 'node:path'
import { VmifsError } from '../errors.js'
import { holderPath, native } from '../native/index.js'

export function holderSocket(dataDir: string): string {
  return path.join(dataDir, 'fuse.sock')
}

/** The connection's descriptor from a running holder, or undefined when none answers. */
export function takeFromHolder(socket: string): number | undefined {
  try {
    return native().holderTake(socket)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    // no holder: never started, or gone with its connection
    if (code === 'ENOENT' || code === 'ECONNREFUSED') return undefined
    throw new VmifsError('HOLDER_FAILED', `the FUSE holder at ${socket} failed: ${(err as Error).message}`, {
      socket
    })
  }
}

/** Starts a holder for the descriptor `fd`; resolves once it listens. */
export async function startHolder(socket: string, fd: number): Promise<number> {
  const child = spawn(holderPath(), [socket], { stdio: ['ignore', 'pipe', 'pipe', fd], detached: true })
  const stdout = child.stdout!
  const stderr = child.stderr!
  let out = ''
  let err = ''
  stdout.on('data', (d: Buffer) => (out += d.toString()))
  stderr.on('data', (d: Buffer) => (err += d.toString()))
  const pid = await new Promise<number>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('no answer in 5 s')), 5000)
    child.once('exit', code => {
      clearTimeout(t)
      reject(new Error(`exited ${String(code)}: ${err.trim()}`))
    })
    stdout.on('data', () => {
      const m = /^ready (\d+)$/m.exec(out)
      if (m) {
        clearTimeout(t)
        resolve(Number(m[1]))
      }
    })
  }).catch((e: unknown) => {
    throw new VmifsError('HOLDER_FAILED', `cannot start the FUSE holder: ${(e as Error).message}`, { socket })
  })
  // it lives on its own: not a child this process waits for, nor one its streams keep alive
  stdout.destroy()
  stderr.destroy()
  child.unref()
  return pid
}

/** Tells the holder to exit (no successor); false when none answered. */
export function quitHolder(socket: string): boolean {
  return native().holderQuit(socket)
}
