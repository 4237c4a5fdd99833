// Pulls the metadata table from the configured peers: every interval, for each peer, asks for
// the facts past this host's cursors (pages until the peer has nothing newer) and applies them.
// Peers relay other origins' facts, so a fleet converges over any connected peer graph.
import type { FactStore } from './facts.js'
import type { PeerClient } from '../peer/client.js'
import type { Logger } from '../util/log.js'
import { logFault } from '../util/guard.js'
import { codeOf } from '../errors.js'

const MAX_PAGES = 20

export class FactSync {
  private timer: NodeJS.Timeout | undefined
  private running: Promise<void> | undefined
  private readonly failing = new Set<string>()
  rounds = 0

  constructor(
    private readonly facts: FactStore,
    private readonly peers: () => PeerClient[],
    private readonly log: Logger,
    private readonly intervalMs = 1000
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

  async syncOnce(): Promise<void> {
    await Promise.all(
      this.peers().map(async p => {
        try {
          for (let i = 0; i < MAX_PAGES; i++) {
            const page = await p.facts(this.facts.cursors(), AbortSignal.timeout(10_000))
            this.facts.apply(page)
            if (page.facts.length === 0) break
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
}
