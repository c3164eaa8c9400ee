import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { request as httpsRequest } from 'node:https';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import { createLogger } from '@sluice/log';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startKubeSim, type KubeSim } from '../src/index.ts';

const run = promisify(execFile);
let sim: KubeSim;

const ADMIN = 'admin-token-0123456789';
const READER = 'reader-token-0123456789';

beforeAll(async () => {
  sim = await startKubeSim({
    nodes: 2, podsPerNode: 1, services: 1, namespaces: 1, heartbeats: false, log: createLogger({ component: 'kube-sim', level: 'silent' }),
    tls: true,
    tokens: [
      { token: ADMIN, user: 'admin', rules: [{ verbs: ['*'], resources: ['*'] }] },
      { token: READER, user: 'reader', rules: [{ verbs: ['get', 'list', 'watch'], apiGroups: [''], resources: ['nodes', 'pods'] }, { verbs: ['get'], resources: ['configmaps'], namespaces: ['ns-0'] }] },
    ],
  });
});
afterAll(async () => {
  await sim.close();
});

/** One HTTPS request that trusts kube-sim's CA; returns status and parsed body. */
function call(path: string, token?: string, method = 'GET'): Promise<{ status: number; json: { reason?: string; message?: string; code?: number; items?: unknown[] } }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(`${sim.url}${path}`, { method, ca: sim.caPem, headers: token ? { Authorization: `Bearer ${token}` } : {} }, (res) => {
      let text = '';
      res.on('data', (d: Buffer) => (text += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, json: text.startsWith('{') ? JSON.parse(text) : {} }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('HTTPS and bearer tokens', () => {
  it('serves HTTPS with its own CA, written beside the kubeconfig, which carries the CA and the first token', async () => {
    expect(sim.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    expect(sim.caPath).toBe(join(dirname(sim.kubeconfigPath), 'kube-sim-ca.crt'));
    expect(await readFile(sim.caPath!, 'utf8')).toBe(sim.caPem);
    const config = JSON.parse(await readFile(sim.kubeconfigPath, 'utf8'));
    expect(Buffer.from(config.clusters[0].cluster['certificate-authority-data'], 'base64').toString()).toBe(sim.caPem);
    expect(config.clusters[0].cluster['insecure-skip-tls-verify']).toBeUndefined();
    expect(config.users[0].user.token).toBe(ADMIN);
    // Without the CA, TLS verification fails: the certificate really is kube-sim's own.
    await expect(fetch(`${sim.url}/healthz`)).rejects.toThrow();
  });

  it('answers 401 without a token or with an unknown one, 403 outside the token\'s rules, 200 within them', async () => {
    expect((await call('/healthz')).status).toBe(200);
    const none = await call('/api/v1/nodes');
    expect(none.status).toBe(401);
    expect(none.json).toMatchObject({ kind: 'Status', reason: 'Unauthorized', code: 401 });
    expect((await call('/api/v1/nodes', 'not-a-known-token')).status).toBe(401);
    expect((await call('/api', 'not-a-known-token')).status).toBe(401);
    expect((await call('/api/v1/nodes', READER)).status).toBe(200);
    expect((await call('/api', READER)).status).toBe(200);
    const forbidden = await call('/api/v1/namespaces/ns-0/services', READER);
    expect(forbidden.status).toBe(403);
    expect(forbidden.json.reason).toBe('Forbidden');
    expect(forbidden.json.message).toBe('services is forbidden: User "reader" cannot list resource "services" in API group "" in the namespace "ns-0"');
    const deleteNode = await call('/api/v1/nodes/node-00001', READER, 'DELETE');
    expect(deleteNode.status).toBe(403);
    expect(deleteNode.json.message).toBe('nodes "node-00001" is forbidden: User "reader" cannot delete resource "nodes" in API group "" at the cluster scope');
    expect(sim.store.get('nodes', '', 'node-00001')).toBeDefined();
    // Namespace-limited rule: get in ns-0 only.
    await call('/api/v1/namespaces/ns-0/configmaps', ADMIN);
    expect((await call('/api/v1/namespaces/ns-0/configmaps/missing', READER)).status).toBe(404);
    expect((await call('/api/v1/namespaces/default/configmaps/missing', READER)).status).toBe(403);
    expect((await call('/api/v1/namespaces/ns-0/services', ADMIN)).status).toBe(200);
  });

  it('works with kubectl through the written kubeconfig, and refuses a kubeconfig with a weaker token', async () => {
    const cache = join(dirname(sim.kubeconfigPath), 'cache');
    const { stdout } = await run('kubectl', ['--kubeconfig', sim.kubeconfigPath, '--cache-dir', cache, 'get', 'nodes', '-o', 'name'], { timeout: 30_000 });
    expect(stdout).toBe('node/node-00001\nnode/node-00002\n');
    const reader = join(dirname(sim.kubeconfigPath), 'reader.kubeconfig');
    await writeFile(reader, sim.kubeconfigFor(READER));
    const failed = await run('kubectl', ['--kubeconfig', reader, '--cache-dir', cache, 'get', 'services', '-A'], { timeout: 30_000 }).then(() => '', (err: { stderr: string }) => err.stderr);
    expect(failed).toContain('services is forbidden: User "reader" cannot list resource "services" in API group "" at the cluster scope');
    // An unknown token (with no credentials at all kubectl would prompt for a password on a 401).
    const anonymous = join(dirname(sim.kubeconfigPath), 'unknown.kubeconfig');
    await writeFile(anonymous, sim.kubeconfigFor('unknown-token-0123456789'));
    const unauthorized = await run('kubectl', ['--kubeconfig', anonymous, '--cache-dir', cache, 'get', 'nodes'], { timeout: 30_000 }).then(() => '', (err: { stderr: string }) => err.stderr);
    expect(unauthorized).toMatch(/Unauthorized|must be logged in/);
  });

  it('works with @kubernetes/client-node from the kubeconfig (CA + token)', async () => {
    const kc = new KubeConfig();
    kc.loadFromFile(sim.kubeconfigPath);
    const api = kc.makeApiClient(CoreV1Api);
    const pods = await api.listPodForAllNamespaces();
    expect(pods.items).toHaveLength(2);
    const readerKc = new KubeConfig();
    readerKc.loadFromString(sim.kubeconfigFor(READER));
    await expect(readerKc.makeApiClient(CoreV1Api).listServiceForAllNamespaces()).rejects.toThrow(/403|forbidden/i);
  });

  it('serves an in-cluster client (service-account token and CA files, KUBERNETES_SERVICE_HOST/PORT)', async () => {
    const root = await mkdtemp(join(tmpdir(), 'kube-sim-sa-'));
    const sa = await sim.writeServiceAccount(root, { token: READER, namespace: 'ns-0' });
    expect(await readFile(join(sa.dir, 'namespace'), 'utf8')).toBe('ns-0');
    const saved = { host: process.env.KUBERNETES_SERVICE_HOST, port: process.env.KUBERNETES_SERVICE_PORT };
    Object.assign(process.env, sa.env);
    try {
      const kc = new KubeConfig();
      kc.loadFromCluster(sa.pathPrefix);
      expect(kc.getCurrentCluster()?.server).toBe(sim.url);
      const nodes = await kc.makeApiClient(CoreV1Api).listNode();
      expect(nodes.items.map((n) => n.metadata?.name)).toEqual(['node-00001', 'node-00002']);
      await expect(kc.makeApiClient(CoreV1Api).listNamespacedService({ namespace: 'ns-0' })).rejects.toThrow(/403|forbidden/i);
    } finally {
      for (const [k, v] of [['KUBERNETES_SERVICE_HOST', saved.host], ['KUBERNETES_SERVICE_PORT', saved.port]] as const) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
      await rm(root, { recursive: true, force: true });
    }
  });
});
