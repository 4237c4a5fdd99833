// Ed25519 keys: a host's own (made at its first start, kept in its data dir), and the keys an
// operator keeps elsewhere (the fleet admin key, publisher keys). A public key travels as
// "ed25519:" and the base64url text of its 32 bytes (51 characters in all: the tag names the kind,
// and keeps a key from ever starting with "-", which a command line would take for an option); a
// signature as base64url of its 64 bytes.
// Signed messages always start with a domain tag ("vmifs-fact/1\n", …) so a signature made for
// one purpose never verifies as another.
import crypto, { type KeyObject } from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { VmifsError } from '../errors.js'

/** The host key's file in a data dir (PKCS#8 PEM, mode 0600). */
export const HOST_KEY_FILE = 'host.key'

/** DER prefix of an Ed25519 SubjectPublicKeyInfo: the 32 key bytes follow. */
const SPKI_ED25519 = Buffer.from('302a300506032b6570032100', 'hex')
const PUBLIC_TAG = 'ed25519:'
const PUBLIC_RE = /^ed25519:[A-Za-z0-9_-]{43}$/
const SIG_RE = /^[A-Za-z0-9_-]{86}$/

/** Whether s has the shape of a signature's text (86 base64url characters: 64 bytes). */
export function isSignatureText(s: unknown): s is string {
  return typeof s === 'string' && SIG_RE.test(s)
}

/** Whether s has the shape of a public key's text ("ed25519:" and 43 base64url characters). */
export function isPublicKeyText(s: unknown): s is string {
  return typeof s === 'string' && PUBLIC_RE.test(s)
}

const publicKeys = new Map<string, KeyObject | null>()

/** The key object of a public key's text (cached); undefined when it is not one. */
function publicKeyObject(text: string): KeyObject | undefined {
  let k = publicKeys.get(text)
  if (k === undefined) {
    k = null
    if (PUBLIC_RE.test(text)) {
      const raw = Buffer.from(text.slice(PUBLIC_TAG.length), 'base64url')
      if (raw.length === 32) {
        try {
          k = crypto.createPublicKey({ key: Buffer.concat([SPKI_ED25519, raw]), format: 'der', type: 'spki' })
        } catch {
          k = null
        }
      }
    }
    if (publicKeys.size > 100_000) publicKeys.clear()
    publicKeys.set(text, k)
  }
  return k ?? undefined
}

/** Whether sig (base64url) is publicKey's signature of msg. False for anything malformed. */
export function verifySignature(publicKey: string, msg: Buffer | string, sig: unknown): boolean {
  if (!isSignatureText(sig)) return false
  const k = publicKeyObject(publicKey)
  if (!k) return false
  const s = Buffer.from(sig, 'base64url')
  if (s.length !== 64) return false
  try {
    return crypto.verify(null, typeof msg === 'string' ? Buffer.from(msg) : msg, k, s)
  } catch {
    return false
  }
}

/** A private key, and the text of its public key. */
export class SigningKey {
  readonly publicKey: string

  private constructor(private readonly key: KeyObject) {
    const der = crypto.createPublicKey(key).export({ format: 'der', type: 'spki' })
    this.publicKey = PUBLIC_TAG + der.subarray(SPKI_ED25519.length).toString('base64url')
  }

  static generate(): SigningKey {
    return new SigningKey(crypto.generateKeyPairSync('ed25519').privateKey)
  }

  /** From a PKCS#8 PEM text; what names the file (for the message) is `what`. */
  static fromPem(pem: string, what: string): SigningKey {
    let key: KeyObject
    try {
      key = crypto.createPrivateKey({ key: pem, format: 'pem' })
    } catch (err) {
      throw new VmifsError('KEY_INVALID', `${what} is not a private key: ${(err as Error).message}`, { what })
    }
    if (key.asymmetricKeyType !== 'ed25519')
      throw new VmifsError('KEY_INVALID', `${what} is a ${key.asymmetricKeyType ?? 'unknown'} key, not Ed25519`, {
        what
      })
    return new SigningKey(key)
  }

  /** Reads a key file an operator keeps (the fleet admin key, a publisher key). */
  static readFile(file: string): SigningKey {
    let pem: string
    try {
      pem = fs.readFileSync(file, 'utf8')
    } catch (err) {
      throw new VmifsError('KEY_INVALID', `cannot read the key file ${file}: ${(err as Error).message}`, { file })
    }
    return SigningKey.fromPem(pem, `the key file ${file}`)
  }

  toPem(): string {
    return this.key.export({ format: 'pem', type: 'pkcs8' }).toString()
  }

  /** The signature of msg, base64url. */
  sign(msg: Buffer | string): string {
    return crypto.sign(null, typeof msg === 'string' ? Buffer.from(msg) : msg, this.key).toString('base64url')
  }

  /**
   * Writes the key to a new file, mode 0600, whole or not at all; KEY_EXISTS when the file is
   * there already, so no key is ever overwritten.
   */
  writeNewFile(file: string): void {
    writeSecretFile(file, this.toPem())
  }
}

/**
 * Writes a secret (a key, a password) to a new file, mode 0600, whole or not at all (a temp file
 * linked into place); KEY_EXISTS when the file is there already: a secret is never overwritten.
 */
export function writeSecretFile(file: string, text: string): void {
  if (fs.existsSync(file))
    throw new VmifsError('KEY_EXISTS', `${file} exists: a key or password file is never overwritten`, { file })
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`)
  const fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600)
  try {
    fs.writeSync(fd, text)
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
  try {
    // a link fails if another process made the file meanwhile, where a rename would replace it
    fs.linkSync(tmp, file)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST')
      throw new VmifsError('KEY_EXISTS', `${file} exists: a key or password file is never overwritten`, { file })
    throw err
  } finally {
    fs.rmSync(tmp, { force: true })
  }
}

/**
 * The data dir's host key, made on first use. A key file another process is writing at the same
 * moment is read once it is there (its maker links it into place whole).
 */
export function hostKey(dataDir: string): SigningKey {
  const file = path.join(dataDir, HOST_KEY_FILE)
  if (!fs.existsSync(file)) {
    try {
      SigningKey.generate().writeNewFile(file)
    } catch (err) {
      if (!(err instanceof VmifsError && err.code === 'KEY_EXISTS')) throw err
    }
  }
  const st = fs.statSync(file)
  if ((st.mode & 0o077) !== 0)
    throw new VmifsError(
      'KEY_INVALID',
      `${file} is readable by others (mode ${(st.mode & 0o777).toString(8)}): chmod 600 it`,
      { file }
    )
  return SigningKey.fromPem(fs.readFileSync(file, 'utf8'), `the host key ${file}`)
}
