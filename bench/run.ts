// `npm run bench -- <name> [args]` runs bench/<name>.ts (built to dist/bench/<name>.js).
import path from 'node:path'
import fs from 'node:fs'
import { fileURLToPath, pathToFileURL } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
const names = fs
  .readdirSync(here)
  .filter(f => f.endsWith('.js') && f !== 'run.js')
  .map(f => f.slice(0, -3))
  .sort()
const [name, ...args] = process.argv.slice(2)
if (name === undefined || !names.includes(name)) {
  console.error(`usage: npm run bench -- <name> [args]\nbenchmarks: ${names.join(', ')}`)
  process.exit(name === undefined ? 0 : 2)
}
const mod = (await import(pathToFileURL(path.join(here, `${name}.js`)).href)) as {
  main: (args: string[]) => Promise<void>
}
await mod.main(args)
