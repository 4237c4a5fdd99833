// The agent under a service manager, without one: a notification socket like systemd's, read by
// a small listener that records each datagram with its sender's pid (SO_PASSCRED), checks what
// the unit relies on — READY=1 once the mount is served, the watchdog, a reload (--takeover
// --background) that names the new agent the main process before the old one exits, STOPPING=1
// on a real stop — and that the unit file installed by `vmifs install-service` is valid.
import test from 'ava'
import { spawn, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { AgentProcess, VMIFS, fixture, isMounted, makeImage, run, sleep, vmifs } from './harness.js'

/** A Unix datagram socket at `sock`; every datagram is appended to `log` as "<pid> <line>|<line>". */
function notifyListener(sock: string, log: string): { stop: () => void } {
  const script = `
import socket, struct, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
s.bind(sys.argv[1])
out = open(sys.argv[2], 'a', buffering=1)
print('listening', flush=True)
while True:
    msg, anc, _, _ = s.recvmsg(4096, socket.CMSG_SPACE(12))
    pid = 0
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid = struct.unpack('iII', data[:12])[0]
    out.write('%d %s\\n' % (pid, msg.decode().replace('\\n', '|')))
`
  const child = spawn('python3', ['-c', script, sock, log], { stdio: ['ignore', 'pipe', 'inherit'] })
  return { stop: () => child.kill('SIGKILL') }
}

function messages(log: string): Array<{ pid: number; lines: string[] }> {
  if (!fs.existsSync(log)) return []
  return fs
    .readFileSync(log, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map(l => {
      const i = l.indexOf(' ')
      return { pid: Number(l.slice(0, i)), lines: l.slice(i + 1).split('|') }
    })
}

async function until(what: string, ok: () => boolean, ms = 10_000): Promise<void> {
  for (const t0 = Date.now(); !ok(); await sleep(25)) if (Date.now() - t0 > ms) throw new Error(`timed out: ${what}`)
}

test.serial(
  'under a notify socket: READY=1 once mounted, the watchdog, a reload that hands over, STOPPING=1',
  async t => {
    const f = fixture(t)
    const img = path.join(f.dir, 'disk.raw')
    makeImage(img, 3)
    t.is(vmifs(['import', img, '--name', 'disk', '--data-dir', f.data]).code, 0)
    const sock = path.join(f.dir, 'notify.sock')
    const log = path.join(f.dir, 'notify.log')
    const listener = notifyListener(sock, log)
    t.teardown(() => listener.stop())
    await until('the listener', () => fs.existsSync(sock))
    const env = { NOTIFY_SOCKET: sock, WATCHDOG_USEC: '200000' }

    const a = new AgentProcess(f.mnt, f.data, [], env)
    f.agents.push(a)
    await a.ready()
    await until('READY=1', () => messages(log).some(m => m.lines.includes('READY=1')))
    const ready = messages(log).find(m => m.lines.includes('READY=1'))!
    t.is(ready.pid, a.info.pid)
    t.true(ready.lines.includes(`MAINPID=${a.info.pid}`))
    t.true(isMounted(f.mnt), 'READY=1 came once the mount was served')
    await sleep(450)
    const pings = messages(log).filter(m => m.pid === a.info.pid && m.lines.includes('WATCHDOG=1')).length
    t.true(pings >= 3, `${pings} watchdog pings in ~0.5 s at WATCHDOG_USEC=200000`)

    // the unit's ExecReload: returns once the new agent serves the mount, leaving it running
    // (spawn, not spawnSync: the agent left running keeps the standard output it shares)
    const reload = spawn(
      process.execPath,
      [VMIFS, 'agent', '--takeover', '--background', '--mount', f.mnt, '--data-dir', f.data],
      { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } }
    )
    let out = ''
    let err = ''
    reload.stdout.on('data', (d: Buffer) => (out += d.toString()))
    reload.stderr.on('data', (d: Buffer) => (err += d.toString()))
    const code = await new Promise(resolve => reload.once('exit', resolve))
    t.is(code, 0, err)
    await until("the new agent's ready line", () => out.includes('"event":"ready"'))
    const next = JSON.parse(out.split('\n').find(l => l.includes('"event":"ready"'))!) as { pid: number }
    t.teardown(() => {
      try {
        process.kill(next.pid, 'SIGTERM')
      } catch {
        // gone already
      }
    })
    t.is(await a.exited, 0, 'the old agent handed over and exited 0')
    t.true(isMounted(f.mnt))
    t.is(run('cmp', [img, path.join(f.mnt, 'images/disk')]).status, 0)
    const all = messages(log)
    const named = all.findIndex(m => m.pid === next.pid && m.lines.includes(`MAINPID=${next.pid}`))
    t.true(named >= 0, 'the new agent names itself the main process')
    t.true(all[named]!.lines.includes('RELOADING=1'))
    t.false(
      all.some(m => m.pid === a.info.pid && m.lines.includes('STOPPING=1')),
      'handing over is not a stop'
    )
    await until('READY=1 from the new agent', () =>
      messages(log).some(m => m.pid === next.pid && m.lines.includes('READY=1'))
    )

    // a real stop: STOPPING=1 is sent before the unmount, but the listener (another process)
    // may write it to its log after the mount is gone: wait for both
    process.kill(next.pid, 'SIGTERM')
    await until('the mount gone', () => !isMounted(f.mnt), 20_000)
    await until('STOPPING=1 from the new agent', () =>
      messages(log).some(m => m.pid === next.pid && m.lines.includes('STOPPING=1'))
    )
    // by now the old agent's messages are all in the log: it never said it was stopping
    t.false(messages(log).some(m => m.pid === a.info.pid && m.lines.includes('STOPPING=1')))
  }
)

test.serial('vmifs install-service writes a unit systemd accepts, and refuses to overwrite', t => {
  const f = fixture(t)
  const root = path.join(f.dir, 'root')
  const r = vmifs([
    'install-service',
    '--mount',
    '/mnt/vmifs',
    '--data-dir',
    '/var/lib/vmifs',
    '--root',
    root,
    '--',
    '--listen',
    '10.0.0.1:7070'
  ])
  t.is(r.code, 0, r.stderr)
  const unit = fs.readFileSync(path.join(root, 'etc/systemd/system/vmifs-agent.service'), 'utf8')
  t.regex(unit, /^Type=notify$/m)
  t.regex(unit, /^WatchdogSec=\d+$/m)
  t.regex(unit, /^Restart=always$/m)
  t.regex(
    unit,
    new RegExp(
      `^ExecReload=${process.execPath} \\S+/bin/vmifs.js agent --takeover --background \\$VMIFS_AGENT_ARGS$`,
      'm'
    )
  )
  t.is(
    fs.readFileSync(path.join(root, 'etc/default/vmifs'), 'utf8').split('\n')[1],
    'VMIFS_AGENT_ARGS="--mount /mnt/vmifs --data-dir /var/lib/vmifs --listen 10.0.0.1:7070"'
  )
  const verify = spawnSync('systemd-analyze', ['verify', path.join(root, 'etc/systemd/system/vmifs-agent.service')], {
    encoding: 'utf8'
  })
  t.is(verify.status, 0, verify.stderr)
  t.is(verify.stderr.trim(), '', 'no warnings')
  const again = vmifs(['install-service', '--mount', '/mnt/vmifs', '--root', root])
  t.is(again.code, 1)
  t.regex(again.stderr, /exists \(--force replaces it\)/)
  t.is(vmifs(['install-service', '--mount', '/mnt/vmifs', '--root', root, '--force']).code, 0)
  const bad = vmifs(['install-service', '--mount', '/mnt/my vms', '--root', root, '--force'])
  t.is(bad.code, 2)
})
