// Pulls the metadata table from the configured peers: every interval, for each peer, asks for
// the facts past this host's cursors (pages until the peer has nothing newer) and applies them.
// Peers relay other origins' facts, so a fleet converges over any connected peer graph.
// A peer that sends what only a forger or a broken peer sends (apply()'s blamed refusals) is
// demoted: not pulled from for DEMOTE_MS, doubling while it keeps doing so; what was refused is
// counted per reason and logged with the peer.
import { type Applied, type FactStore, REFUSALS, type Refusal } from './facts.js'
import type { PeerClient } from '../peer/client.js'
import type { Logger } from '../util/log.js'
import { logFault } from '../util/guard.js'
import { codeOf } from '../errors.js'

const MAX_PAGES = 20
export const DEMOTE_MS = 60_000
const DEMOTE_MAX_MS = 30 * 60_000

export class FactSync {
  private timer: NodeJS.Timeout | undefined
  private running: Promise<void> | undefined
  private readonly failing = new Set<string>()
  private readonly demotions = new Map<string, { until: number; ms: number }>()
  rounds = 0
  /** facts refused since start, per reason */
  readonly refused = Object.fromEntries(REFUSALS.map(r => [r, 0])) as Record<Refusal, number>
  /** origins dropped to be pulled again whole (a digest that did not match, a rotated key) */
  resets = 0

  constructor(
    private readonly facts: FactStore,
    private readonly peers: () => PeerClient[],
    private readonly log: Logger,
    private readonly intervalMs = 1000,
    private readonly now: () => number = Date.now
  ) {}

  start(): void {
    const loop = (): void => {
      this.running = this.syncOnce()
        .catch((err: unknown) => logFault(this.log, 'a metadata sync round', err))
        .finally(() => {
          this.running = undefined
          if (this.timer !== undefined) this.timer = setTimeout(loop, this.intervalMs)
        })
    }
    this.timer = setTimeout(loop, 0)
  }

  async stop(): Promise<void> {
    const t = this.timer
    this.timer = undefined
    if (t) clearTimeout(t)
    await this.running
  }

  /** The peers not pulled from now, and until when (ms since the epoch). */
  demoted(): Record<string, number> {
    const now = this.now()
    const out: Record<string, number> = {}
    for (const [p, d] of this.demotions) if (d.until > now) out[p] = d.until
    return out
  }

  async syncOnce(): Promise<void> {
    const now = this.now()
    await Promise.all(
      this.peers()
        .filter(p => (this.demotions.get(p.endpoint)?.until ?? 0) <= now)
        .map(async p => {
          try {
            for (let i = 0; i < MAX_PAGES; i++) {
              const page = await p.facts(this.facts.cursors(), AbortSignal.timeout(10_000))
              const r = this.facts.apply(page)
              this.account(p.endpoint, r)
              if (r.blame || page.facts.length === 0) break
            }
            if (this.failing.delete(p.endpoint))
              this.log.info({ peer: p.endpoint }, 'metadata sync with peer works again')
          } catch (err) {
            if (!this.failing.has(p.endpoint))
              this.log.warn(
                { peer: p.endpoint, code: codeOf(err), err: (err as Error).message },
                'metadata sync with peer failed'
              )
            this.failing.add(p.endpoint)
          }
        })
    )
    this.rounds++
  }

  private account(peer: string, r: Applied): void {
    const reasons = Object.entries(r.refused) as Array<[Refusal, number]>
    for (const [why, n] of reasons) this.refused[why] += n
    this.resets += r.resets.length
    if (r.resets.length > 0)
      this.log.info({ peer, origins: r.resets }, 'dropped origins to pull them again whole (their heads did not match)')
    const prev = this.demotions.get(peer)
    if (reasons.length === 0) {
      if (prev && prev.until <= this.now()) this.demotions.delete(peer) // honest again: the next demotion starts short
      return
    }
    if (!r.blame) {
      this.log.warn({ peer, code: 'FACTS_REFUSED', refused: r.refused }, 'refused facts from peer')
      return
    }
    const ms = prev ? Math.min(prev.ms * 2, DEMOTE_MAX_MS) : DEMOTE_MS
    this.demotions.set(peer, { until: this.now() + ms, ms })
    this.log.warn(
      { peer, code: 'FACTS_REFUSED', refused: r.refused, demotedForMs: ms },
      'refused facts from peer: not signed by their origins; the peer is demoted for sync'
    )
  }
}
