// The errno a FUSE request is answered with (positive; the native session sends it to the kernel
// negated, as the protocol wants): an error's is its code's row of OUTCOMES (src/errors.ts).
import os from 'node:os'
import { outcomeOf } from '../errors.js'

export const { ENOENT, EIO, ETIMEDOUT } = os.constants.errno

export function errnoOf(err: unknown): number {
  return outcomeOf(err).errno
}
