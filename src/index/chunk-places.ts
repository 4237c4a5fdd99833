// Where each chunk is used: chunk hash -> every (manifest, entry) of the catalog's images that
// holds it. One index serves the holder directory (who may hold a chunk a read needs) and the
// announcer (which entries a newly cached chunk fills), rebuilt lazily after the catalog changes.
import type { Catalog } from './catalog.js'

/** One build of the index. Immutable: a holder of a snapshot sees a consistent view. */
export interface PlacesSnapshot {
  /** the distinct manifest digests of the catalog's images, in catalog order */
  readonly digests: readonly string[]
  /** hash -> [digest index, entry, digest index, entry, ...], grouped by digest in that order */
  readonly byHash: ReadonlyMap<string, readonly number[]>
}

export class ChunkPlaces {
  private snap: PlacesSnapshot | undefined

  constructor(private readonly catalog: Catalog) {}

  /** The catalog changed (an image was added or removed, here or by the fleet). */
  invalidate(): void {
    this.snap = undefined
  }

  /** The index as of the last build (built now if invalidated). */
  current(): PlacesSnapshot {
    return this.snap ?? this.build(this.catalogDigests())
  }

  /** The index for the catalog as it is now: rebuilt only if its images' manifests changed. */
  fresh(): PlacesSnapshot {
    const digests = this.catalogDigests()
    const s = this.snap
    if (s && s.digests.length === digests.length && s.digests.every((d, i) => d === digests[i])) return s
    return this.build(digests)
  }

  private catalogDigests(): string[] {
    return [...new Set(this.catalog.listImages().map(r => r.digest))]
  }

  private build(digests: string[]): PlacesSnapshot {
    const byHash = new Map<string, number[]>()
    digests.forEach((d, di) => {
      const m = this.catalog.manifest(d)
      if (!m) return
      for (let i = 0; i < m.count; i++) {
        if (m.zero[i] === 1) continue
        const h = m.hashHexAt(i)
        const l = byHash.get(h)
        if (l) l.push(di, i)
        else byHash.set(h, [di, i])
      }
    })
    this.snap = { digests, byHash }
    return this.snap
  }
}
