// Images published by other hosts (`image/<name>` facts) or listed by the origin store become
// local catalog entries (not pinned; their chunks are fetched on demand): the manifest is fetched
// by digest from the publisher, any other host, or the origin, and verified against the digest.
// Only publications signed by a publisher this host accepts for the name are listed
// (src/trust/publications.ts): the keys the config's trust.publishers names for the name's longest
// prefix, or else any admitted host, the first seen pinned here as the name's owner. Among an
// owner's publications the newest wins (a host's over the origin store's at the same time). An
// image whose publication is retracted disappears; an image imported on this host always wins here.
import type { Catalog } from './catalog.js'
import type { FactStore } from './facts.js'
import { decode } from '../manifests/manifest.js'
import { blake3 } from '../util/hash.js'
import type { Logger } from '../util/log.js'
import { validateName } from './catalog.js'
import { type Signed, checkPublication, publishersFor } from '../trust/publications.js'
import { decodeAs } from './schema.js'
import { ORIGIN_ID as ORIGIN } from '../holders/directory.js'

export interface PublishedImage {
  name: string
  digest: string
  size: number
  /** the host whose fact carries it, or "origin" for the origin store */
  origin: string
  publishedAt: number
  publisher?: unknown
  sig?: unknown
  /** the publisher's host certificate (the origin store carries it: the host may be one this host has no facts of) */
  cert?: unknown
}
export type ManifestSource = (digest: string, preferred: string) => Promise<Buffer | null>

/** Why a publication is not listed (`fleet.imagesRefused.<reason>`). */
export const PUBLICATION_REFUSALS = [
  'unsigned',
  'badSignature',
  'notAccepted',
  'unknownPublisher',
  'notOwner',
  'malformed'
] as const
export type PublicationRefusal = (typeof PUBLICATION_REFUSALS)[number]

export interface PublisherTrust {
  /** trust.publishers: image name prefix → the publisher keys accepted for names with it */
  prefixes: Readonly<Record<string, readonly string[]>>
}

export class FleetImages {
  private running: Promise<void> | undefined
  private again = false
  /** a manifest no host gave: looked for again after a back-off (1 s, doubling to 30 s) */
  private retry: NodeJS.Timeout | undefined
  private retries = 0
  private closed = false
  private extra: PublishedImage[] = []
  private extraText = '[]'
  private originMalformed = 0
  private refusedNow: Record<PublicationRefusal, number> = zeroCounts()
  private readonly logged = new Set<string>()

  constructor(
    private readonly facts: FactStore,
    private readonly catalog: Catalog,
    private readonly fetchManifest: ManifestSource,
    private readonly log: Logger,
    private readonly onChange: () => void,
    private readonly trust: PublisherTrust = { prefixes: {} },
    /** whether an image of this name is to be pinned here when adopted (a replica) */
    private readonly pinned?: (name: string) => boolean
  ) {}

  /** The origin store's images.json (name → publication); entries that do not decode are counted as malformed. */
  setOriginImages(entries: Record<string, unknown>): void {
    const list: PublishedImage[] = []
    let malformed = 0
    for (const [name, v] of Object.entries(entries)) {
      const d = decodeAs('image', v)
      if (d) list.push({ ...d, name, origin: ORIGIN })
      else malformed++
    }
    const text = JSON.stringify(list)
    if (text === this.extraText && malformed === this.originMalformed) return
    this.extra = list
    this.extraText = text
    this.originMalformed = malformed
    void this.reconcile()
  }

  /** The publications not listed at the last look, per reason. */
  refused(): Record<PublicationRefusal, number> {
    return { ...this.refusedNow }
  }

  /** The publication listed for each name (with its signature), after the checks above. */
  published(): Map<string, PublishedImage & Signed> {
    const all: PublishedImage[] = [...this.extra]
    for (const f of this.facts.allAs('image')) {
      if (f.origin === this.facts.self) continue
      all.push({ name: f.name, origin: f.origin, ...f.value })
    }
    const refused = zeroCounts()
    refused.malformed += this.originMalformed
    const refuse = (p: PublishedImage, reason: PublicationRefusal): void => {
      refused[reason]++
      const k = `${p.origin} ${p.name} ${p.digest} ${reason}`
      if (this.logged.has(k)) return
      if (this.logged.size > 10_000) this.logged.clear()
      this.logged.add(k)
      this.log.warn(
        { code: 'IMAGE_REFUSED', name: p.name, from: p.origin, publisher: p.publisher, reason },
        'an image publication is not listed: ' + REASON_TEXT[reason]
      )
    }
    // the valid publications of each name, with the publisher identity each speaks as
    const byName = new Map<string, { named: boolean; list: Array<{ p: PublishedImage & Signed; id: string }> }>()
    for (const p of all) {
      try {
        validateName(p.name)
      } catch {
        refuse(p, 'malformed')
        continue
      }
      const bad = checkPublication(p)
      if (bad !== undefined) {
        refuse(p, bad)
        continue
      }
      const signed = p as PublishedImage & Signed
      const named = publishersFor(p.name, this.trust.prefixes)
      let id: string
      if (named !== undefined) {
        if (!named.includes(signed.publisher)) {
          refuse(p, 'notAccepted')
          continue
        }
        id = signed.publisher
      } else {
        const hosts = this.facts.hostsOfKey(signed.publisher, p.cert)
        if (hosts.length === 0) {
          refuse(p, 'unknownPublisher')
          continue
        }
        id = `host:${hosts[0]!}`
      }
      const entry = byName.get(p.name) ?? { named: named !== undefined, list: [] }
      entry.list.push({ p: signed, id })
      byName.set(p.name, entry)
    }
    const best = new Map<string, PublishedImage & Signed>()
    for (const [name, { named, list }] of byName) {
      let owned = list
      if (!named) {
        // the first publisher seen owns the name here (the earliest publication of those at hand)
        let owner = this.catalog.nameOwner(name)
        if (owner === undefined) {
          const first = list.reduce((a, b) => (rankFirst(b) < rankFirst(a) ? b : a))
          owner = this.catalog.pinOwner(name, first.id)
        }
        owned = []
        for (const c of list) {
          if (c.id === owner) owned.push(c)
          else refuse(c.p, 'notOwner')
        }
      }
      for (const { p } of owned) {
        const cur = best.get(name)
        if (!cur || compare(rank(p), rank(cur)) > 0) best.set(name, p)
      }
    }
    this.refusedNow = refused
    return best
  }

  /** Stops looking for missing manifests again. */
  close(): void {
    this.closed = true
    if (this.retry) clearTimeout(this.retry)
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
    let missing = 0
    // a pinned adopted image (a replica this host keeps) stays pinned in its next version
    const keepPinned = new Set<string>()
    for (const img of this.catalog.listImages()) {
      if (img.origin === null) continue // imported here
      const w = want.get(img.name)
      if (w && w.digest === img.digest && w.sig !== img.publication?.sig)
        this.catalog.setPublication(img.name, img.digest, signedOf(w))
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
            if (this.retries === 0) this.log.warn({ name: w.name, digest: w.digest }, 'no host gave the manifest yet')
            missing++
            continue
          }
          if (blake3(body).toString('hex') !== w.digest) {
            this.log.warn({ name: w.name, digest: w.digest }, 'manifest does not match its digest: ignored')
            continue
          }
          m = decode(body)
        } catch (err) {
          this.log.warn({ name: w.name, err: (err as Error).message }, 'cannot fetch the manifest')
          missing++
          continue
        }
      }
      if (this.catalog.getImage(w.name)) continue
      this.catalog.addImage(w.name, m, {
        pinned: keepPinned.has(w.name) || (this.pinned?.(w.name) ?? false),
        replace: false,
        origin: w.origin,
        publication: signedOf(w)
      })
      changed = true
    }
    if (changed) this.onChange()
    if (missing === 0) this.retries = 0
    else if (!this.retry && !this.closed) {
      const ms = Math.min(30_000, 1000 * 2 ** this.retries++)
      this.retry = setTimeout(() => {
        this.retry = undefined
        this.reconcile().catch((err: unknown) => this.log.warn({ err: (err as Error).message }, 'reconciling'))
      }, ms)
      this.retry.unref()
    }
  }
}

const REASON_TEXT: Record<PublicationRefusal, string> = {
  unsigned: 'it carries no publisher signature',
  badSignature: "its publisher's signature does not verify",
  notAccepted: "trust.publishers names other keys for the name's prefix",
  unknownPublisher: 'its publisher key is neither an admitted host nor named in trust.publishers',
  notOwner: 'another publisher owns the name here (the first seen; vmifs names --release moves it)',
  malformed: 'its name or value is not valid'
}

/** What the catalog keeps of a listed publication. */
function signedOf(w: Signed): Signed {
  return { publishedAt: w.publishedAt, publisher: w.publisher, sig: w.sig }
}

function zeroCounts(): Record<PublicationRefusal, number> {
  return Object.fromEntries(PUBLICATION_REFUSALS.map(r => [r, 0])) as Record<PublicationRefusal, number>
}

/** Newest first; at the same time a host's publication over the origin store's, then by origin. */
function rank(x: PublishedImage): [number, number, string] {
  return [x.publishedAt, x.origin === ORIGIN ? 0 : 1, x.origin]
}

/** Which publisher saw the name first: the earliest publication, ties by identity. */
function rankFirst(c: { p: PublishedImage; id: string }): string {
  return `${String(c.p.publishedAt).padStart(16, '0')} ${c.id}`
}

function compare(a: [number, number, string], b: [number, number, string]): number {
  return a[0] - b[0] || a[1] - b[1] || (a[2] < b[2] ? -1 : a[2] > b[2] ? 1 : 0)
}
