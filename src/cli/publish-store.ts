import fs from 'node:fs'
import path from 'node:path'
import { type Command, COMMON_HELP, parse, resolveConfig, withDataDir, bytes } from './common.js'
import { VmifsError } from '../errors.js'
import { hostKey } from '../trust/keys.js'
import { installedCert } from '../trust/certs.js'
import { signLocalImages } from '../trust/publications.js'
import { FactStore } from '../index/facts.js'
import { FleetModels } from '../prefetch/fleet-models.js'
import { StoreWriter, convertV1 } from '../origin/writer.js'
import { writeFileAtomic } from '../util/files.js'
import { createLogger } from '../util/log.js'

export const command: Command = {
  name: 'publish-store',
  summary: 'write images as a static origin store (packed chunks, for any web server)',
  usage: `Usage: vmifs publish-store <dir> [<name>...] [--with-models | --models-only]
       vmifs publish-store --convert <dir>

Writes the named images (default: all images whose chunks are all local) as an origin store of
format 2 (manifests/STORE.md) that any web server with single-range answers serves as the holder
of last resort of a fleet (vmifs agent --origin <url>):
  <dir>/packs/<id>.pack             the chunks the store lacked, in image order, each brotli-
                                    compressed where that saves 1/16 of it, else raw
  <dir>/indexes/<digest>            per manifest: each chunk's pack, offset, length and codec
  <dir>/manifests/<digest>          canonical binary manifests
  <dir>/models/<digest>.json        published usage models (boot profiles), with --with-models
  <dir>/store.json                  what the store offers per manifest, signed by this host's key
  <dir>/images.json                 {"<name>": {"digest", "size", "publishedAt", "publisher",
                                    "sig", "cert"?}, …}: each image's signed publication
A chunk already in the store is not written again (siblings and new versions add only their new
chunks); images.json is merged with the one there; store.json is written last. Hosts list an
image of the store only under a publisher they accept for its name (docs/fleet.md), and read the
store only if store.json is signed by an admitted host or a key of trust.publishers.

Options:
  --with-models   publish this host's view of each image's usage model with it (the fleet's
                  model: what the hosts that booted it read, and when), so that the first host
                  to boot it from the store prefetches like the hundredth
  --models-only   only that: the models of the named images the store already holds (no chunk
                  needs to be local)
  --convert       convert the store of format 1 in <dir> (one file per chunk) to format 2, in
                  place; chunks/ is removed once the packs are written
${COMMON_HELP}`,
  async run(argv) {
    const a = parse(this, argv, {
      'with-models': { type: 'boolean' },
      'models-only': { type: 'boolean' },
      convert: { type: 'boolean' }
    })
    if (!a) return 0
    const [dir, ...names] = a.positionals
    if (dir === undefined) throw VmifsError.usage(`publish-store takes a directory\n\n${this.usage}`)
    const withModels = a.values['with-models'] === true || a.values['models-only'] === true
    if (a.values['with-models'] === true && a.values['models-only'] === true)
      throw VmifsError.usage(`--with-models and --models-only exclude each other\n\n${this.usage}`)
    const cfg = resolveConfig(a.values)
    await withDataDir(cfg, async dd => {
      const key = hostKey(dd.dir)
      const cert = installedCert(dd.dir)
      if (a.values.convert === true) {
        if (names.length > 0) throw VmifsError.usage(`--convert takes only the directory\n\n${this.usage}`)
        const r = await convertV1(dir, key, cert)
        process.stderr.write(
          `${dir}: converted to format 2: ${r.images} images, ${r.chunks} chunks (${bytes(r.bytes)}) in ` +
            `${r.packs} packs of ${bytes(r.storedBytes)}\n`
        )
        return
      }
      signLocalImages(dd.catalog, key)
      const facts = new FactStore(dd.db, cfg.hostId, { signer: key, cert: () => cert })
      const models = new FleetModels(facts, dd.catalog, createLogger('publish-store', 'warn'))
      const images = names.length > 0 ? names.map(n => dd.catalog.requireImage(n)) : dd.catalog.listImages()
      if (cert === undefined && images.some(i => i.publication?.publisher === key.publicKey))
        process.stderr.write(
          "warning: no host certificate installed: hosts that admit by trust.admins and have no facts of this host's " +
            'will not list the images it signed, nor read the store (vmifs host cert)\n'
        )
      const w = new StoreWriter(dir)
      const listFile = path.join(dir, 'images.json')
      const list = fs.existsSync(listFile)
        ? (JSON.parse(fs.readFileSync(listFile, 'utf8')) as Record<string, unknown>)
        : {}
      for (const img of images) {
        if (a.values['models-only'] === true) {
          if (!w.has(img.digest)) {
            if (names.length > 0)
              throw new VmifsError('IMAGE_NOT_FOUND', `the store in ${dir} does not hold ${img.name}`, {
                name: img.name
              })
            continue
          }
        } else {
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
          if (!w.has(img.digest)) {
            const missing = [...m.distinctChunks().keys()].filter(h => !dd.store.has(h))
            if (missing.length > 0) {
              if (names.length > 0) throw VmifsError.chunkMissing(missing[0]!)
              process.stderr.write(`${img.name}: skipped (${missing.length} chunks not local)\n`)
              continue
            }
            await w.addImage(m, async h => await dd.store.read(h))
          }
          const pcert = facts.certOfKey(pub.publisher)
          list[img.name] = {
            digest: img.digest,
            size: img.size,
            publishedAt: pub.publishedAt,
            publisher: pub.publisher,
            sig: pub.sig,
            ...(pcert ? { cert: pcert } : {})
          }
        }
        let modelNote = ''
        if (withModels) {
          const model = models.model(img.digest)
          if (model.n > 0) {
            w.addModel(img.digest, model.toJson())
            modelNote = `, with its usage model (${Math.round(model.n * 100) / 100} sessions)`
          } else modelNote = ', no usage model (no session read it yet)'
        }
        process.stderr.write(`${img.name}: published (${img.digest})${modelNote}\n`)
      }
      w.finish(key, cert)
      writeFileAtomic(listFile, JSON.stringify(list, null, 2) + '\n')
      const r = w.report
      process.stderr.write(
        `${r.chunks} chunks (${bytes(r.bytes)}) written to ${dir} in ${r.packs} packs of ${bytes(r.storedBytes)}\n`
      )
    })
    return 0
  }
}
