// A userspace TCP proxy that adds one-way latency (and optionally a bandwidth limit) in each
// direction, because kernel netem is not available on the bench machines. Every chunk read from
// one side is forwarded to the other delayMs later, so a request/response gains ~2×delayMs.
//
// CLI: node dist/bench/lib/delay-proxy.js --listen 127.0.0.1:0 --target 127.0.0.1:8080 --delay-ms 10
//      [--rate-bytes-per-sec N] [--emulate-handshake]
// prints {"port":N} on stdout and runs until SIGTERM/SIGINT.
import net from 'node:net'
import path from 'node:path'
import { performance } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'

export interface DelayProxyOptions {
  listenHost: string
  /** 0 = any free port */
  listenPort: number
  targetHost: string
  targetPort: number
  /** One-way delay, applied to each direction. */
  delayMs: number
  /** Token-bucket limit per direction, shared by all connections (like one link); unlimited if unset. */
  rateBytesPerSec?: number
  /** Bucket size for rateBytesPerSec; default 20 ms worth of rate, at least 16 KiB. */
  burstBytes?: number
  /** Per direction and connection: the source is paused while more than this is queued (default 4 MiB). */
  maxQueuedBytes?: number
  /** Also charge the TCP handshake's RTT: the first bytes of a connection leave 2×delayMs later
   * (the kernel accepts at once, so without this a new connection is cheaper than on a real link). */
  emulateHandshake?: boolean
}

export interface DelayProxyStats {
  /** Bytes forwarded client -> target / target -> client. */
  bytesUp: number
  bytesDown: number
  /** Connections accepted so far, and still open. */
  connections: number
  active: number
  /** Largest amount queued in one direction of one connection (shows the backpressure bound). */
  peakQueuedBytes: number
}

export interface DelayProxy {
  port: number
  close: () => Promise<void>
  stats: () => DelayProxyStats
}

const now = (): number => performance.now()

class TokenBucket {
  private tokens: number
  private last = now()
  constructor(
    readonly rate: number,
    readonly capacity: number
  ) {
    this.tokens = capacity
  }

  /** ms until `n` bytes may go (0 = now); n must be <= capacity. */
  waitFor(n: number): number {
    const t = now()
    this.tokens = Math.min(this.capacity, this.tokens + ((t - this.last) * this.rate) / 1000)
    this.last = t
    return this.tokens >= n ? 0 : ((n - this.tokens) * 1000) / this.rate
  }

  take(n: number): void {
    this.tokens -= n
  }
}

interface Item {
  chunk: Buffer
  due: number
}

/** One direction of one connection: a FIFO of chunks, each released at its due time. */
class DelayPipe {
  private readonly queue: Item[] = []
  private head = 0 // index into queue; compacted now and then instead of shift()ing
  private queued = 0
  private timer: NodeJS.Timeout | undefined
  private waitingDrain = false
  private paused = false
  private endDue = Infinity // when the source's FIN may be passed on
  private done = false
  private notBefore: number

  constructor(
    private readonly src: net.Socket,
    private readonly dst: net.Socket,
    private readonly delayMs: number,
    private readonly maxQueued: number,
    private readonly bucket: TokenBucket | undefined,
    private readonly onForward: (n: number) => void,
    private readonly onQueued: (n: number) => void,
    startDelayMs: number
  ) {
    this.notBefore = now() + startDelayMs
    src.on('data', (chunk: Buffer) => {
      this.push(chunk)
    })
    src.on('end', () => {
      this.endDue = Math.max(now(), this.notBefore) + this.delayMs
      this.pump()
    })
    dst.on('drain', () => {
      this.waitingDrain = false
      this.pump()
    })
  }

  private push(chunk: Buffer): void {
    if (this.done) return
    this.queue.push({ chunk, due: Math.max(now(), this.notBefore) + this.delayMs })
    this.queued += chunk.length
    this.onQueued(this.queued)
    // bounded memory: stop reading until the queue has drained to half
    if (this.queued > this.maxQueued && !this.paused) {
      this.paused = true
      this.src.pause()
    }
    this.pump()
  }

  private schedule(ms: number): void {
    if (this.timer !== undefined) return
    this.timer = setTimeout(
      () => {
        this.timer = undefined
        this.pump()
      },
      Math.max(1, Math.ceil(ms))
    )
  }

  private pump(): void {
    if (this.done || this.waitingDrain || this.timer !== undefined) return
    while (this.head < this.queue.length) {
      const item = this.queue[this.head]!
      const wait = item.due - now()
      if (wait > 0) {
        this.schedule(wait)
        return
      }
      let piece = item.chunk
      if (this.bucket !== undefined) {
        // send at most a bucketful at a time so a big read doesn't burst past the rate
        if (piece.length > this.bucket.capacity) piece = piece.subarray(0, this.bucket.capacity)
        const w = this.bucket.waitFor(piece.length)
        if (w > 0) {
          this.schedule(w)
          return
        }
        this.bucket.take(piece.length)
      }
      if (piece.length === item.chunk.length) {
        this.queue[this.head++] = undefined as unknown as Item
      } else {
        item.chunk = item.chunk.subarray(piece.length)
      }
      this.queued -= piece.length
      this.onForward(piece.length)
      const ok = this.dst.write(piece)
      if (this.paused && this.queued <= this.maxQueued / 2) {
        this.paused = false
        this.src.resume()
      }
      if (!ok) {
        this.waitingDrain = true
        break
      }
    }
    if (this.head === this.queue.length || (this.head > 1024 && this.head * 2 > this.queue.length)) {
      this.queue.splice(0, this.head)
      this.head = 0
    }
    if (this.queue.length === 0 && this.endDue < Infinity && !this.waitingDrain) {
      // the FIN is delayed like data
      const wait = this.endDue - now()
      if (wait > 0) {
        this.schedule(wait)
        return
      }
      this.done = true
      this.dst.end() // half-close travels after the data, like a FIN would
    }
  }

  stop(): void {
    this.done = true
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.timer = undefined
    this.queue.length = 0
    this.head = 0
  }
}

export async function startDelayProxy(opts: DelayProxyOptions): Promise<DelayProxy> {
  if (!(opts.delayMs >= 0)) throw new Error('delayMs must be >= 0')
  const maxQueued = opts.maxQueuedBytes ?? 4 * 1024 * 1024
  const rate = opts.rateBytesPerSec
  const capacity = opts.burstBytes ?? (rate === undefined ? 0 : Math.max(16 * 1024, Math.ceil(rate / 50)))
  const upBucket = rate === undefined ? undefined : new TokenBucket(rate, capacity)
  const downBucket = rate === undefined ? undefined : new TokenBucket(rate, capacity)
  const st: DelayProxyStats = { bytesUp: 0, bytesDown: 0, connections: 0, active: 0, peakQueuedBytes: 0 }
  const onQueued = (n: number): void => {
    if (n > st.peakQueuedBytes) st.peakQueuedBytes = n
  }
  const conns = new Set<() => void>()

  const server = net.createServer({ allowHalfOpen: true, noDelay: true }, client => {
    st.connections++
    st.active++
    const target = net.connect({ host: opts.targetHost, port: opts.targetPort, allowHalfOpen: true, noDelay: true })
    const startDelay = opts.emulateHandshake === true ? 2 * opts.delayMs : 0
    const up = new DelayPipe(
      client,
      target,
      opts.delayMs,
      maxQueued,
      upBucket,
      n => {
        st.bytesUp += n
      },
      onQueued,
      startDelay
    )
    const down = new DelayPipe(
      target,
      client,
      opts.delayMs,
      maxQueued,
      downBucket,
      n => {
        st.bytesDown += n
      },
      onQueued,
      0
    )
    let closed = 0
    const kill = (): void => {
      up.stop()
      down.stop()
      // a reset on one side becomes a reset on the other instead of a clean-looking FIN
      client.resetAndDestroy()
      target.resetAndDestroy()
    }
    conns.add(kill)
    const onClose = (): void => {
      // both sockets fully closed (each one after both FINs): the connection is over
      if (++closed === 2) {
        st.active--
        conns.delete(kill)
      }
    }
    for (const s of [client, target]) {
      s.on('error', kill)
      // with allowHalfOpen each socket destroys itself once both its halves are done
      s.on('close', onClose)
    }
  })

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(opts.listenPort, opts.listenHost, () => {
      server.off('error', reject)
      resolve()
    })
  })
  const port = (server.address() as net.AddressInfo).port

  return {
    port,
    stats: () => ({ ...st }),
    close: async () => {
      const done = new Promise<void>(resolve => server.close(() => resolve()))
      for (const kill of [...conns]) kill()
      await done
    }
  }
}

function parseHostPort(s: string | undefined, what: string): { host: string; port: number } {
  const m = s === undefined ? null : /^\[?([^\]]*)\]?:(\d+)$/.exec(s)
  if (m === null) throw new Error(`${what} needs host:port`)
  return { host: m[1]!, port: Number(m[2]) }
}

async function main(argv: string[]): Promise<void> {
  const opt = (name: string): string | undefined => {
    const i = argv.indexOf(name)
    return i < 0 ? undefined : argv[i + 1]
  }
  const listen = parseHostPort(opt('--listen') ?? '127.0.0.1:0', '--listen')
  const target = parseHostPort(opt('--target'), '--target')
  const rate = opt('--rate-bytes-per-sec')
  const proxy = await startDelayProxy({
    listenHost: listen.host,
    listenPort: listen.port,
    targetHost: target.host,
    targetPort: target.port,
    delayMs: Number(opt('--delay-ms') ?? '0'),
    rateBytesPerSec: rate === undefined ? undefined : Number(rate),
    emulateHandshake: argv.includes('--emulate-handshake')
  })
  process.stdout.write(JSON.stringify({ port: proxy.port }) + '\n')
  const stop = (): void => {
    setTimeout(() => process.exit(0), 2000).unref() // don't let a stuck peer keep us alive
    void proxy.close().then(() => process.exit(0))
  }
  process.once('SIGTERM', stop)
  process.once('SIGINT', stop)
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  main(process.argv.slice(2)).catch((e: unknown) => {
    process.stderr.write(`delay-proxy: ${e instanceof Error ? e.message : String(e)}\n`)
    process.exit(2)
  })
}
