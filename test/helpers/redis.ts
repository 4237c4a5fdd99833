// A real redis-server (or redis-sentinel) on loopback (Debian's, installed by scripts/ensure-system.sh for tests): no
// persistence, its own directory, stopped in the test's teardown. `acl` lines become its ACL file.
import fs from 'node:fs'
import path from 'node:path'
import { spawn, type ChildProcess } from 'node:child_process'
import { Redis } from 'ioredis'

export interface RedisServer {
  url: string
  port: number
  /** a client as the default user (the test's view of what the engine holds) */
  client(): Redis
  stop(): Promise<void>
  child: ChildProcess
}

export async function startRedis(
  t: { teardown: (fn: () => Promise<void> | void) => void },
  dir: string,
  port: number,
  opts: { acl?: string[]; args?: string[] } = {}
): Promise<RedisServer> {
  fs.mkdirSync(dir, { recursive: true })
  // as docs/operations.md has it: expiry events on (a host whose live key expires is dead at once)
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir]
  args.push('--notify-keyspace-events', 'Ex')
  if (opts.acl) {
    const file = path.join(dir, 'users.acl')
    fs.writeFileSync(file, opts.acl.join('\n') + '\n')
    args.push('--aclfile', file)
  }
  return await startServer(
    t,
    ['/usr/bin/redis-server', ...args, ...(opts.args ?? [])],
    port,
    'Ready to accept connections'
  )
}

async function startServer(
  t: { teardown: (fn: () => Promise<void> | void) => void },
  argv: string[],
  port: number,
  readyLine: string
): Promise<RedisServer> {
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout.on('data', (d: Buffer) => (out += d.toString()))
  child.stderr.on('data', (d: Buffer) => (out += d.toString()))
  const clients: Redis[] = []
  const stop = async (): Promise<void> => {
    for (const c of clients) c.disconnect()
    if (child.exitCode !== null || child.signalCode !== null) return
    const gone = new Promise(resolve => child.once('exit', resolve))
    child.kill('SIGKILL')
    await gone
  }
  t.teardown(stop)
  for (let i = 0; !out.includes(readyLine); i++) {
    if (child.exitCode !== null || i > 200) throw new Error(`${argv.join(' ')} did not start: ${out}`)
    await new Promise(resolve => setTimeout(resolve, 25))
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    child,
    client: () => {
      const c = new Redis({ host: '127.0.0.1', port, maxRetriesPerRequest: 1 })
      clients.push(c)
      return c
    },
    stop
  }
}

/**
 * A real redis-sentinel watching `primary` (named `name`) on loopback: quick to declare it down
 * (1 s) so that a failover test takes seconds. Stopped in the test's teardown.
 */
export async function startSentinel(
  t: { teardown: (fn: () => Promise<void> | void) => void },
  dir: string,
  port: number,
  name: string,
  primaryPort: number,
  quorum = 2
): Promise<RedisServer> {
  fs.mkdirSync(dir, { recursive: true })
  const conf = path.join(dir, 'sentinel.conf')
  fs.writeFileSync(
    conf,
    [
      `port ${port}`,
      'bind 127.0.0.1',
      `dir ${dir}`,
      `sentinel monitor ${name} 127.0.0.1 ${primaryPort} ${quorum}`,
      `sentinel down-after-milliseconds ${name} 1000`,
      `sentinel failover-timeout ${name} 10000`,
      `sentinel parallel-syncs ${name} 1`,
      ''
    ].join('\n')
  )
  return await startServer(t, ['/usr/bin/redis-server', conf, '--sentinel'], port, '+monitor master')
}
