// The commands of host identity, as an operator runs them: an admin key, a host's key, the
// admin's certificate for it, installed on the host; every refusal answers its code and installs nothing.
import test from 'ava'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { tmpdir, vmifs } from './harness.js'

const codeOf = (stderr: string): string | undefined => /\[([A-Z_]+)\]\s*$/.exec(stderr)?.[1]

test('key new, host key, fleet admit and host cert make and install a certificate; refusals change nothing', t => {
  const dir = tmpdir()
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const data = path.join(dir, 'data')
  fs.mkdirSync(data)
  const adminFile = path.join(dir, 'admin.key')
  const made = vmifs(['key', 'new', adminFile, '--json'])
  t.is(made.code, 0, made.stderr)
  const admin = (JSON.parse(made.stdout) as { publicKey: string }).publicKey
  t.regex(admin, /^ed25519:[A-Za-z0-9_-]{43}$/, 'tagged, so never taken for an option')
  t.is(fs.statSync(adminFile).mode & 0o777, 0o600)
  const again = vmifs(['key', 'new', adminFile])
  t.is(again.code, 1)
  t.is(codeOf(again.stderr), 'KEY_EXISTS')

  const config = path.join(dir, 'config.json')
  fs.writeFileSync(config, JSON.stringify({ hostId: 'web-1', trust: { admins: [admin] } }))
  const common = ['--data-dir', data, '--config', config]
  const shown = vmifs(['host', 'key', '--json', ...common])
  t.is(shown.code, 0, shown.stderr)
  const me = JSON.parse(shown.stdout) as { hostId: string; publicKey: string; cert: unknown }
  t.is(me.hostId, 'web-1')
  t.is(me.cert, null)
  t.is(fs.statSync(path.join(data, 'host.key')).mode & 0o777, 0o600)
  t.is(vmifs(['host', 'key', ...common]).stdout, `web-1 ${me.publicKey}\n`, 'the same key the second time')

  // certificates that must not install: another host's, one for another key, one by a stranger
  const certFile = (name: string): string => path.join(dir, name)
  const admit = (host: string, key: string, keyFile: string, out: string): void => {
    const r = vmifs(['fleet', 'admit', host, key, '--admin-key', keyFile, '--out', certFile(out)])
    t.is(r.code, 0, r.stderr)
  }
  admit('web-2', me.publicKey, adminFile, 'other-host.cert')
  const strangerFile = path.join(dir, 'stranger.key')
  t.is(vmifs(['key', 'new', strangerFile]).code, 0)
  admit('web-1', me.publicKey, strangerFile, 'stranger.cert')
  const otherKey = (
    JSON.parse(vmifs(['key', 'new', path.join(dir, 'x.key'), '--json']).stdout) as { publicKey: string }
  ).publicKey
  admit('web-1', otherKey, adminFile, 'other-key.cert')
  fs.writeFileSync(certFile('junk.cert'), '{"host": "web-1"}')
  for (const f of ['other-host.cert', 'stranger.cert', 'other-key.cert', 'junk.cert', 'missing.cert']) {
    const r = vmifs(['host', 'cert', certFile(f), ...common])
    t.is(r.code, 1, f)
    t.is(codeOf(r.stderr), 'CERT_INVALID', `${f}: ${r.stderr}`)
    t.false(fs.existsSync(path.join(data, 'host.cert')), f)
  }

  admit('web-1', me.publicKey, adminFile, 'web-1.cert')
  const ok = vmifs(['host', 'cert', certFile('web-1.cert'), ...common])
  t.is(ok.code, 0, ok.stderr)
  const installed = (
    JSON.parse(vmifs(['host', 'key', '--json', ...common]).stdout) as { cert: Record<string, unknown> }
  ).cert
  t.like(installed, { host: 'web-1', key: me.publicKey, admin })

  // bad arguments
  t.is(codeOf(vmifs(['fleet', 'admit', 'bad host', me.publicKey, '--admin-key', adminFile]).stderr), 'PARAM_INVALID')
  t.is(codeOf(vmifs(['fleet', 'admit', 'web-3', 'nope', '--admin-key', adminFile]).stderr), 'PARAM_INVALID')
  t.is(codeOf(vmifs(['fleet', 'admit', 'web-3', me.publicKey, '--admin-key', config]).stderr), 'KEY_INVALID')
  t.is(vmifs(['fleet', 'admit', 'web-3', me.publicKey]).code, 2)
  t.is(vmifs(['host', 'frob', ...common]).code, 2)
  const noDir = vmifs(['host', 'key', '--data-dir', path.join(dir, 'nope')])
  t.is(codeOf(noDir.stderr), 'DATA_DIR_UNUSABLE')
  t.false(fs.existsSync(path.join(dir, 'nope')), 'no data dir is made by a failed command')
  fs.writeFileSync(config, JSON.stringify({ trust: { admins: ['not-a-key'] } }))
  t.is(codeOf(vmifs(['host', 'key', ...common]).stderr), 'CONFIG_INVALID')
})

test('host key --rotate makes a new key and sets the old key and certificate aside, never under an agent', async t => {
  const dir = tmpdir()
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const data = path.join(dir, 'data')
  fs.mkdirSync(data)
  const adminFile = path.join(dir, 'admin.key')
  const admin = (JSON.parse(vmifs(['key', 'new', adminFile, '--json']).stdout) as { publicKey: string }).publicKey
  const config = path.join(dir, 'config.json')
  fs.writeFileSync(config, JSON.stringify({ hostId: 'web-1', trust: { admins: [admin] } }))
  const common = ['--data-dir', data, '--config', config]
  const before = (JSON.parse(vmifs(['host', 'key', '--json', ...common]).stdout) as { publicKey: string }).publicKey
  const cert = path.join(dir, 'web-1.cert')
  t.is(vmifs(['fleet', 'admit', 'web-1', before, '--admin-key', adminFile, '--out', cert]).code, 0)
  t.is(vmifs(['host', 'cert', cert, ...common]).code, 0)

  // an agent's socket answering on the data dir: the key stays
  const sock = path.join(data, 'agent.sock')
  const server = net.createServer(c => c.destroy())
  await new Promise<void>(resolve => server.listen(sock, resolve))
  const refused = vmifs(['host', 'key', '--rotate', ...common])
  await new Promise<void>(resolve => server.close(() => resolve()))
  t.is(refused.code, 1)
  t.is(codeOf(refused.stderr), 'AGENT_RUNNING')
  t.is(vmifs(['host', 'key', ...common]).stdout, `web-1 ${before}\n`)

  const r = vmifs(['host', 'key', '--rotate', '--json', ...common])
  t.is(r.code, 0, r.stderr)
  const after = JSON.parse(r.stdout) as { publicKey: string; cert: unknown }
  t.not(after.publicKey, before)
  t.is(after.cert, null, 'the certificate named the old key')
  t.is(fs.statSync(path.join(data, 'host.key')).mode & 0o777, 0o600)
  const old = fs.readdirSync(data).filter(f => f.endsWith('.old'))
  t.is(old.filter(f => f.startsWith('host.key.')).length, 1)
  t.is(old.filter(f => f.startsWith('host.cert.')).length, 1)
  t.is(vmifs(['host', 'cert', '--rotate', cert, ...common]).code, 2)
})
