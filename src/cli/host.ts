// `vmifs host key` and `vmifs host cert <file>`: this host's identity in the fleet: its key pair
// (made at first use, kept in the data dir) and the certificate the fleet admin made for it.
import fs from 'node:fs'
import path from 'node:path'
import { type Command, COMMON_HELP, parse, resolveConfig } from './common.js'
import { VmifsError } from '../errors.js'
import { HOST_KEY_FILE, hostKey } from '../trust/keys.js'
import { HOST_CERT_FILE, checkCert, installCert, installedCert } from '../trust/certs.js'
import { socketInUse } from '../server/local-api.js'

export const command: Command = {
  name: 'host',
  summary: "this host's key and certificate in the fleet",
  usage: `Usage: vmifs host key [--json] [--rotate]
       vmifs host cert <file>

key: prints this host's id and public key (the key pair is made in the data dir, host.key, mode
0600, the first time anything needs it). Give both to the fleet admin: \`vmifs fleet admit\`
makes the host's certificate from them. With --rotate, a new key pair replaces the old one
(kept as host.key.<time>.old, and the certificate for it as host.cert.<time>.old): the host
needs a new certificate, and its agent must be stopped meanwhile (AGENT_RUNNING otherwise).
cert: installs the certificate the admin made (host.cert in the data dir). It must name this
host's id and public key; a running agent shows it to the fleet with its next facts.

Options:
  --json          key: {"hostId": …, "publicKey": …, "cert": <installed certificate or null>}
  --rotate        key: make a new key pair in place of the old one
  --host-id <id>  this host's id, as its agent runs (default: config hostId, else the hostname)
${COMMON_HELP}`,
  async run(argv) {
    const a = parse(this, argv, {
      json: { type: 'boolean' },
      'host-id': { type: 'string' },
      rotate: { type: 'boolean' }
    })
    if (!a) return 0
    const [verb, file, ...extra] = a.positionals
    if (!((verb === 'key' && file === undefined) || (verb === 'cert' && file !== undefined)) || extra.length > 0)
      throw VmifsError.usage(`host takes "key" or "cert <file>"\n\n${this.usage}`)
    const cfg = resolveConfig(a.values)
    if (a.values['host-id'] !== undefined) cfg.hostId = a.values['host-id'] // as the agent is run
    if (!fs.existsSync(cfg.dataDir))
      throw new VmifsError('DATA_DIR_UNUSABLE', `no data dir at ${cfg.dataDir}`, { dir: cfg.dataDir })
    if (a.values.rotate === true) {
      if (verb !== 'key') throw VmifsError.usage(`--rotate is for host key\n\n${this.usage}`)
      await rotate(cfg.dataDir)
    }
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

/**
 * Moves the host key and its certificate aside (host.key.<time>.old, host.cert.<time>.old), so the
 * next hostKey() makes a new pair. Refused while an agent runs on the data dir: it signs with the
 * key it read at start, and what it signed would no longer verify under a certificate for the new one.
 */
async function rotate(dataDir: string): Promise<void> {
  const sock = path.join(dataDir, 'agent.sock')
  if (await socketInUse(sock))
    throw new VmifsError('AGENT_RUNNING', `an agent runs on ${dataDir}: stop it, rotate the key, then start it`, {
      socket: sock
    })
  const stamp = new Date().toISOString().replace(/[:.]/g, '-')
  for (const f of [HOST_KEY_FILE, HOST_CERT_FILE]) {
    const from = path.join(dataDir, f)
    if (fs.existsSync(from)) fs.renameSync(from, path.join(dataDir, `${f}.${stamp}.old`))
  }
}
