// The agent's local API, an HTTP server on a Unix socket in the data dir (<data>/agent.sock),
// for the CLI on the same host: GET /v1/stats, GET /v1/health.
import http from 'node:http'
import fs from 'node:fs'
import net from 'node:net'
import { VmifsError } from '../errors.js'
import { listen, shutdown } from './http-util.js'

export type Routes = Record<string, () => unknown>

export async function socketInUse (socketPath: string): Promise<boolean> {
  if (!fs.existsSync(socketPath)) return false
  return await new Promise<boolean>((resolve) => {
    const s = net.connect(socketPath)
    s.once('connect', () => { s.destroy(); resolve(true) })
    s.once('error', () => resolve(false))
  })
}

export class LocalApi {
  private server: http.Server | undefined

  constructor (readonly socketPath: string, private readonly routes: Routes) {}

  async listen (): Promise<void> {
    if (await socketInUse(this.socketPath)) {
      throw new VmifsError('AGENT_RUNNING', `another agent is running on this data dir (${this.socketPath} answers)`, { socket: this.socketPath })
    }
    fs.rmSync(this.socketPath, { force: true })
    const server = http.createServer((req, res) => {
      const route = req.method === 'GET' ? this.routes[(req.url ?? '').split('?')[0]!] : undefined
      if (!route) {
        res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'NOT_FOUND' }))
        return
      }
      try {
        const body = JSON.stringify(route())
        res.writeHead(200, { 'content-type': 'application/json' }).end(body)
      } catch (err) {
        res.writeHead(500, { 'content-type': 'application/json' }).end(JSON.stringify({ error: (err as VmifsError).code ?? 'INTERNAL', message: (err as Error).message }))
      }
    })
    await listen(server, this.socketPath)
    fs.chmodSync(this.socketPath, 0o600)
    this.server = server
  }

  async close (): Promise<void> {
    const s = this.server
    this.server = undefined
    if (!s) return
    await shutdown(s)
    fs.rmSync(this.socketPath, { force: true })
  }
}
