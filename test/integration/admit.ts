// Fleet admission for tests and benchmarks that start real agents: one admin key per process,
// and each host's data dir given its host key and the admin's certificate before its agent
// starts, as an operator does with vmifs host key, vmifs fleet admit and vmifs host cert.
import fs from 'node:fs'
import { SigningKey, hostKey } from '../../src/trust/keys.js'
import { installCert, issueCert } from '../../src/trust/certs.js'

export const FLEET_ADMIN = SigningKey.generate()

/** The config's trust section that admits the hosts admitHost() admitted. */
export const TRUST = { admins: [FLEET_ADMIN.publicKey] }

/** Makes the data dir (if need be) with its host key, and installs the admin's certificate for hostId. */
export function admitHost(dataDir: string, hostId: string): void {
  fs.mkdirSync(dataDir, { recursive: true })
  installCert(dataDir, issueCert(FLEET_ADMIN, hostId, hostKey(dataDir).publicKey))
}
