// A proxy to a real agent that spoils its chunk answers, run as a child process by the fleet
// tests: node faulty-proxy.js --target PORT --fault corrupt|truncate|blackhole
// corrupt flips a byte of every chunk body, truncate cuts it short, blackhole accepts chunk
// requests and never answers. Everything else (facts, manifests, health) passes through.
// Prints {"port":N}; GET /__proxy/stats answers {spoiled, seen}.
import http from 'node:http'
import type net from 'node:net'
import { parseArgs } from 'node:util'

const { values } = parseArgs({ options: { target: { type: 'string' }, fault: { type: 'string' } } })
const targetPort = Number(values.target)
const fault = values.fault as 'corrupt' | 'truncate' | 'blackhole'
let spoiled = 0
const seen: string[] = []
const held: http.ServerResponse[] = []

const server = http.createServer((req, res) => {
  if (req.url === '/__proxy/stats') {
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ spoiled, seen }))
    return
  }
  const isChunk = (req.url ?? '').startsWith('/v1/chunks')
  if (isChunk && fault === 'blackhole') {
    spoiled++
    held.push(res)
    req.resume()
    return
  }
  const up = http.request(
    { host: '127.0.0.1', port: targetPort, method: req.method, path: req.url, headers: req.headers },
    ur => {
      const parts: Buffer[] = []
      ur.on('data', (d: Buffer) => parts.push(d))
      ur.on('end', () => {
        let body: Buffer = Buffer.concat(parts)
        if (seen.length < 100)
          seen.push(`${req.method ?? ''} ${(req.url ?? '').slice(0, 24)} ${ur.statusCode ?? 0} ${body.length}`)
        if (isChunk && ur.statusCode === 200 && body.length > 8) {
          spoiled++
          if (fault === 'corrupt') body = corrupt(Buffer.from(body), req.method === 'POST')
          if (fault === 'truncate')
            body = req.method === 'GET' ? body.subarray(0, body.length >> 1) : body.subarray(0, body.length - 100)
        }
        res.writeHead(ur.statusCode ?? 502, { ...ur.headers, 'content-length': String(body.length) }).end(body)
      })
    }
  )
  up.on('error', () => {
    res.destroy()
  })
  req.pipe(up)
})
/** Flips the last byte of the chunk, or of every chunk of a batch body (u32 length + bytes each). */
function corrupt(body: Buffer, batch: boolean): Buffer {
  if (!batch) {
    body[body.length - 1] = body[body.length - 1]! ^ 0x5a
    return body
  }
  for (let p = 0; p + 4 <= body.length;) {
    const len = body.readUInt32BE(p)
    p += 4
    if (len === 0xffffffff) continue
    if (len > 0) body[p + len - 1] = body[p + len - 1]! ^ 0x5a
    p += len
  }
  return body
}

server.listen(0, '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ port: (server.address() as net.AddressInfo).port }) + '\n')
})
process.on('SIGTERM', () => {
  for (const r of held) r.destroy()
  server.closeAllConnections()
  server.close(() => process.exit(0))
})
