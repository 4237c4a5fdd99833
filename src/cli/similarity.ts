import { type Command, COMMON_HELP, parse, resolveConfig, withDataDir, bytes, table, csv } from './common.js'
import { VmifsError } from '../errors.js'
import path from 'node:path'
import { CatalogClusters, type Similarity, type TopBy, topClusters } from '../planner/clusters.js'
import { agentCall } from '../server/local-api.js'
import { isVmifsError } from '../errors.js'

export const command: Command = {
  name: 'similarity',
  summary: 'clusters of shared chunks and the image x image matrix of shared bytes',
  usage: `Usage: vmifs similarity [--top <n>] [--by bytes|chunks] [--json | --csv [--clusters]]

Clusters the images of the data dir (every image the fleet publishes, once known here; the running
agent keeps them up to date as images are imported and removed, else they are computed): a cluster
is the set of distinct chunks shared by exactly one set of images, named by a bitset with one bit
per image (the last image is the leftmost bit). For each: its images, size in bytes, chunk count,
refs (manifest entries pointing at its chunks, so repeats inside an image count) and redundancy
(refs per chunk per image, 1 = no repeats). Then the image x image matrix of shared bytes (the
diagonal is each image's distinct data bytes). The matrix is always exact; --top only limits the
clusters listed.

Options:
  --top <n>            list the n top clusters (default 20; 0 = all)
  --by bytes|chunks    what makes a cluster "top" (default bytes)
  --json               one JSON object: images, clusters, matrix
  --csv                the matrix as CSV (bytes), one row and column per image
  --clusters           with --csv: the clusters as CSV instead (as the seed's FIG. 6: one 0/1
                       column per image, then bytes, chunks, refs)
${COMMON_HELP}`,
  async run(argv) {
    const a = parse(
      this,
      argv,
      {
        top: { type: 'string' },
        by: { type: 'string' },
        json: { type: 'boolean' },
        csv: { type: 'boolean' },
        clusters: { type: 'boolean' }
      },
      false
    )
    if (!a) return 0
    const top = a.values.top === undefined ? 20 : Number(a.values.top)
    if (!Number.isInteger(top) || top < 0) throw VmifsError.usage(`--top takes a whole number >= 0\n\n${this.usage}`)
    const by = (a.values.by ?? 'bytes') as TopBy
    if (by !== 'bytes' && by !== 'chunks') throw VmifsError.usage(`--by takes bytes or chunks\n\n${this.usage}`)
    if (a.values.json === true && a.values.csv === true)
      throw VmifsError.usage(`--json and --csv exclude each other\n\n${this.usage}`)
    const cfg = resolveConfig(a.values)
    // the running agent keeps the clusters up to date as images come and go; without one they
    // are computed here from the catalog
    let s: Similarity
    try {
      s = (await agentCall(path.join(cfg.dataDir, 'agent.sock'), 'GET', '/v1/similarity')) as Similarity
    } catch (err) {
      if (!isVmifsError(err, 'AGENT_NOT_RUNNING')) throw err
      s = await withDataDir(cfg, dd => {
        const idx = new CatalogClusters()
        idx.sync(dd.catalog.listImages(), d => dd.catalog.manifest(d))
        return idx.snapshot()
      })
    }
    const listed = top === 0 ? s.clusters : topClusters(s, top, by)
    const named = listed.map(c => ({ id: `CL-${String(s.clusters.indexOf(c) + 1).padStart(2, '0')}`, ...c }))
    if (a.values.json === true) {
      process.stdout.write(
        JSON.stringify(
          {
            images: s.images,
            clusterCount: s.clusters.length,
            top: top === 0 ? null : top,
            by,
            clusters: named,
            matrix: s.matrix
          },
          null,
          2
        ) + '\n'
      )
      return 0
    }
    if (a.values.csv === true) {
      if (a.values.clusters === true) {
        const imgs = [...s.images].reverse()
        process.stdout.write(
          csv([
            ['cluster', ...imgs, 'bytes', 'chunks', 'refs'],
            ...named.map(c => [c.id, ...imgs.map(n => (c.images.includes(n) ? 1 : 0)), c.bytes, c.chunks, c.refs])
          ])
        )
      } else {
        process.stdout.write(csv([['image', ...s.images], ...s.images.map((n, i) => [n, ...s.matrix[i]!])]))
      }
      return 0
    }
    if (s.images.length === 0) {
      process.stderr.write('no images\n')
      return 0
    }
    const topNote = listed.length < s.clusters.length ? ` (top ${listed.length} by ${by})` : ''
    process.stdout.write(`${s.images.length} images, ${s.clusters.length} clusters${topNote}\n\n`)
    process.stdout.write(
      table([
        ['CLUSTER', 'BITSET', 'SIZE', 'CHUNKS', 'REFS', 'REDUNDANCY', 'IMAGES'],
        ...named.map(c => [
          c.id,
          c.bitset,
          bytes(c.bytes),
          String(c.chunks),
          String(c.refs),
          c.redundancy.toFixed(2),
          c.images.join(' ')
        ])
      ]) + '\n\n'
    )
    process.stdout.write('shared bytes (image x image):\n')
    process.stdout.write(table([['', ...s.images], ...s.images.map((n, i) => [n, ...s.matrix[i]!.map(bytes)])]) + '\n')
    return 0
  }
}
