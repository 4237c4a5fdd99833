#!/usr/bin/env node
// vmifs command line: one file per subcommand; this file dispatches and maps errors to exit codes
// (0 ok, 1 failure, 2 usage). Errors print "vmifs <cmd>: <message> [CODE]".
import { OUTCOMES, isVmifsError } from '../errors.js'
import type { Command } from './common.js'
import { command as importCmd } from './import.js'
import { command as lsCmd } from './ls.js'
import { command as exportCmd } from './export.js'
import { command as rmCmd } from './rm.js'
import { command as fsckCmd } from './fsck.js'
import { command as agentCmd } from './agent.js'
import { command as statsCmd } from './stats.js'
import { command as dashboardCmd } from './dashboard.js'
import { command as manifestCmd } from './manifest.js'
import { command as publishStoreCmd } from './publish-store.js'
import { command as hintCmd } from './hint.js'
import { command as similarityCmd } from './similarity.js'
import { command as planCmd } from './plan.js'
import { command as placeCmd } from './place.js'
import { command as replicateCmd } from './replicate.js'
import { command as policyCmd } from './policy.js'
import { command as installServiceCmd } from './install-service.js'
import { command as keyCmd } from './key.js'
import { command as hostCmd } from './host.js'
import { command as fleetCmd } from './fleet.js'
import { command as hostsCmd } from './hosts.js'
import { command as signCmd } from './sign.js'
import { command as namesCmd } from './names.js'

const COMMANDS: Command[] = [
  importCmd,
  signCmd,
  lsCmd,
  exportCmd,
  rmCmd,
  fsckCmd,
  agentCmd,
  installServiceCmd,
  statsCmd,
  dashboardCmd,
  manifestCmd,
  publishStoreCmd,
  namesCmd,
  hintCmd,
  similarityCmd,
  planCmd,
  placeCmd,
  replicateCmd,
  policyCmd,
  hostCmd,
  keyCmd,
  fleetCmd,
  hostsCmd
]

function usage(): string {
  return `Usage: vmifs <command> [options]     (vmifs <command> --help for each)

A lazy VM-image filesystem: images are chunked into a content-addressed cache and served
read-only through a FUSE mount.

Commands:
${COMMANDS.map(c => `  ${c.name.padEnd(Math.max(...COMMANDS.map(x => x.name.length)))}  ${c.summary}`).join('\n')}

Manual: README.md and docs/ (every command: docs/cli.md; config keys: docs/config.md;
.stats keys and metrics: docs/stats.md)
`
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage())
    return name === undefined ? 2 : 0
  }
  const cmd = COMMANDS.find(c => c.name === name)
  if (!cmd) {
    process.stderr.write(`vmifs: unknown command ${JSON.stringify(name)}\n\n${usage()}`)
    return 2
  }
  try {
    return await cmd.run(rest)
  } catch (err) {
    if (isVmifsError(err)) {
      process.stderr.write(`vmifs ${name}: ${err.message} [${err.code}]\n`)
      return OUTCOMES[err.code].exit
    }
    process.stderr.write(`vmifs ${name}: internal error: ${(err as Error).stack ?? String(err)}\n`)
    return OUTCOMES.INTERNAL.exit
  }
}

process.exitCode = await main(process.argv.slice(2))
