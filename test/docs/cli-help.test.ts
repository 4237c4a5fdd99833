// Every command's --help names its section of docs/cli.md, and that section exists.
import test from 'ava'
import { spawnSync } from 'node:child_process'
import path from 'node:path'
import { ROOT, readPage } from './markdown.js'

const vmifs = (...args: string[]): string =>
  spawnSync(process.execPath, [path.join(ROOT, 'bin/vmifs.js'), ...args], { encoding: 'utf8' }).stdout

test('each command --help names its section of docs/cli.md', t => {
  const top = vmifs('--help')
  t.regex(top, /docs\/cli\.md/)
  const commands = [...(top.split('Commands:\n')[1] ?? '').matchAll(/^ {2}([a-z-]+) /gm)].map(m => m[1]!)
  t.true(commands.length >= 15, `commands listed: ${commands.join(' ')}`)
  const anchors = readPage('docs/cli.md').anchors
  for (const c of commands) {
    const ref = /docs\/cli\.md#([a-z0-9-]+)/.exec(vmifs(c, '--help'))?.[1]
    t.is(ref, `vmifs-${c}`, `vmifs ${c} --help names docs/cli.md#vmifs-${c}`)
    t.true(anchors.has(`vmifs-${c}`), `docs/cli.md has a section ## vmifs ${c}`)
  }
})
