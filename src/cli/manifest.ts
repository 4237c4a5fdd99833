import fs from 'node:fs'
import { type Command, COMMON_HELP, parse, resolveConfig, withDataDir } from './common.js'
import { VmifsError } from '../errors.js'
import { MAGIC, type Manifest, decode, fromJson } from '../manifests/manifest.js'

export const command: Command = {
  name: 'manifest',
  summary: "print an image's manifest (JSON or binary), or check a manifest file",
  usage: `Usage: vmifs manifest <name> [--binary] [--out <file>]
       vmifs manifest --check <file>

The first form prints the manifest of image <name> in its JSON form (the format is in
manifests/SPEC.md), or with --binary its canonical binary form, whose BLAKE3 is the image digest.
The second form reads a manifest file, binary or JSON, and validates it: prints its digest, or
fails with the MANIFEST_* code of the first rule it breaks.

Options:
  --binary        the canonical binary form instead of JSON
  --out <file>    write to <file> instead of standard output
  --check <file>  validate a manifest file
${COMMON_HELP}`,
  async run(argv) {
    const a = parse(this, argv, { binary: { type: 'boolean' }, out: { type: 'string' }, check: { type: 'string' } })
    if (!a) return 0
    if (typeof a.values.check === 'string') {
      const m = readManifestFile(a.values.check)
      process.stdout.write(
        JSON.stringify({
          digest: m.digest(),
          size: m.size,
          extents: m.count,
          dataBytes: m.dataBytes(),
          chunking: m.chunking
        }) + '\n'
      )
      return 0
    }
    if (a.positionals.length !== 1) throw VmifsError.usage(`manifest takes one image name\n\n${this.usage}`)
    const cfg = resolveConfig(a.values)
    const m = await withDataDir(cfg, dd => dd.catalog.manifest(dd.catalog.requireImage(a.positionals[0]!).digest)!)
    const body = a.values.binary === true ? m.encode() : Buffer.from(JSON.stringify(m.toJson(), null, 1) + '\n')
    if (typeof a.values.out === 'string' && a.values.out !== '-') fs.writeFileSync(a.values.out, body)
    else process.stdout.write(body)
    return 0
  }
}

export function readManifestFile(file: string): Manifest {
  let buf: Buffer
  try {
    buf = fs.readFileSync(file)
  } catch (err) {
    throw new VmifsError(
      'INPUT_NOT_FOUND',
      `${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      { file }
    )
  }
  if (buf.subarray(0, 4).equals(MAGIC)) return decode(buf)
  let j: unknown
  try {
    j = JSON.parse(buf.toString('utf8'))
  } catch {
    throw VmifsError.manifest('MANIFEST_BAD_MAGIC', `${file} is neither a binary manifest nor JSON`)
  }
  return fromJson(j)
}
