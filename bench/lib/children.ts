// Child processes of the benchmarks: waiting for a service's ready line, stopping it.
import type { ChildProcess } from 'node:child_process'

/** Resolves with the first JSON line (starting with "{") the child prints on stdout. */
export function waitLine(child: ChildProcess, what: string, timeoutMs = 20_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = ''
    const t = setTimeout(() => reject(new Error(`${what} did not start`)), timeoutMs)
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString()
      const line = out.split('\n').find(l => l.startsWith('{'))
      if (line) {
        clearTimeout(t)
        resolve(line)
      }
    })
    child.once('exit', c => {
      clearTimeout(t)
      reject(new Error(`${what} exited ${String(c)}`))
    })
  })
}

/**
 * SIGTERM, and wait for the exit; SIGKILL if it has not exited after `graceMs` (never, when not
 * given). A child that already exited, also by a signal, is left alone.
 */
export async function stop(child: ChildProcess | undefined, graceMs?: number): Promise<void> {
  if (child === undefined || child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise(resolve => child.once('exit', resolve))
  child.kill('SIGTERM')
  const t =
    graceMs === undefined
      ? undefined
      : setTimeout(() => {
          try {
            child.kill('SIGKILL')
          } catch {
            // best effort: it may have exited meanwhile
          }
        }, graceMs)
  await exited
  clearTimeout(t)
}
