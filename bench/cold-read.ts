// `npm run bench -- cold-read [--size-mib N] [--rate-mbit R] [--rtt-ms a,b,…] [--sources peer,origin]`
// A cold host C reads an image that only A holds, over a link shaped with tc tbf (network
// namespaces, veth, bridge) and with RTT added by the userspace delay proxy (netem is not
// available here). The source is A's agent (peer) or an origin store on A (`vmifs publish-store`
// of A's data dir, served by nginx; origin), C's only source. Three patterns per RTT and source:
// a sequential read of the whole image, the files a real boot reads, and a boot-like scattered
// read (files of 4 KiB–1 MiB read through in 128 KiB requests). Reported: time against the
// link-rate bound (bytes needed / link rate) and against the wire bound (bytes C's interface
// received / link rate: the store's compression makes it the smaller; headers make it larger),
// and bytes fetched over distinct bytes read.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { createFleetNet } from '../test/integration/netns.js'
import { bootPattern, distinctBytes, type Extent } from '../src/util/boot-pattern.js'
import { bootReadSet } from './lib/boot-set.js'
import { takeOption } from './lib/report.js'
import { stop, waitLine } from './lib/children.js'
import { nginxConfig } from '../src/util/nginx.js'
import { TRUST, admitHost } from '../test/integration/admit.js'

const here = path.dirname(fileURLToPath(import.meta.url))
const VMIFS = path.resolve(here, '../../bin/vmifs.js')
const READER = path.join(here, 'lib/reader.js')
const PROXY = path.join(here, 'lib/delay-proxy.js')
const TOKEN = 'bench-secret'

/** Bytes received by a namespace's eth0 so far. */
function rxBytes(ns: string): number {
  const r = spawnSync('ip', ['-n', ns, '-j', '-s', 'link', 'show', 'eth0'], { encoding: 'utf8' })
  const j = JSON.parse(r.stdout) as Array<{ stats64: { rx: { bytes: number } } }>
  return j[0]!.stats64.rx.bytes
}

export async function main(args: string[]): Promise<void> {
  const mib = Number(takeOption(args, '--size-mib') ?? 256)
  const rateMbit = Number(takeOption(args, '--rate-mbit') ?? 100)
  const rtts = (takeOption(args, '--rtt-ms') ?? '0,20').split(',').map(Number)
  const sources = (takeOption(args, '--sources') ?? 'peer,origin').split(',')
  for (const s of sources) if (s !== 'peer' && s !== 'origin') throw new Error(`--sources: peer or origin, not ${s}`)
  const dir = fs.mkdtempSync('/var/tmp/vmifs-bench-cold-')
  const net = createFleetNet({ hosts: ['a', 'c'], prefix: `cold${process.pid % 10000}` })
  const children: ChildProcess[] = []
  try {
    net.shapeLink('a', rateMbit)
    const img = path.join(dir, 'disk.raw')
    const fd = fs.openSync(img, 'w')
    // all data: every byte read must be fetched
    for (let k = 0; k < mib; k += 16) fs.writeSync(fd, randomBytes(16 * 1024 * 1024))
    fs.closeSync(fd)
    const size = fs.statSync(img).size
    const dataA = path.join(dir, 'a-data')
    const imp = spawnSync(process.execPath, [VMIFS, 'import', img, '--name', 'disk', '--data-dir', dataA, '--quiet'], {
      encoding: 'utf8'
    })
    if (imp.status !== 0) throw new Error(imp.stderr)
    // the real Debian image and the files a boot reads from it (bench/lib/boot-set.ts), read in
    // shuffled order, each contiguous run of files through in 128 KiB requests
    const family = '/var/tmp/vmifs-bench/family'
    const nginx = path.join(family, 'nginx.img')
    if (!fs.existsSync(nginx))
      spawnSync('bash', [path.resolve(here, '../../bench/lib/debian-family.sh'), family], { stdio: 'inherit' })
    const impN = spawnSync(
      process.execPath,
      [VMIFS, 'import', nginx, '--name', 'nginx', '--data-dir', dataA, '--quiet'],
      { encoding: 'utf8' }
    )
    if (impN.status !== 0) throw new Error(impN.stderr)
    const set = bootReadSet(nginx)
    let sx = 12345
    const shuffled: Extent[] = set.ranges.map(r => ({ offset: r.start, length: r.end - r.start }))
    for (let i = shuffled.length - 1; i > 0; i--) {
      sx = (sx * 1103515245 + 12345) % 2147483648
      const j = sx % (i + 1)
      ;[shuffled[i], shuffled[j]] = [shuffled[j]!, shuffled[i]!]
    }
    const realFile = path.join(dir, 'real-boot.json')
    fs.writeFileSync(realFile, JSON.stringify(shuffled))
    const realDistinct = distinctBytes(shuffled)
    const cfg = path.join(dir, 'config.json')
    fs.writeFileSync(cfg, JSON.stringify({ token: TOKEN, syncIntervalMs: 200, trust: TRUST }))
    // the origin store: A's images as publish-store writes them, served by nginx on A (port 8080)
    admitHost(dataA, 'a')
    const www = path.join(dir, 'www')
    if (sources.includes('origin')) {
      const pub = spawnSync(process.execPath, [VMIFS, 'publish-store', path.join(www, 'store'), '--data-dir', dataA], {
        encoding: 'utf8'
      })
      if (pub.status !== 0) throw new Error(`publish-store: ${pub.stderr}`)
      process.stderr.write(`cold-read: ${pub.stderr.trim().split('\n').pop() ?? ''}\n`)
    }
    const inNs = (h: string, argv: string[]): ChildProcess => {
      const c = spawn('nsenter', [`--net=/run/netns/${net.ns(h)}`, ...argv], {
        stdio: ['ignore', 'pipe', 'inherit'],
        env: { ...process.env, VMIFS_LOG_LEVEL: 'warn' }
      })
      children.push(c)
      return c
    }
    const agent = async (h: string, data: string, mnt: string, extra: string[]): Promise<ChildProcess> => {
      fs.mkdirSync(mnt, { recursive: true })
      if (data !== dataA) admitHost(data, h)
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
        ...extra
      ])
      await waitLine(c, `agent ${h}`)
      return c
    }
    const rows: string[] = []
    if (sources.includes('origin')) {
      const ngx = path.join(dir, 'nginx')
      const { conf } = nginxConfig(ngx, `listen ${net.addr('a')}:8080; location / { root ${www}; }`, {
        accessLog: false
      })
      inNs('a', ['/usr/sbin/nginx', '-c', conf, '-p', ngx])
    }
    const boot = bootPattern(size, 0.1, 7)
    const bootFile = path.join(dir, 'boot.json')
    fs.writeFileSync(bootFile, JSON.stringify(boot))
    const bootDistinct = distinctBytes(boot)
    for (const rtt of rtts) {
      // A's agent, reached through a delay proxy that adds rtt/2 each way (and one in front of nginx)
      const mntA = path.join(dir, 'a-mnt')
      const a = await agent('a', dataA, mntA, [
        '--listen',
        `${net.addr('a')}:7070`,
        '--advertise',
        `http://${net.addr('a')}:7071`
      ])
      const proxies: ChildProcess[] = []
      for (const [listen, target] of [
        [7071, 7070],
        [8081, 8080]
      ] as const) {
        const proxy = inNs('a', [
          process.execPath,
          PROXY,
          '--listen',
          `${net.addr('a')}:${listen}`,
          '--target',
          `${net.addr('a')}:${target}`,
          '--delay-ms',
          String(rtt / 2)
        ])
        await waitLine(proxy, 'delay proxy')
        proxies.push(proxy)
      }
      for (const source of sources)
        for (const pattern of ['sequential', 'boot (real files)', 'scattered (random files)'] as const) {
          const dataC = path.join(dir, `c-data-${rtt}-${source}-${pattern}`)
          const mntC = path.join(dir, `c-mnt-${rtt}-${source}-${pattern}`)
          const c = await agent(
            'c',
            dataC,
            mntC,
            source === 'origin'
              ? ['--origin', `http://${net.addr('a')}:8081/store`]
              : ['--listen', `${net.addr('c')}:7070`, '--peer', `http://${net.addr('a')}:7070`]
          )
          const file = path.join(mntC, 'images', pattern === 'boot (real files)' ? 'nginx' : 'disk')
          for (let i = 0; !fs.existsSync(file); i++) {
            if (i > 200) throw new Error('C did not learn the image')
            await new Promise(resolve => setTimeout(resolve, 100))
          }
          await new Promise(resolve => setTimeout(resolve, 600)) // holdings follow the image fact
          const rx0 = rxBytes(net.ns('c'))
          const r = spawnSync(
            process.execPath,
            pattern === 'sequential'
              ? [READER, 'seq', file]
              : [READER, 'extents', file, pattern === 'boot (real files)' ? realFile : bootFile],
            { encoding: 'utf8', timeout: 600_000 }
          )
          if (r.status !== 0) throw new Error(`reader: ${r.stderr}`)
          const res = JSON.parse(r.stdout) as { bytes: number; seconds: number }
          const s = JSON.parse(spawnSync('cat', [path.join(mntC, '.stats')], { encoding: 'utf8' }).stdout) as {
            fetch: { bytes: number; byHolder: Record<string, { requests: number; wireBytes: number }> }
          }
          const holder = s.fetch.byHolder[source === 'origin' ? 'origin' : 'a']
          const distinct =
            pattern === 'sequential' ? size : pattern === 'boot (real files)' ? realDistinct : bootDistinct
          const bound = (distinct * 8) / (rateMbit * 1e6)
          // bytes on the wire: what C's interface received (frames, headers and all), which the
          // link's shaping counts too
          const rx = rxBytes(net.ns('c')) - rx0
          const wireBound = (rx * 8) / (rateMbit * 1e6)
          const cells = [
            `${rtt} ms`,
            source,
            pattern,
            `${(distinct / 1048576).toFixed(1)} MiB`,
            `${(s.fetch.bytes / 1048576).toFixed(1)} MiB`,
            (s.fetch.bytes / distinct).toFixed(2),
            `${res.seconds.toFixed(2)} s`,
            `${bound.toFixed(2)} s`,
            `${(res.seconds / bound).toFixed(2)}×`,
            `${((holder?.wireBytes ?? 0) / 1048576).toFixed(1)} MiB`,
            `${(rx / 1048576).toFixed(1)} MiB`,
            `${(res.seconds / wireBound).toFixed(2)}×`,
            String(holder?.requests ?? 0)
          ]
          rows.push(`| ${cells.join(' | ')} |`)
          process.stderr.write(`cold-read: rtt ${rtt} ms ${source} ${pattern}: ${res.seconds.toFixed(2)} s\n`)
          await stop(c)
          spawnSync('umount', ['-l', mntC])
        }
      for (const p of proxies) await stop(p)
      await stop(a)
      spawnSync('umount', ['-l', mntA])
    }
    console.log(
      `\n## Cold read over a ${rateMbit} Mbit/s link (tc tbf), ${mib} MiB image of random data; ` +
        'RTT added by a userspace delay proxy\n'
    )
    console.log(
      '| RTT | source | pattern | distinct bytes read | fetched | fetched / read | time | link-rate bound ' +
        '| time / bound ' +
        '| HTTP bodies | on the wire | time / wire bound | requests |'
    )
    console.log('|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
    for (const r of rows) console.log(r)
    console.log(
      `\nboot (real files): the ${set.files.length} files a boot opens (bench/lib/boot-set.ts) in the Debian ` +
        `nginx image, ${(realDistinct / 1048576).toFixed(1)} MiB in ${shuffled.length} contiguous runs, ` +
        'read in shuffled order in 128 KiB requests.'
    )
    console.log(
      `scattered (random files): ${boot.length} files of 4 KiB–1 MiB (log-uniform) at random offsets of the ` +
        `random-data image, ${(bootDistinct / 1048576).toFixed(1)} MiB (10 % of it), each read through in ` +
        '128 KiB requests, in random order: the worst case for chunk edges (no two files share a chunk).'
    )
  } finally {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL')
    await new Promise(resolve => setTimeout(resolve, 300))
    for (const m of fs.existsSync(dir) ? fs.readdirSync(dir).filter(n => n.includes('mnt')) : [])
      spawnSync('umount', ['-l', path.join(dir, m)])
    await net.destroy()
    fs.rmSync(dir, { recursive: true, force: true })
  }
}
