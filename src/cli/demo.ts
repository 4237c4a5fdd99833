// `npm run demo`: vmifs on this machine in about a minute. With no argument, a fleet of three
// agents with an origin store (demo-fleet.ts); with --single, the single-host walk-through
// (demo-single.ts). --keep leaves either running until Ctrl-C. Exit status 0 when every check
// passed, 1 when one failed, 2 on a usage error, 130 when interrupted.
import { fleetDemo } from './demo-fleet.js'
import { singleHostDemo } from './demo-single.js'

const args = process.argv.slice(2)
const unknown = args.filter(a => a !== '--single' && a !== '--keep')
if (unknown.length > 0) {
  process.stderr.write(`demo: unknown argument ${unknown[0]}\nUsage: npm run demo -- [--single] [--keep]\n`)
  process.exit(2)
}
const keep = args.includes('--keep')
process.exit(await (args.includes('--single') ? singleHostDemo(keep) : fleetDemo(keep)))
