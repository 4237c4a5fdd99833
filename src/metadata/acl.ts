// A host's Redis ACL user: it reads every vmifs key and channel, and writes only its own keys
// (src/metadata/redis.ts names them) and the set of revocations (each signed by a fleet admin:
// a host adds what it learnt), with the commands the agent uses and no others. The
// engine's ACLs are per node: the same rules go into the ACL file of every node (docs/metadata.md).
import crypto from 'node:crypto'
import { validHostId } from '../trust/host-id.js'
import { REVOKED_KEY, globalKey, liveKey, scopedKey } from './redis.js'

/** The commands an agent sends to the engine. */
export const AGENT_COMMANDS = [
  'ping',
  'hello',
  'auth',
  'client|setname',
  'info',
  'config|get',
  'role',
  'select',
  'hget',
  'hmget',
  'hgetall',
  'hset',
  'get',
  'set',
  'pttl',
  'expire',
  'scan',
  'publish',
  'subscribe',
  'unsubscribe'
] as const

export function userOf(host: string): string {
  return `vmifs-${host}`
}

/** The ACL file line for `host`, its password given by its SHA-256 (the password itself is not in it). */
export function aclRule(host: string, password: string): string {
  if (!validHostId(host)) throw new Error(`not a host id: ${JSON.stringify(host)}`)
  const hash = crypto.createHash('sha256').update(password).digest('hex')
  const own = [globalKey(host), scopedKey(host), liveKey(host), REVOKED_KEY].map(k => `~${k}`).join(' ')
  const channels = '&vmifs:c:* &__keyevent@*__:expired'
  const commands = AGENT_COMMANDS.map(c => `+${c}`).join(' ')
  return `user ${userOf(host)} on #${hash} resetkeys %R~vmifs:* ${own} resetchannels ${channels} -@all ${commands}`
}

/** A new random password (256 bits, base64url). */
export function newPassword(): string {
  return crypto.randomBytes(32).toString('base64url')
}
