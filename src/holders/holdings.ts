// Holdings: which entries of a manifest a host holds, announced as one fact per manifest
// (key `hold/<digest>`) whose value is a list of [start, end) ranges of entry indices — compact
// where it matters (a full or empty copy is one range or none), never one row per chunk.

export type Ranges = Array<[number, number]>

/** Ranges of indices i in [0, n) for which has(i) is true. */
export function toRanges(n: number, has: (i: number) => boolean): Ranges {
  const out: Ranges = []
  let start = -1
  for (let i = 0; i < n; i++) {
    if (has(i)) {
      if (start < 0) start = i
    } else if (start >= 0) {
      out.push([start, i])
      start = -1
    }
  }
  if (start >= 0) out.push([start, n])
  return out
}

export function inRanges(r: Ranges, i: number): boolean {
  let lo = 0
  let hi = r.length - 1
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1
    const [a, b] = r[mid]!
    if (i < a) hi = mid - 1
    else if (i >= b) lo = mid + 1
    else return true
  }
  return false
}

export function validRanges(v: unknown): v is Ranges {
  if (!Array.isArray(v)) return false
  let prev = -1
  for (const x of v) {
    if (!Array.isArray(x) || x.length !== 2 || !Number.isSafeInteger(x[0]) || !Number.isSafeInteger(x[1])) return false
    if (x[0] <= prev || x[1] <= x[0]) return false
    prev = x[1] as number
  }
  return true
}

/** Bytes of the distinct data chunks (zero runs left out) of `m`'s entries in the ranges. */
export function heldBytes(
  m: { count: number; zero: Uint8Array; lengthAt(i: number): number; hashHexAt(i: number): string },
  r: Ranges
): number {
  const seen = new Set<string>()
  let n = 0
  for (const [a, b] of r)
    for (let i = a; i < Math.min(b, m.count); i++) {
      if (m.zero[i] === 1) continue
      const h = m.hashHexAt(i)
      if (seen.has(h)) continue
      seen.add(h)
      n += m.lengthAt(i)
    }
  return n
}
