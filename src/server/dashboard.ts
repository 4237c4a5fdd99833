// The web dashboard, served by the agent (docs/dashboard.md). The page and its scripts are static
// files (web/dashboard/, uPlot for the charts); their data is the agent's state as JSON, pushed as
// server-sent events (GET /api/events, one `state` event every interval, the first with the
// charts' whole history, the others with its latest sample) or read once (GET /api/state), and a
// transfer plan on request (GET /api/plan?image=&to=).
// Access: on the loopback listener, a one-time login token (`vmifs dashboard` mints one through
// the local API: POST /v1/dashboard) that the page trades for a session cookie; on the optional
// remote listener (config "dashboard"), the operator's own token (a file of its own, never the
// fleet token), as ?token= once or as "Authorization: Bearer". Everything else answers 401. The
// loopback listener answers only requests naming it as their Host (no DNS rebinding).
import crypto from 'node:crypto'
import fs from 'node:fs'
import http from 'node:http'
import https from 'node:https'
import path from 'node:path'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import { VmifsError, codeOf, outcomeOf } from '../errors.js'
import type { Logger } from '../util/log.js'
import { listen, shutdown } from './http-util.js'

const here = path.dirname(fileURLToPath(import.meta.url))
const WEB = path.resolve(here, '../../../web/dashboard')
const UPLOT = path.dirname(createRequire(import.meta.url).resolve('uplot'))

/** A login token not used within this long is void. */
const LOGIN_TTL_MS = 10 * 60_000
/** A session lasts this long after its last request. */
const SESSION_IDLE_MS = 12 * 3600_000
/** The page's state is pushed this often. */
export const DASHBOARD_INTERVAL_MS = 2000

const STATIC: Record<string, { file: string; type: string }> = {
  '/': { file: path.join(WEB, 'index.html'), type: 'text/html; charset=utf-8' },
  '/app.js': { file: path.join(WEB, 'app.js'), type: 'text/javascript; charset=utf-8' },
  '/app.css': { file: path.join(WEB, 'app.css'), type: 'text/css; charset=utf-8' },
  '/uPlot.js': { file: path.join(UPLOT, 'uPlot.iife.min.js'), type: 'text/javascript; charset=utf-8' },
  '/uPlot.css': { file: path.join(UPLOT, 'uPlot.min.css'), type: 'text/css; charset=utf-8' }
}

const HEADERS = {
  // the page loads its own scripts and styles only, and talks to this server only
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store'
}

export interface DashboardDeps {
  /**
   * the page's data (docs/dashboard.md); `full`: with every sample of the charts' history, else
   * with the latest only (an event after the first: the page appends it)
   */
  state(full: boolean): Promise<unknown>
  /** the transfer plan of `image` onto host `to` (src/planner/plan-report.ts) */
  plan(image: string, to: string): Promise<unknown>
}

export interface RemoteDashboard {
  listen: { host: string; port: number }
  token: string
  tls?: { cert: string; key: string }
}

function equalSecret(a: string, b: string): boolean {
  const x = crypto.createHash('sha256').update(a).digest()
  const y = crypto.createHash('sha256').update(b).digest()
  return crypto.timingSafeEqual(x, y)
}

function cookieOf(req: http.IncomingMessage, name: string): string | undefined {
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const [k, ...v] = part.trim().split('=')
    if (k === name) return v.join('=')
  }
  return undefined
}

/** One listener: its sessions, and how a request logs in. */
class Listener {
  readonly sessions = new Map<string, number>()
  server: http.Server | undefined
  port = 0

  constructor(
    readonly host: string,
    /** a login token is good here (and, one-time, used up) */
    readonly login: (token: string) => boolean,
    /** requests must name this listener as their Host */
    readonly checkHost: boolean,
    readonly secure: boolean
  ) {}

  /** The session cookie's name: cookies do not tell ports apart, agents on one host must. */
  get cookie(): string {
    return `vmifs_dashboard_${this.port}`
  }

  session(req: http.IncomingMessage): boolean {
    const id = cookieOf(req, this.cookie)
    const until = id === undefined ? undefined : this.sessions.get(id)
    if (until === undefined) return false
    if (until < Date.now()) {
      this.sessions.delete(id!)
      return false
    }
    this.sessions.set(id!, Date.now() + SESSION_IDLE_MS)
    return true
  }

  open(): string {
    const now = Date.now()
    for (const [k, until] of this.sessions) if (until < now) this.sessions.delete(k)
    const id = crypto.randomBytes(32).toString('base64url')
    this.sessions.set(id, now + SESSION_IDLE_MS)
    return id
  }

  hostOk(req: http.IncomingMessage): boolean {
    if (!this.checkHost) return true
    const h = (req.headers.host ?? '').toLowerCase()
    return [`127.0.0.1:${this.port}`, `localhost:${this.port}`, `[::1]:${this.port}`].includes(h)
  }
}

export class Dashboard {
  private readonly logins = new Map<string, number>()
  private local: Listener | undefined
  private remote: Listener | undefined
  private readonly streams = new Set<http.ServerResponse>()
  private timer: NodeJS.Timeout | undefined

  constructor(
    private readonly deps: DashboardDeps,
    private readonly log: Logger,
    private readonly intervalMs = DASHBOARD_INTERVAL_MS
  ) {}

  /** Starts the remote listener (config "dashboard"). */
  async listenRemote(r: RemoteDashboard): Promise<string> {
    const l = new Listener(r.listen.host, t => equalSecret(t, r.token), false, r.tls !== undefined)
    await this.start(l, r.listen.host, r.listen.port, r.tls)
    this.remote = l
    return this.url(l)
  }

  /**
   * A URL of the loopback dashboard carrying a new one-time login token (the loopback listener
   * starts on the first call). Unused tokens are void after LOGIN_TTL_MS.
   */
  async loginUrl(): Promise<{ url: string; remote: string | null; expiresAt: string }> {
    if (!this.local) {
      const l = new Listener('127.0.0.1', t => this.useLogin(t), true, false)
      await this.start(l, '127.0.0.1', 0)
      this.local = l
    }
    const now = Date.now()
    for (const [k, until] of this.logins) if (until < now) this.logins.delete(k)
    const token = crypto.randomBytes(24).toString('base64url')
    this.logins.set(token, now + LOGIN_TTL_MS)
    return {
      url: `${this.url(this.local)}/?token=${token}`,
      remote: this.remote ? this.url(this.remote) : null,
      expiresAt: new Date(now + LOGIN_TTL_MS).toISOString()
    }
  }

  private useLogin(token: string): boolean {
    for (const [k, until] of this.logins) {
      if (!equalSecret(k, token)) continue
      this.logins.delete(k)
      return until >= Date.now()
    }
    return false
  }

  private url(l: Listener): string {
    const host = l.host.includes(':') ? `[${l.host}]` : l.host
    return `${l.secure ? 'https' : 'http'}://${host}:${l.port}`
  }

  private async start(l: Listener, host: string, port: number, tls?: { cert: string; key: string }): Promise<void> {
    const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => {
      this.handle(l, req, res).catch((err: unknown) => {
        if (!res.headersSent)
          this.json(res, outcomeOf(err).http, { error: codeOf(err), message: (err as Error).message })
        else res.destroy()
      })
    }
    const server = tls
      ? https.createServer({ cert: fs.readFileSync(tls.cert), key: fs.readFileSync(tls.key) }, handler)
      : http.createServer(handler)
    await listen(server, port, host)
    l.server = server
    l.port = (server.address() as { port: number }).port
  }

  private json(res: http.ServerResponse, status: number, v: unknown): void {
    res.writeHead(status, { ...HEADERS, 'content-type': 'application/json' }).end(JSON.stringify(v))
  }

  private async handle(l: Listener, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    if (!l.hostOk(req)) {
      this.text(res, 421, 'this listener answers requests for its loopback address only')
      return
    }
    if (req.method !== 'GET') {
      this.json(res, 405, { error: 'NO_ROUTE', message: 'the dashboard answers GET only' })
      return
    }
    const url = new URL(req.url ?? '/', 'http://dashboard')
    const token = url.searchParams.get('token')
    if (url.pathname === '/' && token !== null) {
      // a login: the token for a session cookie, then the page without the token in its URL
      if (!l.login(token)) {
        this.text(res, 401, 'this login link was used or has expired: run `vmifs dashboard` for a new one')
        return
      }
      const cookie = `${l.cookie}=${l.open()}; HttpOnly; SameSite=Strict; Path=/${l.secure ? '; Secure' : ''}`
      res.writeHead(303, { ...HEADERS, 'set-cookie': cookie, location: '/' }).end()
      return
    }
    const bearer = /^Bearer (\S+)$/.exec(req.headers.authorization ?? '')?.[1]
    const authed = l.session(req) || (bearer !== undefined && l !== this.local && l.login(bearer))
    if (!authed) {
      this.text(res, 401, 'open the link `vmifs dashboard` prints on this host')
      return
    }
    const st = STATIC[url.pathname]
    if (st) {
      res.writeHead(200, { ...HEADERS, 'content-type': st.type }).end(await fs.promises.readFile(st.file))
      return
    }
    if (url.pathname === '/api/state') {
      this.json(res, 200, await this.deps.state(true))
      return
    }
    if (url.pathname === '/api/plan') {
      const image = url.searchParams.get('image') ?? ''
      const to = url.searchParams.get('to') ?? ''
      if (image === '' || to === '') throw VmifsError.usage('plan needs ?image=<name>&to=<host>')
      this.json(res, 200, await this.deps.plan(image, to))
      return
    }
    if (url.pathname === '/api/events') {
      res.writeHead(200, { ...HEADERS, 'content-type': 'text/event-stream', connection: 'keep-alive' })
      res.write(`retry: ${this.intervalMs}\n\n`)
      this.streams.add(res)
      req.on('close', () => this.streams.delete(res))
      await this.push(res)
      this.timer ??= setInterval(() => void this.pushAll(), this.intervalMs)
      return
    }
    this.json(res, 404, { error: 'NO_ROUTE', message: `no page ${url.pathname}` })
  }

  private text(res: http.ServerResponse, status: number, why: string): void {
    res.writeHead(status, { ...HEADERS, 'content-type': 'text/plain; charset=utf-8' }).end(`vmifs dashboard: ${why}\n`)
  }

  private async push(res: http.ServerResponse): Promise<void> {
    const state = await this.deps.state(true)
    res.write(`event: state\ndata: ${JSON.stringify(state)}\n\n`)
  }

  private async pushAll(): Promise<void> {
    if (this.streams.size === 0) {
      clearInterval(this.timer)
      this.timer = undefined
      return
    }
    try {
      const data = `event: state\ndata: ${JSON.stringify(await this.deps.state(false))}\n\n`
      for (const s of this.streams) s.write(data)
    } catch (err) {
      this.log.warn({ code: codeOf(err), err: (err as Error).message }, 'dashboard: the state could not be read')
    }
  }

  async close(): Promise<void> {
    clearInterval(this.timer)
    for (const s of this.streams) s.end()
    this.streams.clear()
    await Promise.all([this.local, this.remote].map(async l => (l?.server ? await shutdown(l.server) : undefined)))
  }
}
