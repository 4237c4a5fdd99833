// fsck: re-hash every chunk in the cache, reading each pack file front to back; drop what is
// corrupt, forget entries whose bytes are gone, adopt sound records no entry points to (a chunk
// appended but not yet recorded when its writer died), delete stray files; then report images
// whose chunks are no longer all local. A data dir of the layout before pack files (a file per
// chunk under chunks/) is converted first: every sound chunk file moves into a pack, keeping its
// access time and pin.
import fs from 'node:fs'
import path from 'node:path'
import type { DataDir } from '../datadir.js'
import {
  OLD_LAYOUT_DIR,
  RECORD_HEADER,
  type StoredChunk,
  readRecord,
  recordHolds,
  recordedHash,
  tagAlive,
  writeRecordHeader
} from './chunk-store.js'
import { blake3, isHashHex } from '../util/hash.js'
import { readExactlySync } from '../util/files.js'

export interface FsckReport {
  checked: number
  checkedBytes: number
  corrupt: string[]
  missing: string[]
  adopted: number
  /** sound chunks whose record header was damaged, written again */
  headersRepaired: number
  /** chunk files of the old layout moved into packs */
  converted: number
  strays: number
  incompleteImages: Array<{ name: string; missingChunks: number }>
}

/** Records longer than this are not chunks (the largest chunking cuts at 16 MiB). */
const MAX_RECORD = 64 * 1024 * 1024

export function fsck(dd: DataDir, onProgress?: (done: number, total: number) => void): FsckReport {
  const { store } = dd
  const r: FsckReport = {
    checked: 0,
    checkedBytes: 0,
    corrupt: [],
    missing: [],
    adopted: 0,
    headersRepaired: 0,
    converted: 0,
    strays: 0,
    incompleteImages: []
  }
  store.flushAtimes()
  convertOldLayout(dd, r)
  store.seal()

  const byPack = new Map<number, StoredChunk[]>()
  let total = 0
  for (const e of store.entries()) {
    const list = byPack.get(e.pack) ?? []
    list.push(e)
    byPack.set(e.pack, list)
    total++
  }
  const live = new Map(store.packs().map(p => [p.id, p.writer]))
  const files = new Set<number>()
  for (const f of fs.readdirSync(store.packDir)) {
    const m = /^(\d+)\.pack$/.exec(f)
    if (!m) {
      fs.rmSync(path.join(store.packDir, f), { recursive: true, force: true })
      r.strays++
      continue
    }
    files.add(Number(m[1]))
  }
  const bad: string[] = []
  const found = new Map<string, StoredChunk>()
  for (const id of [...files].sort((a, b) => a - b)) {
    if (!live.has(id)) store.ensurePackRow(id)
    const writer = live.get(id) ?? null
    // a live writer's pack may hold chunks it is about to record: leave what follows them alone
    const scanGaps = writer === null || !tagAlive(writer)
    const known = (byPack.get(id) ?? []).sort((a, b) => a.off - b.off)
    byPack.delete(id)
    checkPack(dd, id, known, scanGaps, r, bad, found, () => onProgress?.(r.checked, total))
  }
  // entries whose pack file is gone
  for (const list of byPack.values())
    for (const e of list) {
      r.missing.push(e.hash)
      bad.push(e.hash)
    }
  store.discard(bad)
  r.adopted += store.adopt([...found.values()])
  store.recount()
  store.reconcilePins()
  store.refreshSize()
  for (const img of dd.catalog.listImages()) {
    const m = dd.catalog.manifest(img.digest)!
    let missing = 0
    for (const hex of m.distinctChunks().keys()) if (!store.has(hex)) missing++
    if (missing > 0) r.incompleteImages.push({ name: img.name, missingChunks: missing })
  }
  return r
}

/**
 * One pack, front to back: every recorded chunk is read and hashed; between them (where
 * `scanGaps`), records with a sound header and bytes that hash to it are collected for adoption.
 */
function checkPack(
  dd: DataDir,
  id: number,
  known: StoredChunk[],
  scanGaps: boolean,
  r: FsckReport,
  bad: string[],
  found: Map<string, StoredChunk>,
  progress: () => void
): void {
  const file = dd.store.packPath(id)
  const fd = fs.openSync(file, 'r+')
  try {
    const size = fs.fstatSync(fd).size
    const header = Buffer.alloc(RECORD_HEADER)
    let pos = 0
    let k = 0
    while (k < known.length || (scanGaps && pos + RECORD_HEADER <= size)) {
      const next = known[k]
      if (next && next.off - RECORD_HEADER <= pos) {
        k++
        const rec = readRecord(fd, next)
        r.checked++
        if (!rec) {
          r.missing.push(next.hash)
          bad.push(next.hash)
        } else {
          const { header, data } = rec
          const hash = Buffer.from(next.hash, 'hex')
          r.checkedBytes += data.length
          if (!blake3(data).equals(hash)) {
            r.corrupt.push(next.hash)
            bad.push(next.hash)
          } else if (!recordHolds(header, hash, data)) {
            // the bytes are the chunk's, its header is not: reads would hash it every time
            const h = Buffer.alloc(RECORD_HEADER)
            writeRecordHeader(h, hash, data)
            fs.writeSync(fd, h, 0, RECORD_HEADER, next.off - RECORD_HEADER)
            r.headersRepaired++
          }
        }
        pos = Math.max(pos, next.off + next.size)
        progress()
        continue
      }
      const limit = next ? next.off - RECORD_HEADER : size
      if (!scanGaps) {
        pos = limit
        continue
      }
      const got = readExactlySync(fd, pos, RECORD_HEADER, header)
      const len = got ? header.readUInt32LE(4) : 0
      if (got && len > 0 && len <= MAX_RECORD) {
        const end = pos + RECORD_HEADER + len
        const data = end <= limit ? readExactlySync(fd, pos + RECORD_HEADER, len) : undefined
        const hash = data && recordedHash(header, data)?.toString('hex')
        if (hash) {
          if (!dd.store.has(hash) && !found.has(hash))
            found.set(hash, { hash, pack: id, off: pos + RECORD_HEADER, size: len })
          pos = end
          continue
        }
      }
      // not a record (a hole left by eviction, or bytes a dead writer never finished)
      pos = limit
    }
  } finally {
    fs.closeSync(fd)
  }
}

/** Moves the chunk files of the old layout (chunks/<xx>/<hash>) into packs, then removes chunks/ and tmp/. */
function convertOldLayout(dd: DataDir, r: FsckReport): void {
  const legacy = path.join(dd.dir, OLD_LAYOUT_DIR)
  if (!fs.existsSync(legacy)) return
  const { store } = dd
  let batch: Array<{ hash: Buffer; data: Buffer }> = []
  const flush = (): void => {
    const locs = store.append(batch, { bulk: true })
    r.converted += store.adopt(batch.map((b, i) => ({ hash: b.hash.toString('hex'), ...locs[i]! })))
    batch = []
  }
  for (const sub of fs.readdirSync(legacy)) {
    const dir = path.join(legacy, sub)
    if (!fs.statSync(dir).isDirectory()) {
      r.strays++
      continue
    }
    for (const f of fs.readdirSync(dir)) {
      const data = isHashHex(f) && f.startsWith(sub) ? fs.readFileSync(path.join(dir, f)) : undefined
      const loc = data && store.locate(f)
      if (!data || blake3(data).toString('hex') !== f) {
        r.strays++
        continue
      }
      if (loc && loc.pack !== null) continue // converted by an earlier run that stopped midway
      batch.push({ hash: Buffer.from(f, 'hex'), data })
      if (batch.length >= 256) flush()
    }
  }
  if (batch.length > 0) flush()
  // rows of the old layout whose file was not there
  const orphans = (dd.db.prepare('SELECT hash FROM cache_entries WHERE pack IS NULL').pluck().all() as Buffer[]).map(
    h => h.toString('hex')
  )
  for (const h of orphans) r.missing.push(h)
  dd.db.prepare('DELETE FROM cache_entries WHERE pack IS NULL').run()
  store.sync()
  fs.rmSync(legacy, { recursive: true, force: true })
  fs.rmSync(path.join(dd.dir, 'tmp'), { recursive: true, force: true })
}
