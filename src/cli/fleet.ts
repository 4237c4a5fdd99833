// `vmifs fleet admit <host> <public-key> --admin-key <file>`: the fleet admin's certificate for a
// host, printed (or written to --out) for `vmifs host cert` on that host.
import fs from 'node:fs'
import { type Command, parse } from './common.js'
import { VmifsError } from '../errors.js'
import { SigningKey } from '../trust/keys.js'
import { issueCert } from '../trust/certs.js'

export const command: Command = {
  name: 'fleet',
  summary: 'fleet admin: admit a host (sign its certificate)',
  usage: `Usage: vmifs fleet admit <host> <public-key> --admin-key <file> [--out <file>]

admit: signs a certificate saying that host id <host> speaks with <public-key> (what
\`vmifs host key\` prints on that host), with the fleet admin key (\`vmifs key new\`), and prints
it as JSON, or writes it to --out. Install it on the host with \`vmifs host cert <file>\`.

Options:
  --admin-key <file>  the fleet admin's private key
  --out <file>        write the certificate here instead of printing it
  -h, --help          this help`,
  async run(argv) {
    const a = parse(this, argv, { 'admin-key': { type: 'string' }, out: { type: 'string' } })
    if (!a) return 0
    const [verb, host, key, ...extra] = a.positionals
    if (verb !== 'admit' || host === undefined || key === undefined || extra.length > 0)
      throw VmifsError.usage(`fleet takes "admit <host> <public-key>"\n\n${this.usage}`)
    if (a.values['admin-key'] === undefined)
      throw VmifsError.usage(`fleet admit needs --admin-key <file>\n\n${this.usage}`)
    const cert = issueCert(SigningKey.readFile(a.values['admin-key']), host, key)
    const text = JSON.stringify(cert, null, 2) + '\n'
    if (a.values.out !== undefined) fs.writeFileSync(a.values.out, text)
    else process.stdout.write(text)
    return 0
  }
}
