import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { type Command, COMMON_HELP, parse, resolveConfig } from './common.js'
import { Agent } from '../agent.js'
import { createLogger } from '../util/log.js'
import { logFault } from '../util/guard.js'
import { VmifsError } from '../errors.js'
import { parseListen, parseMetadataUrl, parseUrl } from '../config.js'
import { ServiceManager } from '../util/systemd.js'

/** The descriptor a --background parent reads the ready line from. */
const READY_FD_ENV = 'VMIFS_READY_FD'

const SHUTDOWN_DEADLINE_MS = 15_000

export const command: Command = {
  name: 'agent',
  summary: 'mount the image filesystem and serve it until stopped',
  usage: `Usage: vmifs agent --mount <dir> [options]

Mounts the read-only image filesystem at <dir>:
  <dir>/images/<name>        every image, read-only
  <dir>/by-digest/<digest>   the same files by manifest digest
  <dir>/.stats               JSON statistics, fresh on every open
Prints one JSON line {"event":"ready",...} on standard output once mounted. SIGTERM or SIGINT
unmount cleanly (a second signal exits at once). Logs are JSON lines on standard error
(VMIFS_LOG_LEVEL=debug|info|warn).

Restarts that readers never see: the mount's FUSE connection is kept by a small holder process
(<data-dir>/fuse.sock) that outlives the agent. After a crash or kill -9, reads wait, and the same
command started again takes the connection and answers them (requests the dead agent had read are
resent by the kernel). --takeover starts a new agent beside the running one, which hands the live
mount over and exits 0 (an upgrade without unmounting: open files stay open). A mountpoint left
dead (no holder) is detached and mounted afresh. --background returns once the new agent serves
the mount, leaving it running (what a service manager's reload needs).

Under systemd (the unit: vmifs install-service), the agent reports READY=1 once the mount is
served, its PID as the unit's main process after a takeover, and WATCHDOG=1 at half of
WatchdogSec.

Fleet mode (any of --listen, --peer, --origin, --metadata): images published by any host appear in the
mount; a chunk this host lacks is fetched from the cheapest holder named by the fleet's metadata
table (kept in sync with the peers), verified, cached and announced. The fleet secret comes from
VMIFS_TOKEN or "token" in the config file; every peer request carries it.

Options:
  --mount <dir>        where to mount (must exist and be empty)
  --host-id <id>       this host's id in the fleet and in stats (default: the hostname)
  --listen <host:port> serve peers (chunks, manifests, metadata, /metrics) on this address
  --advertise <url>    the URL others reach this host at (default http://<listen host>:<port>)
  --peer <url>         a peer to sync the metadata table with (repeatable)
  --origin <url>       an origin store (vmifs publish-store), the holder of last resort
  --metadata <url>     keep the metadata table in a Redis engine the fleet shares instead of
                       syncing it with peers: redis://[user@]host:port, or
                       redis+sentinel://host:port[,host:port…]/<primary name>; the password from
                       VMIFS_METADATA_PASSWORD or the file "metadataPasswordFile" names
  --takeover           take the live mount over from the agent running on this data dir
  --background         start the agent detached; exit 0 once it serves the mount, 1 if it fails
${COMMON_HELP}`,
  async run(argv) {
    const a = parse(
      this,
      argv,
      {
        mount: { type: 'string' },
        'host-id': { type: 'string' },
        listen: { type: 'string' },
        peer: { type: 'string', multiple: true },
        origin: { type: 'string' },
        advertise: { type: 'string' },
        metadata: { type: 'string' },
        takeover: { type: 'boolean' },
        background: { type: 'boolean' }
      },
      false
    )
    if (!a) return 0
    if (typeof a.values.mount !== 'string') throw VmifsError.usage(`--mount is required\n\n${this.usage}`)
    if (a.values.background === true) return await background(argv.filter(x => x !== '--background'))
    const config = resolveConfig(a.values)
    if (typeof a.values['host-id'] === 'string') config.hostId = a.values['host-id']
    if (typeof a.values.listen === 'string') config.fleet.listen = parseListen(a.values.listen, '--listen')
    if (a.values.peer !== undefined)
      config.fleet.peers = [...config.fleet.peers, ...a.values.peer.map(p => parseUrl(p, '--peer'))]
    if (typeof a.values.origin === 'string') config.fleet.origin = parseUrl(a.values.origin, '--origin')
    if (typeof a.values.advertise === 'string') config.fleet.advertise = parseUrl(a.values.advertise, '--advertise')
    if (typeof a.values.metadata === 'string') config.fleet.metadata = parseMetadataUrl(a.values.metadata, '--metadata')
    const log = createLogger('vmifs-agent')
    // the last net under every background step's own: a promise nobody waited for that failed is
    // logged, and the agent (and the mount's readers) go on
    process.on('unhandledRejection', err => logFault(log, 'a background step', err))
    const service = new ServiceManager()
    const agent = new Agent({
      config,
      mountpoint: path.resolve(a.values.mount),
      log,
      takeover: a.values.takeover === true,
      onTakingOver: () => service.takingOver()
    })
    let stopping: Promise<void> | undefined
    let stopped!: (p: Promise<void>) => void
    const done = new Promise<void>(resolve => {
      stopped = resolve
    }) // settles with agent.close()
    const stop = (signal: string): void => {
      if (stopping) {
        log.warn({ signal }, 'second signal: exiting now')
        process.exit(130)
      }
      log.info({ signal }, 'stopping')
      // handing over is a reload: the successor is the unit's main process already
      if (signal !== 'takeover') service.stopping()
      const deadline = setTimeout(() => {
        log.error('shutdown deadline passed: exiting')
        process.exit(1)
      }, SHUTDOWN_DEADLINE_MS)
      deadline.unref()
      stopping = agent.close()
      stopped(stopping)
    }
    agent.onHandover = () => stop('takeover')
    process.on('SIGTERM', () => stop('SIGTERM'))
    process.on('SIGINT', () => stop('SIGINT'))
    await agent.ready()
    const ready =
      JSON.stringify({
        event: 'ready',
        mount: agent.mountpoint,
        dataDir: config.dataDir,
        hostId: config.hostId,
        endpoint: agent.endpoint ?? null,
        pid: process.pid
      }) + '\n'
    process.stdout.write(ready)
    service.ready(`serving ${agent.mountpoint}`)
    service.startWatchdog()
    const readyFd = Number(process.env[READY_FD_ENV])
    if (Number.isInteger(readyFd) && readyFd > 2) {
      delete process.env[READY_FD_ENV]
      fs.writeSync(readyFd, ready)
      fs.closeSync(readyFd)
    }
    await done
    return 0
  }
}

/**
 * --background: the same agent command in a detached child (its own session; stdout and stderr
 * shared with this process, so a service manager's journal gets its logs), returning once the
 * child serves the mount: its ready line comes back on a pipe of its own. Exit 1 if it fails.
 */
async function background(argv: string[]): Promise<number> {
  const child = spawn(process.execPath, [process.argv[1]!, 'agent', ...argv], {
    detached: true,
    stdio: ['ignore', 'inherit', 'inherit', 'pipe'],
    env: { ...process.env, [READY_FD_ENV]: '3' }
  })
  const pipe = child.stdio[3] as NodeJS.ReadableStream
  let line = ''
  const ready = await new Promise<boolean>(resolve => {
    pipe.on('data', (d: Buffer) => {
      line += d.toString()
      if (line.includes('\n')) resolve(true)
    })
    child.once('exit', () => resolve(false))
    pipe.once('end', () => resolve(line.includes('\n')))
  })
  if (!ready) {
    process.stderr.write(`vmifs agent: the agent started in the background exited (status ${child.exitCode})\n`)
    return 1
  }
  // the child printed its ready line on the standard output it shares with this process
  child.unref()
  ;(pipe as unknown as { destroy(): void }).destroy()
  return 0
}
