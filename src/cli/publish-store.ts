import fs from 'node:fs'
import path from 'node:path'
import { type Command, COMMON_HELP, parse, resolveConfig, withDataDir, bytes } from './common.js'
import { VmifsError } from '../errors.js'
import { hostKey } from '../trust/keys.js'
import { installedCert } from '../trust/certs.js'
import { signLocalImages } from '../trust/publications.js'
import { FactStore } from '../index/facts.js'

export const command: Command = {
  name: 'publish-store',
  summary: 'write images as a static origin chunk store (for any web server)',
  usage: `Usage: vmifs publish-store <dir> [<name>...]

Writes the named images (default: all images whose chunks are all local) as static files that
any web server can serve as an origin store, the holder of last resort of a fleet
(vmifs agent --origin <url>):
  <dir>/chunks/<hash[0:2]>/<hash>   every chunk (written to a temp name, then renamed)
  <dir>/manifests/<digest>          canonical binary manifests
  <dir>/images.json                 {"<name>": {"digest", "size", "publishedAt", "publisher",
                                    "sig", "cert"?}, …}: each image's signed publication
Chunks already in <dir> are not written again; images.json is merged with the one there. Hosts
list an image of the store only under a publisher they accept for its name (docs/fleet.md), so
the store's files decide no name: images imported here carry the host key's signature (or the
offline key vmifs sign gave them), with the host's certificate; adopted ones their publisher's.

Options:
${COMMON_HELP}`,
  async run(argv) {
    const a = parse(this, argv, {})
    if (!a) return 0
    const [dir, ...names] = a.positionals
    if (dir === undefined) throw VmifsError.usage(`publish-store takes a directory\n\n${this.usage}`)
    const cfg = resolveConfig(a.values)
    await withDataDir(cfg, async dd => {
      const key = hostKey(dd.dir)
      signLocalImages(dd.catalog, key)
      const facts = new FactStore(dd.db, cfg.hostId, { signer: key, cert: () => installedCert(dd.dir) })
      const images = names.length > 0 ? names.map(n => dd.catalog.requireImage(n)) : dd.catalog.listImages()
      if (installedCert(dd.dir) === undefined && images.some(i => i.publication?.publisher === key.publicKey))
        process.stderr.write(
          "warning: no host certificate installed: hosts that admit by trust.admins and have no facts of this host's " +
            'will not list the images it signed (vmifs host cert)\n'
        )
      fs.mkdirSync(path.join(dir, 'chunks'), { recursive: true })
      fs.mkdirSync(path.join(dir, 'manifests'), { recursive: true })
      const listFile = path.join(dir, 'images.json')
      const list = fs.existsSync(listFile)
        ? (JSON.parse(fs.readFileSync(listFile, 'utf8')) as Record<string, unknown>)
        : {}
      let written = 0
      let writtenBytes = 0
      for (const img of images) {
        const pub = img.publication
        if (pub === null) {
          if (names.length > 0)
            throw new VmifsError('IMAGE_NOT_LOCAL', `${img.name} carries no signed publication to pass on`, {
              name: img.name
            })
          process.stderr.write(`${img.name}: skipped (no signed publication)\n`)
          continue
        }
        const m = dd.catalog.manifest(img.digest)!
        const missing = [...m.distinctChunks().keys()].filter(h => !dd.store.has(h))
        if (missing.length > 0) {
          if (names.length > 0) throw VmifsError.chunkMissing(missing[0]!)
          process.stderr.write(`${img.name}: skipped (${missing.length} chunks not local)\n`)
          continue
        }
        for (const h of m.distinctChunks().keys()) {
          const target = path.join(dir, 'chunks', h.slice(0, 2), h)
          if (fs.existsSync(target)) continue
          const data = await dd.store.read(h) // verified
          fs.mkdirSync(path.dirname(target), { recursive: true })
          const tmp = `${target}.tmp-${process.pid}`
          fs.writeFileSync(tmp, data)
          fs.renameSync(tmp, target)
          written++
          writtenBytes += data.length
        }
        const mf = path.join(dir, 'manifests', img.digest)
        if (!fs.existsSync(mf)) {
          fs.writeFileSync(`${mf}.tmp`, m.encode())
          fs.renameSync(`${mf}.tmp`, mf)
        }
        const cert = facts.certOfKey(pub.publisher)
        list[img.name] = {
          digest: img.digest,
          size: img.size,
          publishedAt: pub.publishedAt,
          publisher: pub.publisher,
          sig: pub.sig,
          ...(cert ? { cert } : {})
        }
        process.stderr.write(`${img.name}: published (${img.digest})\n`)
      }
      fs.writeFileSync(`${listFile}.tmp`, JSON.stringify(list, null, 2) + '\n')
      fs.renameSync(`${listFile}.tmp`, listFile)
      process.stderr.write(`${written} chunks (${bytes(writtenBytes)}) written to ${dir}\n`)
    })
    return 0
  }
}
