// README and docs/ are the user's manual: every relative link in them must lead somewhere, every
// anchor must be a heading of the page it names, and README stays a short entry.
import test from 'ava'
import fs from 'node:fs'
import path from 'node:path'
import { ROOT, docPages, readPage, type Page } from './markdown.js'

const pages = new Map<string, Page>()
const page = (file: string): Page => {
  let p = pages.get(file)
  if (!p) pages.set(file, (p = readPage(file)))
  return p
}

test('every relative link and anchor in README and docs/ resolves', t => {
  const broken: string[] = []
  let checked = 0
  for (const file of docPages()) {
    for (const { href, line } of page(file).links) {
      if (/^[a-z][a-z0-9+.-]*:/i.test(href)) continue // http:, https:, mailto: — not ours to check
      checked++
      const [target = '', anchor] = href.split('#', 2) as [string, string | undefined]
      const resolved = target === '' ? file : path.normalize(path.join(path.dirname(file), decodeURI(target)))
      const where = `${file}:${line} → ${href}`
      if (resolved.startsWith('..') || !fs.existsSync(path.join(ROOT, resolved))) {
        broken.push(`${where}: no such file ${resolved}`)
        continue
      }
      if (anchor === undefined) continue
      if (!resolved.endsWith('.md')) broken.push(`${where}: an anchor into a file that is not Markdown`)
      else if (!page(resolved).anchors.has(anchor)) broken.push(`${where}: ${resolved} has no heading #${anchor}`)
    }
  }
  t.deepEqual(broken, [])
  t.true(checked > 50, `only ${checked} relative links found: is the link parser still finding them?`)
})

test('README is the entry: at most 15 KB, starting with the two commands', t => {
  const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8')
  t.true(Buffer.byteLength(readme) <= 15_000, `README.md is ${Buffer.byteLength(readme)} bytes`)
  const block = /^# vmifs\n+```sh\n([^]*?)```/.exec(readme)?.[1] ?? ''
  t.deepEqual(
    block
      .trim()
      .split('\n')
      .map(l => l.split('#')[0]!.trim()),
    ['npm run demo', 'npm test']
  )
})

test('docs/ has the manual pages README links to', t => {
  const want = [
    'docs/cli.md',
    'docs/config.md',
    'docs/stats.md',
    'docs/protocol.md',
    'docs/metadata-table.md',
    'docs/chunking.md',
    'docs/operations.md',
    'docs/development.md',
    'docs/benchmarks/boot.md'
  ]
  const linked = new Set(
    page('README.md')
      .links.map(l => path.normalize(l.href.split('#')[0]!))
      .filter(h => h.startsWith('docs/'))
  )
  for (const f of want) {
    t.true(fs.existsSync(path.join(ROOT, f)), `${f} exists`)
    t.true(linked.has(f), `README links ${f}`)
  }
})
