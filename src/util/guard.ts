// Background steps (timers, listeners, polls, sync rounds) must never stop the agent: the mount's
// readers outlive any one fault. A step runs through guard(), which logs what failed with its
// error code (INTERNAL for an error that has none) and drops it; the step's own schedule retries.
import { codeOf } from '../errors.js'
import type { Logger } from './log.js'

/** Logs a background step's failure: what it was doing, the code, the message. */
export function logFault(log: Logger, what: string, err: unknown): void {
  log.warn({ code: codeOf(err), err: err instanceof Error ? err.message : String(err), step: what }, `${what} failed`)
}

/** Runs fn (a background step), logging instead of throwing; a promise it returns is guarded too. */
export function guard(log: Logger, what: string, fn: () => unknown): void {
  try {
    const r = fn()
    if (r instanceof Promise) r.catch((err: unknown) => logFault(log, what, err))
  } catch (err) {
    logFault(log, what, err)
  }
}
