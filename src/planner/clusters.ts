// Clusters and the similarity matrix (US9274818, FIG. 4-6). A cluster is the set of distinct
// chunks shared by exactly one set of images, named by a bitset with one bit per image (the last
// image is the most significant bit, as in FIG. 5). The image x image similarity matrix counts
// the bytes two images share; its diagonal is each image's distinct data bytes.
//
// Two ways to the same answer: clusters() computes everything from scratch (group chunks by the
// set of images holding them); ClusterIndex keeps it up to date as images come and go, the
// seed's way: adding an image splits every cluster it touches into "also in the new image" and
// "not", removing one clears its bit and merges clusters that become equal. A test checks the two
// agree after every step.
//
// Internal redundancy: `refs` counts the manifest entries of the member images that point at
// the cluster's chunks (a chunk repeated in an image counts each time); with no repetition
// refs = chunks x images, so redundancy = refs / (chunks x images) >= 1.
import type { Manifest } from '../manifests/manifest.js'
import { VmifsError } from '../errors.js'

/** An image as the planner sees it: its distinct data chunks, with size and entry count. */
export interface ImageChunks {
  name: string
  chunks: ReadonlyMap<string, { size: number; refs: number }>
}

export interface Cluster {
  /** member images, in image order */
  images: string[]
  /** one character per image, the last image first (most significant bit) */
  bitset: string
  bytes: number
  chunks: number
  refs: number
  redundancy: number
}

export interface Similarity {
  images: string[]
  /** every non-empty cluster, largest (bytes) first */
  clusters: Cluster[]
  /** matrix[a][b] = bytes of the distinct chunks images a and b share */
  matrix: number[][]
}

export type TopBy = 'bytes' | 'chunks'

/** The distinct data chunks of a manifest with their sizes and entry counts (zero runs excluded). */
export function imageChunks(name: string, m: Manifest): ImageChunks {
  const chunks = new Map<string, { size: number; refs: number }>()
  for (let i = 0; i < m.count; i++) {
    if (m.zero[i] === 1) continue
    const h = m.hashHexAt(i)
    const c = chunks.get(h)
    if (c) c.refs++
    else chunks.set(h, { size: m.lengthAt(i), refs: 1 })
  }
  return { name, chunks }
}

function bitsetOf(members: number[], n: number): string {
  const bits = new Array<string>(n).fill('0')
  for (const k of members) bits[n - 1 - k] = '1'
  return bits.join('')
}

function finish(
  images: string[],
  raw: Array<{ members: number[]; bytes: number; chunks: number; refs: number }>
): Similarity {
  const n = images.length
  const matrix = images.map(() => new Array<number>(n).fill(0))
  const clusters: Cluster[] = raw.map(c => {
    for (const a of c.members) for (const b of c.members) matrix[a]![b]! += c.bytes
    return {
      images: c.members.map(k => images[k]!),
      bitset: bitsetOf(c.members, n),
      bytes: c.bytes,
      chunks: c.chunks,
      refs: c.refs,
      redundancy: c.refs / (c.chunks * c.members.length)
    }
  })
  clusters.sort((x, y) => y.bytes - x.bytes || (x.bitset < y.bitset ? -1 : x.bitset > y.bitset ? 1 : 0))
  return { images, clusters, matrix }
}

/** Full computation over `images` (in this order). */
export function clusters(images: readonly ImageChunks[]): Similarity {
  const names = images.map(i => i.name)
  if (new Set(names).size !== names.length) throw VmifsError.param('images', 'must have distinct names')
  const byChunk = new Map<string, { size: number; members: number[]; refs: number }>()
  images.forEach((img, k) => {
    for (const [h, c] of img.chunks) {
      const e = byChunk.get(h)
      if (e) {
        e.members.push(k)
        e.refs += c.refs
      } else byChunk.set(h, { size: c.size, members: [k], refs: c.refs })
    }
  })
  const groups = new Map<string, { members: number[]; bytes: number; chunks: number; refs: number }>()
  for (const e of byChunk.values()) {
    const key = e.members.join(',')
    const g = groups.get(key)
    if (g) {
      g.bytes += e.size
      g.chunks++
      g.refs += e.refs
    } else groups.set(key, { members: e.members, bytes: e.size, chunks: 1, refs: e.refs })
  }
  return finish(names, [...groups.values()])
}

/** The n top clusters by bytes or by chunk count (the seed's configurable "top (n)"). */
export function topClusters(s: Similarity, n: number, by: TopBy = 'bytes'): Cluster[] {
  const list = [...s.clusters]
  if (by === 'chunks') list.sort((x, y) => y.chunks - x.chunks || y.bytes - x.bytes)
  return list.slice(0, Math.max(0, n))
}

interface ChunkState {
  size: number
  refs: number
  mask: bigint
}
interface ClusterState {
  bytes: number
  chunks: number
  refs: number
}

/**
 * Clusters kept up to date as images are added and removed. Each image owns a slot (a bit);
 * a chunk's cluster is the mask of the slots of the images holding it. Not safe for concurrent
 * use; add() and remove() cost O(distinct chunks of that image).
 */
export class ClusterIndex {
  private readonly images = new Map<string, { slot: number; img: ImageChunks }>()
  private readonly chunkState = new Map<string, ChunkState>()
  private readonly clusterState = new Map<bigint, ClusterState>()
  private readonly freeSlots: number[] = []
  private nextSlot = 0

  get size(): number {
    return this.images.size
  }

  has(name: string): boolean {
    return this.images.has(name)
  }

  /** Adds an image; every cluster holding some of its chunks splits into "also in it" and "not". */
  add(img: ImageChunks): void {
    if (this.images.has(img.name))
      throw new VmifsError('NAME_TAKEN', `image ${JSON.stringify(img.name)} is already in the cluster index`, {
        name: img.name
      })
    this.freeSlots.sort((a, b) => a - b)
    const slot = this.freeSlots.shift() ?? this.nextSlot++
    const bit = 1n << BigInt(slot)
    this.images.set(img.name, { slot, img })
    for (const [h, c] of img.chunks) {
      const st = this.chunkState.get(h)
      if (!st) {
        const fresh = { size: c.size, refs: c.refs, mask: bit }
        this.chunkState.set(h, fresh)
        this.enter(fresh)
        continue
      }
      this.leave(st)
      st.mask |= bit
      st.refs += c.refs
      this.enter(st)
    }
  }

  /** Removes an image: its bit is cleared; clusters that become equal merge, empty ones go. */
  remove(name: string): void {
    const e = this.images.get(name)
    if (!e) throw VmifsError.imageNotFound(name)
    const bit = 1n << BigInt(e.slot)
    for (const [h, c] of e.img.chunks) {
      const st = this.chunkState.get(h)!
      this.leave(st)
      st.mask &= ~bit
      st.refs -= c.refs
      if (st.mask === 0n) this.chunkState.delete(h)
      else this.enter(st)
    }
    this.images.delete(name)
    this.freeSlots.push(e.slot)
  }

  /** Current clusters and matrix; images in slot order. */
  snapshot(): Similarity {
    const ordered = [...this.images.entries()].sort((a, b) => a[1].slot - b[1].slot)
    const names = ordered.map(([n]) => n)
    const pos = new Map(ordered.map(([, v], k) => [v.slot, k]))
    const raw = [...this.clusterState].map(([mask, c]) => {
      const members: number[] = []
      for (let s = 0, m = mask; m !== 0n; s++, m >>= 1n) if ((m & 1n) === 1n) members.push(pos.get(s)!)
      members.sort((a, b) => a - b)
      return { members, ...c }
    })
    return finish(names, raw)
  }

  private enter(st: ChunkState): void {
    const c = this.clusterState.get(st.mask)
    if (c) {
      c.bytes += st.size
      c.chunks++
      c.refs += st.refs
    } else this.clusterState.set(st.mask, { bytes: st.size, chunks: 1, refs: st.refs })
  }

  private leave(st: ChunkState): void {
    const c = this.clusterState.get(st.mask)!
    c.bytes -= st.size
    c.chunks--
    c.refs -= st.refs
    if (c.chunks === 0) this.clusterState.delete(st.mask)
  }
}

/**
 * A ClusterIndex that follows a catalog: sync() removes the images that left (or got a new
 * version) and adds the new ones, so each import or removal costs only that image's chunks.
 * The running agent keeps one for `vmifs similarity`.
 */
export class CatalogClusters {
  private readonly idx = new ClusterIndex()
  private readonly digests = new Map<string, string>()

  sync(
    images: ReadonlyArray<{ name: string; digest: string }>,
    manifest: (digest: string) => Manifest | undefined
  ): void {
    const now = new Map(images.map(r => [r.name, r.digest]))
    for (const [n, d] of [...this.digests]) {
      if (now.get(n) !== d) {
        this.idx.remove(n)
        this.digests.delete(n)
      }
    }
    for (const r of images) {
      if (this.digests.has(r.name)) continue
      const m = manifest(r.digest)
      if (!m) continue
      this.idx.add(imageChunks(r.name, m))
      this.digests.set(r.name, r.digest)
    }
  }

  snapshot(): Similarity {
    return this.idx.snapshot()
  }
}
