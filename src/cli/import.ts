import cliProgress from 'cli-progress'
import { type Command, COMMON_HELP, parse, resolveConfig, withDataDir, bytes } from './common.js'
import { importImage } from '../manifests/import.js'
import { type Chunking, DEFAULT_CHUNKING } from '../manifests/chunking.js'
import { parseSize } from '../config.js'
import { VmifsError } from '../errors.js'
import { SigningKey, hostKey } from '../trust/keys.js'
import { acceptanceProblem } from '../trust/publications.js'

export const command: Command = {
  name: 'import',
  summary: 'chunk an image file into the cache and register it; prints the digest',
  usage: `Usage: vmifs import <file> --name <name> [options]

Reads a raw VM disk image, splits it into chunks (zero runs are recorded, not stored), stores new
chunks in the local cache pinned, and registers the image under <name>. Prints the image digest.

Options:
  --name <name>          image name (A-Z a-z 0-9 . _ + -), shown as <mount>/images/<name>
  --chunking fixed|cdc   chunker (default from config: ${DEFAULT_CHUNKING.kind})
  --chunk-size <size>    fixed: the chunk size; cdc: the average (min = avg/4, max = avg*4)
  --file-cuts on|off     cdc: also cut where the files of the image's ext4 filesystems start and
                         end (extent-mapped files; whole disk or MBR/GPT partitions), so siblings
                         share every file's chunks (default from config: on)
  --replace              replace an existing image of that name
  --sign-key <file>      sign the image's publication with this publisher key (default: the host
                         key; the fleet's trust.publishers must name it: see vmifs sign)
  --json                 print the result as JSON
  --quiet                no progress bar
${COMMON_HELP}`,
  async run(argv) {
    const a = parse(this, argv, {
      name: { type: 'string' },
      chunking: { type: 'string' },
      'chunk-size': { type: 'string' },
      'file-cuts': { type: 'string' },
      replace: { type: 'boolean' },
      'sign-key': { type: 'string' },
      json: { type: 'boolean' },
      quiet: { type: 'boolean' }
    })
    if (!a) return 0
    const [file, ...extra] = a.positionals
    if (file === undefined || extra.length > 0) throw VmifsError.usage(`import takes one image file\n\n${this.usage}`)
    const name = a.values.name
    if (name === undefined) throw VmifsError.usage(`--name is required\n\n${this.usage}`)
    const cfg = resolveConfig(a.values)
    const chunking = chunkingFrom(a.values.chunking, a.values['chunk-size'], cfg.chunking, a.values['file-cuts'])
    const signFile = a.values['sign-key']
    const signKey = signFile === undefined ? undefined : SigningKey.readFile(signFile)
    const tty = process.stderr.isTTY && a.values.quiet !== true
    const bar = tty
      ? new cliProgress.SingleBar(
          {
            format: 'import [{bar}] {percentage}% | {doneBytes}/{totalBytes} | {speed}',
            hideCursor: true,
            stream: process.stderr
          },
          cliProgress.Presets.shades_classic
        )
      : undefined
    const t0 = Date.now()
    const r = await withDataDir(cfg, async dd => {
      try {
        return await importImage(dd, file, {
          name,
          chunking,
          replace: a.values.replace === true,
          signKey,
          onProgress:
            bar &&
            ((done, total) => {
              const s = Math.max(0.001, (Date.now() - t0) / 1000)
              if (!bar.isActive) bar.start(total, 0, { doneBytes: bytes(0), totalBytes: bytes(total), speed: '' })
              bar.update(done, { doneBytes: bytes(done), totalBytes: bytes(total), speed: `${bytes(done / s)}/s` })
            })
        })
      } finally {
        bar?.stop()
      }
    })
    const host = hostKey(cfg.dataDir).publicKey
    const problem = acceptanceProblem(name, signKey?.publicKey ?? host, host, cfg.trust.publishers)
    if (problem !== undefined)
      process.stderr.write(`${name}: warning: hosts with this config will not list it: ${problem}\n`)
    if (a.values.json === true) {
      const { manifest: _m, ...rest } = r
      process.stdout.write(JSON.stringify(rest) + '\n')
    } else {
      process.stdout.write(r.digest + '\n')
      if (process.stderr.isTTY) {
        const files = r.filesystems.reduce((n, f) => n + f.files, 0)
        const cut =
          r.filesystems.length > 0
            ? `, cut at ${files} files in ${r.filesystems.map(f => `ext4@${f.offset}`).join(' ')}`
            : ''
        process.stderr.write(
          `${r.name}: ${bytes(r.size)}, ${r.chunks} entries, ${bytes(r.zeroBytes)} zero, ` +
            `${bytes(r.newBytes)} new in cache${cut}, ${(r.size / r.seconds / 1e9).toFixed(2)} GB/s\n`
        )
      }
    }
    return 0
  }
}

export function chunkingFrom(
  kind: string | undefined,
  size: string | undefined,
  base: Chunking,
  fileCuts?: string
): Chunking {
  if (fileCuts !== undefined && fileCuts !== 'on' && fileCuts !== 'off')
    throw VmifsError.usage(`--file-cuts must be on or off, got ${fileCuts}`)
  if (kind === undefined && size === undefined && fileCuts === undefined) return base
  const k = kind ?? base.kind
  if (k !== 'fixed' && k !== 'cdc') throw VmifsError.usage(`--chunking must be fixed or cdc, got ${k}`)
  const s = size === undefined ? undefined : parseSize(size, '--chunk-size')
  if (k === 'fixed') {
    if (fileCuts === 'on')
      throw VmifsError.usage('--file-cuts on needs --chunking cdc (fixed chunks are cut at fixed offsets)')
    return { kind: 'fixed', chunkSize: s ?? (base.kind === 'fixed' ? base.chunkSize : 65536) }
  }
  const cdcBase = base.kind === 'cdc' ? base : undefined
  const avg = s ?? cdcBase?.avg ?? 16384
  const cuts = fileCuts === undefined ? (cdcBase?.fileCuts ?? true) : fileCuts === 'on'
  const sized =
    s === undefined && cdcBase !== undefined
      ? { min: cdcBase.min, avg, max: cdcBase.max }
      : { min: avg / 4, avg, max: avg * 4 }
  return cuts ? { kind: 'cdc', ...sized, fileCuts: true } : { kind: 'cdc', ...sized }
}
