// What this host has measured of its link to each holder: RTT and throughput (EWMA, seeded from
// config), recent request latencies (for the hedge delay), bytes in flight, and a demotion that
// pushes a holder to the back of the order for a while after it failed us.
export interface LinkSeed {
  price?: number
  bandwidthBps?: number
  rttMs?: number
}

const DEMOTE_MS = 30_000
const WINDOW = 64

export class LinkStats {
  rttMs: number
  bandwidthBps: number
  inflightBytes = 0
  demotedUntil = 0
  failures = 0
  private readonly recent: number[] = []
  private readonly bwSamples: Array<[number, number]> = []
  private readonly small: number[] = []
  private active = 0
  private streamed = false
  private busySince = 0
  private busyBytes = 0
  /** when this period's first answer bytes arrived, and how many came then (0: none yet) */
  private firstAt = 0
  private firstBytes = 0

  constructor(
    readonly hostId: string,
    seed: LinkSeed = {}
  ) {
    this.rttMs = seed.rttMs ?? 1
    this.bandwidthBps = seed.bandwidthBps ?? 125_000_000 // 1 Gbit/s until measured
  }

  /** A request to this holder starts. */
  start(now = performance.now()): void {
    if (this.active++ === 0) this.newPeriod(now)
  }

  private newPeriod(now: number): void {
    this.busySince = now
    this.busyBytes = 0
    this.firstAt = 0
    this.firstBytes = 0
  }

  /** Bytes of an answer arrived (counted as they arrive, for the throughput of the busy period). */
  received(n: number, now = performance.now()): void {
    if (this.firstAt === 0) {
      this.firstAt = now
      this.firstBytes = n
    }
    this.busyBytes += n
    this.streamed = true
  }

  /**
   * A request ended having received `bytes` in `ms`. Small answers measure the RTT. Throughput is
   * measured per busy period (all bytes received while any request to this holder was in
   * flight, over that time), not per request: concurrent requests share one link, so each alone
   * would see only a fraction of it.
   */
  finish(bytes: number, ms: number, ok: boolean, now = performance.now()): void {
    this.active = Math.max(0, this.active - 1)
    if (ok) {
      this.recent.push(ms)
      if (this.recent.length > WINDOW) this.recent.shift()
      if (bytes < 32 * 1024) {
        // RTT = the least of the recent small answers: under load they also wait in queues, and
        // an RTT inflated by queueing would be subtracted from busy time below
        this.small.push(ms)
        if (this.small.length > 16) this.small.shift()
        this.rttMs = Math.min(...this.small)
      }
      this.failures = 0
    }
    if (!this.streamed) this.busyBytes += bytes // callers that cannot report arrivals
    const busyMs = now - this.busySince
    // a sample per busy period, and every 500 ms while the link stays busy
    if (this.active === 0 || busyMs >= 500) {
      // Two measures, the lower rate taken: all bytes over the busy time less one RTT (an RTT
      // measured under load is inflated by queueing: subtracting it made a 16 Mbit/s link measure
      // 33 Mbit/s in a loaded test run), and, for streamed answers, the bytes after the first
      // ones over the time since they came (too high when this process, busy, read late what
      // had long arrived)
      let measured = this.busyBytes
      let transferMs = Math.max(busyMs - this.rttMs, busyMs / 4)
      const sinceFirst = this.firstAt > 0 ? now - this.firstAt : 0
      if (sinceFirst > 0 && (this.busyBytes - this.firstBytes) / sinceFirst < measured / transferMs) {
        measured = this.busyBytes - this.firstBytes
        transferMs = sinceFirst
      }
      if (measured >= 256 * 1024 && busyMs >= 10) {
        // bytes over time across the last periods, not an average of per-period rates: bytes the
        // kernel received in one period may be read in the next (when this process was busy),
        // which swings single periods but not their sum
        this.bwSamples.push([measured, transferMs])
        if (this.bwSamples.length > 6) this.bwSamples.shift()
        let b = 0
        let t = 0
        for (const [x, y] of this.bwSamples) {
          b += x
          t += y
        }
        this.bandwidthBps = b / (t / 1000)
      }
      this.newPeriod(now)
    }
  }

  /** One request, measured alone (tests, simple callers). */
  record(bytes: number, ms: number): void {
    const end = performance.now()
    this.start(end - ms)
    this.finish(bytes, ms, true, end)
  }

  demote(now = Date.now()): void {
    this.failures++
    this.demotedUntil = now + DEMOTE_MS * Math.min(8, this.failures)
  }

  demoted(now = Date.now()): boolean {
    return this.demotedUntil > now
  }

  /**
   * Latency after which a second request is sent elsewhere: the recent p95, at least 50 ms; a
   * generous 250 ms until there is enough history (a hedge duplicates traffic, so it must not
   * fire on the first, cold requests).
   */
  hedgeDelayMs(): number {
    if (this.recent.length < 8) return Math.max(250, 4 * this.rttMs)
    const s = [...this.recent].sort((a, b) => a - b)
    return Math.max(50, s[Math.floor(s.length * 0.95)]!)
  }
}

export interface CostParams {
  alpha: number
  sigma: number
}

/**
 * Cost of fetching `bytes` from a holder (design.md): (1 − α)·ρ·S + α·σ·(RTT + S/B + queue),
 * times in seconds, queue = bytes already in flight to that holder / B.
 */
export function holderCost(link: LinkStats, price: number, bytes: number, p: CostParams): number {
  const b = Math.max(1, link.bandwidthBps)
  const time = link.rttMs / 1000 + bytes / b + link.inflightBytes / b
  return (1 - p.alpha) * price * bytes + p.alpha * p.sigma * time
}
