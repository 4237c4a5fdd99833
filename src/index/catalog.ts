// Images, manifests and chunk reference counts. refs = how many local images use a chunk;
// pins = how many of those are pinned. Counts are per image, changed in the same transaction as
// the image row, so they never drift from the images table. The chunk store's entries (another
// index: src/cache/chunk-store.ts) are pinned before that transaction commits and unpinned after:
// a crash in between leaves a chunk pinned that need not be (fsck puts it right), never the other
// way round.
import type { Statement, Transaction } from 'better-sqlite3'
import type { Db } from './db.js'
import { HASH_ROWS, type HashRows, hashOrder } from './bulk.js'
import { HashSet } from '../util/hash.js'
import { VmifsError } from '../errors.js'
import { type Manifest, decode } from '../manifests/manifest.js'
import type { Chunking } from '../manifests/chunking.js'

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
  /** the image's chunks are in the store pinned already (an import pinned them on the way in) */
  entriesPinned?: boolean
}

/** What the catalog changes in the chunk store: which entries are pinned. */
export interface EntryPins {
  pinMany(hashes: Buffer[] | Buffer): void
  unpinMany(hashes: Buffer[] | Buffer): void
}

export class Catalog {
  private readonly q: Record<string, Statement>
  private readonly bulk: Record<'refUp', Statement>
  private readonly addTx: Transaction<(name: string, m: Manifest, opts: AddOptions) => Buffer[]>
  private readonly manifestCache = new Map<string, Manifest>()
  /** changes to the images made through this connection (data_version counts only other connections') */
  private writes = 0
  private index: ImageIndex | undefined
  /** entries no pinned image holds any more, unpinned once the transaction that found them commits */
  private unpinAfter: Buffer[] = []

  constructor(
    readonly db: Db,
    private readonly entries: EntryPins
  ) {
    this.addTx = db.transaction((name: string, m: Manifest, opts: AddOptions) => this.writeImage(name, m, opts))
    this.bulk = {
      // v: the chunk's size; one more image refers to each
      refUp: db.prepare(`INSERT INTO chunks (hash, size, refs, pins) SELECT r.hash, r.v, 1, @pin FROM ${HASH_ROWS} r
        WHERE true ON CONFLICT(hash) DO UPDATE SET refs = refs + 1, pins = pins + excluded.pins`)
    }
    this.q = {
      image:
        db.prepare(`SELECT i.name, i.digest, i.pinned, i.created_at AS createdAt, m.size, m.chunk_count AS chunkCount,
        m.data_bytes AS dataBytes, m.chunking, i.origin FROM images i JOIN manifests m ON m.digest = i.digest
        WHERE i.name = ?`),
      images:
        db.prepare(`SELECT i.name, i.digest, i.pinned, i.created_at AS createdAt, m.size, m.chunk_count AS chunkCount,
        m.data_bytes AS dataBytes, m.chunking, i.origin FROM images i JOIN manifests m ON m.digest = i.digest
        ORDER BY i.name`),
      manifestBody: db.prepare('SELECT body FROM manifests WHERE digest = ?').pluck(),
      insertManifest:
        db.prepare(`INSERT OR IGNORE INTO manifests (digest, size, chunk_count, data_bytes, chunking, body, created_at)
        VALUES (?, ?, ?, ?, ?, ?, ?)`),
      insertImage: db.prepare(
        'INSERT INTO images (name, digest, pinned, source, created_at, origin) VALUES (?, ?, ?, ?, ?, ?)'
      ),
      deleteImage: db.prepare('DELETE FROM images WHERE name = ?'),
      digestUsers: db.prepare('SELECT count(*) FROM images WHERE digest = ?').pluck(),
      deleteManifest: db.prepare('DELETE FROM manifests WHERE digest = ?'),
      refDown: db.prepare('UPDATE chunks SET refs = refs - 1, pins = pins - ? WHERE hash = ? RETURNING refs, pins'),
      deleteChunk: db.prepare('DELETE FROM chunks WHERE hash = ?'),
      setImagePinned: db.prepare('UPDATE images SET pinned = ? WHERE name = ?'),
      pinsBy: db.prepare('UPDATE chunks SET pins = pins + ? WHERE hash = ? RETURNING pins'),
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
    const collectable = this.committed(() => this.addTx.immediate(name, m, opts))
    this.writes++
    this.manifestCache.set(m.digest(), m)
    return { collectable }
  }

  /** addImage's transaction (made once: see src/index/bulk.ts). */
  private writeImage(name: string, m: Manifest, opts: AddOptions): Buffer[] {
    const digest = m.digest()
    let collectable: Buffer[] = []
    if (this.getImage(name)) {
      if (!opts.replace)
        throw new VmifsError(
          'NAME_TAKEN',
          `an image named ${JSON.stringify(name)} exists (use --replace to replace it)`,
          { name }
        )
      collectable = this.removeInTx(name)
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
    this.q.insertImage!.run(name, digest, opts.pinned ? 1 : 0, opts.source ?? null, Date.now(), opts.origin ?? null)
    const pin = opts.pinned ? 1 : 0
    // each distinct data chunk once, in key order: each upsert lands next to the last one's page
    const all = m.hashes
    const h = Buffer.allocUnsafe(m.count * 32)
    const sizes: number[] = []
    let last = -1
    for (const i of hashOrder(all)) {
      if (m.zero[i] === 1) continue
      if (last >= 0 && all.compare(all, i * 32, i * 32 + 32, last * 32, last * 32 + 32) === 0) continue
      all.copy(h, sizes.length * 32, i * 32, i * 32 + 32)
      sizes.push(m.lengthAt(i))
      last = i
    }
    if (sizes.length > 0) {
      const rows: HashRows = { h: h.subarray(0, sizes.length * 32), v: `[${sizes.join(',')}]` }
      this.bulk.refUp.run({ ...rows, pin })
      if (pin && opts.entriesPinned !== true) this.entries.pinMany(rows.h)
    }
    if (collectable.length > 0) {
      const still = new HashSet()
      for (let k = 0; k < sizes.length; k++) still.add(h, k * 32)
      collectable = collectable.filter(c => !still.has(c))
    }
    return collectable
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
          const m = this.manifest(img.digest)!
          this.q.setImagePinned!.run(pinned ? 1 : 0, name)
          const pin: Buffer[] = []
          for (const hex of m.distinctChunks().keys()) {
            const h = Buffer.from(hex, 'hex')
            const r = this.q.pinsBy!.get(pinned ? 1 : -1, h) as { pins: number } | undefined
            if (pinned) pin.push(h)
            else if (r && r.pins <= 0) this.unpinAfter.push(h)
          }
          if (pin.length > 0) this.entries.pinMany(pin)
          changed = true
        })
        .immediate()
    )
    if (changed) this.writes++
    return changed
  }

  /** Removes an image; returns hashes no image refers to any more (collectable). */
  removeImage(name: string): { collectable: Buffer[]; image: ImageRow } {
    let out: Buffer[] = []
    let image: ImageRow | undefined
    this.committed(() =>
      this.db
        .transaction(() => {
          image = this.requireImage(name)
          out = this.removeInTx(name)
        })
        .immediate()
    )
    this.writes++
    return { collectable: out, image: image! }
  }

  /** Runs a transaction; once it commits, the entries it found no pinned image holds are unpinned. */
  private committed<T>(tx: () => T): T {
    this.unpinAfter = []
    let out: T
    try {
      out = tx()
    } catch (err) {
      this.unpinAfter = []
      throw err
    }
    const unpin = this.unpinAfter
    this.unpinAfter = []
    if (unpin.length > 0) this.entries.unpinMany(unpin)
    return out
  }

  private removeInTx(name: string): Buffer[] {
    const img = this.requireImage(name)
    const m = this.manifest(img.digest)!
    this.q.deleteImage!.run(name)
    const pin = img.pinned ? 1 : 0
    const collectable: Buffer[] = []
    for (const hex of m.distinctChunks().keys()) {
      const h = Buffer.from(hex, 'hex')
      const r = this.q.refDown!.get(pin, h) as { refs: number; pins: number } | undefined
      if (!r) continue
      if (r.refs <= 0) {
        this.q.deleteChunk!.run(h)
        collectable.push(h)
      }
      if (r.pins <= 0) this.unpinAfter.push(h)
    }
    if ((this.q.digestUsers!.get(img.digest) as number) === 0) {
      this.q.deleteManifest!.run(img.digest)
      this.manifestCache.delete(img.digest)
    }
    return collectable
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
}

function toRow(r: RawImage): ImageRow {
  return { ...r, pinned: r.pinned === 1, chunking: JSON.parse(r.chunking) as Chunking }
}
