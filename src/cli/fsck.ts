import { type Command, COMMON_HELP, parse, resolveConfig, withDataDir, bytes } from './common.js'
import { fsck } from '../cache/fsck.js'

export const command: Command = {
  name: 'fsck',
  summary: 're-hash the cache and drop corrupt chunks; converts a data dir of the old layout',
  usage: `Usage: vmifs fsck [--json]

Re-hashes every chunk in the cache, reading each pack file front to back. Corrupt chunks are
deleted, entries whose bytes are gone are forgotten, stray files and packs no entry points into
are removed, and a sound chunk's damaged CRC (which every read checks) is corrected. Reports
images whose chunks are no longer all in the local cache.
A data dir of the layout before pack files (a file per chunk under chunks/), which every other
command refuses with DATA_DIR_OLD_LAYOUT, is converted first: every sound chunk file moves into
a pack with its access time and pin. Run it with the agent stopped.
Exit status: 0 clean, 1 something was found and repaired (or an image is incomplete).

Options:
  --json    print the report as JSON
${COMMON_HELP}`,
  async run(argv) {
    const a = parse(this, argv, { json: { type: 'boolean' } }, false)
    if (!a) return 0
    const cfg = resolveConfig(a.values)
    const r = await withDataDir(cfg, dd => fsck(dd), { convert: true })
    if (a.values.json === true) {
      process.stdout.write(JSON.stringify(r, null, 2) + '\n')
    } else {
      process.stdout.write(
        `checked ${r.checked} chunks (${bytes(r.checkedBytes)}): ${r.corrupt.length} corrupt (dropped), ` +
          `${r.missing.length} missing, ${r.strays} stray files removed` +
          (r.crcsRepaired > 0 ? `, ${r.crcsRepaired} damaged CRCs corrected` : '') +
          (r.converted > 0 ? `, ${r.converted} chunk files converted into packs` : '') +
          '\n'
      )
      if (!r.countsRebuilt)
        process.stdout.write('chunk counts kept: another process has the data dir open (stop the agent to recount)\n')
      for (const c of r.corrupt) process.stdout.write(`corrupt ${c}\n`)
      for (const i of r.incompleteImages)
        process.stdout.write(`image ${i.name}: ${i.missingChunks} chunks not in the local cache\n`)
    }
    return r.corrupt.length + r.missing.length + r.strays + r.crcsRepaired + r.incompleteImages.length > 0 ? 1 : 0
  }
}
