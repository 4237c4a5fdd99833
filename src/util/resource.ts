// Memoised open/close for long-lived parts: ready() opens once, close() waits for a pending
// open, a failed open closes what was opened, and public calls after close fail with CLOSED.
import { VmifsError } from '../errors.js'

export abstract class Resource {
  private opening: Promise<void> | undefined
  private closing: Promise<void> | undefined
  protected opened = false

  protected abstract _open(): Promise<void>
  protected abstract _close(): Promise<void>

  get closed(): boolean {
    return this.closing !== undefined
  }

  ready(): Promise<void> {
    if (this.closing) return Promise.reject(VmifsError.closed(this.constructor.name))
    this.opening ??= this._open().then(
      () => {
        this.opened = true
      },
      async err => {
        await this._close().catch(() => {})
        throw err
      }
    )
    return this.opening
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      if (this.opening) await this.opening.catch(() => {})
      if (this.opened) await this._close()
    })()
    return this.closing
  }

  protected assertOpen(): void {
    if (this.closing) throw VmifsError.closed(this.constructor.name)
  }
}
