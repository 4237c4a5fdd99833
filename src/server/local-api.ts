// The agent's local API, an HTTP server on a Unix socket in the data dir (<data>/agent.sock),
// for the CLI on the same host (its routes, GET /v1/stats and the others the agent gives it, are
// listed in docs/operations.md#the-local-api). Routes are keyed
// "METHOD /path"; a handler gets the query and the parsed JSON body (at most MAX_BODY bytes). An
// error answers its code's HTTP status (OUTCOMES in src/errors.ts) with {error: code, message,
// retryable}; an error that is not vmifs's answers INTERNAL.
import http from 'node:http'
import { Client } from 'undici'
import fs from 'node:fs'
import net from 'node:net'
import { type ErrorCode, OUTCOMES, VmifsError, codeOf, outcomeOf } from '../errors.js'
import { listen, shutdown } from './http-util.js'

export interface LocalRequest {
  query: URLSearchParams
  body: unknown
}
export type Routes = Record<string, (req: LocalRequest) => unknown>

const MAX_BODY = 64 * 1024 * 1024

function readBody(req: http.IncomingMessage): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = []
    let n = 0
    req.on('data', (b: Buffer) => {
      n += b.length
      if (n > MAX_BODY) {
        reject(new VmifsError('USAGE', `request body over ${MAX_BODY} bytes`))
        req.destroy()
        return
      }
      parts.push(b)
    })
    req.on('end', () => {
      if (n === 0) {
        resolve(undefined)
        return
      }
      try {
        resolve(JSON.parse(Buffer.concat(parts).toString('utf8')))
      } catch {
        reject(new VmifsError('USAGE', 'request body is not JSON'))
      }
    })
    req.on('error', reject)
  })
}

export async function socketInUse(socketPath: string): Promise<boolean> {
  if (!fs.existsSync(socketPath)) return false
  return await new Promise<boolean>(resolve => {
    const s = net.connect(socketPath)
    s.once('connect', () => {
      s.destroy()
      resolve(true)
    })
    s.once('error', () => resolve(false))
  })
}

export class LocalApi {
  private server: http.Server | undefined

  constructor(
    readonly socketPath: string,
    private readonly routes: Routes
  ) {}

  async listen(): Promise<void> {
    if (await socketInUse(this.socketPath)) {
      throw new VmifsError('AGENT_RUNNING', `another agent is running on this data dir (${this.socketPath} answers)`, {
        socket: this.socketPath
      })
    }
    fs.rmSync(this.socketPath, { force: true })
    const server = http.createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://localhost')
      const route = this.routes[`${req.method ?? 'GET'} ${url.pathname}`]
      const answer = (status: number, v: unknown): void => {
        res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(v))
      }
      if (!route) {
        answer(OUTCOMES.NO_ROUTE.http, { error: 'NO_ROUTE', message: `no route ${req.method ?? ''} ${url.pathname}` })
        return
      }
      readBody(req)
        .then(async body => await route({ query: url.searchParams, body }))
        .then(
          v => answer(200, v),
          (err: unknown) => {
            const o = outcomeOf(err)
            answer(o.http, { error: codeOf(err), message: (err as Error).message, retryable: o.retryable })
          }
        )
    })
    await listen(server, this.socketPath)
    fs.chmodSync(this.socketPath, 0o600)
    this.server = server
  }

  async close(): Promise<void> {
    const s = this.server
    this.server = undefined
    if (!s) return
    await shutdown(s)
    fs.rmSync(this.socketPath, { force: true })
  }
}

/**
 * One call to the local API of the agent on this data dir. An answer with an error code is
 * thrown as that VmifsError; no answer at all is AGENT_NOT_RUNNING.
 */
export async function agentCall(
  socketPath: string,
  method: 'GET' | 'POST',
  pathAndQuery: string,
  body?: unknown,
  o: { untimed?: boolean } = {}
): Promise<unknown> {
  // untimed: a call that runs as long as its work does (replicate), not undici's 5-minute default
  const client = new Client('http://localhost', {
    socketPath,
    ...(o.untimed === true ? { headersTimeout: 0, bodyTimeout: 0 } : {})
  })
  try {
    let res
    try {
      res = await client.request({
        path: pathAndQuery,
        method,
        body: body === undefined ? undefined : JSON.stringify(body),
        headers: body === undefined ? {} : { 'content-type': 'application/json' }
      })
    } catch (err) {
      throw new VmifsError(
        'AGENT_NOT_RUNNING',
        `no agent answers on ${socketPath} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
        { socket: socketPath }
      )
    }
    const answer = (await res.body.json()) as Record<string, unknown>
    if (res.statusCode !== 200) {
      const code =
        typeof answer.error === 'string' && answer.error !== 'NO_ROUTE' && answer.error !== 'INTERNAL'
          ? (answer.error as ErrorCode)
          : 'AGENT_NOT_RUNNING'
      throw new VmifsError(
        code,
        typeof answer.message === 'string' ? answer.message : `agent answered ${res.statusCode}`
      )
    }
    return answer
  } finally {
    await client.close()
  }
}
