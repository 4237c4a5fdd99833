// `vmifs hint export|import`: live-migration hints through the running agent's local API.
import fs from 'node:fs'
import path from 'node:path'
import { type Command, COMMON_HELP, parse, resolveConfig } from './common.js'
import { agentCall } from '../server/local-api.js'
import { VmifsError } from '../errors.js'
import { parseHint } from '../prefetch/hint.js'
import { writeFileAtomic } from '../util/files.js'

export const command: Command = {
  name: 'hint',
  summary: 'live-migration hints: export what a VM read, import to prefetch it first',
  usage: `Usage: vmifs hint export <image> [--out <file>] [--max <chunks>]
       vmifs hint import <file|->

export (on the migration source): asks the agent running on the data dir for the chunks of
<image> that the VMs on this host read, most recent first, and writes them as a JSON hint to
<file> (standard output without --out).
import (on the migration target): hands a hint to the agent running on the data dir; it fetches
those chunks before anything else its prefetcher has queued, in the hint's order, so the moved
VM's first reads are cache hits. Prints how many chunks were queued, already cached, or not part
of the image. The target must know the image (same digest) already.

Options:
  --out <file>     export: write the hint here (atomically)
  --max <chunks>   export: at most this many chunks (the most recent)
${COMMON_HELP}`,
  async run(argv) {
    const a = parse(this, argv, { out: { type: 'string' }, max: { type: 'string' } })
    if (!a) return 0
    const [verb, arg, ...extra] = a.positionals
    if ((verb !== 'export' && verb !== 'import') || arg === undefined || extra.length > 0) {
      throw VmifsError.usage(`hint takes "export <image>" or "import <file>"\n\n${this.usage}`)
    }
    const cfg = resolveConfig(a.values)
    const sock = path.join(cfg.dataDir, 'agent.sock')
    if (verb === 'export') {
      let q = `/v1/hint?image=${encodeURIComponent(arg)}`
      if (a.values.max !== undefined) {
        const max = Number(a.values.max)
        if (!Number.isInteger(max) || max <= 0)
          throw VmifsError.usage(`--max must be a positive integer, not ${JSON.stringify(a.values.max)}`)
        q += `&max=${max}`
      }
      const hint = parseHint(await agentCall(sock, 'GET', q))
      const text = JSON.stringify(hint) + '\n'
      if (typeof a.values.out === 'string') {
        writeFileAtomic(a.values.out, text)
        const bytes = hint.chunks.reduce((n, c) => n + c.size, 0)
        process.stderr.write(
          `${hint.image}: ${hint.chunks.length} chunks (${bytes} bytes) written to ${a.values.out}\n`
        )
      } else {
        process.stdout.write(text)
      }
      return 0
    }
    if (a.values.out !== undefined || a.values.max !== undefined)
      throw VmifsError.usage('--out and --max are for hint export')
    let raw: string
    try {
      raw = arg === '-' ? fs.readFileSync(0, 'utf8') : fs.readFileSync(arg, 'utf8')
    } catch (err) {
      throw new VmifsError('INPUT_NOT_FOUND', `cannot read ${arg}: ${(err as Error).message}`, { file: arg })
    }
    let json: unknown
    try {
      json = JSON.parse(raw)
    } catch {
      throw new VmifsError('HINT_INVALID', `not a valid vmifs hint: ${arg} is not JSON`)
    }
    const hint = parseHint(json)
    const r = (await agentCall(sock, 'POST', '/v1/hint', hint)) as {
      image: string
      queued: number
      cached: number
      unknown: number
    }
    process.stdout.write(JSON.stringify(r) + '\n')
    return 0
  }
}
