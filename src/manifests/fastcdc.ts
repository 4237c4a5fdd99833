// FastCDC cut-point search. The hot loop is native (native/vmifs_native.c); the BigInt version
// below is the reference it is tested against, too slow for anything but tests.
import { native } from '../native/index.js'
import { cdcMasks, gearTable } from './chunking.js'

export interface CdcParams {
  min: number
  avg: number
  max: number
}

let gearLoaded = false

export function makeCutter(p: CdcParams): (buf: Buffer, start: number, end: number) => number {
  const n = native()
  if (!gearLoaded) {
    n.setGear(gearTable().table)
    gearLoaded = true
  }
  const { maskS, maskL } = cdcMasks(p.avg)
  return (buf, start, end) => n.fastcdcCut(buf, start, end, p.min, p.avg, p.max, maskS, maskL)
}

const M64 = (1n << 64n) - 1n

/** Reference implementation: same contract as the native cut (absolute offset). */
export function referenceCut(buf: Buffer, start: number, end: number, p: CdcParams): number {
  const G = gearTable().values
  const { maskS, maskL } = cdcMasks(p.avg)
  let n = end - start
  if (n <= p.min) return end
  if (n > p.max) n = p.max
  const normal = Math.min(p.avg, n)
  let h = 0n
  let i = p.min
  for (; i < normal; i++) {
    h = ((h << 1n) + G[buf[start + i]!]!) & M64
    if ((h & maskS) === 0n) return start + i + 1
  }
  for (; i < n; i++) {
    h = ((h << 1n) + G[buf[start + i]!]!) & M64
    if ((h & maskL) === 0n) return start + i + 1
  }
  return start + n
}
