import { type Command, COMMON_HELP, parse, resolveConfig, withDataDir } from './common.js'
import { VmifsError } from '../errors.js'
import { SigningKey, hostKey } from '../trust/keys.js'
import { acceptanceProblem, signPublication } from '../trust/publications.js'

export const command: Command = {
  name: 'sign',
  summary: "sign images' publications with a publisher key (default: the host key)",
  usage: `Usage: vmifs sign <name>... [--sign-key <file>] [--json]

Signs the publication of images imported here: the statement that the name means this manifest
(its digest), which every host checks before it lists the image. With --sign-key the signature is
an offline publisher key's (vmifs key new), which the fleet's config names in trust.publishers for
the name; without it, the data dir's host key's. A running agent publishes the new signature at
once; vmifs publish-store carries it to the origin store.

Options:
  --sign-key <file>      the publisher's private key (PKCS#8 PEM)
  --json                 print each image's publication as JSON
${COMMON_HELP}`,
  async run(argv) {
    const a = parse(this, argv, { 'sign-key': { type: 'string' }, json: { type: 'boolean' } })
    if (!a) return 0
    if (a.positionals.length === 0) throw VmifsError.usage(`sign takes at least one image name\n\n${this.usage}`)
    const cfg = resolveConfig(a.values)
    const file = a.values['sign-key']
    const offline = file === undefined ? undefined : SigningKey.readFile(file)
    await withDataDir(cfg, async dd => {
      const host = hostKey(dd.dir)
      const key = offline ?? host
      const images = a.positionals.map(n => dd.catalog.requireImage(n))
      for (const img of images)
        if (img.origin !== null)
          throw new VmifsError(
            'IMAGE_NOT_LOCAL',
            `${img.name} was published by ${img.origin}, not imported here: its publisher signs it`,
            { name: img.name }
          )
      for (const img of images) {
        const p = signPublication(key, img, { byHost: offline === undefined })
        dd.catalog.setPublication(img.name, img.digest, p)
        const problem = acceptanceProblem(img.name, key.publicKey, host.publicKey, cfg.trust.publishers)
        if (problem !== undefined)
          process.stderr.write(`${img.name}: warning: hosts with this config will not list it: ${problem}\n`)
        if (a.values.json === true)
          process.stdout.write(JSON.stringify({ name: img.name, digest: img.digest, size: img.size, ...p }) + '\n')
        else process.stderr.write(`${img.name}: signed by ${key.publicKey}\n`)
      }
    })
    return 0
  }
}
