// What the agent emits is what docs/stats.md documents: every `.stats` key of a fleet host that
// fetched from a peer and of the peer that served it, and every /metrics metric, by name.
import test from 'ava'
import fs from 'node:fs'
import path from 'node:path'
import { request } from 'undici'
import { readPage } from '../docs/markdown.js'
import { Fleet, TOKEN } from './fleet.js'
import { makeImage, run, vmifs } from './harness.js'

/** Leaf keys of a JSON value as dotted paths; map keys named in `maps` become placeholders. */
function leafKeys(v: unknown, maps: Record<string, string>, at: string[] = []): string[] {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return [at.join('.')]
  const placeholder = maps[at.join('.')]
  return Object.entries(v).flatMap(([k, x]) => leafKeys(x, maps, [...at, placeholder ?? k]))
}

const MAPS = {
  'fetch.byHolder': '<hostId>',
  images: '<name>',
  'images.<name>.fetch.byHolder': '<hostId>',
  'fleet.links': '<hostId>',
  'fleet.cursors': '<hostId>'
}

test.serial('every .stats key and /metrics metric of a fleet host is in docs/stats.md', async t => {
  const f = await Fleet.create(t, ['a', 'b'])
  await f.start('a', { peers: ['b'] })
  await f.start('b', { peers: ['a'] })
  const img = path.join(f.dir, 'disk.raw')
  makeImage(img, 4)
  t.is(vmifs(['import', img, '--name', 'disk', '--data-dir', f.host('a').data]).code, 0)
  await f.waitFor('the image on b', () => fs.existsSync(f.image('b', 'disk')))
  t.is(run('cmp', [img, f.image('b', 'disk')]).status, 0)
  const statsB = f.stats('b') as { fetch: { byHolder: Record<string, unknown> } }
  t.truthy(statsB.fetch.byHolder.a, 'b fetched from a, so the per-holder keys are there')
  const emitted = new Set([...leafKeys(f.stats('a'), MAPS), ...leafKeys(statsB, MAPS)])
  const cli = JSON.parse(vmifs(['stats', '--json', '--data-dir', f.host('b').data]).stdout) as unknown
  for (const k of leafKeys(cli, MAPS)) emitted.add(k)
  t.true(emitted.has('images.<name>.hitRate') && emitted.has('fetch.byHolder.<hostId>.p99Ms'))

  const res = await request(`${f.url('a')}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } })
  t.is(res.statusCode, 200)
  const metrics = [...(await res.body.text()).matchAll(/^# TYPE (\S+) /gm)].map(m => m[1]!)
  t.true(metrics.length > 10)

  // the per-image figures of /metrics are the per-image figures of .stats
  const onB = await request(`${f.url('b')}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } })
  const text = await onB.body.text()
  const value = (series: string): number =>
    Number(new RegExp(`^${series.replace(/[{}]/g, '\\$&')} (\\S+)$`, 'm').exec(text)?.[1])
  const disk = f.stats('b').images.disk!
  t.true(disk.fetch.byHolder.a! > 0)
  t.is(value('vmifs_image_fetch_holder_bytes_total{image="disk",holder="a"}'), disk.fetch.byHolder.a!)
  t.is(value('vmifs_image_unique_bytes{image="disk"}'), disk.uniqueBytes)
  t.is(value('vmifs_image_cached_bytes{image="disk"}'), disk.cachedBytes)

  const code = [...readPage('docs/stats.md').code]
  const documented = (name: string): boolean => code.some(c => c === name || c.startsWith(`${name}{`))
  t.deepEqual([...emitted].filter(k => !documented(k)).sort(), [], '.stats keys missing from docs/stats.md')
  t.deepEqual(metrics.filter(m => !documented(m)).sort(), [], 'metrics missing from docs/stats.md')
})
