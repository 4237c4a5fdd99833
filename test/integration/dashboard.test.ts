// The web dashboard against a real fleet of three agents, in Debian's Chromium driven by
// playwright-core: the one-time login, the figures the page shows against `vmifs stats --json`,
// `vmifs similarity --json` and `vmifs plan --json`, the holdings of another host, and the remote
// listener's own token. A screenshot of the page is kept in artifacts/dashboard.png.
import test from 'ava'
import fs from 'node:fs'
import http from 'node:http'
import path from 'node:path'
import { randomBytes } from 'node:crypto'
import { type Browser, type Page, chromium } from 'playwright-core'
import { Fleet, TOKEN } from './fleet.js'
import { ROOT, makeImage, run, sleep, vmifs } from './harness.js'

/** The page script's global of the charts' samples (web/dashboard/app.js). */
declare const samples: unknown[]

const CHROMIUM = '/usr/bin/chromium'
// as root, with no network but loopback: no sandbox, no calls home
const ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync'
]

function json<T>(args: string[]): T {
  const r = vmifs(args)
  if (r.code !== 0) throw new Error(`vmifs ${args.join(' ')}: ${r.stderr}`)
  return JSON.parse(r.stdout) as T
}

/** The status of a GET (node:http: fetch() does not let a caller set Host). */
function statusOf(url: string, headers: Record<string, string> = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    http
      .get(url, { headers }, res => {
        res.resume()
        resolve(res.statusCode ?? 0)
      })
      .on('error', reject)
  })
}

interface ImageFigures {
  size: number
  cachedBytes: number
  cachedShare: number
  hitRate: number
  readOps: number
  fetch: { bytes: number; byHolder: Record<string, number> }
  prefetch: { precision: number; recall: number }
  modelSessions: number
}

/** The figures of the page's images table, by image: data-value of each cell. */
async function shownImages(page: Page): Promise<Record<string, Record<string, string>>> {
  return await page.evaluate(() => {
    const out: Record<string, Record<string, string>> = {}
    for (const tr of document.querySelectorAll('#images tr[data-image]')) {
      const row: Record<string, string> = {}
      for (const td of tr.querySelectorAll('[data-key]'))
        row[td.getAttribute('data-key')!] = td.getAttribute('data-value') ?? ''
      out[tr.getAttribute('data-image')!] = row
    }
    return out
  })
}

/** The same figures, as `vmifs stats --json` has them. */
function expected(images: Record<string, ImageFigures>): Record<string, Record<string, string>> {
  const out: Record<string, Record<string, string>> = {}
  for (const [name, im] of Object.entries(images))
    out[name] = {
      size: String(im.size),
      cachedBytes: String(im.cachedBytes),
      cachedShare: String(im.cachedShare),
      hitRate: String(im.hitRate),
      readOps: String(im.readOps),
      fetchBytes: String(im.fetch.bytes),
      byHolder: JSON.stringify(im.fetch.byHolder),
      precision: String(im.prefetch.precision),
      recall: String(im.prefetch.recall),
      modelSessions: String(im.modelSessions)
    }
  return out
}

test.serial('the dashboard shows a real fleet live in Chromium, the same figures as the commands', async t => {
  t.timeout(150_000)
  const f = await Fleet.create(t, ['a', 'b', 'c'])
  const base = path.join(f.dir, 'base.raw')
  const img = makeImage(base, 9)
  // a sibling: the same image with a tenth of its first third changed
  const sib = Buffer.from(img)
  randomBytes(300 * 1024).copy(sib, 64 * 1024)
  fs.writeFileSync(path.join(f.dir, 'sib.raw'), sib)
  t.is(vmifs(['import', base, '--name', 'base', '--data-dir', f.host('a').data]).code, 0)
  t.is(vmifs(['import', path.join(f.dir, 'sib.raw'), '--name', 'sib', '--data-dir', f.host('a').data]).code, 0)
  const remoteToken = randomBytes(24).toString('hex')
  const tokenFile = path.join(f.dir, 'dashboard-token')
  fs.writeFileSync(tokenFile, `${remoteToken}\n`, { mode: 0o600 })
  await f.start('a')
  await f.start('b', { peers: ['a'] })
  await f.start('c', { peers: ['a', 'b'], config: { dashboard: { listen: '127.0.0.1:0', tokenFile } } })
  await f.waitFor('the images on c', () => fs.existsSync(f.image('c', 'sib')))
  // c reads all of base (from a) and the start of sib; b reads base too
  t.is(run('cmp', [base, f.image('c', 'base')]).status, 0)
  t.is(run('dd', [`if=${f.image('c', 'sib')}`, 'of=/dev/null', 'bs=64k', 'count=16', 'status=none']).status, 0)
  t.is(run('cmp', [base, f.image('b', 'base')]).status, 0)
  await f.synced('c', 'b')

  const link = json<{ url: string; remote: string; expiresAt: string }>([
    'dashboard',
    '--json',
    '--data-dir',
    f.host('c').data
  ])
  t.regex(link.url, /^http:\/\/127\.0\.0\.1:\d+\/\?token=[\w-]{32}$/)
  t.regex(link.remote, /^http:\/\/127\.0\.0\.1:\d+$/)
  const origin = new URL(link.url).origin
  // nothing without a session; a request for another Host is refused (DNS rebinding)
  t.is(await statusOf(`${origin}/api/state`), 401)
  t.is(await statusOf(`${origin}/`), 401)
  t.is(await statusOf(`${origin}/api/state`, { host: `evil.example:${new URL(origin).port}` }), 421)
  // the remote listener: its own token only, never the fleet token
  t.is(await statusOf(`${link.remote}/api/state`, { authorization: `Bearer ${TOKEN}` }), 401)
  const remote = await fetch(`${link.remote}/api/state`, { headers: { authorization: `Bearer ${remoteToken}` } })
  t.is(remote.status, 200)
  t.is(((await remote.json()) as { hostId: string }).hostId, 'c')

  const browser: Browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, headless: true })
  t.teardown(async () => await browser.close())
  const ctx = await browser.newContext({ viewport: { width: 1400, height: 1000 } })
  const page = await ctx.newPage()
  const errors: string[] = []
  page.on('pageerror', e => errors.push(e.stack ?? e.message))
  page.on('console', m => {
    if (m.type() === 'error') errors.push(m.text())
  })
  await page.goto(link.url)
  t.is(new URL(page.url()).search, '', 'the token left the address bar')
  await page.waitForSelector('#live.on', { timeout: 20_000 })
  t.is(await page.textContent('#host'), 'c')

  // the images table equals `vmifs stats --json` (once both have settled: cached bytes are
  // counted at most every 5 s)
  let shown: Record<string, Record<string, string>> = {}
  let want: Record<string, Record<string, string>> = {}
  for (let i = 0; i < 100; i++) {
    want = expected(
      json<{ images: Record<string, ImageFigures> }>(['stats', '--json', '--data-dir', f.host('c').data]).images
    )
    shown = await shownImages(page)
    if (JSON.stringify(shown) === JSON.stringify(want)) break
    await sleep(300)
  }
  t.deepEqual(shown, want)
  const stats = json<{ images: Record<string, ImageFigures>; fetch: { byHolder: Record<string, { bytes: number }> } }>([
    'stats',
    '--json',
    '--data-dir',
    f.host('c').data
  ])
  t.true(stats.images.base!.fetch.byHolder.a! > 0, 'c fetched base from a')
  t.is(stats.images.base!.cachedShare, 1)
  // bytes by holder: the holders table shows each holder's bytes
  const holders = await page.$$eval('#holders tr[data-holder]', rows =>
    rows.map((r): [string, string] => [
      r.getAttribute('data-holder') ?? '',
      r.querySelector('[data-key=bytes]')?.getAttribute('data-value') ?? ''
    ])
  )
  t.deepEqual(
    Object.fromEntries(holders),
    Object.fromEntries(Object.entries(stats.fetch.byHolder).map(([h, v]) => [h, String(v.bytes)]))
  )
  // the visible text is the figure too
  t.is((await page.textContent('#images tr[data-image=base] [data-key=cachedShare]'))!.trim(), '100.0 %')

  // hosts and holdings: a holds every byte of both images; c (this host) all of base
  await page.waitForSelector('#hosts tr[data-host=a]')
  const held = await page.$$eval('#holdings tr[data-host] td[data-image]', tds =>
    tds.map(td => [
      td.closest('tr')!.getAttribute('data-host'),
      td.getAttribute('data-image'),
      Number(td.getAttribute('data-value'))
    ])
  )
  const data = (n: string): number => {
    const m = json<{ chunks: Array<{ hash?: string; length: number }> }>([
      'manifest',
      n,
      '--data-dir',
      f.host('a').data
    ])
    return [...new Map(m.chunks.filter(c => c.hash).map(c => [c.hash, c.length])).values()].reduce((s, l) => s + l, 0)
  }
  t.deepEqual(
    held.filter(([h]) => h === 'a').map(([, n, v]) => [n, v]),
    [
      ['base', data('base')],
      ['sib', data('sib')]
    ]
  )
  t.true(held.some(([h, n, v]) => h === 'c' && n === 'base' && v === stats.images.base!.cachedBytes))

  // the heatmap: one cell per pair, each the bytes `vmifs similarity` says they share
  const sim = json<{ images: string[]; matrix: number[][] }>(['similarity', '--json', '--data-dir', f.host('c').data])
  const cells = await page.$$eval('#heatmap rect[data-a]', rs =>
    rs.map(r => [r.getAttribute('data-a'), r.getAttribute('data-b'), Number(r.getAttribute('data-value'))])
  )
  t.is(cells.length, sim.images.length ** 2)
  for (const [a, b, v] of cells) t.is(v, sim.matrix[sim.images.indexOf(a as string)]![sim.images.indexOf(b as string)])
  const shared = sim.matrix[sim.images.indexOf('base')]![sim.images.indexOf('sib')]!
  t.true(shared > 0 && shared < sim.matrix[sim.images.indexOf('sib')]![sim.images.indexOf('sib')]!)

  // a transfer plan drawn: sib onto b, from the donors `vmifs plan` names
  await page.selectOption('#plan-image', 'sib')
  await page.selectOption('#plan-to', 'b')
  await page.click('#plan-form button')
  await page.waitForSelector('#plan rect[data-method=lp]', { timeout: 30_000 })
  const drawn = await page.$$eval('#plan rect[data-method=lp]', rs =>
    rs.map(r => [r.getAttribute('data-donor'), Number(r.getAttribute('data-value'))])
  )
  const plan = json<{ plan: { shares: Array<{ donor: string; bytes: number }> } }>([
    'plan',
    'sib',
    '--to',
    'b',
    '--json',
    '--data-dir',
    f.host('c').data,
    '--host-id',
    'c'
  ])
  t.deepEqual(
    drawn,
    plan.plan.shares.map(s => [s.donor, s.bytes])
  )

  // the charts are drawn and gain a point with each event (events after the first carry the
  // latest sample only); the page logged no error
  const points = async (): Promise<number> => await page.evaluate(() => samples.length)
  const before = await points()
  await page.waitForFunction(n => samples.length >= n + 2, before, { timeout: 20_000 })
  t.deepEqual(errors, [])
  // a plan for a host nobody knows answers its code (the browser logs the 404)
  const bad = await page.evaluate(async () => {
    const r = await fetch('/api/plan?image=sib&to=nohost')
    return { status: r.status, body: (await r.json()) as { error: string; message: string } }
  })
  t.is(bad.status, 404)
  t.is(bad.body.error, 'HOST_NOT_FOUND')
  t.regex(bad.body.message, /^no host "nohost"/)

  t.is(await page.locator('#chart-host canvas, #chart-image canvas').count(), 2)
  const artifacts = path.join(ROOT, 'artifacts')
  fs.mkdirSync(artifacts, { recursive: true })
  const shot = path.join(artifacts, 'dashboard.png')
  await page.screenshot({ path: shot, fullPage: true })
  t.true(fs.statSync(shot).size > 10_000)
  t.log(`screenshot: ${shot}`)

  // the login link was for one browser: used, it logs nobody else in
  const other = await browser.newContext()
  const again = await other.request.get(link.url, { maxRedirects: 0 })
  t.is(again.status(), 401)
  await other.close()
})
