// Every key the config file may hold (the schema the agent and the CLI parse it with) is
// documented in docs/config.md, by its full dotted path in backticks.
import test from 'ava'
import type { z } from 'zod'
import { CONFIG_FILE } from '../../src/config.js'
import { readPage } from './markdown.js'

/** Map keys in docs/config.md are written as placeholders. */
const PLACEHOLDER: Record<string, string> = {
  links: '<hostId>',
  policies: '<image>',
  originHeaders: '<header>',
  hosts: '<hostId>',
  publishers: '<prefix>'
}

/** The leaf keys of a schema, as dotted paths. */
function keys(s: z.core.$ZodType, at: string[] = []): string[] {
  const def = s._zod.def
  switch (def.type) {
    case 'optional':
    case 'nullable':
    case 'default':
      return keys((def as z.core.$ZodOptionalDef).innerType, at)
    case 'object': {
      const shape = (def as z.core.$ZodObjectDef).shape
      return Object.entries(shape).flatMap(([k, v]) => keys(v, [...at, k]))
    }
    case 'record': {
      const name = at.at(-1) ?? ''
      return keys((def as z.core.$ZodRecordDef).valueType, [...at, PLACEHOLDER[name] ?? `<${name}>`])
    }
    case 'union':
      return [...new Set((def as z.core.$ZodUnionDef).options.flatMap(o => keys(o, at)))]
    default:
      return [at.join('.')]
  }
}

test('every config file key is in docs/config.md', t => {
  const all = keys(CONFIG_FILE)
  t.true(all.includes('fetch.deadlineMs') && all.includes('links.<hostId>.bandwidth') && all.includes('chunking.avg'))
  const documented = readPage('docs/config.md').code
  t.deepEqual(
    all.filter(k => !documented.has(k)),
    [],
    'keys missing from docs/config.md'
  )
})
