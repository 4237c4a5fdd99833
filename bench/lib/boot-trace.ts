// A boot's recorded disk-read trace: recorded from a real boot (qemu over NBD to nbdkit's file
// plugin with its `log` filter), kept as a small fixture (bench/fixtures/boot-trace.json), and
// replayed against a file by a child process (the reader must never be the process serving the
// mount).
//
// Replay CLI:  node dist/bench/lib/boot-trace.js replay <file> <trace.json> [speed]
//   reads the trace's reads in recorded order, one at a time (a boot's reads mostly depend on the
//   one before); speed = 0 (default) leaves out the guest's think time between reads, speed = s
//   waits (recorded gap / s) before each read. Prints {"bytes":…,"reads":…,"seconds":…}.
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

/** [ms since the guest's first read, offset, length] */
export type TraceRead = [number, number, number]

export interface BootTrace {
  image: string
  imageSize: number
  recorded: string
  how: string
  bootSeconds: number
  /** Reads before merging, bytes read in all, distinct bytes. */
  rawReads: number
  bytes: number
  distinctBytes: number
  reads: TraceRead[]
}

/** Reads from an nbdkit log filter's log (the call lines; qemu's own probes count too). */
export function parseNbdkitLog(text: string): Array<{ t: number; offset: number; length: number }> {
  const out: Array<{ t: number; offset: number; length: number }> = []
  for (const line of text.split('\n')) {
    const m =
      /^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) connection=\d+ Read id=\d+ offset=(0x[0-9a-f]+) count=(0x[0-9a-f]+)/.exec(
        line
      )
    if (m === null) continue
    out.push({ t: Date.parse(m[1]!.replace(' ', 'T').slice(0, 23) + 'Z'), offset: Number(m[2]), length: Number(m[3]) })
  }
  return out
}

export function distinct(reads: Array<{ offset: number; length: number }>): number {
  const iv = reads.map(r => [r.offset, r.offset + r.length] as [number, number]).sort((a, b) => a[0] - b[0])
  let total = 0
  let cur: [number, number] | undefined
  for (const [s, e] of iv) {
    if (cur !== undefined && s <= cur[1]) cur[1] = Math.max(cur[1], e)
    else {
      if (cur) total += cur[1] - cur[0]
      cur = [s, e]
    }
  }
  if (cur) total += cur[1] - cur[0]
  return total
}

/** Times relative to the first read; a read that continues the previous one within gapMs is merged into it. */
export function mergeReads(raw: Array<{ t: number; offset: number; length: number }>, gapMs = 5): TraceRead[] {
  const out: TraceRead[] = []
  const t0 = raw[0]?.t ?? 0
  let lastT = -Infinity
  for (const r of raw) {
    const prev = out[out.length - 1]
    const t = r.t - t0
    if (prev !== undefined && prev[1] + prev[2] === r.offset && t - lastT <= gapMs) prev[2] += r.length
    else out.push([t, r.offset, r.length])
    lastT = t
  }
  return out
}

function replay(file: string, traceFile: string, speed: number): void {
  const tr = JSON.parse(fs.readFileSync(traceFile, 'utf8')) as BootTrace
  const fd = fs.openSync(file, 'r')
  const buf = Buffer.allocUnsafe(1024 * 1024)
  const t0 = process.hrtime.bigint()
  let bytes = 0
  let prevT = 0
  const sab = new Int32Array(new SharedArrayBuffer(4))
  for (const [t, offset, length] of tr.reads) {
    if (speed > 0 && t > prevT) Atomics.wait(sab, 0, 0, (t - prevT) / speed)
    prevT = t
    for (let p = offset; p < offset + length;) {
      const n = fs.readSync(fd, buf, 0, Math.min(buf.length, offset + length - p), p)
      if (n === 0) break
      p += n
      bytes += n
    }
  }
  console.log(JSON.stringify({ bytes, reads: tr.reads.length, seconds: Number(process.hrtime.bigint() - t0) / 1e9 }))
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const [mode, file, traceFile, speed] = process.argv.slice(2)
  if (mode !== 'replay' || file === undefined || traceFile === undefined) {
    console.error('usage: boot-trace.js replay <file> <trace.json> [speed]')
    process.exit(2)
  }
  replay(file, traceFile, Number(speed ?? 0))
}
