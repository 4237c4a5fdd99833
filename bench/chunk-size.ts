// Chunk-size study on a family of real Debian disk images (bench/lib/debian-family.sh): for each
// chunking, how much of an image is zero runs, how big its manifest is, and how many of its data
// bytes it shares with its siblings (what a host holding one image need not fetch for the next).
// The same "shared with a sibling" figure on aligned 4 KiB blocks is the ground truth.
// Fetch amplification: a lazy filesystem fetches whole chunks, so a read costs every chunk it
// touches. With no VM to boot, the files a boot opens stand in for its reads (bench/lib/boot-set.ts,
// located with debugfs); per chunking, the distinct data chunks overlapping them over their bytes
// (nginx and minbase), and the share of nginx's that a host already holding ssh lacks.
// Usage: npm run bench -- chunk-size [DIR] [--json FILE]
import fs from 'node:fs'
import path from 'node:path'
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { type Chunking, ZERO_BLOCK } from '../src/manifests/chunking.js'
import { type ChunkOut, chunksOf, createChunker } from '../src/manifests/chunker.js'
import { type Manifest, ManifestBuilder } from '../src/manifests/manifest.js'
import { type FileLayout, findFileLayout } from '../src/manifests/fs-layout.js'
import { native } from '../src/native/index.js'
import { blake3 } from '../src/util/hash.js'
import { type FetchCost, type ReadSet, bootReadSet, fetchCost, groups } from './lib/boot-set.js'
import type { BootTrace } from './lib/boot-trace.js'
import { readWholeSync } from '../src/util/files.js'
import {
  KiB,
  MiB,
  chunkingLabel,
  chunkingTitle,
  markdownTable,
  mean,
  num,
  pct,
  seconds,
  takeOption
} from './lib/report.js'

export const DEFAULT_DIR = '/var/tmp/vmifs-bench/family'
export const FAMILY = ['minbase', 'ssh', 'nginx'] as const
const PIECE = 16 * MiB
const AVGS = [16 * KiB, 64 * KiB, 256 * KiB, MiB]
const CDC_AVGS = [16 * KiB, 32 * KiB, 64 * KiB, 256 * KiB, MiB]
const BLOCKS: Chunking = { kind: 'fixed', chunkSize: ZERO_BLOCK }
/** images whose boot read set is priced, each with the sibling a host may already hold */
export const FETCH: Array<{ image: string; holder?: string }> = [
  { image: 'nginx', holder: 'ssh' },
  { image: 'minbase' }
]

export const CHUNKINGS: Chunking[] = [
  ...AVGS.map((chunkSize): Chunking => ({ kind: 'fixed', chunkSize })),
  ...CDC_AVGS.map((avg): Chunking => ({ kind: 'cdc', min: avg / 4, avg, max: avg * 4 })),
  ...[16 * KiB, 32 * KiB, 64 * KiB].map((avg): Chunking => ({
    kind: 'cdc',
    min: avg / 4,
    avg,
    max: avg * 4,
    fileCuts: true
  }))
]

/** One image cut one way. `chunks`: data chunks by hash (latin1 key) with length and occurrences. */
export interface Cut {
  image: string
  size: number
  zeroBytes: number
  dataBytes: number
  dataChunks: number
  entries: number
  manifestBytes: number
  seconds: number
  chunks: Map<string, { length: number; n: number }>
  manifest?: Manifest
}

export interface Sharing {
  /** per image: share of its data bytes in chunks that also occur in a sibling */
  shared: Record<string, number>
  meanShared: number
  sshVsMinbase: number
  nginxVsSsh: number
  /** distinct data bytes over the family / sum of the images' data bytes */
  dedup: number
}

function newCut(image: string, size: number): Cut {
  return {
    image,
    size,
    zeroBytes: 0,
    dataBytes: 0,
    dataChunks: 0,
    entries: 0,
    manifestBytes: 0,
    seconds: 0,
    chunks: new Map()
  }
}

function addChunk(cut: Cut, hash: Buffer, length: number): void {
  cut.dataBytes += length
  cut.dataChunks++
  const key = hash.toString('latin1')
  const c = cut.chunks.get(key)
  if (c) c.n++
  else cut.chunks.set(key, { length, n: 1 })
}

function finishCut(cut: Cut, m: Manifest, t0: bigint): Cut {
  cut.seconds = seconds(t0)
  cut.entries = m.count
  cut.manifestBytes = m.encode().length
  cut.manifest = m
  return cut
}

/** An image's file cuts (fs-layout.ts reading the image held in memory, as import reads the file). */
async function fileLayoutOf(img: Buffer): Promise<FileLayout> {
  return await findFileLayout((pos, len) => Promise.resolve(img.subarray(pos, pos + len)), img.length, ZERO_BLOCK)
}

/** Chunks and hashes an image held in memory, feeding the chunker 16 MiB at a time. */
export function cutImage(image: string, img: Buffer, chunking: Chunking, fileCuts?: Float64Array): Cut {
  const t0 = process.hrtime.bigint()
  const chunker = createChunker(chunking, chunking.kind === 'cdc' && chunking.fileCuts === true ? fileCuts : undefined)
  const builder = new ManifestBuilder(chunking)
  const cut = newCut(image, img.length)
  let pos = 0
  const take = (out: ChunkOut[]): void => {
    for (const c of out) {
      if (c.offset !== pos || !(c.length > 0))
        throw new Error(`${image} ${chunkingLabel(chunking)}: chunk at ${c.offset}+${c.length}, expected offset ${pos}`)
      pos += c.length
      if (c.zero) {
        builder.add(c.length, null)
        cut.zeroBytes += c.length
        continue
      }
      const data = c.data!
      // the chunker must hand out exactly the image's bytes (a memcmp, cheap next to hashing)
      if (data.length !== c.length || !data.equals(img.subarray(c.offset, c.offset + c.length))) {
        throw new Error(
          `${image} ${chunkingLabel(chunking)}: data of chunk at ${c.offset}+${c.length} differs from the image`
        )
      }
      const h = blake3(data)
      builder.add(c.length, h)
      addChunk(cut, h, c.length)
    }
  }
  for (let p = 0; p < img.length; p += PIECE) {
    const piece = img.subarray(p, Math.min(p + PIECE, img.length))
    take(chunksOf(chunker.push(piece), piece))
  }
  take(chunksOf(chunker.finish(), Buffer.alloc(0)))
  if (pos !== img.length)
    throw new Error(`${image} ${chunkingLabel(chunking)}: chunks cover ${pos} of ${img.length} bytes`)
  const m = builder.build()
  finishCut(cut, m, t0)
  checkManifest(image, img, m, fileCuts)
  return cut
}

/** Ground truth: every non-zero aligned 4 KiB block, hashed on its own (no chunker involved). */
export function cutBlocks(image: string, img: Buffer): Cut {
  const t0 = process.hrtime.bigint()
  const builder = new ManifestBuilder(BLOCKS)
  const cut = newCut(image, img.length)
  for (let p = 0; p < img.length; p += PIECE) {
    const piece = img.subarray(p, Math.min(p + PIECE, img.length))
    const z = native().zeroBlocks(piece, ZERO_BLOCK)
    for (let k = 0; k < z.length; k++) {
      const block = piece.subarray(k * ZERO_BLOCK, (k + 1) * ZERO_BLOCK)
      if (z[k] === 1) {
        builder.add(block.length, null)
        cut.zeroBytes += block.length
        continue
      }
      const h = blake3(block)
      builder.add(block.length, h)
      addChunk(cut, h, block.length)
    }
  }
  return finishCut(cut, builder.build(), t0)
}

/**
 * Checks what the chunker promises beyond what ManifestBuilder.build() validates: zero entries
 * are all zero, and a CDC data chunk shorter than min only ends a data run (before a zero run,
 * at a file cut, or at the end of the image).
 */
function checkManifest(image: string, img: Buffer, m: Manifest, fileCuts?: Float64Array): void {
  const z = native()
  const cutSet = new Set(fileCuts ?? [])
  const where = `${image} ${chunkingLabel(m.chunking)}`
  for (let i = 0; i < m.count; i++) {
    const a = m.offsets[i]!
    const len = m.lengthAt(i)
    if (m.zero[i] === 1) {
      for (let p = a; p < a + len; p += PIECE) {
        const view = img.subarray(p, Math.min(p + PIECE, a + len))
        if (z.zeroBlocks(view, view.length)[0] !== 1)
          throw new Error(`${where}: zero entry ${i} at ${a}+${len} holds data`)
      }
    } else if (
      m.chunking.kind === 'cdc' &&
      len < m.chunking.min &&
      i + 1 < m.count &&
      m.zero[i + 1] === 0 &&
      !(m.chunking.fileCuts === true && cutSet.has(a + len))
    ) {
      throw new Error(
        `${where}: data entry ${i} at ${a} is ${len} bytes (< min ${m.chunking.min}) and a data entry follows`
      )
    }
  }
}

function sharedWith(a: Cut, others: Cut[]): number {
  let bytes = 0
  for (const [k, c] of a.chunks) if (others.some(o => o.chunks.has(k))) bytes += c.length * c.n
  return a.dataBytes === 0 ? NaN : bytes / a.dataBytes
}

export function sharing(cuts: Cut[]): Sharing {
  const by = (name: string): Cut => cuts.find(c => c.image === name)!
  const shared: Record<string, number> = {}
  for (const c of cuts)
    shared[c.image] = sharedWith(
      c,
      cuts.filter(o => o !== c)
    )
  const distinct = new Map<string, number>()
  for (const c of cuts) for (const [k, v] of c.chunks) distinct.set(k, v.length)
  let distinctBytes = 0
  for (const len of distinct.values()) distinctBytes += len
  const total = cuts.reduce((s, c) => s + c.dataBytes, 0)
  return {
    shared,
    meanShared: mean(Object.values(shared)),
    sshVsMinbase: sharedWith(by('ssh'), [by('minbase')]),
    nginxVsSsh: sharedWith(by('nginx'), [by('ssh')]),
    dedup: distinctBytes / total
  }
}

/** Summary of one chunking over the family (means over the images), as written to JSON. */
export interface Row {
  label: string
  chunking: Chunking
  zeroShare: number
  dataChunks: number
  meanChunk: number
  entries: number
  manifestBytes: number
  bytesPerEntry: number
  /** image bytes per second of chunk + hash (single thread) */
  rate: number
  sharing: Sharing
  /** per image of FETCH: the cost of its boot read set (newBytes: not in its holder's chunks) */
  fetch: Record<string, FetchCost>
  images: Array<Omit<Cut, 'chunks' | 'manifest'>>
}

/** What each image of FETCH pays to serve its read set under the cuts' chunking. */
function fetchCosts(cuts: Cut[], sets: Map<string, ReadSet>): Record<string, FetchCost> {
  const by = (name: string): Cut => cuts.find(c => c.image === name)!
  const out: Record<string, FetchCost> = {}
  for (const { image, holder } of FETCH) {
    const set = sets.get(image)
    const m = by(image).manifest
    if (set === undefined || m === undefined) continue
    out[image] = fetchCost(m, set.ranges, holder === undefined ? undefined : by(holder).chunks)
  }
  return out
}

function summarize(label: string, chunking: Chunking, cuts: Cut[], sets: Map<string, ReadSet>): Row {
  const m = (f: (c: Cut) => number): number => mean(cuts.map(f))
  return {
    label,
    chunking,
    zeroShare: m(c => c.zeroBytes / c.size),
    dataChunks: m(c => c.dataChunks),
    meanChunk: m(c => c.dataBytes / c.dataChunks),
    entries: m(c => c.entries),
    manifestBytes: m(c => c.manifestBytes),
    bytesPerEntry: m(c => c.manifestBytes / c.entries),
    rate: cuts.reduce((s, c) => s + c.size, 0) / cuts.reduce((s, c) => s + c.seconds, 0),
    sharing: sharing(cuts),
    fetch: fetchCosts(cuts, sets),
    images: cuts.map(({ chunks: _, manifest: __, ...rest }) => rest)
  }
}

function scriptPath(): string {
  const here = path.dirname(fileURLToPath(import.meta.url))
  // bench/ (tsx) or dist/bench/ (compiled)
  const candidates = [path.join(here, 'lib/debian-family.sh'), path.resolve(here, '../../bench/lib/debian-family.sh')]
  const found = candidates.find(c => fs.existsSync(c))
  if (found === undefined) throw new Error(`debian-family.sh not found (looked at ${candidates.join(', ')})`)
  return found
}

/** Builds the image family if an image is missing (needs root and a Debian mirror; a few minutes). */
export function ensureFamily(dir: string): string[] {
  const files = FAMILY.map(n => path.join(dir, `${n}.img`))
  if (files.every(f => fs.existsSync(f))) return files
  if (process.getuid?.() !== 0)
    throw new Error(`images missing in ${dir}; build them as root: bash bench/lib/debian-family.sh ${dir}`)
  console.error(`chunk-size: building the image family in ${dir} (a few minutes)`)
  const r = spawnSync('bash', [scriptPath(), dir], { stdio: 'inherit' })
  if (r.status !== 0) throw new Error(`debian-family.sh failed (${r.error?.message ?? `exit ${r.status ?? r.signal}`})`)
  return files
}

export function renderTables(rows: Row[], truth: Row): string {
  const sizes = markdownTable(
    [
      'chunking',
      'zero share',
      'data chunks',
      'mean data chunk',
      'entries',
      'manifest bytes',
      'bytes/entry',
      'chunk+hash MB/s'
    ],
    [...rows, truth].map(r => [
      r === truth ? '4 KiB blocks' : r.label,
      pct(r.zeroShare, 2),
      num(r.dataChunks),
      num(r.meanChunk),
      num(r.entries),
      num(r.manifestBytes),
      num(r.bytesPerEntry, 1),
      num(r.rate / 1e6)
    ])
  )
  const shares = markdownTable(
    [
      'chunking',
      ...FAMILY.map(n => `${n} shared`),
      'mean shared',
      'ssh in minbase',
      'nginx in ssh',
      'dedup (distinct/total)'
    ],
    [...rows, truth].map(r => [
      r === truth ? '**4 KiB blocks (ground truth)**' : r.label,
      ...FAMILY.map(n => pct(r.sharing.shared[n]!)),
      pct(r.sharing.meanShared),
      pct(r.sharing.sshVsMinbase),
      pct(r.sharing.nginxVsSsh),
      pct(r.sharing.dedup)
    ])
  )
  return [
    'Per image, mean over the family (manifest bytes: canonical binary form):',
    '',
    sizes,
    '',
    'Data bytes of an image in chunks whose hash also occurs in a sibling, as % of its non-zero data bytes',
    '("ssh in minbase": ssh\'s data found in minbase; "nginx in ssh": nginx\'s data found in ssh):',
    '',
    shares
  ].join('\n')
}

const mib = (n: number): string => num(n / MiB, 2)

/** The read sets by group (files, bytes), side by side for the images of FETCH. */
export function renderReadSets(sets: Map<string, ReadSet>): string {
  const names = FETCH.map(f => f.image).filter(n => sets.has(n))
  const all = names.map(n => groups(sets.get(n)!))
  const labels = [...new Set(all.flat().map(g => g.group))]
  const table = markdownTable(
    ['files', ...names.flatMap(n => [`${n} files`, `${n} bytes`])],
    [...labels, 'total'].map(label => [
      label,
      ...names.flatMap((n, i) => {
        const set = sets.get(n)!
        const g =
          label === 'total' ? { files: set.files.length, bytes: set.bytes } : all[i]!.find(x => x.group === label)
        return g === undefined ? ['0', '0'] : [num(g.files), num(g.bytes)]
      })
    ])
  )
  const notes = names.map(n => {
    const set = sets.get(n)!
    const extents = set.ranges.reduce((a, r) => a + r.end - r.start, 0)
    return (
      `${n}: ${mib(set.bytes)} MiB read, ${mib(set.holes)} MiB of it in holes, ` +
      `${mib(extents)} MiB in ${num(set.ranges.length)} image extents` +
      (set.missing.length > 0 ? `; not in the image: ${set.missing.join(' ')}` : '')
    )
  })
  return [table, '', ...notes.map(n => `- ${n}`)].join('\n')
}

/** Fetch amplification per chunking: fetched bytes over read bytes, and the sibling share. */
export function renderFetch(rows: Row[], truth: Row, sets: Map<string, ReadSet>): string {
  const priced = FETCH.filter(f => sets.has(f.image))
  const held = priced.filter(f => f.holder !== undefined)
  const table = markdownTable(
    [
      'chunking',
      ...priced.flatMap(f => [`${f.image} fetched MiB`, `${f.image} chunks`, `${f.image} amplification`]),
      ...held.flatMap(f => [`${f.image} not in ${f.holder!}`, `${f.image} not in ${f.holder!} MiB`])
    ],
    [...rows, truth].map(r => [
      r === truth ? '**4 KiB blocks (ground truth)**' : r.label,
      ...priced.flatMap(f => {
        const c = r.fetch[f.image]!
        return [mib(c.bytes), num(c.chunks), `${(c.bytes / sets.get(f.image)!.bytes).toFixed(2)}×`]
      }),
      ...held.flatMap(f => {
        const c = r.fetch[f.image]!
        return [pct(c.newBytes! / c.bytes), mib(c.newBytes!)]
      })
    ])
  )
  const reads = priced.map(f => `${f.image} ${mib(sets.get(f.image)!.bytes)} MiB`).join(', ')
  return [
    `Boot read set (${reads} read; bench/lib/boot-set.ts): distinct data chunks touched, fetched whole`,
    '(zero chunks free); amplification = fetched / read. "not in ssh": share (and MiB) of nginx\'s fetched',
    'chunk bytes whose hash ssh.img lacks, i.e. what a host already holding ssh must still fetch:',
    '',
    table
  ].join('\n')
}

export async function main(args: string[]): Promise<void> {
  args = [...args]
  const jsonFile = takeOption(args, '--json')
  const dir = args[0] ?? DEFAULT_DIR
  const t0 = process.hrtime.bigint()
  const files = ensureFamily(dir)
  // before the images are in memory: debugfs runs are forks of this process
  const sets = new Map<string, ReadSet>()
  for (const { image } of FETCH) {
    const t = process.hrtime.bigint()
    const set = bootReadSet(path.join(dir, `${image}.img`))
    sets.set(image, set)
    console.error(
      `chunk-size: ${image} boot read set: ${set.files.length} files, ${num(set.bytes)} bytes, ` +
        `${set.ranges.length} extents (${seconds(t).toFixed(2)} s)`
    )
  }
  const images = files.map((f, i) => {
    const t = process.hrtime.bigint()
    const img = readWholeSync(f)
    console.error(`chunk-size: read ${FAMILY[i]} (${num(img.length / MiB)} MiB) in ${seconds(t).toFixed(1)} s`)
    return img
  })
  const layouts = await Promise.all(images.map(fileLayoutOf))
  const layoutNotes = layouts.map(
    (l, i) => `${FAMILY[i]} ${l.filesystems.map(f => `${f.files} files`).join(', ')}, ${l.cuts.length} cuts`
  )
  console.error(`chunk-size: file cuts: ${layoutNotes.join('; ')}`)
  const truthCuts = images.map((img, i) => cutBlocks(FAMILY[i]!, img))
  const truth = summarize('4 KiB blocks', BLOCKS, truthCuts, sets)
  console.error(
    `chunk-size: 4 KiB blocks: ${truthCuts.map(c => `${c.image} ${num(c.dataBytes / MiB)} MiB non-zero`).join(', ')}`
  )
  const rows: Row[] = []
  for (const chunking of CHUNKINGS) {
    const label = chunkingTitle(chunking)
    const cuts = images.map((img, i) => cutImage(FAMILY[i]!, img, chunking, layouts[i]!.cuts))
    rows.push(summarize(label, chunking, cuts, sets))
    console.error(`chunk-size: ${label}: ${cuts.map(c => `${c.image} ${c.seconds.toFixed(1)} s`).join(', ')}`)
  }
  const traceRows = await bootTraceRows()
  const total = seconds(t0)
  console.log(`## Chunk size on the Debian family (${FAMILY.join(', ')}; ${dir})\n`)
  console.log(renderTables(rows, truth))
  console.log(`\n${renderFetch(rows, truth, sets)}`)
  console.log(`\nThe boot read set, by where the files are (a file counts once, by inode):\n\n${renderReadSets(sets)}`)
  if (traceRows !== undefined) console.log(`\n${renderTraceRows(traceRows)}`)
  console.log(`\n(${num(total, 1)} s in all)`)
  if (jsonFile !== undefined) {
    const out = {
      bench: 'chunk-size',
      dir,
      date: new Date().toISOString(),
      seconds: total,
      images: truthCuts.map(c => ({ name: c.image, size: c.size, nonZeroBytes4k: c.dataBytes })),
      readSets: [...sets.values()].map(({ ranges: _, ...set }) => set),
      groundTruth: truth,
      chunkings: rows,
      bootTrace: traceRows
    }
    fs.writeFileSync(jsonFile, JSON.stringify(out, null, 2) + '\n')
    console.error(`chunk-size: wrote ${jsonFile}`)
  }
}

const BOOTABLE = '/var/tmp/vmifs-bench/bootable'
const TRACE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../bench/fixtures/boot-trace.json')

interface TraceRow {
  label: string
  dataChunks: number
  touched: number
  fetchedBytes: number
  amplification: number
  notInSibling: number
}

/**
 * The reads of a real boot (bench/fixtures/boot-trace.json, recorded on boot-a.img) priced under
 * each CDC chunking: chunks touched, bytes fetched over distinct bytes read, and the share of the
 * distinct bytes read in chunks boot-b.img (the sibling) lacks. Needs the boot benchmark's images
 * (`npm run bench -- boot` builds them); skipped without them.
 */
async function bootTraceRows(): Promise<TraceRow[] | undefined> {
  const a = path.join(BOOTABLE, 'boot-a.img')
  const b = path.join(BOOTABLE, 'boot-b.img')
  if (!fs.existsSync(a) || !fs.existsSync(b)) {
    console.error(`chunk-size: no ${a} and ${b}: the boot trace section is skipped (npm run bench -- boot builds them)`)
    return undefined
  }
  const trace = JSON.parse(fs.readFileSync(TRACE, 'utf8')) as BootTrace
  const ranges = trace.reads.map(([, offset, length]) => ({ start: offset, end: offset + length }))
  const [imgA, imgB] = [readWholeSync(a), readWholeSync(b)]
  const [cutsA, cutsB] = [(await fileLayoutOf(imgA)).cuts, (await fileLayoutOf(imgB)).cuts]
  const rows: TraceRow[] = []
  for (const chunking of [...CHUNKINGS.filter(c => c.kind === 'cdc'), BLOCKS]) {
    const [ca, cb] =
      chunking === BLOCKS
        ? [cutBlocks('boot-a', imgA), cutBlocks('boot-b', imgB)]
        : [cutImage('boot-a', imgA, chunking, cutsA), cutImage('boot-b', imgB, chunking, cutsB)]
    const cost = fetchCost(ca.manifest!, ranges, cb.chunks)
    rows.push({
      label: chunking === BLOCKS ? '4 KiB blocks (ground truth)' : chunkingTitle(chunking),
      dataChunks: ca.dataChunks,
      touched: cost.chunks,
      fetchedBytes: cost.bytes,
      amplification: cost.bytes / trace.distinctBytes,
      notInSibling: cost.newBytes! / trace.distinctBytes
    })
    console.error(`chunk-size: boot trace, ${rows[rows.length - 1]!.label}: ${cost.chunks} chunks touched`)
  }
  return rows
}

function renderTraceRows(rows: TraceRow[]): string {
  const intro = [
    "The reads of a real boot of boot-a.img (bench/fixtures/boot-trace.json; the boot benchmark's images), " +
      'priced the same way:',
    'fetched = distinct data chunks the reads touch, over the distinct bytes read; ' +
      '"not in boot-b" = bytes of those chunks whose',
    'hash boot-b.img (the sibling: the same files at other offsets, plus openssh and nginx) lacks, ' +
      'over the distinct bytes read:'
  ].join('\n')
  return `${intro}

${markdownTable(
  ['chunking', 'data chunks in boot-a', 'chunks touched', 'fetched MiB', 'fetched / read', 'not in boot-b'],
  rows.map(r => [
    r.label,
    num(r.dataChunks),
    num(r.touched),
    num(r.fetchedBytes / MiB, 2),
    `${r.amplification.toFixed(3)}×`,
    pct(r.notInSibling)
  ])
)}`
}
