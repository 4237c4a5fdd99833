// `vmifs key new <file>`: an Ed25519 key pair for an operator to keep (the fleet admin key, a
// publisher key); prints its public key.
import { type Command, parse } from './common.js'
import { VmifsError } from '../errors.js'
import { SigningKey } from '../trust/keys.js'

export const command: Command = {
  name: 'key',
  summary: 'make a key pair: the fleet admin key, a publisher key',
  usage: `Usage: vmifs key new <file> [--json]

Makes an Ed25519 key pair and writes its private key to <file> (PKCS#8 PEM, mode 0600; a file
that exists is never overwritten), then prints the public key ("ed25519:" and 43 characters) to put in the
config of the hosts that should trust it (trust.admins for a fleet admin key). Keep the file
off the hosts: whoever holds it can admit hosts to the fleet.

Options:
  --json    {"file": …, "publicKey": …}
  -h, --help  this help`,
  async run(argv) {
    const a = parse(this, argv, { json: { type: 'boolean' } })
    if (!a) return 0
    const [verb, file, ...extra] = a.positionals
    if (verb !== 'new' || file === undefined || extra.length > 0)
      throw VmifsError.usage(`key takes "new <file>"\n\n${this.usage}`)
    const key = SigningKey.generate()
    key.writeNewFile(file)
    process.stdout.write(
      a.values.json === true ? JSON.stringify({ file, publicKey: key.publicKey }) + '\n' : `${key.publicKey}\n`
    )
    return 0
  }
}
