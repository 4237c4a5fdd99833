// The one table from error codes to errno answers of FUSE ops (negative, as libfuse wants).
import { isVmifsError } from '../errors.js'

export const ENOENT = -2
export const EIO = -5
export const EBADF = -9
export const EACCES = -13
export const ENOTDIR = -20
export const EISDIR = -21
export const EINVAL = -22
export const EROFS = -30
export const ENODATA = -61
export const ENOSYS = -38

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
