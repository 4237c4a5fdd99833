// Child-process reader for benchmarks (a process must not read its own FUSE mount):
//   node reader.js seq <file> [blockBytes]            -> {"bytes":..,"seconds":..}
//   node reader.js rand <file> <count> [blockBytes]   -> {"count":..,"p50Ms":..,"p99Ms":..,"meanMs":..}
//   node reader.js extents <file> <extents.json>       -> {"bytes":..,"seconds":..} (each extent in 128 KiB reads)
import fs from 'node:fs'

const [mode, file, a, b] = process.argv.slice(2)
const fd = fs.openSync(file!, 'r')
const size = fs.fstatSync(fd).size
if (mode === 'seq') {
  const bs = Number(a ?? 1024 * 1024)
  const buf = Buffer.allocUnsafe(bs)
  const t0 = process.hrtime.bigint()
  let pos = 0
  for (;;) {
    const n = fs.readSync(fd, buf, 0, bs, pos)
    if (n === 0) break
    pos += n
  }
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9
  console.log(JSON.stringify({ bytes: pos, seconds }))
} else if (mode === 'extents') {
  const ext = JSON.parse(fs.readFileSync(a!, 'utf8')) as Array<{ offset: number; length: number }>
  const buf = Buffer.allocUnsafe(128 * 1024)
  const t0 = process.hrtime.bigint()
  let bytes = 0
  for (const e of ext) {
    for (let p = e.offset; p < e.offset + e.length;) {
      const n = fs.readSync(fd, buf, 0, Math.min(buf.length, e.offset + e.length - p), p)
      if (n === 0) break
      p += n
      bytes += n
    }
  }
  console.log(JSON.stringify({ bytes, seconds: Number(process.hrtime.bigint() - t0) / 1e9 }))
} else {
  const count = Number(a ?? 2000)
  const bs = Number(b ?? 4096)
  const buf = Buffer.allocUnsafe(bs)
  const blocks = Math.floor(size / bs)
  const lat: number[] = []
  let x = 0x9e3779b9 // xorshift32: uniform, repeatable, exact in 32-bit integer ops
  for (let i = 0; i < count; i++) {
    x ^= x << 13
    x >>>= 0
    x ^= x >>> 17
    x ^= x << 5
    x >>>= 0
    const pos = (x % blocks) * bs
    const t0 = process.hrtime.bigint()
    fs.readSync(fd, buf, 0, bs, pos)
    lat.push(Number(process.hrtime.bigint() - t0) / 1e6)
  }
  lat.sort((x, y) => x - y)
  const q = (p: number): number => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))]!
  console.log(
    JSON.stringify({ count, p50Ms: q(0.5), p99Ms: q(0.99), meanMs: lat.reduce((s, v) => s + v, 0) / lat.length })
  )
}
