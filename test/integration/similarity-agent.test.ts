// The running agent keeps the clusters up to date as images are imported and removed (by the CLI,
// in other processes); `vmifs similarity` then answers from it, and its answer equals a
// recomputation from the catalog.
import test from 'ava'
import fs from 'node:fs'
import path from 'node:path'
import { randomBytes } from 'node:crypto'
import { fixture, vmifs } from './harness.js'
import { agentCall } from '../../src/server/local-api.js'
import { CatalogClusters, type Similarity } from '../../src/planner/clusters.js'
import { DataDir } from '../../src/datadir.js'

/** A recomputation from the catalog, in the agent's image order. */
function recompute(data: string, order: string[]): Similarity {
  const dd = DataDir.open(data, { capacityBytes: 1 << 30 })
  try {
    const idx = new CatalogClusters()
    const rows = dd.catalog.listImages()
    idx.sync(
      order.map(n => rows.find(r => r.name === n)!),
      d => dd.catalog.manifest(d)
    )
    return idx.snapshot()
  } finally {
    dd.close()
  }
}

const norm = (s: Similarity): unknown => ({
  images: s.images,
  matrix: s.matrix,
  clusters: [...s.clusters].map(c => JSON.stringify(c)).sort()
})

test("the agent's clusters follow imports and removals and equal a recomputation", async t => {
  const f = fixture(t)
  await f.start()
  const sock = path.join(f.data, 'agent.sock')
  const KiB = 1024
  const blocks = Array.from({ length: 6 }, () => randomBytes(64 * KiB))
  const img = (name: string, parts: number[]): void => {
    const file = path.join(f.dir, `${name}.raw`)
    fs.writeFileSync(file, Buffer.concat(parts.map(i => blocks[i]!)))
    const r = vmifs([
      'import',
      file,
      '--name',
      name,
      '--chunking',
      'fixed',
      '--chunk-size',
      String(64 * KiB),
      '--data-dir',
      f.data
    ])
    t.is(r.code, 0, r.stderr)
  }
  const check = async (what: string, names: string[]): Promise<Similarity> => {
    const live = (await agentCall(sock, 'GET', '/v1/similarity')) as Similarity
    t.deepEqual([...live.images].sort(), [...names].sort(), what)
    t.deepEqual(norm(live), norm(recompute(f.data, live.images)), what)
    return live
  }
  img('a', [0, 1, 2])
  img('b', [1, 2, 3, 3])
  let s = await check('two images', ['a', 'b'])
  t.is(s.matrix[s.images.indexOf('a')]![s.images.indexOf('b')], 128 * KiB)
  img('c', [2, 4])
  s = await check('a third image splits clusters', ['a', 'b', 'c'])
  t.is(s.clusters.find(c => c.images.length === 3)!.bytes, 64 * KiB)
  t.is(vmifs(['rm', 'b', '--data-dir', f.data]).code, 0)
  await check('after a removal', ['a', 'c'])
  img('b', [5])
  s = await check('a name reused for other content', ['a', 'b', 'c'])
  t.is(s.matrix[s.images.indexOf('b')]![s.images.indexOf('a')], 0)
  // the CLI answers the same through the agent
  const cli = JSON.parse(vmifs(['similarity', '--json', '--top', '0', '--data-dir', f.data]).stdout) as Similarity
  t.deepEqual(cli.matrix, s.matrix)
  t.deepEqual(cli.images, s.images)
})
