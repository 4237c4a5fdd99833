import { type Command, COMMON_HELP, parse, resolveConfig, withDataDir, bytes } from './common.js'
import { VmifsError } from '../errors.js'

export const command: Command = {
  name: 'rm',
  summary: 'remove images; chunks no other image uses are collected',
  usage: `Usage: vmifs rm <name>...

Removes images from the data dir. Their chunks that no remaining image refers to and that are not
pinned by another image are deleted from the cache.

Options:
${COMMON_HELP}`,
  async run(argv) {
    const a = parse(this, argv, {})
    if (!a) return 0
    if (a.positionals.length === 0) throw VmifsError.usage(`rm takes at least one image name\n\n${this.usage}`)
    const cfg = resolveConfig(a.values)
    await withDataDir(cfg, async dd => {
      for (const name of a.positionals) dd.catalog.requireImage(name)
      for (const name of a.positionals) {
        const { collectable } = dd.catalog.removeImage(name)
        const freed = dd.collect(collectable)
        process.stderr.write(`${name}: removed; ${freed.chunks} chunks (${bytes(freed.bytes)}) collected\n`)
      }
    })
    return 0
  }
}
