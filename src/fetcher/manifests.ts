// Manifests by digest, for images published elsewhere (src/index/fleet-images.ts verifies what
// comes back): from the publishing host first, then any other host of the directory, then the
// origin store. The origin's store statement and list of images (images.json) are watched here too.
import type { HolderDirectory } from '../holders/directory.js'
import { ORIGIN_ID } from '../holders/directory.js'
import type { PeerClient } from '../peer/client.js'
import type { OriginClient } from '../peer/origin-client.js'
import type { StoreStatement } from '../origin/store.js'
import type { Logger } from '../util/log.js'

export interface ManifestFetcherDeps {
  directory: HolderDirectory
  client: (endpoint: string) => PeerClient
  /** the origin store, when the fleet has one */
  origin?: OriginClient
  timeoutMs: number
  log: Logger
}

export class ManifestFetcher {
  private timer: NodeJS.Timeout | undefined

  constructor(private readonly d: ManifestFetcherDeps) {}

  /** The manifest's bytes (unverified), or null when no host and no origin has it. */
  async fetch(digest: string, publisher: string): Promise<Buffer | null> {
    const { directory, log } = this.d
    const hosts = [
      publisher,
      ...directory
        .hosts()
        .map(h => h.hostId)
        .filter(h => h !== publisher)
    ]
    for (const h of hosts) {
      const info = h === ORIGIN_ID ? undefined : directory.host(h)
      if (!info) continue
      try {
        const b = await this.d.client(info.endpoint).manifest(digest, AbortSignal.timeout(this.d.timeoutMs))
        if (b) return b
      } catch (err) {
        log.debug({ host: h, err: (err as Error).message }, 'manifest fetch failed')
      }
    }
    if (this.d.origin)
      return await this.d.origin.manifest(digest, AbortSignal.timeout(this.d.timeoutMs)).catch(() => null)
    return null
  }

  /**
   * Reads the origin's store statement (and the indexes and models it names, from a signer
   * `accepts` takes) and then its list of images, now and every `intervalMs`, handing the list
   * on; a list that cannot be read changes nothing. A store that cannot be read is logged once
   * per problem (ORIGIN_FORMAT_OLD for a store of format 1, with the command that converts it).
   * Nothing happens without an origin.
   */
  watchOrigin(
    intervalMs: number,
    accepts: (s: StoreStatement) => string | undefined,
    onImages: (images: Record<string, unknown>) => void,
    onModel: (digest: string, model: unknown) => void
  ): void {
    const o = this.d.origin
    if (!o || this.timer) return
    let logged = ''
    let running = false
    const poll = async (): Promise<void> => {
      try {
        await o.refresh(AbortSignal.timeout(30_000), accepts, onModel)
        logged = ''
      } catch (err) {
        const msg = (err as Error).message
        const code = (err as { code?: string }).code
        if (msg !== logged && code !== 'HOLDER_UNREACHABLE')
          this.d.log.error({ code, err: msg }, 'the origin store serves nothing')
        else this.d.log.debug({ err: msg }, 'origin store.json not available')
        logged = msg
      }
      try {
        onImages(await o.images(AbortSignal.timeout(5000)))
      } catch (err) {
        this.d.log.debug({ err: (err as Error).message }, 'origin images.json not available')
      }
    }
    const tick = (): void => {
      if (running) return
      running = true
      void poll().finally(() => {
        running = false
      })
    }
    tick()
    this.timer = setInterval(tick, intervalMs)
    this.timer.unref()
  }

  close(): void {
    if (this.timer) clearInterval(this.timer)
    this.timer = undefined
  }
}
