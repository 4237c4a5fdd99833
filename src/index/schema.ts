// The kinds of key in the metadata table and the one codec of each value, used by every writer
// (publishAs) and reader (getAs, allAs) and by apply(), which refuses a fact of a known kind whose
// value does not decode like one with a bad signature. Objects keep fields this version does not
// know (a newer host may add some); a key of a kind this version does not know is kept and relayed
// unread.
import { z } from 'zod'
import { validHostId } from '../trust/host-id.js'
import { validRanges, type Ranges } from '../holders/holdings.js'

const hex64 = z.string().regex(/^[0-9a-f]{64}$/)
const count = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER)
const nonNegative = z.number().finite().nonnegative()
const time = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER)
const hostId = z.string().refine(validHostId, 'is not a host id')

const host = z.looseObject({
  endpoint: z.string().regex(/^https?:\/\/\S+$/, 'is not an http(s) URL'),
  price: nonNegative,
  version: z.number().int().optional(),
  site: z.looseObject({ rttMs: nonNegative.optional(), storagePrice: nonNegative.optional() }).optional()
})
const status = z.looseObject({
  cacheCapacityBytes: count,
  cacheSizeBytes: count,
  load: nonNegative,
  /** when the host published it (its heartbeat: ms since the epoch) */
  at: time.optional()
})
// the publisher's key and signature (src/trust/publications.ts), checked by the hosts that list
// the image: an unsigned publication is a valid fact, and an image nobody lists
const image = z.looseObject({
  digest: hex64,
  size: count,
  publishedAt: time,
  publisher: z.string().max(64).optional(),
  sig: z.string().max(128).optional()
})
const hold = z.looseObject({ ranges: z.custom<Ranges>(validRanges, 'not sorted, disjoint [start, end) ranges') })
// the first 16 hex digits of each manifest digest this host holds entries of -> tenths held (0: some)
const inv = z.looseObject({ images: z.record(z.string().regex(/^[0-9a-f]{16}$/), z.number().int().min(0).max(10)) })
const model = z.looseObject({
  v: z.literal(1),
  n: nonNegative,
  e: z.array(z.tuple([count, nonNegative, z.array(z.number().finite())]))
})
const policy = z.looseObject({
  minReplicas: z.number().int().min(0).max(1000),
  dr: hostId.optional(),
  maxRttMs: nonNegative.optional(),
  maxPrice: nonNegative.optional(),
  setAt: time
})
const replica = z.looseObject({
  digest: hex64,
  role: z.enum(['dr', 'replica']),
  state: z.enum(['waiting', 'copying', 'done', 'failed']),
  startedAt: time.optional(),
  doneAt: time.optional(),
  fetchedBytes: count.optional(),
  wireBytes: count.optional(),
  makespan: nonNegative.optional(),
  /** DR duty taken over from this host (it was down or late) */
  drFor: hostId.optional(),
  error: z.string().max(4096).optional()
})

/** Each kind: its key (`name` empty) or key prefix (the name follows), and its value's schema. */
export const KINDS = {
  /** a host's endpoint and egress price; site figures for replica placement */
  host: { key: 'host', schema: host },
  /** cache space and load per CPU, republished every heartbeat (`at`) */
  status: { key: 'status', schema: status },
  /** image/<name>: an image this host publishes */
  image: { key: 'image/', schema: image },
  /** hold/<manifest digest>: the entries of that manifest this host holds */
  hold: { key: 'hold/', schema: hold },
  /**
   * the images this host holds entries of, and how much of each: small and followed by every host,
   * so that one whose metadata engine keeps holdings per host (src/metadata/) knows whom to ask
   */
  inv: { key: 'inv', schema: inv },
  /** model/<manifest digest>: this host's usage model of the image */
  model: { key: 'model/', schema: model },
  /** policy/<image>: a replication policy this host set */
  policy: { key: 'policy/', schema: policy },
  /** replica/<image>: this host's state as a replica of the image */
  replica: { key: 'replica/', schema: replica }
} as const

export type Kind = keyof typeof KINDS
const KIND_LIST = Object.entries(KINDS) as Array<[Kind, (typeof KINDS)[Kind]]>
export type ValueOf<K extends Kind> = z.infer<(typeof KINDS)[K]['schema']>

/** The key of a fact of `kind` about `name` (empty for the kinds with one key). */
export function keyOf(kind: Kind, name = ''): string {
  return KINDS[kind].key + name
}

/** The kind of a key, and the name in it; undefined for a key of a kind this version does not know. */
export function kindOf(key: string): { kind: Kind; name: string } | undefined {
  for (const [kind, k] of KIND_LIST) {
    if (k.key.endsWith('/') ? key.startsWith(k.key) && key.length > k.key.length : key === k.key)
      return { kind, name: key.slice(k.key.length) }
  }
  return undefined
}

/** v as a value of `kind`, or undefined. */
export function decodeAs<K extends Kind>(kind: K, v: unknown): ValueOf<K> | undefined {
  const r = KINDS[kind].schema.safeParse(v)
  return r.success ? (r.data as ValueOf<K>) : undefined
}

/** Whether a fact's value decodes as its key's kind (a retraction, or a kind not known here, does). */
export function validValue(key: string, value: unknown): boolean {
  if (value === null || value === undefined) return true
  const k = kindOf(key)
  return k === undefined || decodeAs(k.kind, value) !== undefined
}

/** Why a value does not decode as `kind` (for the error a writer gets). */
export function problemOf(kind: Kind, v: unknown): string | undefined {
  const r = KINDS[kind].schema.safeParse(v)
  if (r.success) return undefined
  const i = r.error.issues[0]
  return `${i?.path.join('.') ?? ''}: ${i?.message ?? 'invalid'}`
}
