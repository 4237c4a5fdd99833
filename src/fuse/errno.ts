// The one table from error codes to the errno a FUSE request is answered with (positive; the
// native session sends it to the kernel negated, as the protocol wants).
import { isVmifsError } from '../errors.js'

export const ENOENT = 2
export const EIO = 5
export const ETIMEDOUT = 110

export function errnoOf(err: unknown): number {
  if (isVmifsError(err)) {
    switch (err.code) {
      case 'IMAGE_NOT_FOUND':
        return ENOENT
      case 'CLOSED':
        return EIO
      default:
        return EIO // CHUNK_MISSING, CHUNK_HASH_MISMATCH, fetch failures: never wrong bytes
    }
  }
  return EIO
}
