import path from 'node:path'
import { type Command, COMMON_HELP, parse, resolveConfig } from './common.js'
import { agentCall } from '../server/local-api.js'

export const command: Command = {
  name: 'stats',
  summary: "print the running agent's statistics",
  usage: `Usage: vmifs stats [--json]

Asks the agent running on the data dir (over <data-dir>/agent.sock) for the same snapshot the
mount's .stats file holds. Plain output is one "key value" line per statistic.

Options:
  --json    the snapshot as JSON
${COMMON_HELP}`,
  async run(argv) {
    const a = parse(this, argv, { json: { type: 'boolean' } }, false)
    if (!a) return 0
    const cfg = resolveConfig(a.values)
    const snap = await fetchStats(path.join(cfg.dataDir, 'agent.sock'))
    if (a.values.json === true) process.stdout.write(JSON.stringify(snap, null, 2) + '\n')
    else
      process.stdout.write(
        flatten(snap)
          .map(([k, v]) => `${k} ${v}`)
          .join('\n') + '\n'
      )
    return 0
  }
}

export async function fetchStats(socketPath: string): Promise<Record<string, unknown>> {
  return (await agentCall(socketPath, 'GET', '/v1/stats')) as Record<string, unknown>
}

export function flatten(o: unknown, prefix = ''): Array<[string, string]> {
  if (o === null || typeof o !== 'object') return [[prefix, String(o)]]
  return Object.entries(o as Record<string, unknown>).flatMap(([k, v]) => flatten(v, prefix ? `${prefix}.${k}` : k))
}
