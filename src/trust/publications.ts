// Image publications: a publisher's signed statement that an image name means one manifest (by its
// BLAKE3 digest, so the signature covers every entry of the manifest and, through their hashes,
// every byte of the image). The importing host signs with its host key, or an operator with an
// offline publisher key (`vmifs import --sign-key`, `vmifs sign`). A publication travels in the
// image/<name> fact of the host that serves it and in the origin store's images.json, and is
// checked by every host that lists the image: who may publish a name is the config's
// `trust.publishers` (keys per name prefix), or else any admitted host, the first one seen pinned
// as the name's owner here (src/index/fleet-images.ts).
import type { Catalog } from '../index/catalog.js'
import { type SigningKey, isPublicKeyText, isSignatureText, verifySignature } from './keys.js'

export interface Publication {
  name: string
  digest: string
  size: number
  /** ms since the epoch: among an owner's publications of a name the newest wins */
  publishedAt: number
  /** the publisher's public key */
  publisher: string
  sig: string
}

/** What the catalog keeps of an image's publication (its name, digest and size are the image's). */
export interface Signed {
  publishedAt: number
  publisher: string
  sig: string
  /** signed with the host key (signed again with the new one when the host key is rotated) */
  byHost?: boolean
}

function publicationMessage(name: string, digest: string, size: number, publishedAt: number): string {
  return `vmifs-pub/1\n${name}\n${digest}\n${size}\n${publishedAt}`
}

/** key's publication of image `name` as the manifest `digest` of `size` bytes. */
export function signPublication(
  key: SigningKey,
  img: { name: string; digest: string; size: number },
  opts: { byHost?: boolean; now?: number } = {}
): Signed {
  const publishedAt = opts.now ?? Date.now()
  return {
    publishedAt,
    publisher: key.publicKey,
    sig: key.sign(publicationMessage(img.name, img.digest, img.size, publishedAt)),
    ...(opts.byHost === true ? { byHost: true } : {})
  }
}

/** Whether p carries a publisher and a signature at all, and whether the signature verifies. */
export function checkPublication(p: {
  name: string
  digest: string
  size: number
  publishedAt: number
  publisher?: unknown
  sig?: unknown
}): 'unsigned' | 'badSignature' | undefined {
  if (p.publisher === undefined && p.sig === undefined) return 'unsigned'
  if (!isPublicKeyText(p.publisher) || !isSignatureText(p.sig)) return 'badSignature'
  return verifySignature(p.publisher, publicationMessage(p.name, p.digest, p.size, p.publishedAt), p.sig)
    ? undefined
    : 'badSignature'
}

/** The keys the config names for an image name: those of its longest matching prefix, if any. */
export function publishersFor(
  name: string,
  prefixes: Readonly<Record<string, readonly string[]>>
): readonly string[] | undefined {
  let best: string | undefined
  for (const p of Object.keys(prefixes))
    if (name.startsWith(p) && (best === undefined || p.length > best.length)) best = p
  return best === undefined ? undefined : prefixes[best]
}

/**
 * Signs with the host key the publications of the images imported here that need it: those of
 * before signing (none kept), and those its previous key signed (a rotated host key). Returns
 * how many it signed.
 */
export function signLocalImages(catalog: Catalog, key: SigningKey): number {
  let n = 0
  for (const img of catalog.listImages()) {
    if (img.origin !== null) continue
    const p = img.publication
    if (p !== null && (p.byHost !== true || p.publisher === key.publicKey)) continue
    catalog.setPublication(img.name, img.digest, signPublication(key, img, { byHost: true }))
    n++
  }
  return n
}

/**
 * Why hosts with this config would not list `name` published by `publisher` (undefined when they
 * would): for the commands that sign, to warn before anything travels.
 */
export function acceptanceProblem(
  name: string,
  publisher: string,
  hostKey: string,
  prefixes: Readonly<Record<string, readonly string[]>>
): string | undefined {
  const named = publishersFor(name, prefixes)
  if (named !== undefined)
    return named.includes(publisher) ? undefined : `trust.publishers names other keys for ${JSON.stringify(name)}`
  return publisher === hostKey
    ? undefined
    : `no trust.publishers prefix matches ${JSON.stringify(name)}, and hosts list such names only from host keys`
}
