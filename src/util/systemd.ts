// The service manager's side of an agent run by systemd (the unit: systemd/vmifs-agent.service):
// readiness, the main PID after a takeover, the watchdog, and stopping, sent to $NOTIFY_SOCKET
// as sd_notify(3) does. Without $NOTIFY_SOCKET (not under systemd) every call does nothing.
import { native } from '../native/index.js'

export class ServiceManager {
  private watchdog: NodeJS.Timeout | undefined

  constructor(private readonly env: NodeJS.ProcessEnv = process.env) {}

  get managed(): boolean {
    return (this.env.NOTIFY_SOCKET ?? '') !== ''
  }

  /** Sends `KEY=value` lines; false when not managed or the datagram could not be sent. */
  notify(...lines: string[]): boolean {
    const sock = this.env.NOTIFY_SOCKET
    if (!sock) return false
    return native().sdNotify(sock, lines.join('\n'))
  }

  /** The mount is served: READY=1, with this process as the unit's main process. */
  ready(status: string): void {
    this.notify(`MAINPID=${process.pid}`, 'READY=1', `STATUS=${status}`)
  }

  /**
   * This process is about to take the mount over (ExecReload runs it): it becomes the unit's main
   * process before the running agent exits, so that exit is not taken for the service's death.
   */
  takingOver(): void {
    this.notify('RELOADING=1', `MAINPID=${process.pid}`, 'STATUS=taking the mount over')
  }

  stopping(): void {
    this.notify('STOPPING=1')
    this.stopWatchdog()
  }

  /** Sends WATCHDOG=1 at half the interval systemd asked for (WATCHDOG_USEC), from the event loop. */
  startWatchdog(): void {
    const usec = Number(this.env.WATCHDOG_USEC ?? 0)
    if (!this.managed || !(usec > 0) || this.watchdog) return
    this.notify('WATCHDOG=1')
    this.watchdog = setInterval(() => this.notify('WATCHDOG=1'), Math.max(50, usec / 2000))
    this.watchdog.unref()
  }

  stopWatchdog(): void {
    if (this.watchdog) clearInterval(this.watchdog)
    this.watchdog = undefined
  }
}
