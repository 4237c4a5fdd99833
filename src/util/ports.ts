// Ports for servers started later (agents, nginx, redis-server) by the demo, the tests and the
// benchmarks, that must be known before the server is.
import net from 'node:net'

/**
 * A port for a server started later (an agent, nginx, redis-server). Taken below the kernel's
 * ephemeral range (32768–60999 here), where no outgoing connection of another process
 * can take it meanwhile (a port the kernel hands out for listen(0) can be, once it is closed);
 * from a random start, and only one that is free now.
 */
export async function freePort(): Promise<number> {
  const LOW = 20_000
  const SPAN = 12_000
  const start = Math.floor(Math.random() * SPAN)
  for (let i = 0; i < 200; i++) {
    const port = LOW + ((start + i * 7) % SPAN)
    const free = await new Promise<boolean>(resolve => {
      const s = net.createServer()
      s.once('error', () => resolve(false))
      s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)))
    })
    if (free) return port
  }
  throw new Error('no free port below the ephemeral range')
}
