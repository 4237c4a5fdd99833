// Temp dirs for unit tests: created under os.tmpdir(), removed when the test ends.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import type { ExecutionContext } from 'ava'
import { DataDir } from '../../src/datadir.js'

export function tmpDir(t: ExecutionContext, prefix = 'vmifs-test-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix))
  t.teardown(() => {
    fs.rmSync(dir, { recursive: true, force: true })
  })
  return dir
}

/** Opens a data dir in a fresh temp dir; closed (then removed) when the test ends. */
export function openDataDir(t: ExecutionContext, capacityBytes = 1024 * 1024 * 1024): DataDir {
  const dir = tmpDir(t, 'vmifs-dd-')
  const dd = DataDir.open(dir, { capacityBytes })
  // teardowns run in reverse order of registration: close before the dir is removed
  t.teardown(() => {
    try {
      dd.close()
    } catch {
      /* already closed by the test */
    }
  })
  return dd
}

/** Every file (relative path) under dir, recursively. */
export function listFiles(dir: string): string[] {
  if (!fs.existsSync(dir)) return []
  const out: string[] = []
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name)
    if (e.isDirectory()) for (const f of listFiles(p)) out.push(path.join(e.name, f))
    else out.push(e.name)
  }
  return out.sort()
}

export const sleep = async (ms: number): Promise<void> => {
  await new Promise(resolve => setTimeout(resolve, ms))
}
