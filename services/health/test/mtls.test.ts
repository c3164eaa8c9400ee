import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import { clientCredentials, createHealthClient, type ProbeResult } from '@sluice/health-api';
import { createLogger } from '@sluice/log';
import { Aggregator, startHealthServer, type HealthServer } from '../src/index.ts';

let dir: string;
let server: HealthServer;
let address: string;

/** A CA, a server certificate for localhost, and client certificates naming nodes by CN or by DNS SAN. */
function makeCertificates(): void {
  const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '1', '-subj', '/CN=sluice-test-ca',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  const issue = (name: string, subject: string, extensions: string) => {
    writeFileSync(join(dir, `${name}.ext`), extensions);
    openssl('req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', subject);
    openssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.crt`, '-days', '1', '-extfile', `${name}.ext`);
  };
  issue('server', '/CN=localhost', 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  issue('node-a', '/CN=node-a', 'extendedKeyUsage=clientAuth\n');
  issue('node-b', '/CN=agent', 'subjectAltName=DNS:node-b\nextendedKeyUsage=clientAuth\n');
}

const results = (target: string): ProbeResult[] => [
  { target, kind: 'PROBE_KIND_HOST_ICMP', ip: '10.0.0.3', ok: true, rttUs: 100, error: '', timeUnixMs: Date.now() },
];
const client = (name?: string) =>
  createHealthClient(address, {
    credentials: clientCredentials({ ca: join(dir, 'ca.crt'), ...(name ? { cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) } : {}) }),
    deadlineMs: 3000,
  });

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sl-health-tls-'));
  makeCertificates();
  const aggregator = new Aggregator();
  aggregator.setNodes(['node-a', 'node-b', 'node-c'].map((name) => ({ name, hostIP: '', endpointIP: '' })));
  const read = (file: string) => readFileSync(join(dir, file));
  server = await startHealthServer({
    aggregator,
    address: '127.0.0.1:0',
    tls: { cert: read('server.crt'), key: read('server.key'), ca: read('ca.crt') },
    logger: createLogger({ component: 'test', level: 'silent' }),
  });
  address = `localhost:${server.port}`;
});
afterAll(async () => {
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('mutual TLS', () => {
  it('lets a reporter report for the node named in its certificate CN', async () => {
    const a = client('node-a');
    expect(await a.reportProbes({ reporter: 'node-a', results: results('node-c') })).toEqual({ accepted: 1, ignored: 0 });
    expect((await a.getNodeHealth('node-c')).reachability).toBe('REACHABILITY_REACHABLE');
    a.close();
  });

  it('accepts the name from a DNS subject alternative name', async () => {
    const b = client('node-b');
    expect(await b.reportProbes({ reporter: 'node-b', results: results('node-c') })).toMatchObject({ accepted: 1 });
    b.close();
  });

  it('refuses a report for another node with PERMISSION_DENIED', async () => {
    const a = client('node-a');
    await expect(a.reportProbes({ reporter: 'node-b', results: results('node-c') })).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED });
    a.close();
    expect(server.stats().deniedReports).toBe(1);
  });

  it('refuses a client without a certificate', async () => {
    const anonymous = client();
    await expect(anonymous.getClusterHealth()).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
    anonymous.close();
  });

  it('is read by `sluice health status` with the CLI\'s --health-tls-* flags', async () => {
    // The CLI in-process (services/cli), against this mutual-TLS service.
    const { runCli } = await import('../../cli/src/cli.ts');
    const run = async (...args: string[]) => {
      let out = '';
      let err = '';
      const code = await runCli(['health', 'status', '--etcd-endpoints', 'http://127.0.0.1:9', '--health', address, ...args], {
        stdout: (t) => void (out += t), stderr: (t) => void (err += t), env: { SLUICE_DEMO_STATE: join(dir, 'no-demo.json') }, cwd: dir,
      });
      return { code, out, err };
    };
    const tls = await run('--health-tls-ca', join(dir, 'ca.crt'), '--health-tls-cert', join(dir, 'node-a.crt'), '--health-tls-key', join(dir, 'node-a.key'));
    expect(tls.err).toBe('');
    expect(tls.code).toBe(0);
    expect(tls.out).toContain('  node-c: reachable');
    const yaml = await run('-o', 'yaml', '--health-tls-ca', join(dir, 'ca.crt'), '--health-tls-cert', join(dir, 'node-a.crt'), '--health-tls-key', join(dir, 'node-a.key'));
    expect(yaml.out).toContain('total: 3\n');
    const plain = await run();
    expect(plain.code).toBe(1);
    expect(plain.err).toMatch(/health service at localhost:\d+ unreachable/);
  });
});
