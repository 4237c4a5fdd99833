// Export: reassemble an image from the cache into a file, every chunk verified against its hash
// on the way (and the manifest against its digest when it is loaded). Zero extents become holes.
// The output appears under its name only when complete (written to a temp name, then renamed).
import fs from 'node:fs'
import fsp from 'node:fs/promises'
import path from 'node:path'
import { VmifsError } from '../errors.js'
import type { DataDir } from '../datadir.js'

export async function exportImage(
  dd: DataDir,
  name: string,
  out: string,
  opts: { force?: boolean } = {}
): Promise<{ size: number; digest: string; seconds: number }> {
  const t0 = Date.now()
  const img = dd.catalog.requireImage(name)
  const m = dd.catalog.manifest(img.digest)!
  const toStdout = out === '-'
  if (!toStdout && !(opts.force ?? false) && fs.existsSync(out))
    throw new VmifsError('OUTPUT_EXISTS', `${out} exists (use --force to overwrite)`, { out })
  const tmp = toStdout ? '' : path.join(path.dirname(out), `.${path.basename(out)}.vmifs-${process.pid}.tmp`)
  const fh = toStdout ? undefined : await fsp.open(tmp, 'w')
  const zeros = Buffer.alloc(1024 * 1024)
  try {
    for (let i = 0; i < m.count; i++) {
      const pos = m.offsets[i]!
      const len = m.lengthAt(i)
      if (m.zero[i] === 1) {
        if (toStdout) {
          for (let left = len; left > 0; left -= zeros.length)
            await writeStdout(zeros.subarray(0, Math.min(left, zeros.length)))
        }
        continue
      }
      const data = await dd.store.read(m.hashHexAt(i))
      if (data.length !== len) throw VmifsError.hashMismatch(m.hashHexAt(i), 'wrong length')
      if (fh) await fh.write(data, 0, len, pos)
      else await writeStdout(data)
    }
    if (fh) {
      await fh.truncate(m.size)
      await fh.sync()
      await fh.close()
      await fsp.rename(tmp, out)
    }
  } catch (err) {
    if (fh) {
      await fh.close().catch(() => {})
      await fsp.rm(tmp, { force: true })
    }
    throw err
  }
  return { size: m.size, digest: img.digest, seconds: (Date.now() - t0) / 1000 }
}

function writeStdout(b: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    process.stdout.write(b, err => {
      if (err) reject(err)
      else resolve()
    })
  })
}
