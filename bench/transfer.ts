// `npm run bench -- transfer [--rate-mbit R] [--skip-rsync] [--rsync-inplace] [--only-origin]`
// Getting version 2 of a real Debian image onto a host, over one link shaped with tc tbf
// (network namespaces, veth, bridge): `vmifs replicate` against rsync's delta transfer (an rsync
// daemon on the donor, the target's copy of the old image as the basis file, 4 KiB blocks), with
// and without compression. vmifs replicates from the donor's agent, and from an origin store
// (`vmifs publish-store` of the donor's data dir, served by nginx on the donor) as the target's
// only source. The donor (src) holds v2 (bench/lib/debian-v2.sh: the nginx family
// image plus curl and its libraries and a changed nginx.conf); the target (dst) holds
//   - v1 (nginx.img),
//   - a sibling (ssh.img: minbase + openssh-server, no nginx),
//   - nothing (vmifs only: a plain rsync would send the 2 GiB file whole).
// Bytes on the wire are the target interface's counters (received + sent, headers included);
// payload is what each tool reports (vmifs: chunk bytes and compressed bytes received; rsync:
// --stats). Time is the wall clock of the command; for vmifs also the makespan (first request to
// last chunk stored) and the plan's prediction.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { createFleetNet } from '../test/integration/netns.js'
import type { ReplicateReport } from '../src/planner/replicate.js'
import { markdownTable, takeOption } from './lib/report.js'
import { stop, waitLine } from './lib/children.js'
import { nginxConfig } from '../src/util/nginx.js'
import { TRUST, admitHost } from '../test/integration/admit.js'

const here = path.dirname(fileURLToPath(import.meta.url))
const VMIFS = path.resolve(here, '../../bin/vmifs.js')
const TOKEN = 'bench-secret'
const FAMILY = '/var/tmp/vmifs-bench/family'
const V2DIR = '/var/tmp/vmifs-bench/v2'
const MiB = 1024 * 1024

function vmifs(args: string[]): string {
  const r = spawnSync(process.execPath, [VMIFS, ...args], { encoding: 'utf8', maxBuffer: 256 * MiB, timeout: 900_000 })
  if (r.status !== 0) throw new Error(`vmifs ${args.join(' ')}: ${r.stderr}`)
  return r.stdout
}

/** The part of `vmifs plan --json` (src/cli/plan.ts) this reads. */
interface PlanJson {
  need: { missingChunks: number; unavailableChunks: number }
}

interface Row {
  target: string
  tool: string
  wire: number
  payload: string
  seconds: number
  makespan?: number
  predicted?: number
  detail: string
}

export async function main(args: string[]): Promise<void> {
  const rateMbit = Number(takeOption(args, '--rate-mbit') ?? 100)
  const skipRsync = args.includes('--skip-rsync')
  const inplace = args.includes('--rsync-inplace')
  const onlyOrigin = args.includes('--only-origin')
  spawnSync('bash', [path.resolve(here, '../../bench/lib/debian-family.sh'), FAMILY], { stdio: 'inherit' })
  const v2build = spawnSync('bash', [path.resolve(here, '../../bench/lib/debian-v2.sh'), FAMILY, V2DIR], {
    stdio: 'inherit'
  })
  if (v2build.status !== 0) throw new Error('building v2 failed')
  const v1 = path.join(FAMILY, 'nginx.img')
  const sibling = path.join(FAMILY, 'ssh.img')
  const v2 = path.join(V2DIR, 'nginx2.img')
  const dir = fs.mkdtempSync('/var/tmp/vmifs-bench-transfer-')
  const net = createFleetNet({ hosts: ['src', 'dst'], prefix: `xfer${process.pid % 10000}` })
  const children: ChildProcess[] = []
  const rows: Row[] = []
  // agents' logs go to files beside the data dirs (kept in $VMIFS_BENCH_LOGS when set)
  const logDir = process.env.VMIFS_BENCH_LOGS ?? dir
  fs.mkdirSync(logDir, { recursive: true })
  let logN = 0
  const inNs = (h: string, argv: string[]): ChildProcess => {
    const log = fs.openSync(path.join(logDir, `${h}-${logN++}.log`), 'a')
    const c = spawn('nsenter', [`--net=/run/netns/${net.ns(h)}`, ...argv], {
      stdio: ['ignore', 'pipe', log],
      env: { ...process.env, VMIFS_LOG_LEVEL: process.env.VMIFS_LOG_LEVEL ?? 'warn' }
    })
    fs.closeSync(log)
    c.once('exit', (code, sig) => {
      if (code !== 0 && sig !== 'SIGTERM')
        process.stderr.write(`transfer: ${h} (${argv[2] ?? argv[0]}) exited ${String(code)} ${String(sig)}\n`)
    })
    children.push(c)
    return c
  }
  /** received + sent bytes of the target's interface */
  const wire = (): number => {
    const j = JSON.parse(
      spawnSync('ip', ['-n', net.ns('dst'), '-s', '-j', 'link', 'show', 'eth0'], { encoding: 'utf8' }).stdout
    ) as Array<{ stats64: { rx: { bytes: number }; tx: { bytes: number } } }>
    return j[0]!.stats64.rx.bytes + j[0]!.stats64.tx.bytes
  }
  try {
    net.shapeLink('src', rateMbit)
    const cfgFile = (h: string, extra: Record<string, unknown> = {}): string => {
      const f = path.join(dir, `${h}.json`)
      fs.writeFileSync(
        f,
        JSON.stringify({ token: TOKEN, syncIntervalMs: 200, cache: { capacity: '50GiB' }, trust: TRUST, ...extra })
      )
      return f
    }
    const agent = async (
      h: string,
      data: string,
      peers: string[],
      cfg: string,
      extra: string[] = []
    ): Promise<ChildProcess> => {
      const mnt = path.join(dir, `${path.basename(data)}-mnt`)
      fs.mkdirSync(mnt, { recursive: true })
      admitHost(data, h)
      const c = inNs(h, [
        process.execPath,
        VMIFS,
        'agent',
        '--mount',
        mnt,
        '--data-dir',
        data,
        '--host-id',
        h,
        '--config',
        cfg,
        '--listen',
        `${net.addr(h)}:7070`,
        ...peers.flatMap(p => ['--peer', `http://${net.addr(p)}:7070`]),
        ...extra
      ])
      await waitLine(c, `agent ${h}`, 60_000)
      return c
    }
    // the donor: v2 published as "web"
    const srcData = path.join(dir, 'src-data')
    vmifs(['import', v2, '--name', 'web', '--data-dir', srcData, '--quiet'])
    admitHost(srcData, 'src')
    // the origin store: the donor's images published as static files, nginx on the donor
    const store = path.join(dir, 'www', 'store')
    const t0p = performance.now()
    const pub = spawnSync(process.execPath, [VMIFS, 'publish-store', store, '--data-dir', srcData], {
      encoding: 'utf8'
    })
    if (pub.status !== 0) throw new Error(`publish-store: ${pub.stderr}`)
    process.stderr.write(
      `transfer: ${pub.stderr.trim().split('\n').pop() ?? ''} in ${((performance.now() - t0p) / 1000).toFixed(1)} s\n`
    )
    const ngx = path.join(dir, 'nginx')
    const { conf, requests: nginxRequests } = nginxConfig(
      ngx,
      `listen ${net.addr('src')}:8080; location / { root ${path.join(dir, 'www')}; }`
    )
    inNs('src', ['/usr/sbin/nginx', '-c', conf, '-p', ngx])
    const src = await agent('src', srcData, [], cfgFile('src'))
    const dstCfg = cfgFile('dst', { links: { src: { bandwidth: `${rateMbit}Mbit` } } })
    const dstOriginCfg = cfgFile('dst-origin', {
      origin: `http://${net.addr('src')}:8080/store`,
      links: { origin: { bandwidth: `${rateMbit}Mbit` } }
    })
    const cases: Array<{ target: string; basis?: string; name?: string }> = [
      { target: 'holds v1', basis: v1, name: 'web-v1' },
      { target: 'holds a sibling (ssh)', basis: sibling, name: 'ssh' },
      { target: 'holds nothing' }
    ]
    let k = 0
    for (const cs of cases) {
      const variants: Array<{ tool: string; args: string[]; origin?: boolean }> = [
        { tool: 'vmifs replicate (α 0.3: brotli 5)', args: [] },
        { tool: 'vmifs replicate --alpha 0.9 (brotli 1)', args: ['--alpha', '0.9'] },
        { tool: 'vmifs replicate --no-compress', args: ['--no-compress'] },
        { tool: 'vmifs replicate from the origin store (packs, brotli 5 at publish)', args: [], origin: true }
      ]
      for (const v of variants) {
        if (cs.basis === undefined && v.args.includes('--no-compress')) continue
        if (onlyOrigin && v.origin !== true) continue
        const data = path.join(dir, `dst-data-${k++}`)
        if (cs.basis) vmifs(['import', cs.basis, '--name', cs.name!, '--data-dir', data, '--quiet'])
        const dst =
          v.origin === true ? await agent('dst', data, [], dstOriginCfg) : await agent('dst', data, ['src'], dstCfg)
        // the plan needs the donor's image and holdings in dst's table
        for (let i = 0; ; i++) {
          const r = spawnSync(
            process.execPath,
            [
              VMIFS,
              'plan',
              'web',
              '--to',
              'dst',
              '--json',
              '--host-id',
              'dst',
              '--data-dir',
              data,
              '--config',
              v.origin === true ? dstOriginCfg : dstCfg
            ],
            { encoding: 'utf8', maxBuffer: 64 * MiB }
          )
          if (r.status === 0) {
            const plan = JSON.parse(r.stdout) as PlanJson
            if (plan.need.unavailableChunks === 0 && plan.need.missingChunks > 0) break
          }
          if (i > 300) throw new Error(`dst never learnt the image: ${r.stderr}`)
          await new Promise(resolve => setTimeout(resolve, 200))
        }
        const w0 = wire()
        const q0 = nginxRequests()
        const t0 = performance.now()
        const rep = JSON.parse(vmifs(['replicate', 'web', '--json', '--data-dir', data, ...v.args])) as ReplicateReport
        const seconds = (performance.now() - t0) / 1000
        const w = wire() - w0
        rows.push({
          target: cs.target,
          tool: v.tool,
          wire: w,
          payload:
            `${(rep.fetchedBytes / MiB).toFixed(1)} MiB of chunks, ` +
            `${(rep.wireBytes / MiB).toFixed(1)} MiB received`,
          seconds,
          makespan: rep.makespan,
          predicted: rep.predicted.seconds,
          detail:
            `${rep.fetchedChunks} of ${rep.chunks} chunks new; held ${(rep.heldBytes / MiB).toFixed(1)} MiB` +
            (v.origin === true
              ? `; ${nginxRequests() - q0} HTTP requests, ` +
                `${rep.perDonor.find(d => d.donor === 'origin')?.failed ?? 0} failed, ${rep.fallbackChunks} fell back`
              : '')
        })
        process.stderr.write(
          `transfer: ${cs.target}, ${v.tool}: ${(w / MiB).toFixed(1)} MiB on the wire in ${seconds.toFixed(2)} s ` +
            `(makespan ${rep.makespan.toFixed(2)} s, predicted ${rep.predicted.seconds.toFixed(2)} s)\n`
        )
        await stop(dst)
        spawnSync('umount', ['-l', path.join(dir, `${path.basename(data)}-mnt`)])
        fs.rmSync(data, { recursive: true, force: true })
      }
    }
    await stop(src)

    if (!skipRsync && !onlyOrigin) {
      // an rsync daemon on the donor serving v2; the target's basis file is its old image
      const conf = path.join(dir, 'rsyncd.conf')
      fs.writeFileSync(
        conf,
        `uid = root\ngid = root\nuse chroot = no\npid file = ${path.join(dir, 'rsyncd.pid')}\n` +
          `[img]\n  path = ${V2DIR}\n  read only = yes\n`
      )
      inNs('src', [
        'rsync',
        '--daemon',
        '--no-detach',
        `--config=${conf}`,
        `--address=${net.addr('src')}`,
        '--port=873'
      ])
      for (let i = 0; ; i++) {
        if (
          spawnSync('ip', ['netns', 'exec', net.ns('dst'), 'rsync', `rsync://${net.addr('src')}/img/`], {
            encoding: 'utf8'
          }).status === 0
        )
          break
        if (i > 100) throw new Error('rsync daemon did not start')
        await new Promise(resolve => setTimeout(resolve, 100))
      }
      // rsync's default (the new file built in a temp file from the basis, then renamed) finds
      // moved blocks anywhere in the basis; --inplace can use only blocks at or after the write
      // position, which mke2fs's layout shifts defeat (run with --rsync-inplace to see it)
      const modes = inplace ? [[], ['-z'], ['--inplace'], ['--inplace', '-z']] : [[], ['-z']]
      for (const cs of cases.filter(c => c.basis !== undefined)) {
        for (const mode of modes) {
          const out = path.join(dir, 'rsync-dst')
          fs.mkdirSync(out, { recursive: true })
          const dest = path.join(out, 'nginx2.img')
          spawnSync('cp', ['--sparse=always', cs.basis!, dest])
          spawnSync('sync')
          const w0 = wire()
          const t0 = performance.now()
          const r = spawnSync(
            'ip',
            [
              'netns',
              'exec',
              net.ns('dst'),
              'rsync',
              '--no-whole-file',
              '--block-size=4096',
              '--stats',
              ...mode,
              `rsync://${net.addr('src')}/img/nginx2.img`,
              dest
            ],
            { encoding: 'utf8', timeout: 1_800_000 }
          )
          const seconds = (performance.now() - t0) / 1000
          const w = wire() - w0
          if (r.status !== 0) throw new Error(`rsync: ${r.stderr}`)
          const stat = (name: string): number =>
            Number((new RegExp(`${name}: ([0-9,]+)`).exec(r.stdout)?.[1] ?? 'NaN').replace(/,/g, ''))
          const same = spawnSync('cmp', [dest, v2]).status === 0
          rows.push({
            target: cs.target,
            tool: ['rsync --block-size=4096', ...mode].join(' '),
            wire: w,
            payload:
              `literal ${(stat('Literal data') / MiB).toFixed(1)} MiB; ` +
              `sent ${(stat('Total bytes sent') / MiB).toFixed(1)} MiB, ` +
              `received ${(stat('Total bytes received') / MiB).toFixed(1)} MiB`,
            seconds,
            detail: same ? 'result identical to v2' : 'RESULT DIFFERS'
          })
          process.stderr.write(
            `transfer: ${cs.target}, ${['rsync --block-size=4096', ...mode].join(' ')}: ` +
              `${(w / MiB).toFixed(1)} MiB on the wire ` +
              `in ${seconds.toFixed(2)} s\n`
          )
          fs.rmSync(out, { recursive: true, force: true })
        }
      }
    }

    const fmt = (x: number | undefined, d = 2): string => (x === undefined ? '' : x.toFixed(d))
    console.log(`\n## Getting image v2 onto a host over a ${rateMbit} Mbit/s link (tc tbf)\n`)
    console.log(
      `v2: ${path.basename(v2)} (nginx family image + curl and its libraries + a changed nginx.conf), ` +
        `${fs.statSync(v2).size / 1024 ** 3} GiB file\n`
    )
    console.log(
      markdownTable(
        [
          'target',
          'tool',
          'on the wire MiB',
          'vs rsync (same target)',
          'time s',
          'makespan s',
          'predicted s',
          'payload',
          'detail'
        ],
        rows.map(r => {
          const best = rows
            .filter(x => x.target === r.target && x.tool.startsWith('rsync'))
            .reduce((m, x) => Math.min(m, x.wire), Infinity)
          return [
            r.target,
            r.tool,
            (r.wire / MiB).toFixed(1),
            Number.isFinite(best) ? `${((r.wire / best) * 100).toFixed(0)} %` : '',
            fmt(r.seconds),
            fmt(r.makespan),
            fmt(r.predicted),
            r.payload,
            r.detail
          ]
        }),
        [0, 1, 7, 8]
      )
    )
    console.log('\n"vs rsync": bytes on the wire against the best rsync row (with or without -z) for the same target.')
  } finally {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL')
    await new Promise(resolve => setTimeout(resolve, 300))
    for (const m of fs.existsSync(dir) ? fs.readdirSync(dir).filter(n => n.endsWith('-mnt')) : [])
      spawnSync('umount', ['-l', path.join(dir, m)])
    await net.destroy()
    fs.rmSync(dir, { recursive: true, force: true })
  }
}
