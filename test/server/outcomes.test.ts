// The edges answer errors from the one table (OUTCOMES): the local API with the code's HTTP
// status and whether to retry, the mount with the code's errno.
import test from 'ava'
import os from 'node:os'
import path from 'node:path'
import { Client } from 'undici'
import { VmifsError } from '../../src/errors.js'
import { errnoOf } from '../../src/fuse/errno.js'
import { LocalApi, agentCall } from '../../src/server/local-api.js'
import { tmpDir } from '../helpers/tmp.js'

test("the local API answers an error with its code's status; the mount with its errno", async t => {
  const sock = path.join(tmpDir(t), 'api.sock')
  const api = new LocalApi(sock, {
    'GET /v1/unavailable': () => {
      throw new VmifsError('CHUNK_UNAVAILABLE', 'no holder delivered it')
    },
    'GET /v1/missing': () => {
      throw VmifsError.imageNotFound('web')
    },
    'GET /v1/broken': () => {
      throw new Error('not ours')
    }
  })
  await api.listen()
  t.teardown(async () => await api.close())
  const err = await t.throwsAsync(agentCall(sock, 'GET', '/v1/unavailable'))
  t.is((err as VmifsError).code, 'CHUNK_UNAVAILABLE')
  const raw = async (p: string): Promise<{ status: number; body: Record<string, unknown> }> => {
    const c = new Client('http://localhost', { socketPath: sock })
    try {
      const r = await c.request({ method: 'GET', path: p })
      return { status: r.statusCode, body: (await r.body.json()) as Record<string, unknown> }
    } finally {
      await c.close()
    }
  }
  t.like(await raw('/v1/unavailable'), { status: 503, body: { error: 'CHUNK_UNAVAILABLE', retryable: true } })
  t.like(await raw('/v1/missing'), { status: 404, body: { error: 'IMAGE_NOT_FOUND', retryable: false } })
  t.like(await raw('/v1/broken'), { status: 500, body: { error: 'INTERNAL' } })
  t.like(await raw('/v1/nope'), { status: 404, body: { error: 'NO_ROUTE' } })
  t.is(errnoOf(VmifsError.imageNotFound('web')), os.constants.errno.ENOENT)
  t.is(errnoOf(new VmifsError('CHUNK_UNAVAILABLE', 'x')), os.constants.errno.EIO)
  t.is(errnoOf(new Error('x')), os.constants.errno.EIO)
})
