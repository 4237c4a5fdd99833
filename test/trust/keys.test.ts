// Keys and host certificates: signatures verify only for their message and key; a key file is
// never overwritten and never readable by others; a certificate verifies only as the admin signed it.
import test from 'ava'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { HOST_KEY_FILE, SigningKey, hostKey, isPublicKeyText, verifySignature } from '../../src/trust/keys.js'
import { checkCert, issueCert } from '../../src/trust/certs.js'
import { isVmifsError } from '../../src/errors.js'
import { tmpDir } from '../helpers/tmp.js'

test('a signature verifies for its message and key only', t => {
  const k = SigningKey.generate()
  const other = SigningKey.generate()
  t.true(isPublicKeyText(k.publicKey))
  const sig = k.sign('vmifs-test/1\nhello')
  t.true(verifySignature(k.publicKey, 'vmifs-test/1\nhello', sig))
  t.true(verifySignature(k.publicKey, Buffer.from('vmifs-test/1\nhello'), sig))
  t.false(verifySignature(k.publicKey, 'vmifs-test/1\nhellp', sig))
  t.false(verifySignature(other.publicKey, 'vmifs-test/1\nhello', sig))
  // one bit of the signature flipped
  const raw = Buffer.from(sig, 'base64url')
  raw[10]! ^= 1
  t.false(verifySignature(k.publicKey, 'vmifs-test/1\nhello', raw.toString('base64url')))
  for (const bad of [undefined, null, 42, '', 'x'.repeat(86), sig.slice(1), { sig }])
    t.false(verifySignature(k.publicKey, 'vmifs-test/1\nhello', bad))
  for (const badKey of [
    '',
    'ed25519:' + 'A'.repeat(42),
    'ed25519:' + '!'.repeat(43),
    k.publicKey + 'A',
    k.publicKey.slice(8)
  ])
    t.false(verifySignature(badKey, 'vmifs-test/1\nhello', sig))
})

test('a key survives its PEM; other kinds of key and junk are KEY_INVALID', t => {
  const k = SigningKey.generate()
  const back = SigningKey.fromPem(k.toPem(), 'test')
  t.is(back.publicKey, k.publicKey)
  t.true(verifySignature(k.publicKey, 'm', back.sign('m')))
  t.throws(() => SigningKey.fromPem('not a key', 'junk'), { code: 'KEY_INVALID' })
  const rsa = crypto
    .generateKeyPairSync('rsa', { modulusLength: 1024 })
    .privateKey.export({ format: 'pem', type: 'pkcs8' })
    .toString()
  const err = t.throws(() => SigningKey.fromPem(rsa, 'an rsa key'))
  t.true(isVmifsError(err, 'KEY_INVALID'))
  t.regex(err.message, /rsa key, not Ed25519/)
  t.throws(() => SigningKey.readFile('/nonexistent/key'), { code: 'KEY_INVALID' })
})

test('a key file is written whole, mode 0600, and never overwritten', t => {
  const dir = tmpDir(t)
  const file = path.join(dir, 'admin.key')
  const k = SigningKey.generate()
  k.writeNewFile(file)
  t.is(fs.statSync(file).mode & 0o777, 0o600)
  t.is(SigningKey.readFile(file).publicKey, k.publicKey)
  const err = t.throws(() => SigningKey.generate().writeNewFile(file))
  t.true(isVmifsError(err, 'KEY_EXISTS'))
  t.is(SigningKey.readFile(file).publicKey, k.publicKey)
  t.deepEqual(
    fs.readdirSync(dir).filter(f => f.endsWith('.tmp')),
    []
  )
})

test("the data dir's host key is made once, and refused when others can read it", t => {
  const dir = tmpDir(t)
  const a = hostKey(dir)
  const b = hostKey(dir)
  t.is(a.publicKey, b.publicKey)
  const file = path.join(dir, HOST_KEY_FILE)
  t.is(fs.statSync(file).mode & 0o777, 0o600)
  fs.chmodSync(file, 0o644)
  const err = t.throws(() => hostKey(dir))
  t.true(isVmifsError(err, 'KEY_INVALID'))
  t.regex(err.message, /chmod 600/)
})

test('a host certificate verifies only as the admin signed it, and only for listed admins', t => {
  const admin = SigningKey.generate()
  const host = SigningKey.generate()
  const cert = issueCert(admin, 'web-1', host.publicKey, 1_700_000_000_000)
  const ok = checkCert(cert, [admin.publicKey])
  t.deepEqual(ok, { cert })
  t.deepEqual(checkCert(JSON.parse(JSON.stringify(cert)), undefined), { cert })
  const problem = (v: unknown, admins?: string[]): string => {
    const r = checkCert(v, admins)
    return 'problem' in r ? r.problem : 'accepted'
  }
  t.regex(problem(cert, [SigningKey.generate().publicKey]), /not a fleet admin key/)
  t.regex(problem({ ...cert, host: 'web-2' }, [admin.publicKey]), /does not verify/)
  t.regex(problem({ ...cert, key: SigningKey.generate().publicKey }, [admin.publicKey]), /does not verify/)
  t.regex(problem({ ...cert, issuedAt: cert.issuedAt + 1 }, [admin.publicKey]), /does not verify/)
  // a certificate the host signed for itself names its own key as the admin's
  const self = issueCert(host, 'web-1', host.publicKey)
  t.regex(problem(self, [admin.publicKey]), /not a fleet admin key/)
  for (const bad of [null, 'x', [], { ...cert, extra: 1 }, { ...cert, issuedAt: 'now' }, { ...cert, host: '../x' }])
    t.regex(problem(bad, [admin.publicKey]), /not a certificate/)
  t.throws(() => issueCert(admin, 'bad host', host.publicKey), { code: 'PARAM_INVALID' })
  t.throws(() => issueCert(admin, 'web-1', 'nope'), { code: 'PARAM_INVALID' })
})
