// fsck: re-hash every chunk in the cache; drop what is corrupt, forget entries whose file is gone,
// adopt chunk files that are sound but unrecorded, delete stray files; then report images whose
// chunks are no longer all local.
import fs from 'node:fs'
import path from 'node:path'
import type { DataDir } from '../datadir.js'
import { blake3, isHashHex } from '../util/hash.js'

export interface FsckReport {
  checked: number
  checkedBytes: number
  corrupt: string[]
  missing: string[]
  adopted: number
  strays: number
  incompleteImages: Array<{ name: string; missingChunks: number }>
}

export function fsck(dd: DataDir, onProgress?: (done: number, total: number) => void): FsckReport {
  const { store, db } = dd
  const r: FsckReport = {
    checked: 0,
    checkedBytes: 0,
    corrupt: [],
    missing: [],
    adopted: 0,
    strays: 0,
    incompleteImages: []
  }
  store.flushAtimes()
  const entries = [...store.entries()]
  for (const [hex, size] of entries) {
    let data: Buffer
    try {
      data = fs.readFileSync(store.pathOf(hex))
    } catch {
      r.missing.push(hex)
      db.prepare('DELETE FROM cache_entries WHERE hash = ?').run(Buffer.from(hex, 'hex'))
      continue
    }
    r.checked++
    r.checkedBytes += data.length
    if (data.length !== size || blake3(data).toString('hex') !== hex) {
      r.corrupt.push(hex)
      fs.rmSync(store.pathOf(hex), { force: true })
      db.prepare('DELETE FROM cache_entries WHERE hash = ?').run(Buffer.from(hex, 'hex'))
    }
    onProgress?.(r.checked, entries.length)
  }
  const known = new Set(entries.map(e => e[0]))
  const insert = db.prepare('INSERT OR IGNORE INTO cache_entries (hash, size, atime, pinned) VALUES (?, ?, ?, 0)')
  for (const sub of fs.readdirSync(store.chunkDir)) {
    const dir = path.join(store.chunkDir, sub)
    if (!fs.statSync(dir).isDirectory()) {
      fs.rmSync(dir, { force: true })
      r.strays++
      continue
    }
    for (const f of fs.readdirSync(dir)) {
      if (known.has(f)) continue
      const p = path.join(dir, f)
      const data = isHashHex(f) && f.startsWith(sub) ? fs.readFileSync(p) : undefined
      if (data && blake3(data).toString('hex') === f) {
        insert.run(Buffer.from(f, 'hex'), data.length, Date.now())
        r.adopted++
      } else {
        fs.rmSync(p, { force: true })
        r.strays++
      }
    }
  }
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
