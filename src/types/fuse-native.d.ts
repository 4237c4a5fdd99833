declare module 'fuse-native' {
  type Cb = (...args: any[]) => void
  interface FuseOptions {
    debug?: boolean
    force?: boolean
    mkdir?: boolean
    allowOther?: boolean
    autoCache?: boolean
    kernelCache?: boolean
    fsname?: string
    subtype?: string
    defaultPermissions?: boolean
    maxRead?: number
    attrTimeout?: number
    acAttrTimeout?: number
    entryTimeout?: number
    timeout?: number | false
  }
  class Fuse {
    constructor(mnt: string, ops: Record<string, Cb>, opts?: FuseOptions)
    mount(cb: (err: Error | null) => void): void
    unmount(cb: (err: Error | null) => void): void
    static unmount(mnt: string, cb: (err: Error | null) => void): void
  }
  export default Fuse
}
