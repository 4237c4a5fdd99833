// One error root for vmifs. Callers and tests branch on `code`, never on the message.
// What a code becomes at each edge (the errno a FUSE request gets, the HTTP status of the local
// API and the peer protocol, the CLI's exit status, whether trying again may help) is one table,
// OUTCOMES, below: fuse/, server/ and cli/ only look it up. The peer protocol's own answers (wire
// codes) are in the same table.
import os from 'node:os'

export type ErrorCode =
  | 'CLOSED'
  | 'USAGE'
  | 'INPUT_NOT_FOUND'
  | 'INPUT_UNREADABLE'
  | 'INPUT_IS_DIRECTORY'
  | 'INPUT_EMPTY'
  | 'INPUT_CHANGED'
  | 'NAME_TAKEN'
  | 'NAME_INVALID'
  | 'IMAGE_NOT_FOUND'
  | 'IMAGE_NOT_LOCAL'
  | 'MANIFEST_BAD_MAGIC'
  | 'MANIFEST_BAD_VERSION'
  | 'MANIFEST_TRUNCATED'
  | 'MANIFEST_BAD_HASH_SIZE'
  | 'MANIFEST_BAD_LENGTH'
  | 'MANIFEST_RANGE_GAP'
  | 'MANIFEST_RANGE_OVERLAP'
  | 'MANIFEST_SIZE_MISMATCH'
  | 'MANIFEST_BAD_CHUNKING'
  | 'MANIFEST_BAD_JSON'
  | 'MANIFEST_NOT_CANONICAL'
  | 'MANIFEST_DIGEST_MISMATCH'
  | 'CHUNK_HASH_MISMATCH'
  | 'CHUNK_MISSING'
  | 'OUTPUT_EXISTS'
  | 'MOUNTPOINT_MISSING'
  | 'MOUNTPOINT_NOT_DIR'
  | 'MOUNTPOINT_BUSY'
  | 'MOUNT_FAILED'
  | 'HOLDER_FAILED'
  | 'TAKEOVER_FAILED'
  | 'DB_NEWER_SCHEMA'
  | 'DATA_DIR_UNUSABLE'
  | 'DATA_DIR_OLD_LAYOUT'
  | 'AGENT_NOT_RUNNING'
  | 'CONFIG_INVALID'
  | 'NATIVE_MISSING'
  | 'AGENT_RUNNING'
  | 'HOLDER_UNREACHABLE'
  | 'HOLDER_BAD_RESPONSE'
  | 'HOLDER_UNAUTHORIZED'
  | 'CHUNK_UNAVAILABLE'
  | 'TOKEN_MISSING'
  | 'TRUST_MISSING'
  | 'HINT_INVALID'
  | 'NOT_FLEET_MODE'
  | 'HOST_NOT_FOUND'
  | 'PARAM_INVALID'
  | 'PLAN_INFEASIBLE'
  | 'SOLVER_FAILED'
  | 'POLICY_NOT_FOUND'
  | 'KEY_INVALID'
  | 'KEY_EXISTS'
  | 'CERT_INVALID'
  | 'ORIGIN_FORMAT_OLD'
  | 'ORIGIN_STORE_INVALID'
  | 'ORIGIN_INDEX_INVALID'

export class VmifsError extends Error {
  readonly code: ErrorCode
  readonly detail: Record<string, unknown> | undefined

  constructor(code: ErrorCode, message: string, detail?: Record<string, unknown>, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'VmifsError'
    this.code = code
    this.detail = detail
  }

  static closed(what: string): VmifsError {
    return new VmifsError('CLOSED', `${what} is closed`)
  }

  static usage(message: string): VmifsError {
    return new VmifsError('USAGE', message)
  }

  static manifest(
    code: Extract<ErrorCode, `MANIFEST_${string}`>,
    message: string,
    detail?: Record<string, unknown>
  ): VmifsError {
    return new VmifsError(code, `manifest rejected: ${message}`, detail)
  }

  static hashMismatch(hash: string, got: string): VmifsError {
    return new VmifsError('CHUNK_HASH_MISMATCH', `chunk ${hash} is corrupt (content hashes to ${got})`, { hash, got })
  }

  static chunkMissing(hash: string): VmifsError {
    return new VmifsError('CHUNK_MISSING', `chunk ${hash} is not in the cache`, { hash })
  }

  static imageNotFound(name: string): VmifsError {
    return new VmifsError('IMAGE_NOT_FOUND', `no image named ${JSON.stringify(name)}`, { name })
  }

  static hostNotFound(host: string): VmifsError {
    return new VmifsError('HOST_NOT_FOUND', `no host ${JSON.stringify(host)} in the metadata table`, { host })
  }

  static param(name: string, message: string): VmifsError {
    return new VmifsError('PARAM_INVALID', `${name} ${message}`, { name })
  }
}

export function isVmifsError(err: unknown, code?: ErrorCode): err is VmifsError {
  return err instanceof VmifsError && (code === undefined || err.code === code)
}

/** The codes the peer protocol and the local API answer with that are not errors of vmifs's own. */
export type WireCode =
  | 'UNAUTHORIZED'
  | 'BAD_HASH'
  | 'BAD_DIGEST'
  | 'BAD_BATCH'
  | 'BAD_CURSORS'
  | 'BAD_JSON'
  | 'BODY_TOO_LARGE'
  | 'NOT_HELD'
  | 'NO_ROUTE'
  | 'INTERNAL'

/** What a code becomes at each edge. */
export interface Outcome {
  /** the errno a FUSE request is answered with (positive) */
  errno: number
  /** the HTTP status of an answer carrying it */
  http: number
  /** the CLI's exit status */
  exit: number
  /** whether the same call may succeed later, unchanged (a peer down, the agent not up yet) */
  retryable: boolean
}

const E = os.constants.errno
const bad = (http = 400): Outcome => ({ errno: E.EIO, http, exit: 1, retryable: false })
const later = (http = 503, errno = E.EIO): Outcome => ({ errno, http, exit: 1, retryable: true })

/** Every code's outcome (the type makes a new code without a row a compile error). */
export const OUTCOMES: Record<ErrorCode | WireCode, Outcome> = {
  CLOSED: later(503),
  USAGE: { errno: E.EINVAL, http: 400, exit: 2, retryable: false },
  INPUT_NOT_FOUND: { ...bad(404), errno: E.ENOENT },
  INPUT_UNREADABLE: bad(),
  INPUT_IS_DIRECTORY: bad(),
  INPUT_EMPTY: bad(),
  INPUT_CHANGED: later(409),
  NAME_TAKEN: bad(409),
  NAME_INVALID: bad(),
  IMAGE_NOT_FOUND: { ...bad(404), errno: E.ENOENT },
  IMAGE_NOT_LOCAL: bad(409),
  MANIFEST_BAD_MAGIC: bad(),
  MANIFEST_BAD_VERSION: bad(),
  MANIFEST_TRUNCATED: bad(),
  MANIFEST_BAD_HASH_SIZE: bad(),
  MANIFEST_BAD_LENGTH: bad(),
  MANIFEST_RANGE_GAP: bad(),
  MANIFEST_RANGE_OVERLAP: bad(),
  MANIFEST_SIZE_MISMATCH: bad(),
  MANIFEST_BAD_CHUNKING: bad(),
  MANIFEST_BAD_JSON: bad(),
  MANIFEST_NOT_CANONICAL: bad(),
  MANIFEST_DIGEST_MISMATCH: bad(),
  // bytes that are not the chunk's are never served: the read fails, another holder may have it
  CHUNK_HASH_MISMATCH: later(502),
  CHUNK_MISSING: bad(404),
  OUTPUT_EXISTS: bad(409),
  MOUNTPOINT_MISSING: bad(),
  MOUNTPOINT_NOT_DIR: bad(),
  MOUNTPOINT_BUSY: later(409),
  MOUNT_FAILED: bad(500),
  HOLDER_FAILED: bad(500),
  TAKEOVER_FAILED: later(503),
  DB_NEWER_SCHEMA: bad(500),
  DATA_DIR_UNUSABLE: bad(500),
  DATA_DIR_OLD_LAYOUT: bad(409),
  AGENT_NOT_RUNNING: later(503),
  CONFIG_INVALID: bad(),
  NATIVE_MISSING: bad(500),
  AGENT_RUNNING: bad(409),
  HOLDER_UNREACHABLE: later(502),
  HOLDER_BAD_RESPONSE: later(502),
  HOLDER_UNAUTHORIZED: bad(502),
  CHUNK_UNAVAILABLE: later(503),
  TOKEN_MISSING: bad(),
  TRUST_MISSING: bad(),
  HINT_INVALID: bad(),
  NOT_FLEET_MODE: bad(409),
  HOST_NOT_FOUND: bad(404),
  PARAM_INVALID: bad(),
  PLAN_INFEASIBLE: bad(422),
  SOLVER_FAILED: bad(500),
  POLICY_NOT_FOUND: bad(404),
  KEY_INVALID: bad(),
  KEY_EXISTS: bad(409),
  CERT_INVALID: bad(),
  ORIGIN_FORMAT_OLD: bad(409),
  ORIGIN_STORE_INVALID: later(502),
  ORIGIN_INDEX_INVALID: later(502),
  UNAUTHORIZED: bad(401),
  BAD_HASH: bad(),
  BAD_DIGEST: bad(),
  BAD_BATCH: bad(),
  BAD_CURSORS: bad(),
  BAD_JSON: bad(),
  BODY_TOO_LARGE: bad(413),
  NOT_HELD: bad(404),
  NO_ROUTE: bad(404),
  INTERNAL: bad(500)
}

/** The code an error answers with at an edge: its own, or INTERNAL for one that is not vmifs's. */
export function codeOf(err: unknown): ErrorCode | 'INTERNAL' {
  return isVmifsError(err) ? err.code : 'INTERNAL'
}

/** What an error becomes at the edges. */
export function outcomeOf(err: unknown): Outcome {
  return OUTCOMES[codeOf(err)]
}
