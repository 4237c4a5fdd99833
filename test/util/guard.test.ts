// A background step that fails is logged with its code and dropped: it never throws, and a promise
// it returns never becomes an unhandled rejection.
import test from 'ava'
import { Writable } from 'node:stream'
import pino from 'pino'
import { VmifsError } from '../../src/errors.js'
import { guard } from '../../src/util/guard.js'

function capture(): { log: pino.Logger; lines: () => Array<Record<string, unknown>> } {
  const out: string[] = []
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      out.push(chunk.toString())
      cb()
    }
  })
  return {
    log: pino({ level: 'info' }, sink),
    lines: () =>
      out
        .join('')
        .split('\n')
        .filter(l => l !== '')
        .map(l => JSON.parse(l) as Record<string, unknown>)
  }
}

test('a step that throws or rejects is logged with its code, never thrown', async t => {
  const { log, lines } = capture()
  let unhandled = 0
  const onUnhandled = (): void => {
    unhandled++
  }
  process.on('unhandledRejection', onUnhandled)
  t.teardown(() => process.off('unhandledRejection', onUnhandled))
  t.notThrows(() =>
    guard(log, 'publishing', () => {
      throw new VmifsError('DB_NEWER_SCHEMA', 'boom')
    })
  )
  t.notThrows(() =>
    guard(log, 'syncing', async () => {
      await new Promise(resolve => setTimeout(resolve, 5))
      throw new Error('late')
    })
  )
  let ran = false
  guard(log, 'fine', () => {
    ran = true
  })
  t.true(ran)
  await new Promise(resolve => setTimeout(resolve, 50))
  t.is(unhandled, 0)
  const got = lines().map(l => [l.step, l.code, l.err])
  t.deepEqual(got, [
    ['publishing', 'DB_NEWER_SCHEMA', 'boom'],
    ['syncing', 'INTERNAL', 'late']
  ])
})
