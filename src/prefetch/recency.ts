// What the VMs on this host read of each image, most recent last: the source of a live-migration
// hint (`vmifs hint export`). One entry per distinct chunk of an image (so bounded by its
// manifest), moved to the end each time a read reaches the agent. Reads the kernel answers from
// its page cache never reach the agent, so a chunk read often stays where its last uncached read
// put it: the order is "last fetched into the page cache", which is what a migration target,
// starting with a cold page cache, needs first.
import type { Manifest } from '../manifests/manifest.js'

export interface HintChunk { hash: string, size: number }

export class RecencyTracker {
  private readonly images = new Map<string, Map<string, number>>()

  touch (m: Manifest, first: number, last: number): void {
    const d = m.digest()
    let order = this.images.get(d)
    if (!order) { order = new Map(); this.images.set(d, order) }
    for (let i = first; i <= last; i++) {
      if (m.zero[i] === 1) continue
      const h = m.hashHexAt(i)
      order.delete(h) // re-inserting moves it to the end
      order.set(h, m.lengthAt(i))
    }
  }

  /** The chunks of the image read on this host, most recent first, at most `max`. */
  recent (digest: string, max = Infinity): HintChunk[] {
    const order = this.images.get(digest)
    if (!order) return []
    const out: HintChunk[] = []
    const all = [...order]
    for (let k = all.length - 1; k >= 0 && out.length < max; k--) out.push({ hash: all[k]![0], size: all[k]![1] })
    return out
  }

  forget (digest: string): void { this.images.delete(digest) }
}
