// `npm run bench -- origin-compress [--image FILE] [--sample N] [--groups 1,4,16]`: how much an
// origin store would save by keeping chunks compressed, to decide its packed format. The image
// (default: the boot benchmark's Debian image, built by `npm run bench -- boot`) is imported with
// the default chunking; a sample of its distinct data chunks, in image order, is compressed one by
// one and in groups of adjacent chunks, with brotli at several qualities and with gzip. Reported
// per setting: the compressed share of the bytes, compression MB/s (paid once, at publish time),
// and decompression MB/s (paid by every reader).
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import zlib from 'node:zlib'
import { DataDir } from '../src/datadir.js'
import { importImage } from '../src/manifests/import.js'
import { markdownTable, num, takeOption } from './lib/report.js'

const DEFAULT_IMAGE = '/var/tmp/vmifs-bench/bootable/boot-a.img'

interface Codec {
  name: string
  pack: (b: Buffer) => Buffer
  unpack: (b: Buffer) => Buffer
}

const brotli = (quality: number, window = 22): Codec => ({
  name: `brotli q${quality}`,
  pack: b =>
    zlib.brotliCompressSync(b, {
      params: {
        [zlib.constants.BROTLI_PARAM_QUALITY]: quality,
        [zlib.constants.BROTLI_PARAM_LGWIN]: window,
        [zlib.constants.BROTLI_PARAM_SIZE_HINT]: b.length
      }
    }),
  unpack: b => zlib.brotliDecompressSync(b)
})
const gzip = (level: number): Codec => ({
  name: `gzip ${level}`,
  pack: b => zlib.gzipSync(b, { level }),
  unpack: b => zlib.gunzipSync(b)
})

export async function main(args: string[]): Promise<void> {
  const image = takeOption(args, '--image') ?? DEFAULT_IMAGE
  const sample = Number(takeOption(args, '--sample') ?? 2000)
  const groups = (takeOption(args, '--groups') ?? '1,4,16').split(',').map(Number)
  if (!fs.existsSync(image))
    throw new Error(`${image} is missing: give --image, or build the boot images with npm run bench -- boot`)
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vmifs-compress-'))
  try {
    const dd = DataDir.open(dir, { capacityBytes: 64 * 1024 ** 3 })
    try {
      console.error(`origin-compress: importing ${image}`)
      const r = await importImage(dd, image, { name: 'img' })
      const hashes = [...r.manifest.distinctChunks().keys()]
      // runs of neighbours (a run as long as the largest group), spread evenly across the image
      const run = Math.max(...groups)
      const runs = Math.max(1, Math.ceil(sample / run))
      const stride = Math.max(run, Math.floor(hashes.length / runs))
      const picked: Buffer[] = []
      for (let s = 0; s + run <= hashes.length && picked.length < sample; s += stride)
        for (let k = 0; k < run && picked.length < sample; k++) picked.push(await dd.store.read(hashes[s + k]!))
      const raw = picked.reduce((n, b) => n + b.length, 0)
      const mb = (raw / 1e6).toFixed(1)
      console.error(`origin-compress: ${num(hashes.length)} distinct chunks, ${picked.length} sampled (${mb} MB)`)
      const codecs = [brotli(5), brotli(9), brotli(11), gzip(6), gzip(9)]
      const rows: string[][] = []
      for (const g of groups) {
        const parts: Buffer[] = []
        for (let i = 0; i < picked.length; i += g) parts.push(Buffer.concat(picked.slice(i, i + g)))
        for (const c of codecs) {
          let t = process.hrtime.bigint()
          const packed = parts.map(p => c.pack(p))
          const packS = Number(process.hrtime.bigint() - t) / 1e9
          // stored raw where compressing does not pay (less than 1/16 saved)
          const kept = packed.map((p, i) => (p.length < parts[i]!.length * (15 / 16) ? p : parts[i]!))
          const bytes = kept.reduce((n, b) => n + b.length, 0)
          t = process.hrtime.bigint()
          for (let i = 0; i < packed.length; i++) if (kept[i] === packed[i]) c.unpack(packed[i]!)
          const unpackS = Number(process.hrtime.bigint() - t) / 1e9
          rows.push([
            g === 1 ? 'each chunk' : `groups of ${g}`,
            c.name,
            `${((100 * bytes) / raw).toFixed(1)} %`,
            `${(raw / 1e6 / packS).toFixed(1)}`,
            `${(raw / 1e6 / unpackS).toFixed(0)}`
          ])
          console.error(`origin-compress: ${rows.at(-1)!.join(' | ')}`)
        }
      }
      console.log(
        `\n${r.name}: ${path.basename(image)}, ${num(hashes.length)} distinct chunks (average ` +
          `${Math.round(raw / picked.length)} bytes), ${picked.length} sampled\n`
      )
      console.log(markdownTable(['unit', 'codec', 'stored / raw', 'compress MB/s', 'decompress MB/s'], rows))
    } finally {
      dd.close()
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}
