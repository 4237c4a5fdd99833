// The origin chunk store: static files written by `vmifs publish-store DIR` and served by any
// web server (nginx in the tests):  <base>/chunks/<hash[0:2]>/<hash>,  <base>/manifests/<digest>,
// <base>/images.json. The holder of last resort: it has every chunk of the images it lists.
// It is not a fleet member (often a CDN or a bucket): it gets the headers the config names for it
// (originHeaders), never the fleet token.
import { Pool } from 'undici'
import { VmifsError } from '../errors.js'

export class OriginClient {
  private readonly pool: Pool
  private readonly base: string

  constructor(
    url: string,
    private readonly headers: Record<string, string> = {}
  ) {
    const u = new URL(url)
    this.base = u.pathname.replace(/\/$/, '')
    this.pool = new Pool(u.origin, { connections: 8, keepAliveTimeout: 30_000, connect: { timeout: 3000 } })
  }

  private async get(path: string, signal: AbortSignal, onBytes?: (n: number) => void): Promise<Buffer | null> {
    let res
    try {
      res = await this.pool.request({
        method: 'GET',
        path: this.base + path,
        signal,
        headers: this.headers
      })
    } catch (err) {
      throw new VmifsError('HOLDER_UNREACHABLE', `origin ${path}: ${(err as Error).message}`, {}, { cause: err })
    }
    const parts: Buffer[] = []
    for await (const c of res.body) {
      parts.push(c as Buffer)
      onBytes?.((c as Buffer).length)
    }
    const body = Buffer.concat(parts)
    if (res.statusCode === 404) return null
    if (res.statusCode !== 200)
      throw new VmifsError('HOLDER_BAD_RESPONSE', `origin answered ${res.statusCode} for ${path}`)
    return body
  }

  chunk(hash: string, signal: AbortSignal, onBytes?: (n: number) => void): Promise<Buffer | null> {
    return this.get(`/chunks/${hash.slice(0, 2)}/${hash}`, signal, onBytes)
  }
  manifest(digest: string, signal: AbortSignal): Promise<Buffer | null> {
    return this.get(`/manifests/${digest}`, signal)
  }

  /** images.json: image name → its signed publication (checked by the caller); {} when there is none. */
  async images(signal: AbortSignal): Promise<Record<string, unknown>> {
    const b = await this.get('/images.json', signal)
    if (b === null) return {}
    let v: unknown
    try {
      v = JSON.parse(b.toString())
    } catch {
      throw new VmifsError('HOLDER_BAD_RESPONSE', 'origin images.json is not JSON')
    }
    if (typeof v !== 'object' || v === null || Array.isArray(v))
      throw new VmifsError('HOLDER_BAD_RESPONSE', 'origin images.json is not an object of images')
    return v as Record<string, unknown>
  }

  async close(): Promise<void> {
    await this.pool.close().catch(() => {})
  }
}
