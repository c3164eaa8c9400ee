/**
 * LB IPAM through kube-sim's API (the project's CRDs applied with kubectl): assignment, selectors, requested
 * addresses, conflicts, exhaustion, release, a disabled pool, a restart that reads the assignment back, and the L2
 * announcement records in etcd. The allocator's rules themselves are in lb-ipam-allocator.test.ts.
 */
import { execFile } from 'node:child_process';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest, type RequestOptions } from 'node:https';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '@sluice/log';
import { createRegistry, type Registry } from '@sluice/metrics';
import { decodeSlimL2Announcement } from '@sluice/slim';
import type { KubeConfig } from '@kubernetes/client-node';
import { loadKubeConfig } from '../src/kube-client.ts';
import { L2_POLICIES_PATH, POOLS_PATH } from '../src/lb-ipam/controller.ts';
import { Operator } from '../src/operator.ts';
import { startEnv, waitFor, type Env } from './env.ts';

const CRDS = fileURLToPath(new URL('../../../deploy/crds', import.meta.url));
const run = promisify(execFile);
type Any = Record<string, any>;

describe('LB IPAM against kube-sim', () => {
  let env: Env;
  let kube: KubeConfig;
  let operator: Operator;
  let registry: Registry;
  let dir: string;
  const log = createLogger({ component: 'operator', level: (process.env.LBIPAM_LOG as 'info') ?? 'warn' });

  const kubectl = async (...args: string[]) => (await run('kubectl', ['--kubeconfig', env.sim.kubeconfigPath, '--cache-dir', join(dir, 'cache'), ...args], { timeout: 30_000 })).stdout;
  const svcPath = (name: string) => `/api/v1/namespaces/default/services/${name}`;
  const getSvc = async (name: string) => (await kubeRequest(kube, 'GET', svcPath(name), undefined)) as Any;
  const ips = async (name: string) => ((await getSvc(name)).status?.loadBalancer?.ingress ?? []).map((i: Any) => i.ip);
  const condition = async (name: string) => ((await getSvc(name)).status?.conditions ?? []).find((c: Any) => c.type === 'sluice.io/lb-ipam-request-satisfied');
  const pool = async (name: string) => (await kubeRequest(kube, 'GET', `${POOLS_PATH}/${name}`, undefined)) as Any;
  const poolCondition = async (name: string, type: string) => ((await pool(name)).status?.conditions ?? []).find((c: Any) => c.type === type);
  const createPool = (name: string, spec: Any) => kubeRequest(kube, 'POST', POOLS_PATH, { apiVersion: 'sluice.io/v1alpha1', kind: 'SluiceLoadBalancerIPPool', metadata: { name }, spec });
  const createSvc = (name: string, extra: { labels?: Record<string, string>; annotations?: Record<string, string>; spec?: Any } = {}) =>
    kubeRequest(kube, 'POST', '/api/v1/namespaces/default/services', {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name, labels: extra.labels, annotations: extra.annotations },
      spec: { type: 'LoadBalancer', ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }], ...extra.spec },
    });
  const waitIps = (name: string, want: string[]) =>
    waitFor(`${name} to show ${want.join(',') || 'no address'}`, async () => JSON.stringify(await ips(name)) === JSON.stringify(want), 15_000);
  const waitReason = (name: string, reason: string) => waitFor(`${name}'s condition ${reason}`, async () => (await condition(name))?.reason === reason && (await condition(name)), 15_000);
  const writes = async (r: Registry) => {
    const metric = (await r.getMetricsAsJSON()).find((m) => m.name === 'sluice_operator_lbipam_status_writes_total');
    return ((metric?.values ?? []) as Array<{ value: number }>).reduce((n, v) => n + v.value, 0);
  };
  const startOperator = async (identity: string) => {
    registry = createRegistry();
    const op = new Operator({ kube, etcd: env.client, keys: env.keys, registry, log, identity, leaseTtlSeconds: 3 });
    op.start();
    await op.waitUntilSynced(AbortSignal.timeout(30_000));
    return op;
  };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'sluice-lbipam-'));
    env = await startEnv({ nodes: 0, services: 0 });
    kube = loadKubeConfig({ server: env.sim.url });
    await kubectl('apply', '-k', CRDS);
    await createPool('pool-a', { blocks: [{ cidr: '10.200.0.0/30' }] }); // .1 and .2 (network and broadcast excluded)
    await createPool('gold', { blocks: [{ start: '10.201.0.10', stop: '10.201.0.11' }], serviceSelector: { matchLabels: { tier: 'gold' } } });
    await createPool('off', { blocks: [{ cidr: '10.202.0.0/29' }], disabled: true });
    operator = await startOperator('lbipam-1');
  }, 60_000);
  afterAll(async () => {
    await operator?.stop(2_000);
    await env?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('assigns the first free address of a selecting pool, shown by kubectl as EXTERNAL-IP', async () => {
    await createSvc('web');
    await waitIps('web', ['10.200.0.1']);
    expect(await condition('web')).toMatchObject({ status: 'True', reason: 'Satisfied' });
    const table = await kubectl('get', 'svc', 'web');
    expect(table).toMatch(/EXTERNAL-IP/);
    expect(table).toMatch(/web\s+LoadBalancer\s+\S+\s+10\.200\.0\.1\s+80:\d+\/TCP/);
  });

  it('gives a Service the pool its serviceSelector picks, and never a pool that does not select it', async () => {
    await createSvc('gold-1', { labels: { tier: 'gold' } });
    await waitIps('gold-1', ['10.201.0.10']); // "gold" sorts before "pool-a"
    expect(await ips('web')).toEqual(['10.200.0.1']);
  });

  it('honours spec.loadBalancerIP and the annotation, and refuses an address in use or outside enabled pools', async () => {
    await createSvc('req', { spec: { loadBalancerIP: '10.200.0.2' } });
    await waitIps('req', ['10.200.0.2']);
    await createSvc('req-taken', { annotations: { 'lbipam.sluice.io/ips': '10.200.0.2' } });
    expect(await waitReason('req-taken', 'RequestedIPInUse')).toMatchObject({ status: 'False' });
    expect(await ips('req-taken')).toEqual([]);
    await createSvc('req-off', { annotations: { 'lbipam.sluice.io/ips': '10.202.0.1' } });
    expect(await waitReason('req-off', 'RequestedIPNotInPool')).toMatchObject({ status: 'False', message: expect.stringContaining('10.202.0.1') });
    expect(await kubectl('get', 'svc', 'req-off')).toMatch(/req-off\s+LoadBalancer\s+\S+\s+<pending>/);
  });

  it('leaves Services of another loadBalancerClass alone', async () => {
    await createSvc('foreign', { spec: { loadBalancerClass: 'example.com/other' } });
    await createSvc('after-foreign', { labels: { tier: 'gold' } });
    await waitIps('after-foreign', ['10.201.0.11']);
    expect(await ips('foreign')).toEqual([]);
    expect(await condition('foreign')).toBeUndefined();
  });

  it('gives a Service a clear condition when its pools are exhausted, and the pool reports it', async () => {
    await createSvc('late');
    const c = await waitReason('late', 'PoolExhausted');
    expect(c).toMatchObject({ status: 'False', message: expect.stringContaining('pool-a') });
    await waitFor('pool-a exhausted', async () => (await poolCondition('pool-a', 'sluice.io/ips-available'))?.reason === 'Exhausted', 10_000);
    expect(await poolCondition('pool-a', 'sluice.io/ips-used')).toMatchObject({ message: '2' });
    expect(await poolCondition('pool-a', 'sluice.io/ips-total')).toMatchObject({ message: '2' });
    expect(await poolCondition('off', 'sluice.io/ips-available')).toMatchObject({ status: 'False', reason: 'Disabled' });
  });

  it('releases an address when its Service goes or stops being a LoadBalancer, and hands it on', async () => {
    await kubeRequest(kube, 'DELETE', svcPath('web'), undefined);
    await waitIps('late', ['10.200.0.1']);
    expect(await condition('late')).toMatchObject({ status: 'True' });
    await kubeRequest(kube, 'PATCH', svcPath('req'), { spec: { type: 'ClusterIP', loadBalancerIP: null } }, 'application/merge-patch+json');
    await waitIps('req', []);
    // The freed address goes to the Service that asked for it.
    await waitIps('req-taken', ['10.200.0.2']);
  });

  it('reports a pool that overlaps an older one as a conflict, and never hands one address to two Services', async () => {
    await createPool('zz-overlap', { blocks: [{ cidr: '10.200.0.0/29' }] });
    await waitFor('the conflict condition', async () => (await poolCondition('zz-overlap', 'sluice.io/pool-conflict'))?.status === 'True', 10_000);
    expect((await poolCondition('zz-overlap', 'sluice.io/pool-conflict')).message).toContain('pool-a');
    // Someone else writes an address another Service holds into a Service's status: the younger one loses it.
    await createSvc('copycat', { labels: { tier: 'gold' } });
    await waitReason('copycat', 'PoolExhausted');
    await kubeRequest(kube, 'PATCH', `${svcPath('copycat')}/status`, { status: { loadBalancer: { ingress: [{ ip: '10.201.0.10' }] } } }, 'application/merge-patch+json');
    await waitIps('copycat', []);
    expect(await ips('gold-1')).toEqual(['10.201.0.10']);
  });

  it('writes each L2 announcement policy to etcd with the addresses it selects', async () => {
    await kubeRequest(kube, 'POST', L2_POLICIES_PATH, {
      apiVersion: 'sluice.io/v1alpha1', kind: 'SluiceL2AnnouncementPolicy', metadata: { name: 'gold-l2' },
      spec: { serviceSelector: { matchLabels: { tier: 'gold' } }, nodeSelector: { matchLabels: { edge: 'true' } }, interfaces: ['^eth'], loadBalancerIPs: true },
    });
    const record = await waitFor('the l2 record', async () => {
      const value = await env.client.get(env.keys.l2Announcement('gold-l2')).string();
      return value ? decodeSlimL2Announcement(value) : undefined;
    }, 10_000);
    expect(record).toEqual({
      v: 1, name: 'gold-l2', nodeSelector: { matchLabels: { edge: 'true' } }, interfaces: ['^eth'],
      addresses: [{ ip: '10.201.0.10', service: 'default/gold-1' }, { ip: '10.201.0.11', service: 'default/after-foreign' }],
    });
    await kubeRequest(kube, 'DELETE', `${L2_POLICIES_PATH}/gold-l2`, undefined);
    await waitFor('the l2 record gone', async () => (await env.client.get(env.keys.l2Announcement('gold-l2')).string()) === null, 10_000);
  });

  it('a standby follows but never writes: only the leader assigns', async () => {
    const leaderRegistry = registry;
    const standbyRegistry = createRegistry();
    const standby = new Operator({ kube, etcd: env.client, keys: env.keys, registry: standbyRegistry, log, identity: 'lbipam-standby', leaseTtlSeconds: 3 });
    standby.start();
    try {
      await waitFor('the standby to list', () => standby.informersSynced, 15_000);
      const before = await writes(leaderRegistry);
      await createSvc('while-standby', { labels: { tier: 'gold' }, spec: { loadBalancerIP: '10.200.0.2' } });
      await waitReason('while-standby', 'RequestedIPInUse');
      expect(await writes(leaderRegistry)).toBeGreaterThan(before);
      expect(standby.isLeader).toBe(false);
      expect(await writes(standbyRegistry)).toBe(0);
    } finally {
      await standby.stop(2_000);
      await kubeRequest(kube, 'DELETE', svcPath('while-standby'), undefined);
    }
  });

  it('reads the assignment back after a restart: a new operator changes nothing and continues from it', async () => {
    const before = Object.fromEntries(await Promise.all(['late', 'gold-1', 'after-foreign', 'req-taken'].map(async (n) => [n, await ips(n)] as const)));
    await operator.stop(2_000);
    operator = await startOperator('lbipam-2');
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    const after = Object.fromEntries(await Promise.all(Object.keys(before).map(async (n) => [n, await ips(n)] as const)));
    expect(after).toEqual(before);
    expect(await writes(registry)).toBe(0);
    // It continues: a freed address goes to the oldest waiting Service (copycat; pool-a selects every Service), then
    // to the next one, never onto an address that is taken.
    await kubeRequest(kube, 'DELETE', svcPath('late'), undefined);
    await createSvc('next');
    await waitIps('copycat', ['10.200.0.1']);
    expect(await waitReason('next', 'PoolExhausted')).toMatchObject({ status: 'False' });
    await kubeRequest(kube, 'DELETE', svcPath('copycat'), undefined);
    await waitIps('next', ['10.200.0.1']);
  });
});

/** A JSON request to the API server with the kubeconfig's TLS and credentials; rejects on an answer other than 2xx. */
async function kubeRequest(config: KubeConfig, method: string, path: string, body: unknown, contentType = 'application/json'): Promise<unknown> {
  const cluster = config.getCurrentCluster();
  if (!cluster) throw new Error('no current cluster in the kubeconfig');
  const url = new URL(cluster.server.replace(/\/$/, '') + path);
  const options: RequestOptions = { headers: {} };
  await config.applyToHTTPSOptions(options);
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  options.headers = { ...options.headers, accept: 'application/json', ...(payload ? { 'content-type': contentType, 'content-length': payload.length } : {}) };
  return new Promise((resolve, reject) => {
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
    const req = send(url, { ...options, method, timeout: 30_000 }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (c: Buffer) => chunks.push(c));
      response.on('error', reject);
      response.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        const code = response.statusCode ?? 0;
        let parsed: unknown = text;
        try {
          parsed = JSON.parse(text);
        } catch {
          // not JSON: keep the text for the message
        }
        if (code >= 200 && code < 300) resolve(parsed);
        else reject(new Error(`${method} ${path}: ${code} ${(parsed as Any)?.message ?? text.slice(0, 200)}`));
      });
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${path}: timed out`)));
    req.on('error', reject);
    req.end(payload);
  });
}
