// nginx serving an origin store (the demo, the tests, the benchmarks): a config written into `dir`
// around one server block, with the temp paths nginx insists on, keep-alive for the whole run, and
// (by default) an access log whose lines count the requests it answered, in nginx's format or in
// `logFormat`.
import fs from 'node:fs'
import path from 'node:path'

export interface NginxSetup {
  /** the config file, for `nginx -c <conf> -p <dir>` */
  conf: string
  /** requests logged so far (0 without an access log) */
  requests: () => number
}

export function nginxConfig(
  dir: string,
  server: string,
  opts: { accessLog?: boolean; logFormat?: string; http?: string } = {}
): NginxSetup {
  fs.mkdirSync(dir, { recursive: true })
  const log = path.join(dir, 'access.log')
  const conf = path.join(dir, 'nginx.conf')
  fs.writeFileSync(
    conf,
    [
      `daemon off; user root; worker_processes 1; pid ${dir}/nginx.pid; error_log ${dir}/error.log;`,
      'events { worker_connections 256; }',
      `http { ${opts.logFormat === undefined ? '' : `log_format fmt '${opts.logFormat}'; `}` +
        `access_log ${opts.accessLog === false ? 'off' : log}${opts.logFormat === undefined ? '' : ' fmt'};` +
        ' sendfile on; tcp_nopush on;' +
        ` client_body_temp_path ${dir}/b; proxy_temp_path ${dir}/p; fastcgi_temp_path ${dir}/f;` +
        ` uwsgi_temp_path ${dir}/u; scgi_temp_path ${dir}/s; keepalive_requests 100000; ${opts.http ?? ''}`,
      `  server { ${server} } }`,
      ''
    ].join('\n')
  )
  return {
    conf,
    requests: () => {
      try {
        return fs.readFileSync(log, 'utf8').split('\n').length - 1
      } catch {
        return 0
      }
    }
  }
}
