// Images published by other hosts (`image/<name>` facts) or listed by the origin store become
// local catalog entries (not pinned; their chunks are fetched on demand): the manifest is fetched
// by digest from the publisher, any other host, or the origin, and verified against the digest.
// An image whose fact is retracted disappears. Where two origins publish one name, the newest
// publication wins; an image imported on this host always wins here.
import type { Catalog } from './catalog.js'
import type { FactStore } from './facts.js'
import { decode } from '../manifests/manifest.js'
import { blake3 } from '../util/hash.js'
import type { Logger } from '../util/log.js'
import { validateName } from './catalog.js'

export interface PublishedImage {
  name: string
  digest: string
  size: number
  origin: string
  publishedAt: number
}
export type ManifestSource = (digest: string, preferred: string) => Promise<Buffer | null>

export class FleetImages {
  private running: Promise<void> | undefined
  private again = false
  private extra: PublishedImage[] = []

  constructor(
    private readonly facts: FactStore,
    private readonly catalog: Catalog,
    private readonly fetchManifest: ManifestSource,
    private readonly log: Logger,
    private readonly onChange: () => void,
    /** whether an image of this name is to be pinned here when adopted (a replica) */
    private readonly pinned?: (name: string) => boolean
  ) {}

  /** Images listed by the origin store (publisher "origin"). */
  setOriginImages(list: PublishedImage[]): void {
    const key = (l: PublishedImage[]): string => JSON.stringify(l.map(i => [i.name, i.digest]).sort())
    if (key(list) === key(this.extra)) return
    this.extra = list
    void this.reconcile()
  }

  published(): Map<string, PublishedImage> {
    const best = new Map<string, PublishedImage>()
    const all: PublishedImage[] = [...this.extra]
    for (const f of this.facts.allAs('image')) {
      if (f.origin === this.facts.self) continue
      all.push({
        name: f.name,
        digest: f.value.digest,
        size: f.value.size,
        origin: f.origin,
        publishedAt: f.value.publishedAt
      })
    }
    for (const p of all) {
      try {
        validateName(p.name)
      } catch {
        continue
      }
      const cur = best.get(p.name)
      // the origin store is a fallback publisher: a host's publication of the name wins over it
      const rank = (x: PublishedImage): [number, number, string] => [
        x.origin === 'origin' ? 0 : 1,
        x.publishedAt,
        x.origin
      ]
      if (!cur || compare(rank(p), rank(cur)) > 0) best.set(p.name, p)
    }
    return best
  }

  /** Brings the catalog in line with what the fleet publishes; runs one at a time. */
  reconcile(): Promise<void> {
    if (this.running) {
      this.again = true
      return this.running
    }
    this.running = (async () => {
      do {
        this.again = false
        await this.reconcileOnce()
      } while (this.again)
    })().finally(() => {
      this.running = undefined
    })
    return this.running
  }

  private async reconcileOnce(): Promise<void> {
    const want = this.published()
    let changed = false
    // a pinned adopted image (a replica this host keeps) stays pinned in its next version
    const keepPinned = new Set<string>()
    for (const img of this.catalog.listImages()) {
      if (img.origin === null) continue // imported here
      const w = want.get(img.name)
      if (!w || w.digest !== img.digest) {
        if (img.pinned && w) keepPinned.add(img.name)
        this.catalog.removeImage(img.name)
        changed = true
      }
    }
    for (const w of want.values()) {
      const local = this.catalog.getImage(w.name)
      if (local) {
        if (local.origin === null && local.digest !== w.digest)
          this.log.warn(
            { name: w.name, origin: w.origin },
            'another host publishes an image under a name imported here: keeping ours'
          )
        continue
      }
      let m = this.catalog.manifest(w.digest)
      if (!m) {
        try {
          const body = await this.fetchManifest(w.digest, w.origin)
          if (!body) {
            this.log.warn({ name: w.name, digest: w.digest }, 'no host gave the manifest yet')
            continue
          }
          if (blake3(body).toString('hex') !== w.digest) {
            this.log.warn({ name: w.name, digest: w.digest }, 'manifest does not match its digest: ignored')
            continue
          }
          m = decode(body)
        } catch (err) {
          this.log.warn({ name: w.name, err: (err as Error).message }, 'cannot fetch the manifest')
          continue
        }
      }
      if (this.catalog.getImage(w.name)) continue
      this.catalog.addImage(w.name, m, {
        pinned: keepPinned.has(w.name) || (this.pinned?.(w.name) ?? false),
        replace: false,
        origin: w.origin
      })
      changed = true
    }
    if (changed) this.onChange()
  }
}

function compare(a: [number, number, string], b: [number, number, string]): number {
  return a[0] - b[0] || a[1] - b[1] || (a[2] < b[2] ? -1 : a[2] > b[2] ? 1 : 0)
}
