// Records read sessions per image. A session starts with the first open of an image while none is
// under way and ends when the last handle is released and no read followed for `idleMs`. It
// records the first-access time (ms since its start) of each chunk entry read, at most one per
// entry, so its size is bounded by the manifest. Reads the kernel serves from its page cache are
// not seen: a model describes what reached the agent.
export interface SessionTrace {
  digest: string
  startedAt: number
  durationMs: number
  firsts: Map<number, number>
}

interface Session {
  start: number
  open: number
  firsts: Map<number, number>
  last: number
  timer?: NodeJS.Timeout
}

export class TraceRecorder {
  private readonly sessions = new Map<string, Session>()

  constructor(
    private readonly onEnd: (t: SessionTrace) => void,
    private readonly idleMs = 10_000,
    private readonly onStart?: (digest: string) => void
  ) {}

  get active(): number {
    return this.sessions.size
  }

  open(digest: string): void {
    let s = this.sessions.get(digest)
    if (!s) {
      s = { start: Date.now(), open: 0, firsts: new Map(), last: Date.now() }
      this.sessions.set(digest, s)
      this.onStart?.(digest)
    }
    if (s.timer) {
      clearTimeout(s.timer)
      s.timer = undefined
    }
    s.open++
  }

  release(digest: string): void {
    const s = this.sessions.get(digest)
    if (!s) return
    s.open = Math.max(0, s.open - 1)
    if (s.open === 0) this.armIdle(digest, s)
  }

  /** Entries [first, last] of the image were read now. */
  access(digest: string, first: number, last: number): void {
    const s = this.sessions.get(digest)
    if (!s) return
    const now = Date.now()
    s.last = now
    for (let i = first; i <= last; i++) if (!s.firsts.has(i)) s.firsts.set(i, now - s.start)
    if (s.open === 0) this.armIdle(digest, s)
  }

  private armIdle(digest: string, s: Session): void {
    if (s.timer) clearTimeout(s.timer)
    s.timer = setTimeout(() => this.end(digest), this.idleMs)
    s.timer.unref()
  }

  /** Ends a session now (idle, or the agent stops). */
  end(digest: string): void {
    const s = this.sessions.get(digest)
    if (!s) return
    if (s.timer) clearTimeout(s.timer)
    this.sessions.delete(digest)
    if (s.firsts.size > 0) this.onEnd({ digest, startedAt: s.start, durationMs: s.last - s.start, firsts: s.firsts })
  }

  endAll(): void {
    for (const d of [...this.sessions.keys()]) this.end(d)
  }
}
