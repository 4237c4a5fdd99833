// What a host id (a fact's origin) may be: 1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit.
const HOST_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/

export function validHostId(s: unknown): s is string {
  return typeof s === 'string' && HOST_ID_RE.test(s)
}
