import test, { type ExecutionContext } from 'ava'
import http from 'node:http'
import net from 'node:net'
import path from 'node:path'
import { spawn } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { startDelayProxy, type DelayProxy, type DelayProxyOptions } from '../../bench/lib/delay-proxy.js'

const PROXY_JS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../bench/lib/delay-proxy.js')
const MiB = 1024 * 1024
const BIG = randomBytes(2 * MiB)
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

/** /small -> 'ok', /big -> 2 MiB, POST /hash -> sha256 of the request body. */
async function startServer(t: ExecutionContext): Promise<number> {
  const server = http.createServer((req, res) => {
    if (req.method === 'POST') {
      const h = createHash('sha256')
      req.on('data', (d: Buffer) => h.update(d))
      req.on('end', () => res.end(h.digest('hex')))
    } else if (req.url === '/big') {
      res.writeHead(200, { 'content-length': BIG.length })
      res.end(BIG)
    } else {
      res.end('ok')
    }
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    server.closeAllConnections()
    await new Promise(resolve => server.close(resolve))
  })
  return (server.address() as net.AddressInfo).port
}

async function proxy(t: ExecutionContext, targetPort: number, o: Partial<DelayProxyOptions> = {}): Promise<DelayProxy> {
  const p = await startDelayProxy({
    listenHost: '127.0.0.1',
    listenPort: 0,
    targetHost: '127.0.0.1',
    targetPort,
    delayMs: 10,
    ...o
  })
  t.teardown(async () => {
    await p.close()
  })
  return p
}

function keepAlive(t: ExecutionContext): http.Agent {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
  t.teardown(() => {
    agent.destroy()
  })
  return agent
}

async function request(port: number, p: string, agent: http.Agent | false, body?: Buffer): Promise<Buffer> {
  return await new Promise<Buffer>((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port, path: p, agent, method: body === undefined ? 'GET' : 'POST' },
      res => {
        const parts: Buffer[] = []
        res.on('data', (d: Buffer) => parts.push(d))
        res.on('end', () => resolve(Buffer.concat(parts)))
        res.on('error', reject)
      }
    )
    req.on('error', reject)
    req.end(body)
  })
}

async function p50Rtt(port: number, agent: http.Agent, n = 20): Promise<number> {
  for (let i = 0; i < 3; i++) await request(port, '/small', agent) // connect, warm up
  const ms: number[] = []
  for (let i = 0; i < n; i++) {
    const t0 = performance.now()
    await request(port, '/small', agent)
    ms.push(performance.now() - t0)
  }
  ms.sort((a, b) => a - b)
  return ms[Math.floor(n / 2)]!
}

// timing tests: one at a time
test.serial('a small request over the proxy gains about 2×delayMs of RTT', async t => {
  const port = await startServer(t)
  const direct = await p50Rtt(port, keepAlive(t))
  const p = await proxy(t, port, { delayMs: 10 })
  const proxied = await p50Rtt(p.port, keepAlive(t))
  t.log(`p50 direct ${direct.toFixed(2)} ms, via proxy (10 ms each way) ${proxied.toFixed(2)} ms`)
  t.true(direct < 5, `direct ${direct}`)
  t.true(proxied >= 18 && proxied <= 40, `proxied ${proxied}`)
  t.is(p.stats().connections, 1) // keep-alive: one connection for all 23 requests
})

test.serial('emulateHandshake charges a new connection one more RTT', async t => {
  const port = await startServer(t)
  const p = await proxy(t, port, { delayMs: 10, emulateHandshake: true })
  const t0 = performance.now()
  await request(p.port, '/small', false)
  const first = performance.now() - t0
  t.log(`new connection: ${first.toFixed(1)} ms`)
  t.true(first >= 38 && first < 80, `first ${first}`)
})

test.serial('bodies arrive intact both ways; a slow sink pauses the source instead of queueing', async t => {
  const port = await startServer(t)
  const p = await proxy(t, port, { delayMs: 10, maxQueuedBytes: 1 * MiB })
  const got = await request(p.port, '/big', false)
  t.is(got.length, BIG.length)
  t.is(sha(got), sha(BIG))
  const up = randomBytes(16 * MiB)
  t.is((await request(p.port, '/hash', false, up)).toString(), sha(up))
  const s = p.stats()
  t.true(s.bytesDown > BIG.length && s.bytesUp > up.length, JSON.stringify(s))
  t.is(s.connections, 2)
  // 16 MiB arrive within one 10 ms delay window on loopback: only backpressure keeps this low
  t.true(s.peakQueuedBytes <= 1 * MiB + 256 * 1024, `peak queued ${s.peakQueuedBytes}`)
  t.log(`peak queued ${(s.peakQueuedBytes / MiB).toFixed(2)} MiB`)
})

test.serial('the throttle limits throughput to rateBytesPerSec', async t => {
  const port = await startServer(t)
  const rate = 2_000_000
  const p = await proxy(t, port, { delayMs: 5, rateBytesPerSec: rate })
  const t0 = performance.now()
  const got = await request(p.port, '/big', false)
  const ms = performance.now() - t0
  const boundMs = (BIG.length / rate) * 1000 // ~1049 ms
  t.log(`2 MiB at ${rate} B/s: ${ms.toFixed(0)} ms (bound ${boundMs.toFixed(0)} ms)`)
  t.is(sha(got), sha(BIG))
  t.true(ms > 0.6 * boundMs && ms < 2 * boundMs, `${ms} ms`)
})

test.serial('half-close, ordering and the delay of the FIN are preserved on a raw TCP stream', async t => {
  // the target answers each line and says bye only after the client has half-closed
  const server = net.createServer({ allowHalfOpen: true }, s => {
    s.on('data', d => s.write(d.toString().toUpperCase()))
    s.on('end', () => s.end('|bye'))
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    server.close()
  })
  const p = await proxy(t, (server.address() as net.AddressInfo).port, { delayMs: 15 })
  const c = net.connect({ host: '127.0.0.1', port: p.port, allowHalfOpen: true })
  let got = ''
  c.on('data', d => {
    got += d.toString()
  })
  const t0 = performance.now()
  for (let i = 0; i < 50; i++) c.write(`${i},`)
  c.end()
  await new Promise(resolve => c.once('end', resolve))
  const ms = performance.now() - t0
  t.is(got, Array.from({ length: 50 }, (_, i) => `${i},`).join('') + '|bye')
  // the FIN went out 15 ms late and the bye came back 15 ms late
  t.true(ms >= 29, `${ms}`)
  c.destroy()
  await new Promise(resolve => setTimeout(resolve, 50))
  t.is(p.stats().active, 0)
})

test.serial('an unreachable target resets the client connection', async t => {
  const closed = net.createServer()
  await new Promise<void>(resolve => closed.listen(0, '127.0.0.1', resolve))
  const deadPort = (closed.address() as net.AddressInfo).port
  await new Promise(resolve => closed.close(resolve))
  const p = await proxy(t, deadPort, { delayMs: 1 })
  const c = net.connect({ host: '127.0.0.1', port: p.port })
  const err = await new Promise<NodeJS.ErrnoException | undefined>(resolve => {
    c.once('error', resolve)
    c.once('close', () => resolve(undefined))
  })
  t.is(err?.code, 'ECONNRESET')
})

test.serial('the CLI prints its port as a JSON line and exits 0 on SIGTERM', async t => {
  const port = await startServer(t)
  const child = spawn(
    process.execPath,
    [PROXY_JS, '--listen', '127.0.0.1:0', '--target', `127.0.0.1:${port}`, '--delay-ms', '10'],
    { stdio: ['ignore', 'pipe', 'pipe'] }
  )
  t.teardown(() => {
    child.kill('SIGKILL')
  })
  const exited = new Promise<number | null>(resolve => child.once('exit', resolve))
  const line = await new Promise<string>((resolve, reject) => {
    let out = ''
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString()
      if (out.includes('\n')) resolve(out.slice(0, out.indexOf('\n')))
    })
    void exited.then(code => reject(new Error(`exited ${String(code)}`)))
  })
  const { port: proxyPort } = JSON.parse(line) as { port: number }
  t.true(proxyPort > 0)
  const t0 = performance.now()
  t.is((await request(proxyPort, '/small', false)).toString(), 'ok')
  t.true(performance.now() - t0 >= 19)
  child.kill('SIGTERM')
  t.is(await exited, 0)
})
