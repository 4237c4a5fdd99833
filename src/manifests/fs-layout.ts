// Where the files of an image's filesystems lie, so the chunker can cut at file boundaries.
//
// A VM image's filesystem places the same file at different offsets in sibling images (another
// package set, another build). Content-defined chunking resynchronises after such a shift, but a
// chunk that straddles the end of one file and the start of the next is unique to that image, and
// a boot reads many small files. Cutting at the start and end of every file extent makes each
// file's chunks depend on the file's bytes alone, so a host that holds a sibling's chunks holds
// the chunks of every file the two share.
//
// Read here: an MBR or GPT partition table (primary partitions), and ext2/3/4 filesystems (whole
// disk or partition) whose regular files use extents. Everything else (ext2/3 block maps, XFS,
// LVM, logical partitions) gives no cuts: the image is then chunked by content alone. The layout
// is only a hint: any inconsistency ends the walk of that filesystem, never the import.

export type ReadAt = (pos: number, len: number) => Promise<Buffer>

export interface FsFound {
  /** byte offset of the filesystem in the image */
  offset: number
  type: 'ext4'
  blockSize: number
  /** regular files whose extents were read */
  files: number
  /** why the walk stopped early, if it did */
  incomplete?: string
}

export interface FileLayout {
  filesystems: FsFound[]
  /** sorted distinct byte offsets where a file extent starts or ends, all multiples of `align` */
  cuts: Float64Array
}

/** At most this many cuts are kept (8 bytes each): beyond it the rest of the image is cut by content alone. */
export const MAX_CUTS = 16_000_000

const SECTOR = 512
const EXT4_MAGIC = 0xef53
const EXTENT_MAGIC = 0xf30a
const INCOMPAT_META_BG = 0x10
const INCOMPAT_64BIT = 0x80
const RO_COMPAT_GDT_CSUM = 0x10
const RO_COMPAT_METADATA_CSUM = 0x400
const BG_INODE_UNINIT = 0x1
const EXT4_EXTENTS_FL = 0x80000
const EXT4_INLINE_DATA_FL = 0x10000000
const S_IFMT = 0xf000
const S_IFREG = 0x8000
/** inode table bytes read at a time */
const ITABLE_READ = 4 * 1024 * 1024

class Stop extends Error {}

/**
 * Finds the file extents of every filesystem this reader knows in the image and returns the
 * cut offsets that are multiples of `align` (cuts elsewhere could not be honoured by a chunker
 * that classifies `align`-sized blocks).
 */
export async function findFileLayout(read: ReadAt, size: number, align: number): Promise<FileLayout> {
  const filesystems: FsFound[] = []
  const cuts = new CutSet(align, size)
  for (const offset of await candidateOffsets(read, size)) {
    const fs = await walkExt4(read, size, offset, cuts).catch(() => undefined)
    if (fs !== undefined) filesystems.push(fs)
  }
  return { filesystems, cuts: cuts.sorted() }
}

/** Offset 0 (a whole-disk filesystem) and the start of every primary MBR or GPT partition. */
async function candidateOffsets(read: ReadAt, size: number): Promise<number[]> {
  const out = new Set<number>([0])
  if (size < 2 * SECTOR) return [...out]
  const mbr = await read(0, SECTOR)
  if (mbr.length < SECTOR || mbr[510] !== 0x55 || mbr[511] !== 0xaa) return [...out]
  let gpt = false
  for (let i = 0; i < 4; i++) {
    const e = 446 + i * 16
    const type = mbr[e + 4]!
    const lba = mbr.readUInt32LE(e + 8)
    const sectors = mbr.readUInt32LE(e + 12)
    if (type === 0xee) gpt = true
    else if (
      type !== 0 &&
      type !== 0x05 &&
      type !== 0x0f &&
      type !== 0x85 &&
      sectors > 0 &&
      lba > 0 &&
      lba * SECTOR < size
    )
      out.add(lba * SECTOR)
  }
  if (gpt) {
    const h = await read(SECTOR, SECTOR)
    if (h.length === SECTOR && h.toString('latin1', 0, 8) === 'EFI PART') {
      const entriesLba = Number(h.readBigUInt64LE(72))
      const count = Math.min(h.readUInt32LE(80), 1024)
      const entrySize = h.readUInt32LE(84)
      if (entrySize >= 128 && entrySize <= 4096 && entriesLba * SECTOR < size) {
        const table = await read(entriesLba * SECTOR, count * entrySize)
        for (let i = 0; (i + 1) * entrySize <= table.length; i++) {
          const e = i * entrySize
          if (table.subarray(e, e + 16).every(b => b === 0)) continue // unused entry
          const first = Number(table.readBigUInt64LE(e + 32))
          if (first > 0 && first * SECTOR < size) out.add(first * SECTOR)
        }
      }
    }
  }
  return [...out].sort((a, b) => a - b)
}

/** Walks one ext2/3/4 filesystem at `base`; undefined when there is none there. */
async function walkExt4(read: ReadAt, size: number, base: number, cuts: CutSet): Promise<FsFound | undefined> {
  if (base + 2048 > size) return undefined
  const sb = await read(base + 1024, 1024)
  if (sb.length < 1024 || sb.readUInt16LE(56) !== EXT4_MAGIC) return undefined
  const logBlock = sb.readUInt32LE(24)
  if (logBlock > 6) return undefined
  const bs = 1024 << logBlock
  const inodesPerGroup = sb.readUInt32LE(40)
  const blocksPerGroup = sb.readUInt32LE(32)
  const firstDataBlock = sb.readUInt32LE(20)
  const incompat = sb.readUInt32LE(96)
  const roCompat = sb.readUInt32LE(100)
  const revLevel = sb.readUInt32LE(76)
  const inodeSize = revLevel >= 1 ? sb.readUInt16LE(88) : 128
  // inodes below this are the filesystem's own (the journal, resize inode): not files
  const firstIno = revLevel >= 1 ? sb.readUInt32LE(84) : 11
  const is64 = (incompat & INCOMPAT_64BIT) !== 0
  const descSize = is64 ? sb.readUInt16LE(254) : 32
  const blocks = sb.readUInt32LE(4) + (is64 ? sb.readUInt32LE(336) * 2 ** 32 : 0)
  if (
    inodesPerGroup === 0 ||
    blocksPerGroup === 0 ||
    inodeSize < 128 ||
    inodeSize > bs ||
    (inodeSize & (inodeSize - 1)) !== 0 ||
    descSize < 32 ||
    descSize > bs
  )
    return undefined
  const fs: FsFound = { offset: base, type: 'ext4', blockSize: bs, files: 0 }
  if ((incompat & INCOMPAT_META_BG) !== 0) {
    fs.incomplete = 'meta_bg group descriptors are not read'
    return fs
  }
  const fsEnd = Math.min(size, base + blocks * bs)
  const groups = Math.ceil((blocks - firstDataBlock) / blocksPerGroup)
  const uninitKnown = (roCompat & (RO_COMPAT_GDT_CSUM | RO_COMPAT_METADATA_CSUM)) !== 0
  const gdt = await read(base + (firstDataBlock + 1) * bs, groups * descSize)
  if (gdt.length < groups * descSize) return undefined
  /** a block of this filesystem; Stop when it lies outside it */
  const blockAt = async (b: number): Promise<Buffer> => {
    const pos = base + b * bs
    if (b <= firstDataBlock || pos + bs > fsEnd) throw new Stop(`block ${b} outside the filesystem`)
    const buf = await read(pos, bs)
    if (buf.length < bs) throw new Stop(`block ${b} short`)
    return buf
  }
  const addExtent = (physical: number, len: number): void => {
    const start = base + physical * bs
    const end = start + len * bs
    if (physical <= firstDataBlock || end > fsEnd) throw new Stop(`extent at block ${physical} outside the filesystem`)
    cuts.add(start)
    cuts.add(end)
  }
  /** leaf extents below an extent-tree node (i_block or a tree block) */
  const walkNode = async (node: Buffer, depthLeft: number): Promise<void> => {
    if (node.readUInt16LE(0) !== EXTENT_MAGIC) throw new Stop('bad extent header')
    const entries = node.readUInt16LE(2)
    const depth = node.readUInt16LE(6)
    if (depth > depthLeft || 12 + entries * 12 > node.length) throw new Stop('bad extent node')
    for (let i = 0; i < entries; i++) {
      const e = 12 + i * 12
      if (depth === 0) {
        const raw = node.readUInt16LE(e + 4)
        if (raw > 32768) continue // uninitialized: reads as zeros, never a data chunk
        addExtent(node.readUInt16LE(e + 6) * 2 ** 32 + node.readUInt32LE(e + 8), raw)
      } else {
        const child = await blockAt(node.readUInt32LE(e + 4) + node.readUInt16LE(e + 8) * 2 ** 32)
        await walkNode(child, depth - 1)
      }
    }
  }
  try {
    for (let g = 0; g < groups; g++) {
      const d = g * descSize
      const flags = gdt.readUInt16LE(d + 0x12)
      if (uninitKnown && (flags & BG_INODE_UNINIT) !== 0) continue
      const bitmapBlock = gdt.readUInt32LE(d + 0x04) + (descSize >= 64 ? gdt.readUInt32LE(d + 0x24) * 2 ** 32 : 0)
      const tableBlock = gdt.readUInt32LE(d + 0x08) + (descSize >= 64 ? gdt.readUInt32LE(d + 0x28) * 2 ** 32 : 0)
      const unused = uninitKnown
        ? gdt.readUInt16LE(d + 0x1c) + (descSize >= 64 ? gdt.readUInt16LE(d + 0x32) * 65536 : 0)
        : 0
      const used = Math.max(0, inodesPerGroup - unused)
      if (used === 0) continue
      const bitmap = await blockAt(bitmapBlock)
      const perRead = Math.max(1, Math.floor(ITABLE_READ / inodeSize))
      for (let first = 0; first < used; first += perRead) {
        const n = Math.min(perRead, used - first)
        const pos = base + tableBlock * bs + first * inodeSize
        if (tableBlock <= firstDataBlock || pos + n * inodeSize > fsEnd)
          throw new Stop(`inode table of group ${g} outside the filesystem`)
        const table = await read(pos, n * inodeSize)
        if (table.length < n * inodeSize) throw new Stop('inode table short')
        for (let k = 0; k < n; k++) {
          const i = first + k
          if ((bitmap[i >> 3]! & (1 << (i & 7))) === 0 || g * inodesPerGroup + i + 1 < firstIno) continue
          const ino = table.subarray(k * inodeSize, k * inodeSize + 128)
          if ((ino.readUInt16LE(0) & S_IFMT) !== S_IFREG) continue
          const iflags = ino.readUInt32LE(0x20)
          if ((iflags & EXT4_EXTENTS_FL) === 0 || (iflags & EXT4_INLINE_DATA_FL) !== 0) continue
          await walkNode(ino.subarray(0x28, 0x28 + 60), 5)
          fs.files++
          if (cuts.full) throw new Stop(`more than ${MAX_CUTS} cuts`)
        }
      }
    }
  } catch (err) {
    if (!(err instanceof Stop)) throw err
    fs.incomplete = err.message
  }
  return fs
}

/** Offsets collected unsorted, then sorted and made distinct once. */
class CutSet {
  private buf = new Float64Array(1024)
  private n = 0
  constructor(
    private readonly align: number,
    private readonly size: number
  ) {}
  get full(): boolean {
    return this.n >= MAX_CUTS
  }
  add(pos: number): void {
    if (pos <= 0 || pos >= this.size || pos % this.align !== 0 || this.full) return
    if (this.n === this.buf.length) {
      const b = new Float64Array(this.buf.length * 2)
      b.set(this.buf)
      this.buf = b
    }
    this.buf[this.n++] = pos
  }

  sorted(): Float64Array {
    const s = this.buf.subarray(0, this.n).sort()
    let w = 0
    for (let i = 0; i < s.length; i++) if (i === 0 || s[i] !== s[w - 1]) s[w++] = s[i]!
    return s.slice(0, w)
  }
}
