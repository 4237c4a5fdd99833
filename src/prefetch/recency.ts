// What the VMs on this host read of each image, most recent last: the source of a live-migration
// hint (`vmifs hint export`). One entry per distinct chunk of an image (so bounded by its
// manifest), moved to the end each time a read reaches the agent. Reads the kernel answers from
// its page cache never reach the agent, so a chunk read often stays where its last uncached read
// put it: the order is "last fetched into the page cache", which is what a migration target,
// starting with a cold page cache, needs first.
export interface HintChunk {
  hash: string
  size: number
}

export class RecencyTracker {
  private readonly images = new Map<string, Map<string, number>>()

  /** A read of the image reached this chunk (a data entry) now. */
  touch(digest: string, hash: string, size: number): void {
    let order = this.images.get(digest)
    if (!order) {
      order = new Map()
      this.images.set(digest, order)
    }
    order.delete(hash) // re-inserting moves it to the end
    order.set(hash, size)
  }

  /** The chunks of the image read on this host, most recent first, at most `max`. */
  recent(digest: string, max = Infinity): HintChunk[] {
    const order = this.images.get(digest)
    if (!order) return []
    const out: HintChunk[] = []
    const all = [...order]
    for (let k = all.length - 1; k >= 0 && out.length < max; k--) out.push({ hash: all[k]![0], size: all[k]![1] })
    return out
  }

  forget(digest: string): void {
    this.images.delete(digest)
  }
}
