import test from 'ava'
import fs from 'node:fs'
import path from 'node:path'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { createFleetNet, netnsAvailable, withFleetNet, type FleetNet } from './netns.js'

const NETNS_JS = pathToFileURL(path.join(path.dirname(fileURLToPath(import.meta.url)), 'netns.js')).href
const MiB = 1024 * 1024
const BODY = 4 * MiB
// each namespace has its own port space, so a fixed port can't collide with anything
const PORT = 18080

const sleep = async (ms: number): Promise<void> => {
  await new Promise(resolve => setTimeout(resolve, ms))
}

const ourNetns = (prefix: string): string[] =>
  spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .stdout.split('\n')
    .map(l => l.split(' ')[0]!)
    .filter(n => n.startsWith(`vmifs-${prefix}-`))
    .sort()

const rootLinks = (): string[] =>
  spawnSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' })
    .stdout.split('\n')
    .map(l => l.split(':')[1]?.trim() ?? '')
    .filter(Boolean)
    .sort()

/** Running (not gone, not a zombie waiting for its reaper). */
function running(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'))
  } catch {
    return false
  }
}

/** Reads the first JSON line a child prints on stdout. */
async function firstJsonLine<T>(c: ChildProcess, timeoutMs = 10_000): Promise<T> {
  return await new Promise<T>((resolve, reject) => {
    let out = ''
    let err = ''
    const timer = setTimeout(() => {
      reject(new Error(`no output from child: ${err}`))
    }, timeoutMs)
    c.stderr?.on('data', (d: Buffer) => {
      err += d.toString()
    })
    c.stdout!.on('data', (d: Buffer) => {
      out += d.toString()
      const nl = out.indexOf('\n')
      if (nl >= 0) {
        clearTimeout(timer)
        resolve(JSON.parse(out.slice(0, nl)) as T)
      }
    })
    c.once('exit', (code, sig) => {
      clearTimeout(timer)
      reject(new Error(`child exited ${String(code ?? sig)}: ${err}`))
    })
  })
}

function startServer(net: FleetNet, host: string): ChildProcess {
  const script = `
    import http from 'node:http'
    import crypto from 'node:crypto'
    const body = crypto.randomBytes(${BODY})
    const sha = crypto.createHash('sha256').update(body).digest('hex')
    http.createServer((req, res) => { res.writeHead(200, { 'content-length': body.length }); res.end(body) })
      .listen(${PORT}, ${JSON.stringify(net.addr(host))}, () => console.log(JSON.stringify({ sha })))`
  return net.spawn(host, process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] })
}

interface Fetched {
  bytes: number
  ms: number
  sha: string
}

/** Fetches from inside `host`'s namespace; the time excludes node's own startup. */
function fetchFrom(net: FleetNet, host: string, url: string): Fetched {
  const script = `
    import http from 'node:http'
    import crypto from 'node:crypto'
    const t0 = performance.now()
    http.get(${JSON.stringify(url)}, { agent: false }, (res) => {
      const h = crypto.createHash('sha256')
      let bytes = 0
      res.on('data', (d) => { bytes += d.length; h.update(d) })
      res.on('end', () => console.log(JSON.stringify({ bytes, ms: performance.now() - t0, sha: h.digest('hex') })))
    }).on('error', (e) => { console.error(e); process.exit(1) })`
  const r = net.exec(host, process.execPath, ['--input-type=module', '-e', script], { timeout: 15_000 })
  if (r.status !== 0) throw new Error(`client failed (${String(r.status ?? r.signal)}): ${r.stderr}`)
  return JSON.parse(r.stdout) as Fetched
}

if (!netnsAvailable()) {
  test('network namespaces (needs root and iproute2)', t => {
    t.log('skipped: cannot create network namespaces')
    t.pass()
  })
} else {
  test.serial('hosts live in their own namespaces on a private bridge; the root namespace is untouched', t => {
    const before = rootLinks()
    const prefix = `nt${process.pid}`
    const net = withFleetNet(t, { hosts: ['a', 'b', 'c'], prefix })
    t.deepEqual(ourNetns(prefix), [
      `vmifs-${prefix}-a`,
      `vmifs-${prefix}-b`,
      `vmifs-${prefix}-c`,
      `vmifs-${prefix}-switch`
    ])
    t.deepEqual(rootLinks(), before)
    t.regex(net.addr('a'), /^10\.213\.\d+\.1$/)
    t.is(net.addr('a').split('.').slice(0, 3).join('.'), net.addr('c').split('.').slice(0, 3).join('.'))
    const a = net.exec('a', 'ip', ['-o', 'addr', 'show'])
    t.true(a.stdout.includes(`inet ${net.addr('a')}/24`), a.stdout)
    t.regex(net.exec('a', 'ip', ['-o', 'link', 'show', 'lo']).stdout, /state UNKNOWN|UP/)
    // nothing but the bridge's subnet is routable from a host
    t.is(net.exec('a', 'ip', ['route', 'get', '1.1.1.1']).status, 2)
    t.throws(() => withFleetNet(t, { hosts: ['a'], prefix }), { message: /already exists/ })
    t.throws(() => createFleetNet({ hosts: ['switch'], prefix: 'x' }), { message: /bad host name/ })
  })

  test.serial('a 4 MiB transfer between hosts runs at the tbf rate when the link is shaped', async t => {
    const net = withFleetNet(t, { hosts: ['a', 'b'], prefix: `nt${process.pid}` })
    const server = startServer(net, 'b')
    const { sha } = await firstJsonLine<{ sha: string }>(server)
    const url = `http://${net.addr('b')}:${PORT}/`

    fetchFrom(net, 'a', url) // warm-up: ARP, page cache of node
    const fast = fetchFrom(net, 'a', url)
    t.is(fast.bytes, BODY)
    t.is(fast.sha, sha)

    const rateMbit = 20
    const boundMs = ((BODY * 8) / (rateMbit * 1e6)) * 1000 // ~1678 ms
    net.shapeLink('b', rateMbit)
    t.regex(net.exec('b', 'tc', ['qdisc', 'show', 'dev', 'eth0']).stdout, /tbf .*rate 20Mbit/)
    const slow = fetchFrom(net, 'a', url)
    t.is(slow.bytes, BODY)
    t.is(slow.sha, sha)
    t.log(
      `unshaped ${fast.ms.toFixed(0)} ms, ` +
        `shaped at ${rateMbit} Mbit/s ${slow.ms.toFixed(0)} ms (bound ${boundMs.toFixed(0)} ms)`
    )
    t.true(slow.ms > 0.7 * boundMs && slow.ms < 2 * boundMs, `shaped ${slow.ms} ms vs bound ${boundMs} ms`)
    t.true(fast.ms < 0.25 * boundMs, `unshaped ${fast.ms} ms`)

    // only B's egress (server -> client) matters for this direction
    net.unshape('b')
    net.shape('b', { rateMbit: 40 })
    const half = fetchFrom(net, 'a', url)
    t.log(`egress-only at 40 Mbit/s: ${half.ms.toFixed(0)} ms`)
    t.true(half.ms > (0.7 * boundMs) / 2 && half.ms < (2 * boundMs) / 2, `40 Mbit/s: ${half.ms} ms`)

    net.unshape('b')
    t.notRegex(net.exec('b', 'tc', ['qdisc', 'show', 'dev', 'eth0']).stdout, /tbf/)
    t.true(fetchFrom(net, 'a', url).ms < 0.25 * boundMs)
  })

  test.serial('destroy kills spawned processes and deletes every namespace', async t => {
    const prefix = `nt${process.pid}`
    const net = createFleetNet({ hosts: ['a', 'b'], prefix })
    const ignoresTerm = net.spawn(
      'a',
      process.execPath,
      ['-e', 'process.on("SIGTERM", () => {}); console.log("up"); setInterval(() => {}, 1000)'],
      { stdio: ['ignore', 'pipe', 'ignore'] }
    )
    await new Promise(resolve => ignoresTerm.stdout!.once('data', resolve))
    const plain = net.spawn('b', 'sleep', ['1000'], { stdio: 'ignore' })
    // a grandchild that the harness did not spawn itself
    const sh = net.exec('b', 'sh', ['-c', 'sleep 1000 >/dev/null 2>&1 & echo $!'])
    const grandchild = Number(sh.stdout.trim())
    t.true(running(grandchild))
    const t0 = Date.now()
    await net.destroy(300)
    t.true(Date.now() - t0 < 5000)
    t.is(ignoresTerm.signalCode, 'SIGKILL')
    t.is(plain.signalCode, 'SIGTERM')
    await sleep(100)
    t.false(running(grandchild))
    t.deepEqual(ourNetns(prefix), [])
    await net.destroy() // idempotent
    t.throws(() => net.spawn('a', 'true'))
  })

  test.serial('create sweeps the leftovers of a killed run but never a live fleet', async t => {
    const crashed = `ntc${process.pid}`
    const live = `ntl${process.pid}`
    const holder = (prefix: string): ChildProcess =>
      spawn(
        process.execPath,
        [
          '--input-type=module',
          '-e',
          `
      import { createFleetNet } from ${JSON.stringify(NETNS_JS)}
      const net = createFleetNet({ hosts: ['a', 'b'], prefix: ${JSON.stringify(prefix)} })
      const c = net.spawn('a', 'sleep', ['1000'], { stdio: 'ignore', detached: true })
      console.log(JSON.stringify({ pid: c.pid }))
      process.on('SIGTERM', () => process.exit(0))
      setInterval(() => {}, 1000)`
        ],
        { stdio: ['ignore', 'pipe', 'pipe'] }
      )
    const c1 = holder(crashed)
    const c2 = holder(live)
    t.teardown(() => {
      c2.kill('SIGTERM')
    })
    const { pid: orphan } = await firstJsonLine<{ pid: number }>(c1)
    await firstJsonLine<{ pid: number }>(c2)
    c1.kill('SIGKILL') // no exit handlers run: namespaces and the sleeper stay behind
    await new Promise(resolve => c1.once('exit', resolve))
    t.is(ourNetns(crashed).length, 3)
    t.true(running(orphan))

    t.throws(() => createFleetNet({ hosts: ['a'], prefix: live }), { message: /in use by live pid/ })
    const net = withFleetNet(t, { hosts: ['x'], prefix: crashed })
    t.deepEqual(ourNetns(crashed), [`vmifs-${crashed}-switch`, `vmifs-${crashed}-x`])
    await sleep(100)
    t.false(running(orphan))
    t.is(ourNetns(live).length, 3)
    await net.destroy()

    // process.exit() in the holder removes its fleet through the exit hook
    c2.kill('SIGTERM')
    await new Promise(resolve => c2.once('exit', resolve))
    t.deepEqual(ourNetns(live), [])
    t.deepEqual(ourNetns(crashed), [])
  })
}
