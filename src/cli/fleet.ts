// `vmifs fleet admit <host> <public-key> --admin-key <file>`: the fleet admin's certificate for a
// host, printed (or written to --out) for `vmifs host cert` on that host.
// `vmifs fleet revoke <host> <public-key> --admin-key <file>` (or `--file <revocation>`): the
// admin's revocation of a host key, written to --out, or recorded on this host (through its
// running agent, or in its data dir), from where it travels to the fleet with the metadata table.
// `vmifs fleet redis-user <host> --password-out <file>`: a host's user for a Redis metadata engine
// (its ACL file line, printed; its new password, written to the file for the host).
import fs from 'node:fs'
import path from 'node:path'
import { type Command, COMMON_HELP, parse, resolveConfig, withDataDir } from './common.js'
import { VmifsError, isVmifsError } from '../errors.js'
import { SigningKey, writeSecretFile } from '../trust/keys.js'
import { issueCert, issueRevocation } from '../trust/certs.js'
import { FactStore } from '../index/facts.js'
import { agentCall } from '../server/local-api.js'
import { aclRule, newPassword } from '../metadata/acl.js'
import { validHostId } from '../trust/host-id.js'

export const command: Command = {
  name: 'fleet',
  summary: 'fleet admin: admit a host (sign its certificate), revoke a host key, make its Redis user',
  usage: `Usage: vmifs fleet admit <host> <public-key> --admin-key <file> [--out <file>]
       vmifs fleet revoke <host> <public-key> --admin-key <file> [--out <file>]
       vmifs fleet revoke --file <revocation>
       vmifs fleet redis-user <host> --password-out <file>

admit: signs a certificate saying that host id <host> speaks with <public-key> (what
\`vmifs host key\` prints on that host), with the fleet admin key (\`vmifs key new\`), and prints
it as JSON, or writes it to --out. Install it on the host with \`vmifs host cert <file>\`.
revoke: signs the revocation of <host>'s key <public-key> with the fleet admin key. With --out
it is only written there; otherwise (or with --file, a revocation made elsewhere) it is recorded
on this host, through its running agent or in its data dir: the facts the key signed are dropped
here, and the revocation reaches every host with the metadata table. A revoked key is never
believed again; the host needs a new key and certificate to rejoin.
redis-user: for a fleet whose metadata table is in Redis (vmifs agent --metadata): writes a new
random password for <host> to --password-out (mode 0600; the host's "metadataPasswordFile") and
prints the line for the ACL file of every Redis node: user vmifs-<host>, which reads every vmifs
key and channel and writes only <host>'s own keys.

Options:
  --admin-key <file>  the fleet admin's private key
  --out <file>        write the certificate or revocation here (and record nothing)
  --file <file>       revoke: record this revocation (made with --out elsewhere)
  --password-out <file>  redis-user: where the new password goes (never overwritten)
  -h, --help          this help
${COMMON_HELP}`,
  async run(argv) {
    const a = parse(this, argv, {
      'admin-key': { type: 'string' },
      out: { type: 'string' },
      file: { type: 'string' },
      'password-out': { type: 'string' }
    })
    if (!a) return 0
    const [verb, host, key, ...extra] = a.positionals
    if (verb === 'redis-user') {
      if (host === undefined || key !== undefined || a.values['password-out'] === undefined)
        throw VmifsError.usage(`fleet redis-user takes <host> and --password-out <file>\n\n${this.usage}`)
      if (!validHostId(host)) throw VmifsError.param('host', `${JSON.stringify(host)} is not a host id`)
      const password = newPassword()
      writeSecretFile(a.values['password-out'], password + '\n')
      process.stdout.write(aclRule(host, password) + '\n')
      return 0
    }
    const made = host !== undefined && key !== undefined && extra.length === 0
    const fromFile = verb === 'revoke' && host === undefined && a.values.file !== undefined
    if (!((verb === 'admit' || verb === 'revoke') && (made || fromFile)) || (made && a.values.file !== undefined))
      throw VmifsError.usage(
        'fleet takes "admit <host> <public-key>", "revoke <host> <public-key>" or "revoke --file <file>"' +
          `\n\n${this.usage}`
      )
    if (made && a.values['admin-key'] === undefined)
      throw VmifsError.usage(`fleet ${verb} needs --admin-key <file>\n\n${this.usage}`)
    const write = (v: unknown): void => {
      const text = JSON.stringify(v, null, 2) + '\n'
      if (a.values.out !== undefined) fs.writeFileSync(a.values.out, text)
      else process.stdout.write(text)
    }
    if (verb === 'admit') {
      write(issueCert(SigningKey.readFile(a.values['admin-key']!), host!, key!))
      return 0
    }
    let revocation: unknown
    if (made) {
      revocation = issueRevocation(SigningKey.readFile(a.values['admin-key']!), host, key)
      if (a.values.out !== undefined) {
        write(revocation)
        return 0
      }
    } else {
      if (a.values.out !== undefined) throw VmifsError.usage('--out is for a revocation made here')
      try {
        revocation = JSON.parse(fs.readFileSync(a.values.file!, 'utf8')) as unknown
      } catch (err) {
        throw new VmifsError(
          'CERT_INVALID',
          `cannot read a revocation from ${a.values.file!}: ${(err as Error).message}`
        )
      }
    }
    const cfg = resolveConfig(a.values)
    let dropped: string[]
    try {
      dropped = (
        (await agentCall(path.join(cfg.dataDir, 'agent.sock'), 'POST', '/v1/revoke', revocation)) as {
          dropped: string[]
        }
      ).dropped
    } catch (err) {
      if (!isVmifsError(err, 'AGENT_NOT_RUNNING')) throw err
      dropped = await withDataDir(cfg, dd => new FactStore(dd.db, cfg.hostId, { trust: cfg.trust }).revoke(revocation))
    }
    const r = revocation as { host: string; key: string }
    const here = dropped.length > 0 ? `dropped the facts of ${dropped.join(', ')} here` : 'nothing it signed was here'
    process.stdout.write(`revoked ${r.host}'s key ${r.key}: ${here}; it reaches the fleet with the metadata table\n`)
    return 0
  }
}
