// Starting and stopping node:http servers, shared by the local API and the peer server.
import type http from 'node:http'

/** Listens on a TCP port (host, port) or a Unix socket path; rejects on a listen error. */
export async function listen(server: http.Server, ...at: [port: number, host: string] | [path: string]): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    const done = (): void => {
      server.off('error', reject)
      resolve()
    }
    if (at.length === 2) server.listen(at[0], at[1], done)
    else server.listen(at[0], done)
  })
}

/** Drops open connections (keep-alive ones included) and waits for the server to close. */
export async function shutdown(server: http.Server | undefined): Promise<void> {
  if (!server) return
  server.closeAllConnections()
  await new Promise<void>(resolve => server.close(() => resolve()))
}
