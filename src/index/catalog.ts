// Images and manifests, and the counts of their chunks: refs = how many local images use a chunk,
// pins = how many of those are pinned. The counts live in the chunk store's index (store.mdb:
// src/cache/chunk-store.ts, which pins an entry exactly when its chunk's pins > 0); the images in
// SQLite. The counts go up before the image's transaction commits and down after the one that
// removes or unpins it: a crash in between leaves a chunk counted too often (kept and pinned
// when it need not be, until fsck counts again), never too rarely.
import type { Statement, Transaction } from 'better-sqlite3'
import type { Db } from './db.js'
import { native } from '../native/index.js'
import { VmifsError } from '../errors.js'
import { type Manifest, decode } from '../manifests/manifest.js'
import type { Chunking } from '../manifests/chunking.js'
import type { Signed } from '../trust/publications.js'

/** The images at one moment (Catalog.images()). */
export interface ImageIndex {
  readonly key: string
  readonly byName: ReadonlyMap<string, ImageRow>
  readonly byDigest: ReadonlyMap<string, ImageRow>
}

export interface ImageRow {
  name: string
  digest: string
  size: number
  pinned: boolean
  createdAt: number
  chunkCount: number
  dataBytes: number
  chunking: Chunking
  /** host that published the image; null when it was imported here */
  origin: string | null
  /** the image's signed publication (null for an image of before signing, until the agent signs it) */
  publication: Signed | null
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$/

export function validateName(name: string): string {
  if (!NAME_RE.test(name)) {
    throw new VmifsError(
      'NAME_INVALID',
      `image name ${JSON.stringify(name)} is not valid: ` +
        'use 1-128 of A-Z a-z 0-9 . _ + -, starting with a letter or digit',
      { name }
    )
  }
  return name
}

export interface AddOptions {
  pinned: boolean
  replace: boolean
  source?: string
  origin?: string
  /** its signed publication */
  publication?: Signed
  /** the image's chunks are in the store pinned already (an import pinned them on the way in) */
  entriesPinned?: boolean
}

/** The counts of chunks, kept by the chunk store (ChunkStore.countRefs). */
export interface ChunkRefs {
  countRefs(hashes: Buffer, sizes: Float64Array | undefined, refs: number, pins: number, entries?: boolean): Uint8Array
}

/** A manifest's distinct data chunks, in the order of their bytes: hashes (32 bytes each) and sizes. */
export function distinctChunks(m: Manifest): { h: Buffer; sizes: Float64Array } {
  const [h, sizes] = native().distinctHashes(m.hashes, m.zero, m.offsets)
  return { h, sizes }
}

export class Catalog {
  private readonly q: Record<string, Statement>
  private readonly addTx: Transaction<(name: string, m: Manifest, opts: AddOptions, collectable: Buffer[]) => void>
  private readonly manifestCache = new Map<string, Manifest>()
  /** changes to the images made through this connection (data_version counts only other connections') */
  private writes = 0
  private index: ImageIndex | undefined
  /** counts to lower once the transaction that found them commits; counts raised, to lower if it does not */
  private after: Array<() => void> = []
  private undo: Array<() => void> = []

  constructor(
    readonly db: Db,
    private readonly refs: ChunkRefs
  ) {
    this.addTx = db.transaction((name: string, m: Manifest, opts: AddOptions, collectable: Buffer[]) =>
      this.writeImage(name, m, opts, collectable)
    )
    this.q = {
      image:
        db.prepare(`SELECT i.name, i.digest, i.pinned, i.created_at AS createdAt, m.size, m.chunk_count AS chunkCount,
        m.data_bytes AS dataBytes, m.chunking, i.origin, i.publication
        FROM images i JOIN manifests m ON m.digest = i.digest WHERE i.name = ?`),
      images:
        db.prepare(`SELECT i.name, i.digest, i.pinned, i.created_at AS createdAt, m.size, m.chunk_count AS chunkCount,
        m.data_bytes AS dataBytes, m.chunking, i.origin, i.publication
        FROM images i JOIN manifests m ON m.digest = i.digest ORDER BY i.name`),
      manifestBody: db.prepare('SELECT body FROM manifests WHERE digest = ?').pluck(),
      insertManifest:
        db.prepare(`INSERT OR IGNORE INTO manifests (digest, size, chunk_count, data_bytes, chunking, body, created_at)
        VALUES (?, ?, ?, ?, ?, ?, ?)`),
      insertImage: db.prepare(
        'INSERT INTO images (name, digest, pinned, source, created_at, origin, publication) ' +
          'VALUES (?, ?, ?, ?, ?, ?, ?)'
      ),
      setPublication: db.prepare('UPDATE images SET publication = ? WHERE name = ? AND digest = ?'),
      owner: db.prepare('SELECT owner FROM name_owners WHERE name = ?').pluck(),
      owners: db.prepare('SELECT name, owner, pinned_at AS pinnedAt FROM name_owners ORDER BY name'),
      pinOwner: db.prepare('INSERT OR IGNORE INTO name_owners (name, owner, pinned_at) VALUES (?, ?, ?)'),
      releaseName: db.prepare('DELETE FROM name_owners WHERE name = ?'),
      deleteImage: db.prepare('DELETE FROM images WHERE name = ?'),
      digestUsers: db.prepare('SELECT count(*) FROM images WHERE digest = ?').pluck(),
      deleteManifest: db.prepare('DELETE FROM manifests WHERE digest = ?'),
      setImagePinned: db.prepare('UPDATE images SET pinned = ? WHERE name = ?'),
      version: db.prepare('PRAGMA data_version').pluck()
    }
  }

  /** Changes whenever another connection commits: cheap "did anything change" probe. */
  dataVersion(): number {
    return this.q.version!.get() as number
  }

  getImage(name: string): ImageRow | undefined {
    const r = this.q.image!.get(name) as RawImage | undefined
    return r && toRow(r)
  }

  requireImage(name: string): ImageRow {
    const r = this.getImage(name)
    if (!r) throw VmifsError.imageNotFound(name)
    return r
  }

  listImages(): ImageRow[] {
    return (this.q.images!.all() as RawImage[]).map(toRow)
  }

  /**
   * The images by name, and by digest (its first name): the same object until the images change,
   * here or in another process (`vmifs import` while the agent runs), so callers can tell.
   */
  images(): ImageIndex {
    const key = `${this.dataVersion()} ${this.writes}`
    if (this.index?.key === key) return this.index
    const byName = new Map<string, ImageRow>()
    const byDigest = new Map<string, ImageRow>()
    for (const r of this.listImages()) {
      byName.set(r.name, r)
      if (!byDigest.has(r.digest)) byDigest.set(r.digest, r)
    }
    this.index = { key, byName, byDigest }
    return this.index
  }

  manifest(digest: string): Manifest | undefined {
    const hit = this.manifestCache.get(digest)
    if (hit) return hit
    const body = this.q.manifestBody!.get(digest) as Buffer | undefined
    if (!body) return undefined
    const m = decode(body)
    if (m.digest() !== digest)
      throw VmifsError.manifest('MANIFEST_DIGEST_MISMATCH', `stored manifest ${digest} hashes to ${m.digest()}`)
    this.manifestCache.set(digest, m)
    return m
  }

  /**
   * Records an image (in one transaction). With replace, an existing image of that name is
   * removed first; returns the hashes that became unreferenced and unpinned by that.
   */
  addImage(name: string, m: Manifest, opts: AddOptions): { collectable: Buffer[] } {
    validateName(name)
    const collectable: Buffer[] = []
    this.committed(() => this.addTx.immediate(name, m, opts, collectable))
    this.writes++
    this.manifestCache.set(m.digest(), m)
    return { collectable }
  }

  /**
   * addImage's transaction (made once, not in each call): the image's counts go up before it
   * commits; a replaced image's go down after, adding what no image refers to then to `collectable`.
   */
  private writeImage(name: string, m: Manifest, opts: AddOptions, collectable: Buffer[]): void {
    const digest = m.digest()
    if (this.getImage(name)) {
      if (!opts.replace)
        throw new VmifsError(
          'NAME_TAKEN',
          `an image named ${JSON.stringify(name)} exists (use --replace to replace it)`,
          { name }
        )
      this.removeInTx(name, collectable)
    }
    this.q.insertManifest!.run(
      digest,
      m.size,
      m.count,
      m.dataBytes(),
      JSON.stringify(m.chunking),
      m.encode(),
      Date.now()
    )
    this.q.insertImage!.run(
      name,
      digest,
      opts.pinned ? 1 : 0,
      opts.source ?? null,
      Date.now(),
      opts.origin ?? null,
      opts.publication ? JSON.stringify(opts.publication) : null
    )
    const { h, sizes } = distinctChunks(m)
    if (sizes.length === 0) return
    const pin = opts.pinned ? 1 : 0
    // an import's entries are pinned already: only the counts are written
    this.refs.countRefs(h, sizes, 1, pin, !(opts.entriesPinned ?? false))
    this.undo.push(() => this.refs.countRefs(h, undefined, -1, -pin))
  }

  /** Records the signed publication of image `name` (as the manifest `digest`: nothing if it changed meanwhile). */
  setPublication(name: string, digest: string, p: Signed): void {
    if (this.q.setPublication!.run(JSON.stringify(p), name, digest).changes > 0) this.writes++
  }

  /** The publisher pinned here as the owner of an image name, if any. */
  nameOwner(name: string): string | undefined {
    return this.q.owner!.get(name) as string | undefined
  }

  /** Pins `owner` as the owner of `name` unless one is pinned already; returns the pinned owner. */
  pinOwner(name: string, owner: string): string {
    this.q.pinOwner!.run(name, owner, Date.now())
    return this.nameOwner(name)!
  }

  nameOwners(): Array<{ name: string; owner: string; pinnedAt: number }> {
    return this.q.owners!.all() as Array<{ name: string; owner: string; pinnedAt: number }>
  }

  /** Forgets the owner pinned for `name` (the next publisher seen owns it); whether there was one. */
  releaseName(name: string): boolean {
    return this.q.releaseName!.run(name).changes > 0
  }

  /**
   * Pins or unpins an image (a replica an agent must keep whole, whatever its origin): its chunks'
   * pin counts and their cache entries' pinned flags change in one transaction. Returns whether
   * anything changed.
   */
  setPinned(name: string, pinned: boolean): boolean {
    let changed = false
    this.committed(() =>
      this.db
        .transaction(() => {
          const img = this.requireImage(name)
          if (img.pinned === pinned) return
          this.q.setImagePinned!.run(pinned ? 1 : 0, name)
          const { h } = distinctChunks(this.manifest(img.digest)!)
          if (pinned) {
            this.refs.countRefs(h, undefined, 0, 1)
            this.undo.push(() => this.refs.countRefs(h, undefined, 0, -1))
          } else this.after.push(() => this.refs.countRefs(h, undefined, 0, -1))
          changed = true
        })
        .immediate()
    )
    if (changed) this.writes++
    return changed
  }

  /** Removes an image; returns hashes no image refers to any more (collectable). */
  removeImage(name: string): { collectable: Buffer[]; image: ImageRow } {
    const out: Buffer[] = []
    let image: ImageRow | undefined
    this.committed(() =>
      this.db
        .transaction(() => {
          image = this.requireImage(name)
          this.removeInTx(name, out)
        })
        .immediate()
    )
    this.writes++
    return { collectable: out, image: image! }
  }

  /**
   * Runs a transaction. If it fails, the counts it raised are lowered again; once it commits, the
   * counts it found to lower are.
   */
  private committed<T>(tx: () => T): T {
    this.after = []
    this.undo = []
    let out: T
    try {
      out = tx()
    } catch (err) {
      const undo = this.undo
      this.after = []
      this.undo = []
      for (const u of undo) u()
      throw err
    }
    const after = this.after
    this.after = []
    this.undo = []
    for (const a of after) a()
    return out
  }

  /** Deletes the image row (and its manifest if no other image has it); its counts go down once this commits. */
  private removeInTx(name: string, collectable: Buffer[]): void {
    const img = this.requireImage(name)
    const m = this.manifest(img.digest)!
    this.q.deleteImage!.run(name)
    const { h } = distinctChunks(m)
    const pin = img.pinned ? 1 : 0
    this.after.push(() => {
      const flags = this.refs.countRefs(h, undefined, -1, -pin)
      for (let i = 0; i < flags.length; i++)
        if ((flags[i]! & 1) !== 0) collectable.push(h.subarray(i * 32, i * 32 + 32))
    })
    if ((this.q.digestUsers!.get(img.digest) as number) === 0) {
      this.q.deleteManifest!.run(img.digest)
      this.manifestCache.delete(img.digest)
    }
  }
}

interface RawImage {
  name: string
  digest: string
  pinned: number
  createdAt: number
  size: number
  chunkCount: number
  dataBytes: number
  chunking: string
  origin: string | null
  publication: string | null
}

function toRow(r: RawImage): ImageRow {
  return {
    ...r,
    pinned: r.pinned === 1,
    chunking: JSON.parse(r.chunking) as Chunking,
    publication: r.publication === null ? null : (JSON.parse(r.publication) as Signed)
  }
}
