// The agent's HTTP server for peers (and for Prometheus). Every request must carry the fleet
// secret as a bearer token, compared in constant time; ids that are not well-formed hashes or
// digests are refused; bodies and batches are bounded. Every refusal is a code whose HTTP status
// is its row of OUTCOMES (src/errors.ts).
import http from 'node:http'
import https from 'node:https'
import fs from 'node:fs'
import { createHash, timingSafeEqual } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import { type ErrorCode, OUTCOMES, VmifsError, type WireCode } from '../errors.js'
import type { Cursors, FactPage } from '../index/facts.js'
import { isHashHex } from '../util/hash.js'
import { promisify } from 'node:util'
import zlib from 'node:zlib'
import {
  BROTLI_MAX_QUALITY,
  BROTLI_QUALITY,
  BROTLI_QUALITY_HEADER,
  COMPRESS_PAYS,
  MAX_BATCH,
  MAX_BATCH_BYTES,
  MAX_JSON_BODY,
  encodeBatch
} from '../peer/wire.js'
import type { Logger } from '../util/log.js'
import { listen, shutdown } from './http-util.js'

export interface PeerService {
  hostId: string
  /** a verified chunk, or null when this host does not hold it */
  readChunk(hash: string): Promise<Buffer | null>
  manifest(digest: string): Buffer | null
  facts(cursors: Cursors): FactPage
  metrics(): Promise<{ contentType: string; body: string }>
  /** counts requests served, for stats */
  served(kind: 'chunk' | 'manifest' | 'facts', bytes: number): void
  /** a batch went out compressed: raw and wire bytes */
  compressed?(rawBytes: number, wireBytes: number): void
  /** POST /v1/replicate: replicate an image onto this host (absent: 404) */
  replicate?(body: unknown): Promise<unknown>
}

export interface PeerServerOptions {
  host: string
  port: number
  token: string
  tls?: { cert: string; key: string }
}

const digestOf = (s: string): Buffer => createHash('sha256').update(s).digest()
const brotli = promisify(zlib.brotliCompress)

/** Whether an accept-encoding header lists br (q=0 excluded). */
function acceptsBrotli(h: string | undefined): boolean {
  if (h === undefined) return false
  return h.split(',').some(p => {
    const [name, ...params] = p.trim().split(';')
    return name!.trim() === 'br' && !params.some(x => /^\s*q=0(\.0*)?\s*$/.test(x))
  })
}

export class PeerServer {
  private server: http.Server | undefined
  private readonly tokenDigest: Buffer

  constructor(
    private readonly opts: PeerServerOptions,
    private readonly svc: PeerService,
    private readonly log: Logger
  ) {
    if (opts.token.length === 0)
      throw new VmifsError('TOKEN_MISSING', 'a fleet token is needed to listen (VMIFS_TOKEN or config "token")')
    this.tokenDigest = digestOf(opts.token)
  }

  get port(): number {
    return (this.server?.address() as AddressInfo | null)?.port ?? 0
  }

  async listen(): Promise<void> {
    const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => {
      this.handle(req, res).catch((err: unknown) => {
        this.log.warn({ err, url: req.url }, 'peer request failed')
        if (!res.headersSent) refuse(res, 'INTERNAL')
        else res.destroy()
      })
    }
    const server = this.opts.tls
      ? https.createServer(
          { cert: fs.readFileSync(this.opts.tls.cert), key: fs.readFileSync(this.opts.tls.key) },
          handler
        )
      : http.createServer(handler)
    server.keepAliveTimeout = 60_000
    server.headersTimeout = 20_000
    server.requestTimeout = 60_000
    await listen(server, this.opts.port, this.opts.host)
    this.server = server
  }

  async close(): Promise<void> {
    const s = this.server
    this.server = undefined
    await shutdown(s)
  }

  private authorized(req: http.IncomingMessage): boolean {
    const h = req.headers.authorization
    if (typeof h !== 'string' || !h.startsWith('Bearer ')) return false
    return timingSafeEqual(digestOf(h.slice(7)), this.tokenDigest)
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    if (!this.authorized(req)) {
      req.resume()
      refuse(res, 'UNAUTHORIZED', {}, { 'www-authenticate': 'Bearer' })
      return
    }
    const url = (req.url ?? '/').split('?')[0]!
    const route = `${req.method ?? 'GET'} ${url.replace(/^(\/v1\/(?:chunks|manifests))\/.*/, '$1/:id')}`
    switch (route) {
      case 'GET /v1/health':
        return send(res, 200, { ok: true, hostId: this.svc.hostId })
      case 'GET /metrics': {
        const m = await this.svc.metrics()
        res.writeHead(200, { 'content-type': m.contentType }).end(m.body)
        return
      }
      case 'GET /v1/chunks/:id': {
        const id = url.slice('/v1/chunks/'.length)
        if (!isHashHex(id)) return refuse(res, 'BAD_HASH')
        const data = await this.svc.readChunk(id)
        if (!data) return refuse(res, 'NOT_HELD')
        this.svc.served('chunk', data.length)
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': data.length }).end(data)
        return
      }
      case 'POST /v1/chunks': {
        const body = await readJson(req, res)
        if (body === undefined) return
        const hashes = (body as { hashes?: unknown }).hashes
        if (!Array.isArray(hashes) || hashes.length === 0 || hashes.length > MAX_BATCH)
          return refuse(res, 'BAD_BATCH', { max: MAX_BATCH })
        if (!hashes.every(isHashHex)) return refuse(res, 'BAD_HASH')
        const parts: Array<Buffer | null> = []
        let total = 0
        for (const h of hashes) {
          const d = total < MAX_BATCH_BYTES ? await this.svc.readChunk(h) : null
          if (d) total += d.length
          parts.push(d)
        }
        this.svc.served('chunk', total)
        const out = encodeBatch(parts)
        const raw = out.reduce((n, b) => n + b.length, 0)
        if (acceptsBrotli(req.headers['accept-encoding']) && total > 0) {
          // compressed only when it pays: VM chunks often compress well, random data never does
          const body = Buffer.concat(out, raw)
          const asked = Number(req.headers[BROTLI_QUALITY_HEADER])
          const quality = Number.isInteger(asked) && asked >= 0 ? Math.min(asked, BROTLI_MAX_QUALITY) : BROTLI_QUALITY
          const z = await brotli(body, {
            params: { [zlib.constants.BROTLI_PARAM_QUALITY]: quality, [zlib.constants.BROTLI_PARAM_SIZE_HINT]: raw }
          })
          if (z.length <= raw * COMPRESS_PAYS) {
            this.svc.compressed?.(raw, z.length)
            res
              .writeHead(200, {
                'content-type': 'application/vnd.vmifs.batch',
                'content-encoding': 'br',
                'content-length': z.length
              })
              .end(z)
            return
          }
          res.writeHead(200, { 'content-type': 'application/vnd.vmifs.batch', 'content-length': raw }).end(body)
          return
        }
        res.writeHead(200, { 'content-type': 'application/vnd.vmifs.batch', 'content-length': raw })
        for (const b of out) res.write(b)
        res.end()
        return
      }
      case 'POST /v1/replicate': {
        if (!this.svc.replicate) {
          req.resume()
          return refuse(res, 'NO_ROUTE')
        }
        const body = await readJson(req, res)
        if (body === undefined) return
        try {
          return send(res, 200, await this.svc.replicate(body))
        } catch (err) {
          if (err instanceof VmifsError) return refuse(res, err.code, { message: err.message })
          throw err
        }
      }
      case 'GET /v1/manifests/:id': {
        const id = url.slice('/v1/manifests/'.length)
        if (!isHashHex(id)) return refuse(res, 'BAD_DIGEST')
        const m = this.svc.manifest(id)
        if (!m) return refuse(res, 'NOT_HELD')
        this.svc.served('manifest', m.length)
        res.writeHead(200, { 'content-type': 'application/vnd.vmifs.manifest', 'content-length': m.length }).end(m)
        return
      }
      case 'POST /v1/facts': {
        const body = await readJson(req, res)
        if (body === undefined) return
        const cursors = (body as { cursors?: unknown }).cursors
        if (
          typeof cursors !== 'object' ||
          cursors === null ||
          Array.isArray(cursors) ||
          !Object.values(cursors).every(v => Number.isSafeInteger(v) && (v as number) >= 0)
        )
          return refuse(res, 'BAD_CURSORS')
        const page = this.svc.facts(cursors as Cursors)
        const out = JSON.stringify(page)
        this.svc.served('facts', out.length)
        res.writeHead(200, { 'content-type': 'application/json' }).end(out)
        return
      }
      default:
        req.resume()
        return refuse(res, 'NO_ROUTE')
    }
  }
}

/** An answer with a code: its HTTP status is the code's (OUTCOMES). */
function refuse(
  res: http.ServerResponse,
  code: ErrorCode | WireCode,
  extra: Record<string, unknown> = {},
  headers: Record<string, string> = {}
): void {
  send(res, OUTCOMES[code].http, { error: code, ...extra }, headers)
}

function send(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const s = JSON.stringify(body)
  res
    .writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(s), ...headers })
    .end(s)
}

/** Reads a bounded JSON body; answers 413/400 itself and returns undefined when it is bad. */
async function readJson(req: http.IncomingMessage, res: http.ServerResponse): Promise<unknown> {
  const chunks: Buffer[] = []
  let n = 0
  for await (const c of req) {
    n += (c as Buffer).length
    if (n > MAX_JSON_BODY) {
      refuse(res, 'BODY_TOO_LARGE', { max: MAX_JSON_BODY })
      req.destroy()
      return undefined
    }
    chunks.push(c as Buffer)
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'))
  } catch {
    refuse(res, 'BAD_JSON')
    return undefined
  }
}
