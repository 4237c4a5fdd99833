import path from 'node:path'
import { type Command, COMMON_HELP, parse, resolveConfig } from './common.js'
import { agentCall } from '../server/local-api.js'

export const command: Command = {
  name: 'dashboard',
  summary: "print a link to the running agent's web dashboard (a one-time login)",
  usage: `Usage: vmifs dashboard [--json]

Asks the agent running on the data dir (over <data-dir>/agent.sock) for a link to its web
dashboard: a loopback URL carrying a one-time login token, good for 10 minutes. Opening it trades
the token for a session cookie of that browser; run the command again for another browser. The
page shows, live, this host's images (cached share, hit rate, bytes by holder, prefetch precision
and recall over time), the fleet's hosts and what they hold, the similarity of the images with
their clusters, and the transfer plan of an image onto a host (docs/dashboard.md).

From another machine: an SSH tunnel to the port (ssh -L <port>:127.0.0.1:<port> <host>), or the
remote listener of config "dashboard" (its own token, in dashboard.tokenFile).

Options:
  --json    {url, remote, expiresAt} as JSON
${COMMON_HELP}`,
  async run(argv) {
    const a = parse(this, argv, { json: { type: 'boolean' } }, false)
    if (!a) return 0
    const cfg = resolveConfig(a.values)
    const r = (await agentCall(path.join(cfg.dataDir, 'agent.sock'), 'POST', '/v1/dashboard')) as {
      url: string
      remote: string | null
      expiresAt: string
    }
    if (a.values.json === true) process.stdout.write(JSON.stringify(r, null, 2) + '\n')
    else {
      process.stdout.write(`${r.url}\n`)
      process.stderr.write(
        `open it in a browser on this host before ${r.expiresAt} (it logs in once)` +
          (r.remote ? `; remote access: ${r.remote} with the token of dashboard.tokenFile` : '') +
          '\n'
      )
    }
    return 0
  }
}
