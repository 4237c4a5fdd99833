// `vmifs host key` and `vmifs host cert <file>`: this host's identity in the fleet: its key pair
// (made at first use, kept in the data dir) and the certificate the fleet admin made for it.
import fs from 'node:fs'
import { type Command, COMMON_HELP, parse, resolveConfig } from './common.js'
import { VmifsError } from '../errors.js'
import { hostKey } from '../trust/keys.js'
import { checkCert, installCert, installedCert } from '../trust/certs.js'

export const command: Command = {
  name: 'host',
  summary: "this host's key and certificate in the fleet",
  usage: `Usage: vmifs host key [--json]
       vmifs host cert <file>

key: prints this host's id and public key (the key pair is made in the data dir, host.key, mode
0600, the first time anything needs it). Give both to the fleet admin: \`vmifs fleet admit\`
makes the host's certificate from them.
cert: installs the certificate the admin made (host.cert in the data dir). It must name this
host's id and public key; a running agent shows it to the fleet with its next facts.

Options:
  --json          key: {"hostId": …, "publicKey": …, "cert": <installed certificate or null>}
  --host-id <id>  this host's id, as its agent runs (default: config hostId, else the hostname)
${COMMON_HELP}`,
  async run(argv) {
    const a = parse(this, argv, { json: { type: 'boolean' }, 'host-id': { type: 'string' } })
    if (!a) return 0
    const [verb, file, ...extra] = a.positionals
    if (!((verb === 'key' && file === undefined) || (verb === 'cert' && file !== undefined)) || extra.length > 0)
      throw VmifsError.usage(`host takes "key" or "cert <file>"\n\n${this.usage}`)
    const cfg = resolveConfig(a.values)
    if (a.values['host-id'] !== undefined) cfg.hostId = a.values['host-id'] // as the agent is run
    if (!fs.existsSync(cfg.dataDir))
      throw new VmifsError('DATA_DIR_UNUSABLE', `no data dir at ${cfg.dataDir}`, { dir: cfg.dataDir })
    const key = hostKey(cfg.dataDir)
    if (verb === 'key') {
      if (a.values.json === true) {
        const cert = installedCert(cfg.dataDir) ?? null
        process.stdout.write(JSON.stringify({ hostId: cfg.hostId, publicKey: key.publicKey, cert }) + '\n')
      } else process.stdout.write(`${cfg.hostId} ${key.publicKey}\n`)
      return 0
    }
    let raw: unknown
    try {
      raw = JSON.parse(fs.readFileSync(file!, 'utf8'))
    } catch (err) {
      throw new VmifsError('CERT_INVALID', `cannot read a certificate from ${file}: ${(err as Error).message}`, {
        file
      })
    }
    const trusted = cfg.trust.admins.length > 0 ? cfg.trust.admins : undefined
    const r = checkCert(raw, trusted)
    if ('problem' in r) throw new VmifsError('CERT_INVALID', `${file}: ${r.problem}`, { file })
    if (r.cert.host !== cfg.hostId || r.cert.key !== key.publicKey)
      throw new VmifsError(
        'CERT_INVALID',
        `${file} admits ${r.cert.host} with key ${r.cert.key}; this host is ${cfg.hostId} with key ${key.publicKey}`,
        { file }
      )
    installCert(cfg.dataDir, r.cert)
    process.stderr.write(`installed the certificate of ${cfg.hostId}, signed by ${r.cert.admin}\n`)
    return 0
  }
}
