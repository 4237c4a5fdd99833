// Statements over many chunks at once, each one statement for all of them: the hashes go in as
// one blob (@h, 32 bytes each) and what a row needs besides as a JSON array (@v, an element a
// hash), which json_each turns into rows (HASH_ROWS). The B-tree work is then all a row costs:
// no call into SQLite, no bound value and no result object a row. Rows are given in the order of
// their hashes' bytes where they are written, so that each lands next to the last one's page.
// The callers build what they need in loops of their own, not in a callback a call: a closure
// made in each call is compiled again for each call.
import { native } from '../native/index.js'

/** The rows of @h and @v: i (the element's index), hash (its 32 bytes), v (its value). */
export const HASH_ROWS =
  '(SELECT j.key AS i, substr(@h, j.key * 32 + 1, 32) AS hash, j.value AS v FROM json_each(@v) j)'

export interface HashRows {
  h: Buffer
  v: string
}

/**
 * The parameters of a HASH_ROWS statement over hashes[idx[k]], k = 0, 1, … (every hash in order
 * without idx), with each one's value values[i] (a number, or JSON text; 0 without values).
 */
export function hashRows(
  hashes: readonly Buffer[],
  idx?: ArrayLike<number>,
  values?: ArrayLike<string | number>
): HashRows {
  const n = idx?.length ?? hashes.length
  const h = Buffer.allocUnsafe(n * 32)
  const parts = new Array<string | number>(n)
  for (let k = 0; k < n; k++) {
    const i = idx === undefined ? k : idx[k]!
    hashes[i]!.copy(h, k * 32, 0, 32)
    parts[k] = values === undefined ? 0 : values[i]!
  }
  return { h, v: `[${parts.join(',')}]` }
}

/**
 * The indexes of the hashes (a list, or one buffer of 32 bytes each) in the order of their bytes
 * (the order SQLite's index keeps them in).
 */
export function hashOrder(hashes: readonly Buffer[] | Buffer): Uint32Array {
  return native().hashOrder(Buffer.isBuffer(hashes) ? hashes : Buffer.concat(hashes))
}
