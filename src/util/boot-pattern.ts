// A boot-like read pattern for an image: "files" of log-uniform size (4 KiB to 1 MiB) at random
// 4 KiB-aligned offsets, each read start to end in 128 KiB requests (what the kernel's readahead
// asks of a file that is read through), in random order. Deterministic for a seed. Read by the
// fleet demo (src/cli/demo-fleet.ts) and the cold-read benchmark.
export interface Extent {
  offset: number
  length: number
}

export function bootPattern(imageSize: number, share: number, seed = 1): Extent[] {
  let x = seed >>> 0 || 1
  const rnd = (): number => {
    x ^= x << 13
    x >>>= 0
    x ^= x >>> 17
    x ^= x << 5
    x >>>= 0
    return x / 0x100000000
  }
  const out: Extent[] = []
  let total = 0
  while (total < imageSize * share) {
    const length = Math.round(4096 * Math.pow(256, rnd())) // 4 KiB .. 1 MiB, log-uniform
    const offset = Math.floor(rnd() * ((imageSize - length) / 4096)) * 4096
    out.push({ offset, length })
    total += length
  }
  return out
}

/** Bytes covered by the union of the extents. */
export function distinctBytes(ext: Extent[]): number {
  const s = [...ext].sort((a, b) => a.offset - b.offset)
  let n = 0
  let end = -1
  for (const e of s) {
    const a = Math.max(e.offset, end)
    const b = e.offset + e.length
    if (b > a) n += b - a
    end = Math.max(end, b)
  }
  return n
}
