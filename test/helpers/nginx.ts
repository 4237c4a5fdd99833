// A real nginx serving a directory as static files under /store/ (the origin store of the tests),
// with an access log of each request's credentials, range and status. Stopped in the test's teardown.
import fs from 'node:fs'
import path from 'node:path'
import { spawn } from 'node:child_process'
import type { ExecutionContext } from 'ava'
import { request } from 'undici'

export interface Nginx {
  url: string
  /** the access log's lines: "<authorization>|<x-store-key>|<range>|<status>|<uri>" (not the start-up probe's) */
  log(): string[]
}

/** nginx on 127.0.0.1:`port` serving `root` at /store/; `extra` goes into the server block. */
export async function startNginx(
  t: ExecutionContext,
  dir: string,
  root: string,
  port: number,
  extra = ''
): Promise<Nginx> {
  const conf = path.join(dir, 'nginx.conf')
  const access = path.join(dir, 'nginx.access')
  fs.writeFileSync(
    conf,
    `daemon off; user root; worker_processes 1; pid ${dir}/nginx.pid; error_log ${dir}/nginx.err;
events { worker_connections 64; }
http { log_format creds '$http_authorization|$http_x_store_key|$http_range|$status|$uri'; access_log ${access} creds;
  client_body_temp_path ${dir}/nb; proxy_temp_path ${dir}/np;
  fastcgi_temp_path ${dir}/nf; uwsgi_temp_path ${dir}/nu; scgi_temp_path ${dir}/ns;
  server { listen 127.0.0.1:${port}; ${extra} location /store/ { alias ${root}/; } } }`
  )
  const bin = ['/usr/sbin/nginx', '/usr/bin/nginx'].find(b => fs.existsSync(b))
  if (!bin) throw new Error('nginx is not installed (scripts/ensure-system.sh installs it for tests)')
  const nginx = spawn(bin, ['-c', conf, '-p', dir], { stdio: ['ignore', 'ignore', 'pipe'] })
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
