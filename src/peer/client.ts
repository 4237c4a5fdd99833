// HTTP client for one peer: an undici Pool (keep-alive) per endpoint. Contract: methods resolve
// with data or null for "not here" (404) and reject with a VmifsError (HOLDER_UNREACHABLE,
// HOLDER_BAD_RESPONSE, HOLDER_UNAUTHORIZED) otherwise; they never verify chunk hashes — the
// fetcher does. An AbortSignal bounds every call.
import { Pool } from 'undici'
import { VmifsError } from '../errors.js'
import type { Cursors, FactPage } from '../index/facts.js'
import zlib from 'node:zlib'
import { BROTLI_QUALITY_HEADER, BatchDecoder } from './wire.js'

export interface PeerClientOptions {
  token: string
  connectTimeoutMs?: number
  tls?: { ca?: string; rejectUnauthorized?: boolean }
  /** no headers/body timeout (a long replicate call) */ untimed?: boolean
}

export class PeerClient {
  private readonly pool: Pool

  constructor(
    readonly endpoint: string,
    private readonly opts: PeerClientOptions
  ) {
    this.pool = new Pool(endpoint, {
      connections: 8,
      pipelining: 1,
      keepAliveTimeout: 30_000,
      ...(opts.untimed === true ? { headersTimeout: 0, bodyTimeout: 0 } : {}),
      connect: { timeout: opts.connectTimeoutMs ?? 3000, ...(opts.tls ?? {}) }
    })
  }

  /**
   * One request; the body is collected, or handed piece by piece to what `sink` returns for the
   * answer's status and encoding (then `data` is empty).
   */
  private async request(
    method: 'GET' | 'POST',
    path: string,
    signal: AbortSignal,
    body?: unknown,
    onBytes?: (n: number) => void,
    extra: Record<string, string> = {},
    sink?: (status: number, encoding: string | undefined) => ((piece: Buffer) => void) | undefined
  ): Promise<{ status: number; data: Buffer; encoding?: string }> {
    let res
    try {
      res = await this.pool.request({
        method,
        path,
        signal,
        headers: {
          authorization: `Bearer ${this.opts.token}`,
          ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
          ...extra
        },
        body: body === undefined ? undefined : JSON.stringify(body)
      })
    } catch (err) {
      throw new VmifsError(
        'HOLDER_UNREACHABLE',
        `${this.endpoint}${path}: ${(err as Error).message}`,
        { endpoint: this.endpoint },
        { cause: err }
      )
    }
    const h = res.headers['content-encoding']
    const enc = typeof h === 'string' ? h : undefined
    const into = res.statusCode === 401 ? undefined : sink?.(res.statusCode, enc)
    let data: Buffer
    try {
      // streamed, so link throughput can be measured as bytes arrive
      const parts: Buffer[] = []
      for await (const c of res.body) {
        if (into) into(c as Buffer)
        else parts.push(c as Buffer)
        onBytes?.((c as Buffer).length)
      }
      data = parts.length === 1 ? parts[0]! : Buffer.concat(parts)
    } catch (err) {
      if (err instanceof VmifsError) throw err // the sink's
      throw new VmifsError(
        'HOLDER_UNREACHABLE',
        `${this.endpoint}${path}: body: ${(err as Error).message}`,
        { endpoint: this.endpoint },
        { cause: err }
      )
    }
    if (res.statusCode === 401)
      throw new VmifsError('HOLDER_UNAUTHORIZED', `${this.endpoint} refused our token`, { endpoint: this.endpoint })
    return { status: res.statusCode, data, ...(enc !== undefined ? { encoding: enc } : {}) }
  }

  async health(signal: AbortSignal): Promise<{ ok: boolean; hostId: string }> {
    const r = await this.request('GET', '/v1/health', signal)
    if (r.status !== 200) throw new VmifsError('HOLDER_BAD_RESPONSE', `${this.endpoint}/v1/health answered ${r.status}`)
    return JSON.parse(r.data.toString()) as { ok: boolean; hostId: string }
  }

  async chunk(hash: string, signal: AbortSignal, onBytes?: (n: number) => void): Promise<Buffer | null> {
    const r = await this.request('GET', `/v1/chunks/${hash}`, signal, undefined, onBytes)
    if (r.status === 404) return null
    if (r.status !== 200)
      throw new VmifsError('HOLDER_BAD_RESPONSE', `${this.endpoint} answered ${r.status} for chunk ${hash}`)
    return r.data
  }

  /**
   * A batch of chunks. With `compress`, the holder may answer brotli-compressed (when it pays);
   * onBytes counts bytes as they come off the wire (compressed). Each chunk is handed to `onChunk`
   * (its index in `hashes`) as soon as its bytes are in, before the rest of the batch.
   */
  async chunks(
    hashes: string[],
    signal: AbortSignal,
    onBytes?: (n: number) => void,
    o: { compress?: boolean; quality?: number } = {},
    onChunk?: (i: number, data: Buffer | null) => void
  ): Promise<Array<Buffer | null>> {
    const headers: Record<string, string> =
      o.compress === true
        ? {
            'accept-encoding': 'br',
            ...(o.quality !== undefined ? { [BROTLI_QUALITY_HEADER]: String(o.quality) } : {})
          }
        : {}
    const out = new Array<Buffer | null>(hashes.length).fill(null)
    const bad = (err: unknown): VmifsError =>
      new VmifsError('HOLDER_BAD_RESPONSE', `${this.endpoint}: ${(err as Error).message}`)
    const decoder = new BatchDecoder(hashes.length, (i, data) => {
      out[i] = data
      onChunk?.(i, data)
    })
    let unbrotli: zlib.BrotliDecompress | undefined
    let failed: unknown
    const r = await this.request('POST', '/v1/chunks', signal, { hashes }, onBytes, headers, (status, enc) => {
      if (status !== 200) return undefined
      if (enc === 'br') {
        const u = zlib.createBrotliDecompress()
        unbrotli = u
        u.on('data', (c: Buffer) => {
          try {
            if (failed === undefined) decoder.push(c)
          } catch (err) {
            failed = err
          }
        })
        u.on('error', err => {
          failed ??= err
        })
        return piece => {
          if (failed !== undefined) throw bad(failed)
          u.write(piece)
        }
      }
      if (enc !== undefined && enc !== 'identity') {
        failed = new Error(`unknown content-encoding ${enc}`)
        return () => {}
      }
      return piece => {
        try {
          decoder.push(piece)
        } catch (err) {
          throw bad(err)
        }
      }
    })
    if (r.status !== 200)
      throw new VmifsError(
        'HOLDER_BAD_RESPONSE',
        `${this.endpoint} answered ${r.status} for a batch of ${hashes.length}`
      )
    const u = unbrotli
    if (u && failed === undefined) {
      // what is still inside the decompressor comes out before 'end'
      await new Promise<void>(resolve => {
        u.once('end', resolve)
        u.once('error', () => resolve())
        u.end()
      })
    }
    if (failed !== undefined) throw bad(failed)
    try {
      decoder.finish()
    } catch (err) {
      throw bad(err)
    }
    return out
  }

  async manifest(digest: string, signal: AbortSignal): Promise<Buffer | null> {
    const r = await this.request('GET', `/v1/manifests/${digest}`, signal)
    if (r.status === 404) return null
    if (r.status !== 200)
      throw new VmifsError('HOLDER_BAD_RESPONSE', `${this.endpoint} answered ${r.status} for manifest ${digest}`)
    return r.data
  }

  async facts(cursors: Cursors, signal: AbortSignal): Promise<FactPage> {
    const r = await this.request('POST', '/v1/facts', signal, { cursors })
    if (r.status !== 200) throw new VmifsError('HOLDER_BAD_RESPONSE', `${this.endpoint} answered ${r.status} for facts`)
    const page = JSON.parse(r.data.toString()) as FactPage
    if (
      !Array.isArray(page.facts) ||
      typeof page.complete !== 'object' ||
      page.complete === null ||
      (page.heads !== undefined && (typeof page.heads !== 'object' || page.heads === null)) ||
      (page.revoked !== undefined && !Array.isArray(page.revoked))
    )
      throw new VmifsError('HOLDER_BAD_RESPONSE', `${this.endpoint}: malformed facts page`)
    return page
  }

  /** Asks this host's agent to replicate an image onto itself (POST /v1/replicate). */
  async replicate(body: unknown, signal: AbortSignal): Promise<unknown> {
    const r = await this.request('POST', '/v1/replicate', signal, body)
    const v = ((): unknown => {
      try {
        return JSON.parse(r.data.toString())
      } catch {
        return undefined
      }
    })()
    if (r.status === 200) return v
    const e = v as { error?: unknown; message?: unknown } | undefined
    if (e && typeof e.error === 'string' && typeof e.message === 'string')
      throw new VmifsError(e.error as never, e.message)
    throw new VmifsError('HOLDER_BAD_RESPONSE', `${this.endpoint} answered ${r.status} for replicate`)
  }

  async close(): Promise<void> {
    await this.pool.close().catch(() => {})
  }
  async destroy(): Promise<void> {
    await this.pool.destroy().catch(() => {})
  }
}
