import { type Command, COMMON_HELP, parse, resolveConfig, withDataDir, bytes } from './common.js'
import { fsck } from '../cache/fsck.js'

export const command: Command = {
  name: 'fsck',
  summary: 're-hash the cache and drop corrupt chunks',
  usage: `Usage: vmifs fsck [--json]

Re-hashes every chunk in the cache. Corrupt chunks are deleted, entries whose file is gone are
forgotten, sound but unrecorded chunk files are adopted, stray files are removed. Reports images
whose chunks are no longer all in the local cache.
Exit status: 0 clean, 1 something was found and repaired (or an image is incomplete).

Options:
  --json    print the report as JSON
${COMMON_HELP}`,
  async run(argv) {
    const a = parse(this, argv, { json: { type: 'boolean' } }, false)
    if (!a) return 0
    const cfg = resolveConfig(a.values)
    const r = await withDataDir(cfg, dd => fsck(dd))
    if (a.values.json === true) {
      process.stdout.write(JSON.stringify(r, null, 2) + '\n')
    } else {
      process.stdout.write(
        `checked ${r.checked} chunks (${bytes(r.checkedBytes)}): ${r.corrupt.length} corrupt (dropped), ` +
          `${r.missing.length} missing, ${r.adopted} adopted, ${r.strays} stray files removed\n`
      )
      for (const c of r.corrupt) process.stdout.write(`corrupt ${c}\n`)
      for (const i of r.incompleteImages)
        process.stdout.write(`image ${i.name}: ${i.missingChunks} chunks not in the local cache\n`)
    }
    return r.corrupt.length + r.missing.length + r.strays + r.incompleteImages.length > 0 ? 1 : 0
  }
}
