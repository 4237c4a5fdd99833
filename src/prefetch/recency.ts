// What the VMs on this host read of each image, most recent last: the source of a live-migration
// hint (`vmifs hint export`). One stamp per entry of an image's manifest (so bounded by it), set
// each time a read reaches the agent: a read costs a store per entry, and the order is built only
// when a hint is asked for. Reads the kernel answers from its page cache never reach the agent,
// so a chunk read often stays where its last uncached read put it: the order is "last fetched
// into the page cache", which is what a migration target, starting with a cold page cache, needs
// first.
import type { Manifest } from '../manifests/manifest.js'

export interface HintChunk {
  hash: string
  size: number
}

export class RecencyTracker {
  private readonly images = new Map<string, { m: Manifest; stamps: Float64Array }>()
  private clock = 0

  /** A read of the image reached entries first..last now (in that order). */
  touch(m: Manifest, first: number, last: number): void {
    const d = m.digest()
    let e = this.images.get(d)
    if (!e) {
      e = { m, stamps: new Float64Array(m.count) }
      this.images.set(d, e)
    }
    for (let i = first; i <= last; i++) e.stamps[i] = ++this.clock
  }

  /** The distinct data chunks of the image read on this host, most recent first, at most `max`. */
  recent(digest: string, max = Infinity): HintChunk[] {
    const e = this.images.get(digest)
    if (!e) return []
    const { m, stamps } = e
    const read: number[] = []
    for (let i = 0; i < stamps.length; i++) if (stamps[i]! > 0 && m.zero[i] === 0) read.push(i)
    read.sort((a, b) => stamps[b]! - stamps[a]!)
    const out: HintChunk[] = []
    const seen = new Set<string>()
    for (const i of read) {
      if (out.length >= max) break
      const hash = m.hashHexAt(i)
      if (seen.has(hash)) continue
      seen.add(hash)
      out.push({ hash, size: m.lengthAt(i) })
    }
    return out
  }

  forget(digest: string): void {
    this.images.delete(digest)
  }
}
