// A real nginx serving a directory as static files under /store/ (the origin store of the tests),
// with an access log of each request's credentials, range and status. Stopped in the test's teardown.
import fs from 'node:fs'
import path from 'node:path'
import { spawn } from 'node:child_process'
import type { ExecutionContext } from 'ava'
import { request } from 'undici'
import { nginxConfig } from '../../src/util/nginx.js'

export interface Nginx {
  url: string
  /** the access log's lines: "<authorization>|<x-store-key>|<range>|<status>|<uri>" (not the start-up probe's) */
  log(): string[]
}

/** nginx on 127.0.0.1:`port` serving `root` at /store/ (its files in `dir`/nginx); `extra`: in the server block. */
export async function startNginx(
  t: ExecutionContext,
  dir: string,
  root: string,
  port: number,
  extra = ''
): Promise<Nginx> {
  const d = path.join(dir, 'nginx')
  const { conf } = nginxConfig(d, `listen 127.0.0.1:${port}; ${extra} location /store/ { alias ${root}/; }`, {
    logFormat: '$http_authorization|$http_x_store_key|$http_range|$status|$uri'
  })
  const access = path.join(d, 'access.log')
  const bin = ['/usr/sbin/nginx', '/usr/bin/nginx'].find(b => fs.existsSync(b))
  if (!bin) throw new Error('nginx is not installed (scripts/ensure-system.sh installs it for tests)')
  const nginx = spawn(bin, ['-c', conf, '-p', d], { stdio: ['ignore', 'ignore', 'pipe'] })
  let err = ''
  nginx.stderr.on('data', (d: Buffer) => {
    err += d.toString()
  })
  t.teardown(() => {
    nginx.kill('SIGTERM')
  })
  const url = `http://127.0.0.1:${port}/store`
  for (let i = 0; ; i++) {
    const up = await request(`http://127.0.0.1:${port}/probe`).then(
      async r => {
        await r.body.dump()
        return true
      },
      () => false
    )
    if (up) break
    if (i > 100) throw new Error(`nginx did not start: ${err}`)
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  return {
    url,
    log: () =>
      fs.existsSync(access)
        ? fs
            .readFileSync(access, 'utf8')
            .trim()
            .split('\n')
            .filter(l => l !== '' && !l.endsWith('|/probe'))
        : []
  }
}
