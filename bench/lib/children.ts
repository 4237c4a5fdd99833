// Child processes of the benchmarks: waiting for a service's ready line, stopping it.
import type { ChildProcess } from 'node:child_process'

/** Resolves with the first JSON line (starting with "{") the child prints on stdout. */
export function waitLine (child: ChildProcess, what: string, timeoutMs = 20_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = ''
    const t = setTimeout(() => reject(new Error(`${what} did not start`)), timeoutMs)
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString()
      const line = out.split('\n').find(l => l.startsWith('{'))
      if (line) { clearTimeout(t); resolve(line) }
    })
    child.once('exit', (c) => { clearTimeout(t); reject(new Error(`${what} exited ${String(c)}`)) })
  })
}

/** SIGTERM, and wait for the exit. */
export async function stop (child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null) return
  child.kill('SIGTERM')
  await new Promise(resolve => child.once('exit', resolve))
}
