// Host certificates: the fleet admin key's statement that a host id speaks with one public key.
// `vmifs fleet admit` makes one (where the admin key is kept), `vmifs host cert` installs it in
// the host's data dir, and the agent shows it to the fleet. A host whose id and key the config's
// `trust.hosts` lists needs none.
import fs from 'node:fs'
import path from 'node:path'
import { VmifsError } from '../errors.js'
import { validHostId as validOrigin } from './host-id.js'
import { type SigningKey, isPublicKeyText, verifySignature } from './keys.js'

/** The installed certificate's file in a data dir. */
export const HOST_CERT_FILE = 'host.cert'

export interface HostCert {
  /** the host id it admits */
  host: string
  /** the host's public key */
  key: string
  /** when the admin made it (ms since the epoch) */
  issuedAt: number
  /** the admin key that signed it */
  admin: string
  sig: string
}

function certMessage(host: string, key: string, issuedAt: number): string {
  return `vmifs-cert/1\n${host}\n${key}\n${issuedAt}`
}

/** The admin's certificate for host id `host` with public key `key`. */
export function issueCert(admin: SigningKey, host: string, key: string, now = Date.now()): HostCert {
  if (!validOrigin(host))
    throw VmifsError.param('host', `${JSON.stringify(host)} is not a host id (1-64 of A-Z a-z 0-9 . _ -)`)
  if (!isPublicKeyText(key)) throw VmifsError.param('public key', `${JSON.stringify(key)} is not a public key`)
  return { host, key, issuedAt: now, admin: admin.publicKey, sig: admin.sign(certMessage(host, key, now)) }
}

/**
 * The admin's signed statements about a host key (a certificate, a revocation) have one shape:
 * the host id, its key, a time, the admin key and its signature over the three. v as one whose
 * time is the field `time`, signed by one of `admins` (by any key, undefined), or why not:
 * 'unknown admin' for a well-formed one of an admin key not among them.
 */
function checkStatement<T extends 'issuedAt' | 'revokedAt'>(
  v: unknown,
  time: T,
  what: string,
  message: (host: string, key: string, at: number) => string,
  admins: readonly string[] | undefined
): ({ host: string; key: string; admin: string; sig: string } & Record<T, number>) | { problem: string } {
  if (typeof v !== 'object' || v === null) return { problem: `not a ${what}` }
  const c = v as Record<string, unknown>
  const at = c[time]
  if (
    !validOrigin(c.host) ||
    !isPublicKeyText(c.key) ||
    typeof at !== 'number' ||
    !Number.isSafeInteger(at) ||
    !isPublicKeyText(c.admin) ||
    typeof c.sig !== 'string' ||
    Object.keys(c).length !== 5
  )
    return { problem: `not a ${what} (host, key, ${time}, admin, sig)` }
  if (admins !== undefined && !admins.includes(c.admin)) return { problem: 'unknown admin' }
  if (!verifySignature(c.admin, message(c.host, c.key, at), c.sig)) return { problem: 'its signature does not verify' }
  return { host: c.host, key: c.key, [time]: at, admin: c.admin, sig: c.sig } as never
}

/**
 * v as a certificate signed by one of `admins` (by any key, undefined), or why not: the shape, the
 * admin key and the signature are checked, not whom it names (that is the caller's).
 */
export function checkCert(v: unknown, admins?: readonly string[]): { cert: HostCert } | { problem: string } {
  const r = checkStatement(v, 'issuedAt', 'certificate', certMessage, admins)
  if ('problem' in r)
    return r.problem === 'unknown admin'
      ? { problem: `signed by ${(v as HostCert).admin}, which is not a fleet admin key here` }
      : r
  return { cert: r }
}

/** The certificate installed in a data dir, if any (as the file holds it: checked by its readers). */
export function installedCert(dataDir: string): unknown {
  const file = path.join(dataDir, HOST_CERT_FILE)
  let text: string
  try {
    text = fs.readFileSync(file, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw new VmifsError('CERT_INVALID', `cannot read ${file}: ${(err as Error).message}`, { file })
  }
  try {
    return JSON.parse(text) as unknown
  } catch {
    throw new VmifsError('CERT_INVALID', `${file} is not JSON`, { file })
  }
}

/** Installs cert in the data dir (replacing the one there: a rotated key gets a new one). */
export function installCert(dataDir: string, cert: HostCert): void {
  const file = path.join(dataDir, HOST_CERT_FILE)
  const tmp = `${file}.${process.pid}.tmp`
  fs.writeFileSync(tmp, JSON.stringify(cert, null, 2) + '\n', { mode: 0o644 })
  fs.renameSync(tmp, file)
}

/**
 * The fleet admin's statement that a host key is no longer to be believed (a stolen key, a host
 * that left). It travels with the metadata table; every host that admits the admin drops what the
 * key signed, and never believes it again.
 */
export interface Revocation {
  /** the host id the key spoke for */
  host: string
  key: string
  revokedAt: number
  admin: string
  sig: string
}

function revocationMessage(host: string, key: string, revokedAt: number): string {
  return `vmifs-revoke/1\n${host}\n${key}\n${revokedAt}`
}

/** The admin's revocation of host id `host`'s key `key`. */
export function issueRevocation(admin: SigningKey, host: string, key: string, now = Date.now()): Revocation {
  if (!validOrigin(host))
    throw VmifsError.param('host', `${JSON.stringify(host)} is not a host id (1-64 of A-Z a-z 0-9 . _ -)`)
  if (!isPublicKeyText(key)) throw VmifsError.param('public key', `${JSON.stringify(key)} is not a public key`)
  return { host, key, revokedAt: now, admin: admin.publicKey, sig: admin.sign(revocationMessage(host, key, now)) }
}

/** v as a revocation signed by one of `admins`, or why not ('unknown admin' for a key not among them). */
export function checkRevocation(
  v: unknown,
  admins: readonly string[]
): { revocation: Revocation } | { problem: string } {
  const r = checkStatement(v, 'revokedAt', 'revocation', revocationMessage, admins)
  return 'problem' in r ? r : { revocation: r }
}
