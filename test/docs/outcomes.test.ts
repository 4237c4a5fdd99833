// The table of error outcomes in docs/errors.md is the code's (OUTCOMES), row for row.
import test from 'ava'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { OUTCOMES } from '../../src/errors.js'
import { ROOT } from './markdown.js'

test('docs/errors.md lists every code with the outcome the code gives it', t => {
  const text = fs.readFileSync(path.join(ROOT, 'docs/errors.md'), 'utf8')
  const section = text.slice(text.indexOf('## Outcomes'))
  const name = new Map(Object.entries(os.constants.errno).map(([k, v]) => [v, k]))
  const documented = new Map<string, string>()
  for (const m of section.matchAll(/^\| `([A-Z_]+)` \| (\w+) \| (\d+) \| (\d+) \| (yes|no) \|$/gm))
    documented.set(m[1]!, `${m[2]} ${m[3]} ${m[4]} ${m[5]}`)
  const expected = new Map(
    Object.entries(OUTCOMES).map(([c, o]) => [
      c,
      `${name.get(o.errno)} ${o.http} ${o.exit} ${o.retryable ? 'yes' : 'no'}`
    ])
  )
  t.deepEqual([...documented.entries()].sort(), [...expected.entries()].sort())
  for (const o of Object.values(OUTCOMES)) t.true(o.http >= 400 && o.http < 600)
})
