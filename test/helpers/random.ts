// Deterministic pseudo-random bytes (splitmix32), so that content-defined results are stable.

export function prng(seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (s + 0x9e3779b9) >>> 0
    let z = s
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0
    return (z ^ (z >>> 16)) >>> 0
  }
}

export function randomBuffer(len: number, seed: number): Buffer {
  const next = prng(seed)
  const buf = Buffer.alloc(len)
  let i = 0
  for (; i + 4 <= len; i += 4) buf.writeUInt32LE(next(), i)
  if (i < len) {
    const last = next()
    for (let k = 0; i < len; i++, k++) buf[i] = (last >>> (8 * k)) & 0xff
  }
  return buf
}
