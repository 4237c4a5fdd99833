// One error root for vmifs. Callers and tests branch on `code`, never on the message.
// Codes become errno only in fuse/errno.ts and exit codes only in cli/main.ts.

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
