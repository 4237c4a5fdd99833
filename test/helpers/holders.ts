// Real holders for tests of the chunk source: HTTP peer servers on loopback, each answering chunk
// requests from a function, and a chunk source on a local data dir whose metadata table says
// they hold a manifest whole.
import type { ExecutionContext } from 'ava'
import fs from 'node:fs'
import path from 'node:path'
import type { DataDir } from '../../src/datadir.js'
import { ChunkSource, type FetchPolicy } from '../../src/fetcher/source.js'
import { HolderDirectory } from '../../src/holders/directory.js'
import { FleetKeys, signedPage } from './fleet-keys.js'
import type { Manifest } from '../../src/manifests/manifest.js'
import { importImage } from '../../src/manifests/import.js'
import { PeerServer } from '../../src/server/peer-server.js'
import { Stats } from '../../src/stats/stats.js'
import { createLogger } from '../../src/util/log.js'
import { openDataDir, tmpDir } from './tmp.js'
import { randomBuffer } from './random.js'

export const TOKEN = 'holders-test'

/** A data dir holding an image of `chunks` random chunks of `chunkSize` (fixed chunking): what a holder serves. */
export async function remoteImage(
  t: ExecutionContext,
  chunks: number,
  chunkSize: number,
  seed: number
): Promise<{ remote: DataDir; img: Buffer; m: Manifest }> {
  const remote = openDataDir(t)
  const img = randomBuffer(chunks * chunkSize, seed)
  const file = path.join(tmpDir(t), 'img.raw')
  fs.writeFileSync(file, img)
  const { manifest: m } = await importImage(remote, file, { name: 'img', chunking: { kind: 'fixed', chunkSize } })
  return { remote, img, m }
}

/**
 * A peer server answering chunk requests with `read` (null: not held); its URL. `served` is told
 * when a request is answered (after `read` was called for each of its chunks).
 */
export async function holderServer(
  t: ExecutionContext,
  read: (hash: string) => Promise<Buffer | null>,
  served: () => void = () => {}
): Promise<string> {
  const s = new PeerServer(
    { host: '127.0.0.1', port: 0, token: TOKEN },
    {
      hostId: 'holder',
      readChunk: read,
      manifest: () => null,
      facts: () => ({ facts: [], complete: {} }),
      metrics: () => Promise.resolve({ contentType: 'text/plain', body: '' }),
      served,
      compressed: () => {}
    },
    createLogger('test', 'silent')
  )
  await s.listen()
  t.teardown(async () => {
    await s.close()
  })
  return `http://127.0.0.1:${s.port}`
}

/**
 * A chunk source on `local` that fetches from `holders` (each announced as holding all of `m`,
 * which goes into local's catalog as image `name`); prices order them (lowest first).
 */
export function sourceFor(
  t: ExecutionContext,
  local: DataDir,
  m: Manifest,
  holders: Array<{ id: string; url: string; price: number }>,
  policies?: Partial<Record<'demand' | 'ahead' | 'prefetch' | 'replicate', FetchPolicy>>
): { source: ChunkSource; stats: Stats } {
  local.catalog.addImage('img', m, { pinned: false, replace: false })
  const keys = new FleetKeys()
  const facts = keys.store(local.db, 'me')
  facts.apply(
    signedPage(
      keys,
      holders.flatMap(h => [
        { origin: h.id, key: 'host', value: { endpoint: h.url, price: h.price } },
        { origin: h.id, key: `hold/${m.digest()}`, value: { ranges: [[0, m.count]] } }
      ])
    )
  )
  const directory = new HolderDirectory(facts, local.catalog, 'me')
  const stats = new Stats()
  const demand = { alpha: 1, hedge: true }
  const background = { alpha: 0, hedge: false }
  const source = new ChunkSource(local.store, stats, createLogger('test', 'silent'), 64 * 1024 * 1024, {
    directory,
    token: TOKEN,
    sigma: 0,
    timeoutMs: 10_000,
    deadlineMs: 20_000,
    policies: { demand, ahead: demand, prefetch: background, replicate: background, ...policies }
  })
  t.teardown(async () => {
    await source.close()
  })
  return { source, stats }
}
