import { type Command, COMMON_HELP, parse, resolveConfig, withDataDir } from './common.js'
import { exportImage } from '../manifests/export.js'
import { VmifsError } from '../errors.js'

export const command: Command = {
  name: 'export',
  summary: 'reassemble an image into a file, verifying every chunk',
  usage: `Usage: vmifs export <name> <out-file> [--force]

Writes the image to <out-file> (or to standard output for "-"), verifying every chunk against its
hash. Zero runs become holes in the output. The file appears only once complete.

Options:
  --force   overwrite <out-file> if it exists
${COMMON_HELP}`,
  async run(argv) {
    const a = parse(this, argv, { force: { type: 'boolean' } })
    if (!a) return 0
    if (a.positionals.length !== 2) throw VmifsError.usage(`export takes <name> <out-file>\n\n${this.usage}`)
    const [name, out] = a.positionals as [string, string]
    const cfg = resolveConfig(a.values)
    const r = await withDataDir(cfg, dd => exportImage(dd, name, out, { force: a.values.force === true }))
    if (out !== '-')
      process.stderr.write(`${name}: ${r.size} bytes verified (digest ${r.digest}) in ${r.seconds.toFixed(2)} s\n`)
    return 0
  }
}
