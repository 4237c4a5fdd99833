// vmifs install-service: writes the systemd unit (systemd/vmifs-agent.service, with this checkout's
// command filled in) and the agent's arguments (/etc/default/vmifs), then reloads systemd if it runs.
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { type Command, COMMON_HELP, parse } from './common.js'
import { VmifsError } from '../errors.js'

const here = path.dirname(fileURLToPath(import.meta.url))
// dist/src/cli -> the checkout
const ROOT = path.resolve(here, '../../..')
const UNIT = 'vmifs-agent.service'

export const command: Command = {
  name: 'install-service',
  summary: 'install the agent as a systemd service (reload = takeover)',
  usage: `Usage: vmifs install-service --mount <dir> [--data-dir <dir>] [--config <file>] [options] [-- <agent options>]

Writes /etc/systemd/system/${UNIT} (Type=notify, watchdog, Restart=always, ExecReload doing
vmifs agent --takeover) and /etc/default/vmifs, which holds the agent's arguments
(VMIFS_AGENT_ARGS), then runs systemctl daemon-reload if systemd runs. Enable and start it with
systemctl enable --now ${UNIT}; upgrade under running VMs with systemctl reload ${UNIT}
(systemctl restart is a stop and a start: it unmounts).

Options:
  --mount <dir>        the agent's mountpoint
  -- <agent options>   further options of vmifs agent (e.g. -- --listen 10.0.0.1:7070)
  --root <dir>         write under this directory instead of / (no reload)
  --force              replace files that exist
${COMMON_HELP}`,
  async run(argv) {
    const a = parse(
      this,
      argv,
      {
        mount: { type: 'string' },
        root: { type: 'string' },
        force: { type: 'boolean' }
      },
      true
    )
    if (!a) return 0
    if (typeof a.values.mount !== 'string') throw VmifsError.usage(`--mount is required\n\n${this.usage}`)
    const root = path.resolve(a.values.root ?? '/')
    const args = ['--mount', path.resolve(a.values.mount)]
    if (typeof a.values['data-dir'] === 'string') args.push('--data-dir', path.resolve(a.values['data-dir']))
    if (typeof a.values.config === 'string') args.push('--config', path.resolve(a.values.config))
    if (typeof a.values['cache-size'] === 'string') args.push('--cache-size', a.values['cache-size'])
    if (a.positionals.length > 0 && !argv.includes('--'))
      throw VmifsError.usage(`install-service: agent options go after --\n\n${this.usage}`)
    args.push(...a.positionals)
    for (const x of args) {
      // systemd splits $VMIFS_AGENT_ARGS on whitespace and takes no quoting inside it
      if (/[\s"'\\$]/.test(x))
        throw VmifsError.usage(`install-service: an argument with spaces, quotes or $ cannot go in the unit: ${x}`)
    }
    const command = `${process.execPath} ${path.join(ROOT, 'bin/vmifs.js')}`
    const unit = fs.readFileSync(path.join(ROOT, 'systemd', UNIT), 'utf8').replaceAll('@VMIFS@', command)
    const env = `# the vmifs agent's arguments, read by ${UNIT}\nVMIFS_AGENT_ARGS="${args.join(' ')}"\n`
    const files: Array<[string, string]> = [
      [path.join(root, 'etc/systemd/system', UNIT), unit],
      [path.join(root, 'etc/default/vmifs'), env]
    ]
    for (const [file] of files)
      if (fs.existsSync(file) && a.values.force !== true)
        throw new VmifsError('CONFIG_INVALID', `${file} exists (--force replaces it)`, { file })
    for (const [file, text] of files) {
      fs.mkdirSync(path.dirname(file), { recursive: true })
      fs.writeFileSync(file, text)
      process.stdout.write(`wrote ${file}\n`)
    }
    if (a.values.root === undefined && fs.existsSync('/run/systemd/system')) {
      const r = spawnSync('systemctl', ['daemon-reload'], { stdio: 'inherit' })
      if (r.status !== 0) process.stderr.write('vmifs install-service: systemctl daemon-reload failed\n')
      process.stdout.write(`start it with: systemctl enable --now ${UNIT}\n`)
    } else if (a.values.root === undefined) {
      process.stdout.write('systemd does not run here: the unit is written, nothing was reloaded\n')
    }
    return 0
  }
}
