// fsck: re-hash every chunk in the cache, reading each pack file front to back; drop what is
// corrupt, forget entries whose bytes are gone, correct a CRC that does not match its sound
// bytes, delete stray files and packs no entry points into; count the images' chunks again and
// pin the entries as they say; then report images whose chunks are no longer all local. A data
// dir of the layout before pack files (a file per chunk under chunks/) is converted first: every
// sound chunk file moves into a pack, keeping its access time and pin.
import fs from 'node:fs'
import path from 'node:path'
import type { DataDir } from '../datadir.js'
import { OLD_LAYOUT_DIR, type StoredChunk } from './chunk-store.js'
import { distinctChunks } from '../index/catalog.js'
import { native } from '../native/index.js'
import { blake3, isHashHex } from '../util/hash.js'
import { readExactlySync } from '../util/files.js'

export interface FsckReport {
  checked: number
  checkedBytes: number
  corrupt: string[]
  missing: string[]
  /** sound chunks whose entry's CRC was damaged, corrected */
  crcsRepaired: number
  /** chunk files of the old layout moved into packs */
  converted: number
  strays: number
  /**
   * whether the images' chunks were counted again (only when no other process has the data dir
   * open: a catalog change it made meanwhile could be counted wrong)
   */
  countsRebuilt: boolean
  incompleteImages: Array<{ name: string; missingChunks: number }>
}

export function fsck(dd: DataDir, onProgress?: (done: number, total: number) => void): FsckReport {
  const { store } = dd
  const r: FsckReport = {
    checked: 0,
    checkedBytes: 0,
    corrupt: [],
    missing: [],
    crcsRepaired: 0,
    converted: 0,
    strays: 0,
    countsRebuilt: false,
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
  for (const id of [...files].sort((a, b) => a - b)) {
    // a pack file the index lost gets an empty row, so that recount() deletes it
    if (!live.has(id)) store.ensurePackRow(id)
    const known = (byPack.get(id) ?? []).sort((a, b) => a.off - b.off)
    byPack.delete(id)
    checkPack(dd, id, known, r, bad, () => onProgress?.(r.checked, total))
  }
  // entries whose pack file is gone
  for (const list of byPack.values())
    for (const e of list) {
      r.missing.push(e.hash)
      bad.push(e.hash)
    }
  store.discard(bad)
  store.recount()
  // the counts of chunks, made again from the images (a crash between the catalog's two
  // transactions leaves some too high); then every entry pinned as they say
  r.countsRebuilt = dd.exclusively(() => recountRefs(dd)) ?? false
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

/** Makes the chunks' counts again from the images; returns true. */
function recountRefs(dd: DataDir): boolean {
  const parts: Array<{ h: Buffer; sizes: Float64Array; pinned: boolean }> = []
  for (const img of dd.catalog.listImages())
    parts.push({ ...distinctChunks(dd.catalog.manifest(img.digest)!), pinned: img.pinned })
  const n = parts.reduce((k, p) => k + p.sizes.length, 0)
  const pins = new Uint8Array(n)
  const sizes = new Float64Array(n)
  let at = 0
  for (const p of parts) {
    pins.fill(p.pinned ? 1 : 0, at, at + p.sizes.length)
    sizes.set(p.sizes, at)
    at += p.sizes.length
  }
  dd.store.rebuildRefs(Buffer.concat(parts.map(p => p.h)), sizes, pins)
  return true
}

/** One pack, front to back: every recorded chunk is read and hashed, and its CRC checked against its entry's. */
function checkPack(
  dd: DataDir,
  id: number,
  known: StoredChunk[],
  r: FsckReport,
  bad: string[],
  progress: () => void
): void {
  const fd = fs.openSync(dd.store.packPath(id), 'r')
  try {
    for (const e of known) {
      const data = readExactlySync(fd, e.off, e.size)
      r.checked++
      if (!data) {
        r.missing.push(e.hash)
        bad.push(e.hash)
      } else {
        r.checkedBytes += data.length
        if (blake3(data).toString('hex') !== e.hash) {
          r.corrupt.push(e.hash)
          bad.push(e.hash)
        } else {
          const crc = native().crc32c(data)
          // the bytes are the chunk's, the CRC its entry keeps is not: reads would hash it every time
          if (crc !== e.crc) {
            dd.store.repairCrc(e.hash, e, crc)
            r.crcsRepaired++
          }
        }
      }
      progress()
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
      if (loc && loc.pack !== 0) continue // converted by an earlier run that stopped midway
      batch.push({ hash: Buffer.from(f, 'hex'), data })
      if (batch.length >= 256) flush()
    }
  }
  if (batch.length > 0) flush()
  // entries of the old layout (pack 0) whose file was not there
  const orphans: string[] = []
  for (const e of store.entries()) if (e.pack === 0) orphans.push(e.hash)
  for (const h of orphans) r.missing.push(h)
  store.discard(orphans)
  store.sync()
  fs.rmSync(legacy, { recursive: true, force: true })
  fs.rmSync(path.join(dd.dir, 'tmp'), { recursive: true, force: true })
}
