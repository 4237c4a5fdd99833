import test from 'ava'
import fs from 'node:fs'
import path from 'node:path'
import { randomBytes } from 'node:crypto'
import { Ajv2020, type SchemaObject } from 'ajv/dist/2020.js'
import { decode, fromJson, ManifestBuilder, type ManifestJson } from '../../src/manifests/manifest.js'
import { createChunker } from '../../src/manifests/chunker.js'
import { blake3 } from '../../src/util/hash.js'
import { readManifestFile } from '../../src/cli/manifest.js'
import type { VmifsError } from '../../src/errors.js'

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../..')
const schema = JSON.parse(fs.readFileSync(path.join(root, 'manifests/manifest.schema.json'), 'utf8')) as SchemaObject
const validate = new Ajv2020({ strict: true }).compile(schema)
/** manifests/example.json (it records its digest) */
type Example = ManifestJson & { digest: string }
const example = (): Example => JSON.parse(fs.readFileSync(path.join(root, 'manifests/example.json'), 'utf8')) as Example

test('the example in manifests/ is valid: schema, rules, and its binary twin has the same digest', t => {
  const json = example()
  t.true(validate(json), JSON.stringify(validate.errors))
  const m = fromJson(json)
  const bin = fs.readFileSync(path.join(root, 'manifests/example.vmim'))
  t.is(decode(bin).digest(), m.digest())
  t.is(blake3(bin).toString('hex'), json.digest)
  t.true(m.encode().equals(bin))
  t.is(readManifestFile(path.join(root, 'manifests/example.json')).digest(), json.digest)
})

test('manifests written by the chunkers match the JSON Schema', t => {
  const data = Buffer.concat([randomBytes(300_000), Buffer.alloc(200_000), randomBytes(123_457)])
  for (const c of [
    { kind: 'fixed', chunkSize: 65536 },
    { kind: 'cdc', min: 4096, avg: 16384, max: 65536 }
  ] as const) {
    const ch = createChunker(c)
    const b = new ManifestBuilder(c)
    b.addRun(ch.push(data))
    b.addRun(ch.finish())
    const json = b.build().toJson()
    t.true(validate(json), JSON.stringify(validate.errors))
  }
})

test('the schema rejects what the reader rejects for shape: bad hash, extra keys, wrong kind', t => {
  const json = example()
  // Object.assign: ManifestJson's type rules these edits out
  const bad1 = structuredClone(json)
  Object.assign(bad1.chunks[0]!, { hash: 'ab' })
  const bad2 = structuredClone(json)
  Object.assign(bad2, { extra: 1 })
  const bad3 = structuredClone(json)
  Object.assign(bad3.chunking, { kind: 'rabin' })
  for (const b of [bad1, bad2, bad3]) t.false(validate(b))
  t.is(t.throws<VmifsError>(() => fromJson(bad1))?.code, 'MANIFEST_BAD_HASH_SIZE')
})
