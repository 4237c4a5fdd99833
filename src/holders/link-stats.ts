// What this host has measured of its link to each holder: RTT and throughput (EWMA, seeded from
// config), recent request latencies (for the hedge delay), bytes in flight, and a demotion that
// pushes a holder to the back of the order for a while after it failed us.
export interface LinkSeed { price?: number, bandwidthBps?: number, rttMs?: number }

const ALPHA = 0.3
const DEMOTE_MS = 30_000
const WINDOW = 64

export class LinkStats {
  rttMs: number
  bandwidthBps: number
  inflightBytes = 0
  demotedUntil = 0
  failures = 0
  private readonly recent: number[] = []

  constructor (readonly hostId: string, seed: LinkSeed = {}) {
    this.rttMs = seed.rttMs ?? 1
    this.bandwidthBps = seed.bandwidthBps ?? 125_000_000 // 1 Gbit/s until measured
  }

  /** A request of `bytes` took `ms` end to end. */
  record (bytes: number, ms: number): void {
    this.recent.push(ms)
    if (this.recent.length > WINDOW) this.recent.shift()
    if (bytes < 32 * 1024) {
      this.rttMs = this.rttMs * (1 - ALPHA) + ms * ALPHA
    } else {
      const transferMs = Math.max(0.05, ms - this.rttMs)
      this.bandwidthBps = this.bandwidthBps * (1 - ALPHA) + (bytes / (transferMs / 1000)) * ALPHA
    }
    this.failures = 0
  }

  demote (now = Date.now()): void {
    this.failures++
    this.demotedUntil = now + DEMOTE_MS * Math.min(8, this.failures)
  }

  demoted (now = Date.now()): boolean { return this.demotedUntil > now }

  /**
   * Latency after which a second request is sent elsewhere: the recent p95, at least 50 ms; a
   * generous 250 ms until there is enough history (a hedge duplicates traffic, so it must not
   * fire on the first, cold requests).
   */
  hedgeDelayMs (): number {
    if (this.recent.length < 8) return Math.max(250, 4 * this.rttMs)
    const s = [...this.recent].sort((a, b) => a - b)
    return Math.max(50, s[Math.floor(s.length * 0.95)]!)
  }
}

export interface CostParams { alpha: number, sigma: number }

/**
 * Cost of fetching `bytes` from a holder (design.md): (1 − α)·ρ·S + α·σ·(RTT + S/B + queue),
 * times in seconds, queue = bytes already in flight to that holder / B.
 */
export function holderCost (link: LinkStats, price: number, bytes: number, p: CostParams): number {
  const b = Math.max(1, link.bandwidthBps)
  const time = link.rttMs / 1000 + bytes / b + link.inflightBytes / b
  return (1 - p.alpha) * price * bytes + p.alpha * p.sigma * time
}
