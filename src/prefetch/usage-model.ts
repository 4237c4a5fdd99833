// A usage model of one image, learnt from read sessions (one use of the image on a host: first
// open to last release plus an idle gap). Per chunk entry: in how many sessions it was read and a
// robust estimate of when (median first-access time since the session's start). Counts decay per
// session (weight λ), so a model follows an image whose reading pattern changes. The probability
// that a session reads an entry is smoothed (Laplace), so one session is not taken as certainty.
// Models from several hosts merge by adding counts and pooling the recorded times.

import type { Manifest } from '../manifests/manifest.js'
import type { ValueOf } from '../index/schema.js'

export const DECAY = 0.9
const TIMES_KEPT = 8

export interface ModelEntry {
  count: number
  times: number[]
}
/** A model as its `model/<digest>` fact holds it (the codec: src/index/schema.ts). */
export type ModelJson = ValueOf<'model'>

export class UsageModel {
  n = 0
  readonly entries = new Map<number, ModelEntry>()

  /** Adds one session: entry index -> first-access ms since the session's start. */
  addSession(trace: Map<number, number>, decay = DECAY): void {
    this.n = this.n * decay + 1
    for (const e of this.entries.values()) e.count *= decay
    for (const [i, ms] of trace) {
      let e = this.entries.get(i)
      if (!e) {
        e = { count: 0, times: [] }
        this.entries.set(i, e)
      }
      e.count += 1
      e.times.push(Math.round(ms))
      if (e.times.length > TIMES_KEPT) e.times.shift()
    }
    // entries no session reads any more fade out
    for (const [i, e] of this.entries) if (e.count < 0.05) this.entries.delete(i)
  }

  /** P(a session reads entry i), Laplace-smoothed. */
  probability(i: number): number {
    const c = this.entries.get(i)?.count ?? 0
    return (c + 0.5) / (this.n + 1)
  }

  /** Median first-access time of entry i (ms since session start), or undefined. */
  needTime(i: number): number | undefined {
    const t = this.entries.get(i)?.times
    if (!t || t.length === 0) return undefined
    const s = [...t].sort((a, b) => a - b)
    return s[s.length >> 1]
  }

  /**
   * Entries whose probability passes `threshold`, in order of expected need time; with
   * `quantumMs`, entries needed within the same quantum in image order (they then travel in fewer,
   * longer range requests).
   */
  likely(threshold: number, quantumMs = 0): number[] {
    const key = (i: number): number => {
      const t = this.needTime(i) ?? Infinity
      return quantumMs > 0 ? Math.floor(t / quantumMs) : t
    }
    return [...this.entries.keys()]
      .filter(i => this.probability(i) >= threshold)
      .sort((a, b) => key(a) - key(b) || a - b)
  }

  toJson(): ModelJson {
    return { v: 1, n: round(this.n), e: [...this.entries].map(([i, e]) => [i, round(e.count), e.times]) }
  }

  static fromJson(j: unknown): UsageModel | undefined {
    const m = new UsageModel()
    const o = j as Partial<ModelJson> | null
    if (!o || o.v !== 1 || typeof o.n !== 'number' || !(o.n >= 0) || !Array.isArray(o.e)) return undefined
    m.n = o.n
    for (const x of o.e) {
      if (!Array.isArray(x) || !Number.isSafeInteger(x[0]) || typeof x[1] !== 'number' || !Array.isArray(x[2]))
        return undefined
      m.entries.set(x[0], {
        count: x[1],
        times: x[2].filter((t): t is number => typeof t === 'number').slice(-TIMES_KEPT)
      })
    }
    return m
  }

  /** The fleet's model: counts added, times pooled (each host's latest kept). */
  static merge(models: UsageModel[]): UsageModel {
    const out = new UsageModel()
    for (const m of models) {
      out.n += m.n
      for (const [i, e] of m.entries) {
        const o = out.entries.get(i)
        if (o) {
          o.count += e.count
          o.times = [...o.times, ...e.times].slice(-TIMES_KEPT * 4)
        } else out.entries.set(i, { count: e.count, times: [...e.times] })
      }
    }
    return out
  }
}

const round = (x: number): number => Math.round(x * 1000) / 1000

export interface ModelDonor {
  digest: string
  manifest: Manifest
  model: UsageModel
}

/**
 * A model for an image no session has read yet, inherited from a related image that has one: a
 * new version of the image, or a sibling built from the same packages. Each of the donor's entries
 * maps, by chunk hash, onto the first entry of the target holding the same chunk, with its counts
 * and times. The donor chosen is the one whose likely entries (at `threshold`) the target holds
 * most of, by bytes; none when no donor reaches `minShare`. With file cuts (manifests/fs-layout.ts)
 * siblings share the chunks of every common file, which is what makes the mapping hit.
 */
export function inheritModel(
  target: Manifest,
  donors: ModelDonor[],
  threshold: number,
  minShare = 0.5
): { model: UsageModel; from: string; share: number } | undefined {
  if (donors.length === 0) return undefined
  const firstEntry = new Map<string, number>()
  for (let i = target.count - 1; i >= 0; i--) if (target.zero[i] === 0) firstEntry.set(target.hashHexAt(i), i)
  let best: { donor: ModelDonor; share: number } | undefined
  for (const d of donors) {
    if (d.model.n <= 0) continue
    let total = 0
    let held = 0
    for (const i of d.model.likely(threshold)) {
      if (i >= d.manifest.count || d.manifest.zero[i] === 1) continue
      const len = d.manifest.lengthAt(i)
      total += len
      if (firstEntry.has(d.manifest.hashHexAt(i))) held += len
    }
    const share = total === 0 ? 0 : held / total
    if (share >= minShare && (best === undefined || share > best.share)) best = { donor: d, share }
  }
  if (best === undefined) return undefined
  const { manifest, model } = best.donor
  const out = new UsageModel()
  out.n = model.n
  for (const [i, e] of model.entries) {
    if (i >= manifest.count || manifest.zero[i] === 1) continue
    const j = firstEntry.get(manifest.hashHexAt(i))
    if (j === undefined) continue
    const o = out.entries.get(j)
    // two donor entries with one chunk: the likelier, and the earlier times
    if (o === undefined) out.entries.set(j, { count: e.count, times: [...e.times] })
    else {
      o.count = Math.max(o.count, e.count)
      o.times = [...o.times, ...e.times].sort((a, b) => a - b).slice(0, TIMES_KEPT)
    }
  }
  return { model: out, from: best.donor.digest, share: best.share }
}
