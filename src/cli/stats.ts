import path from 'node:path'
import { Client } from 'undici'
import { type Command, COMMON_HELP, parse, resolveConfig } from './common.js'
import { type ErrorCode, VmifsError } from '../errors.js'

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

/**
 * One call to the local API of the agent on this data dir. An answer with an error code is
 * thrown as that VmifsError; no answer at all is AGENT_NOT_RUNNING.
 */
export async function agentCall(
  socketPath: string,
  method: 'GET' | 'POST',
  pathAndQuery: string,
  body?: unknown,
  o: { untimed?: boolean } = {}
): Promise<unknown> {
  // untimed: a call that runs as long as its work does (replicate), not undici's 5-minute default
  const client = new Client('http://localhost', {
    socketPath,
    ...(o.untimed === true ? { headersTimeout: 0, bodyTimeout: 0 } : {})
  })
  try {
    let res
    try {
      res = await client.request({
        path: pathAndQuery,
        method,
        body: body === undefined ? undefined : JSON.stringify(body),
        headers: body === undefined ? {} : { 'content-type': 'application/json' }
      })
    } catch (err) {
      throw new VmifsError(
        'AGENT_NOT_RUNNING',
        `no agent answers on ${socketPath} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
        { socket: socketPath }
      )
    }
    const answer = (await res.body.json()) as Record<string, unknown>
    if (res.statusCode !== 200) {
      const code =
        typeof answer.error === 'string' && answer.error !== 'NOT_FOUND' && answer.error !== 'INTERNAL'
          ? (answer.error as ErrorCode)
          : 'AGENT_NOT_RUNNING'
      throw new VmifsError(
        code,
        typeof answer.message === 'string' ? answer.message : `agent answered ${res.statusCode}`
      )
    }
    return answer
  } finally {
    await client.close()
  }
}

export function flatten(o: unknown, prefix = ''): Array<[string, string]> {
  if (o === null || typeof o !== 'object') return [[prefix, String(o)]]
  return Object.entries(o as Record<string, unknown>).flatMap(([k, v]) => flatten(v, prefix ? `${prefix}.${k}` : k))
}
