// Logging: pino (structured JSON lines) to stderr. Level from VMIFS_LOG_LEVEL (default info).
import pino from 'pino'

export type Logger = pino.Logger

export function createLogger(name: string, level = process.env.VMIFS_LOG_LEVEL ?? 'info'): Logger {
  return pino({ name, level, base: { pid: process.pid } }, pino.destination({ dest: 2, sync: true }))
}
