import { type Command, COMMON_HELP, parse, resolveConfig, withDataDir, bytes, table } from './common.js'

export const command: Command = {
  name: 'ls',
  summary: 'list images: size, digest, cached share',
  usage: `Usage: vmifs ls [--json]

Lists the images of the data dir: name, size, data bytes (non-zero), the share of those bytes in
the local cache, whether the image is pinned here, and its digest.

Options:
  --json    one JSON array
${COMMON_HELP}`,
  async run(argv) {
    const a = parse(this, argv, { json: { type: 'boolean' } }, false)
    if (!a) return 0
    const cfg = resolveConfig(a.values)
    const rows = await withDataDir(cfg, dd =>
      dd.catalog.listImages().map(r => {
        const m = dd.catalog.manifest(r.digest)!
        const cachedBytes = dd.cachedBytes(m)
        let distinct = 0
        for (const size of m.distinctChunks().values()) distinct += size
        return {
          name: r.name,
          size: r.size,
          dataBytes: r.dataBytes,
          cachedBytes,
          cachedPct: distinct === 0 ? 100 : (100 * cachedBytes) / distinct,
          pinned: r.pinned,
          digest: r.digest,
          chunking: r.chunking,
          createdAt: new Date(r.createdAt).toISOString()
        }
      })
    )
    if (a.values.json === true) {
      process.stdout.write(JSON.stringify(rows, null, 2) + '\n')
      return 0
    }
    if (rows.length === 0) {
      process.stderr.write('no images\n')
      return 0
    }
    process.stdout.write(
      table([
        ['NAME', 'SIZE', 'DATA', 'CACHED', 'PINNED', 'DIGEST'],
        ...rows.map(r => [
          r.name,
          bytes(r.size),
          bytes(r.dataBytes),
          `${r.cachedPct.toFixed(1)}%`,
          r.pinned ? 'yes' : 'no',
          r.digest
        ])
      ]) + '\n'
    )
    return 0
  }
}
