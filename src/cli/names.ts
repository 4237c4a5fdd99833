import { type Command, COMMON_HELP, parse, resolveConfig, withDataDir } from './common.js'
import { VmifsError } from '../errors.js'

export const command: Command = {
  name: 'names',
  summary: 'the owners of image names pinned here, and releasing one',
  usage: `Usage: vmifs names [--release <name>]... [--json]

Lists the publisher pinned here as the owner of each image name that no trust.publishers prefix
covers: the first publisher this host saw publish the name ("host:<id>" for a host's key, or the
publisher key). Publications of the name by anyone else are not listed (counted in
fleet.imagesRefused.notOwner). --release forgets a name's owner: the earliest publication of it
at hand owns it next (a name whose host left the fleet, or moved to another). For names that matter, name their
publishers in trust.publishers instead: the config decides for every host alike.

Options:
  --release <name>       forget the owner pinned for this name (repeatable)
  --json                 print the list as JSON
${COMMON_HELP}`,
  async run(argv) {
    const a = parse(this, argv, { release: { type: 'string', multiple: true }, json: { type: 'boolean' } }, false)
    if (!a) return 0
    const cfg = resolveConfig(a.values)
    await withDataDir(cfg, async dd => {
      for (const name of a.values.release ?? []) {
        if (!dd.catalog.releaseName(name))
          throw new VmifsError('IMAGE_NOT_FOUND', `no owner is pinned for ${JSON.stringify(name)}`, { name })
        process.stderr.write(`${name}: released\n`)
      }
      if ((a.values.release ?? []).length > 0) return
      const owners = dd.catalog.nameOwners()
      if (a.values.json === true) process.stdout.write(JSON.stringify(owners) + '\n')
      else
        for (const o of owners) process.stdout.write(`${o.name}\t${o.owner}\t${new Date(o.pinnedAt).toISOString()}\n`)
    })
    return 0
  }
}
