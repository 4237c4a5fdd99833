// `npm run demo`'s fleet demo, as built (dist/src/cli/demo.js), run end to end as a user runs it:
// its output names the three hosts, the image appearing on hosts that did not import it, the
// bytes fetched by holder and the sibling's fetched share under 20 %, and it exits 0. A second run
// gets SIGINT in the middle of its reads, stops, and exits 130. After either, nothing of it is
// left: no agent, FUSE holder or nginx process, no mount, no temp dir.
import test, { type ExecutionContext } from 'ava'
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { ROOT, sleep } from './harness.js'

const DEMO = path.join(ROOT, 'dist/src/cli/demo.js')

interface Demo {
  output: () => string
  code: Promise<number | null>
  exited: () => boolean
  kill: (signal: NodeJS.Signals) => void
}

function startDemo(t: ExecutionContext): Demo {
  const child = spawn(process.execPath, [DEMO], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout.on('data', (d: Buffer) => (out += d.toString()))
  child.stderr.on('data', (d: Buffer) => (out += d.toString()))
  let closed = false
  const code = new Promise<number | null>(resolve =>
    child.once('close', c => {
      closed = true
      resolve(c)
    })
  )
  // a test that failed half-way still has the demo clean up after itself
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
    await code
  })
  return { output: () => out, code, exited: () => closed, kill: signal => child.kill(signal) }
}

/** Resolves once `cond` holds; fails with `what` (and the output so far) after `ms`. */
async function until(what: string, ms: number, cond: () => boolean, output: () => string): Promise<void> {
  const t0 = Date.now()
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}; the demo printed:\n${output()}`)
    await sleep(100)
  }
}

/** The demo's temp dir, from its first line. */
function demoDir(out: string): string {
  const dir = /^working in (\S+) /m.exec(out)?.[1]
  if (dir === undefined) throw new Error(`no temp dir in the output:\n${out}`)
  return dir
}

/** The pids the demo printed: its agents' and nginx's. */
function printedPids(out: string): number[] {
  return [...out.matchAll(/\(pid (\d+)\)/g)].map(m => Number(m[1]))
}

/**
 * What is left of a run: processes whose command line names its dir (agents, FUSE holders, nginx's
 * master), the pids it printed if still alive, children of those (nginx's workers), and mounts.
 */
function leftovers(dir: string, pids: number[]): string[] {
  const left: string[] = []
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue
    let cmd: string
    let ppid: number
    try {
      cmd = fs.readFileSync(`/proc/${e}/cmdline`, 'utf8').replace(/\0/g, ' ').trim()
      ppid = Number(/^\d+ \(.*\) \S (\d+)/.exec(fs.readFileSync(`/proc/${e}/stat`, 'utf8'))?.[1])
    } catch {
      continue // gone meanwhile
    }
    if (cmd.includes(dir) || pids.includes(Number(e)) || pids.includes(ppid)) left.push(`process ${e}: ${cmd}`)
  }
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n'))
    if (line.split(' ')[4]?.startsWith(dir)) left.push(`mount ${line}`)
  if (fs.existsSync(dir)) left.push(`dir ${dir}`)
  return left
}

/** Nothing of the run is left (the FUSE holders exit once their mount is gone: a moment given). */
async function nothingLeft(t: ExecutionContext, out: string): Promise<void> {
  const dir = demoDir(out)
  const pids = printedPids(out)
  t.true(pids.length >= 4, `the demo printed the pids of its three agents and nginx: ${pids.join(' ')}`)
  const t0 = Date.now()
  while (leftovers(dir, pids).length > 0 && Date.now() - t0 < 20_000) await sleep(200)
  t.deepEqual(leftovers(dir, pids), [])
}

test.serial('the fleet demo: three hosts, an image everywhere, fetches by holder, a sibling mostly local', async t => {
  t.timeout(5 * 60_000)
  const demo = startDemo(t)
  const code = await demo.code
  const out = demo.output()
  t.is(code, 0, out)
  for (const id of ['host-a', 'host-b', 'host-c']) {
    t.regex(out, new RegExp(`^${id}: mounted at ${id}/mnt, serves peers at http://127\\.0\\.0\\.1:\\d+`, 'm'))
    t.regex(out, new RegExp(`^${id} +[\\d.]+ MiB`, 'm'), `${id} has a row in the table`)
  }
  t.regex(out, /^demo-v1 appeared on host-b and host-c, which did not import it/m)
  t.regex(out, /^fetched [\d.]+ MiB by holder: host-a [\d.]+ MiB/m, "host-b's cold read came from host-a")
  const share = /^PASS: host-b fetched ([\d.]+) % of the [\d.]+ MiB it read of the sibling/m.exec(out)
  t.truthy(share, out)
  t.true(Number(share?.[1]) < 20, `the sibling's fetched share: ${share?.[1]} %`)
  t.regex(out, /^all \d+ checks passed/m)
  await nothingLeft(t, out)
})

test.serial('the fleet demo stopped by SIGINT in the middle of its reads: everything stopped, exit 130', async t => {
  t.timeout(5 * 60_000)
  const demo = startDemo(t)
  await until('the demo to start reading', 4 * 60_000, () => demo.output().includes('\n== 5.'), demo.output)
  demo.kill('SIGINT')
  await until('the demo to exit', 60_000, () => demo.exited(), demo.output)
  const code = await demo.code
  const out = demo.output()
  t.is(code, 130, out)
  t.regex(out, /^SIGINT: stopping the fleet$/m)
  t.regex(out, /^stopped; \S+ removed$/m)
  await nothingLeft(t, out)
})
