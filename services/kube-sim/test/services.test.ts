import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { KubeSim } from '../src/index.ts';
import { request, startSmall } from './helpers.ts';

const run = promisify(execFile);
let sim: KubeSim;
beforeAll(async () => {
  sim = await startSmall({ nodes: 1, podsPerNode: 0, services: 0, serviceRanges: { nodePortRange: [30000, 30009] } });
});
afterAll(async () => {
  await sim.close();
});

const BASE = '/api/v1/namespaces/default/services';
const service = (name: string, spec: Record<string, unknown>) => ({ apiVersion: 'v1', kind: 'Service', metadata: { name }, spec: { selector: { app: name }, ...spec } });
const create = (name: string, spec: Record<string, unknown>) => request(sim, 'POST', BASE, service(name, spec));
const causes = (json: { details?: { causes?: { field: string; message: string }[] } }) => json.details?.causes ?? [];

describe('Services as the API server makes them', () => {
  it('allocates node ports for NodePort and LoadBalancer Services, and a healthCheckNodePort for externalTrafficPolicy Local', async () => {
    const np = await create('np', { type: 'NodePort', ports: [{ name: 'http', port: 80 }, { name: 'dns', port: 53, protocol: 'UDP' }] });
    expect(np.status).toBe(201);
    const ports = (np.json.spec.ports as { nodePort: number; targetPort: number }[]);
    expect(ports.map((p) => p.nodePort).every((p) => p >= 30000 && p <= 30009)).toBe(true);
    expect(new Set(ports.map((p) => p.nodePort)).size).toBe(2);
    expect(ports[0]!.targetPort).toBe(80);
    expect(np.json.spec.externalTrafficPolicy).toBe('Cluster');
    const lb = await create('lb', { type: 'LoadBalancer', externalTrafficPolicy: 'Local', ports: [{ port: 443 }] });
    expect(lb.json.spec.healthCheckNodePort).toBeGreaterThanOrEqual(30000);
    expect(lb.json.spec.ports[0].nodePort).not.toBe(lb.json.spec.healthCheckNodePort);
    const noPorts = await create('lb-no-np', { type: 'LoadBalancer', allocateLoadBalancerNodePorts: false, ports: [{ port: 443 }] });
    expect(noPorts.json.spec.ports[0].nodePort).toBeUndefined();
    const cip = await create('cip', { ports: [{ port: 80 }] });
    expect(cip.json.spec.ports[0].nodePort).toBeUndefined();
    expect(cip.json.spec.clusterIP).toMatch(/^10\.(9[6-9]|10\d|11[01])\./);
  });

  it('honours a requested node port and answers a taken or out-of-range one with a 422 naming the field', async () => {
    const want = await create('want', { type: 'NodePort', ports: [{ port: 80, nodePort: 30009 }] });
    expect(want.json.spec.ports[0].nodePort).toBe(30009);
    const taken = await create('taken', { type: 'NodePort', ports: [{ port: 80, nodePort: 30009 }] });
    expect(taken.status).toBe(422);
    expect(taken.json.reason).toBe('Invalid');
    expect(taken.json.message).toBe('Service "taken" is invalid: spec.ports[0].nodePort: Invalid value: 30009: provided port is already allocated');
    const range = await create('range', { type: 'NodePort', ports: [{ port: 80, nodePort: 8080 }] });
    expect(causes(range.json)[0]).toMatchObject({ field: 'spec.ports[0].nodePort', message: expect.stringContaining('valid range') });
    const forbidden = await create('forbidden', { ports: [{ port: 80, nodePort: 30005 }] });
    expect(causes(forbidden.json)[0]!.field).toBe('spec.ports[0].nodePort');
    expect(sim.store.get('services', 'default', 'taken')).toBeUndefined();
  });

  it('keeps allocations on update, releases them on a type change and on delete', async () => {
    const path = `${BASE}/np`;
    const before = (await request(sim, 'GET', path)).json;
    // A PUT without nodePorts or clusterIP (as a client that never read them) keeps the allocated values.
    const put = await request(sim, 'PUT', path, service('np', { type: 'NodePort', ports: [{ name: 'http', port: 80 }, { name: 'dns', port: 53, protocol: 'UDP' }] }));
    expect(put.status).toBe(200);
    expect(put.json.spec.ports.map((p: { nodePort: number }) => p.nodePort)).toEqual(before.spec.ports.map((p: { nodePort: number }) => p.nodePort));
    expect(put.json.spec.clusterIP).toBe(before.spec.clusterIP);
    const moved = await request(sim, 'PATCH', path, { spec: { clusterIP: '10.96.200.200', clusterIPs: ['10.96.200.200'] } }, 'application/merge-patch+json');
    expect(moved.status).toBe(422);
    expect(causes(moved.json)[0]!.message).toContain('may not change once set');
    const toClusterIP = await request(sim, 'PATCH', path, { spec: { type: 'ClusterIP' } }, 'application/strategic-merge-patch+json');
    expect(toClusterIP.status).toBe(200);
    expect(toClusterIP.json.spec.ports.every((p: { nodePort?: number }) => p.nodePort === undefined)).toBe(true);
    // The freed ports can be requested again.
    const reuse = await create('reuse', { type: 'NodePort', ports: [{ port: 80, nodePort: before.spec.ports[0].nodePort }] });
    expect(reuse.status).toBe(201);
    await request(sim, 'DELETE', `${BASE}/reuse`);
    expect((await create('reuse2', { type: 'NodePort', ports: [{ port: 80, nodePort: before.spec.ports[0].nodePort }] })).status).toBe(201);
  });

  it('honours a requested clusterIP, rejects a taken or out-of-range one, and never hands out one twice', async () => {
    const want = await create('ip-want', { clusterIP: '10.96.100.100', ports: [{ port: 80 }] });
    expect(want.json.spec.clusterIP).toBe('10.96.100.100');
    expect(want.json.spec.clusterIPs).toEqual(['10.96.100.100']);
    const taken = await create('ip-taken', { clusterIP: '10.96.100.100', ports: [{ port: 80 }] });
    expect(taken.status).toBe(422);
    expect(causes(taken.json)[0]).toMatchObject({ field: 'spec.clusterIPs', message: expect.stringContaining('provided IP is already allocated') });
    const outside = await create('ip-outside', { clusterIP: '192.168.1.1', ports: [{ port: 80 }] });
    expect(causes(outside.json)[0]!.message).toContain('The range of valid IPs is 10.96.0.0/12');
    const headless = await create('headless', { clusterIP: 'None', ports: [{ port: 80 }] });
    expect(headless.json.spec.clusterIPs).toEqual(['None']);
    const ips = sim.store.objectsIn('services').map((s) => (JSON.parse(s.json) as { spec: { clusterIP: string } }).spec.clusterIP).filter((ip) => ip !== 'None');
    expect(new Set(ips).size).toBe(ips.length);
  });

  it('allocates dual-stack cluster IPs in the requested family order', async () => {
    const dual = await create('dual', { ipFamilyPolicy: 'RequireDualStack', ipFamilies: ['IPv6', 'IPv4'], ports: [{ port: 80 }] });
    expect(dual.status).toBe(201);
    expect(dual.json.spec.ipFamilies).toEqual(['IPv6', 'IPv4']);
    expect(dual.json.spec.clusterIPs[0]).toMatch(/^fd00:10:96::/);
    expect(dual.json.spec.clusterIPs[1]).toMatch(/^10\./);
    expect(dual.json.spec.clusterIP).toBe(dual.json.spec.clusterIPs[0]);
    const prefer = await create('prefer', { ipFamilyPolicy: 'PreferDualStack', ports: [{ port: 80 }] });
    expect(prefer.json.spec.ipFamilies).toEqual(['IPv4', 'IPv6']);
    const single = await create('single-two', { ipFamilyPolicy: 'SingleStack', ipFamilies: ['IPv4', 'IPv6'], ports: [{ port: 80 }] });
    expect(single.status).toBe(422);
    const v6 = await create('v6-want', { ipFamilies: ['IPv6'], clusterIP: 'fd00:10:96::abcd', ports: [{ port: 80 }] });
    expect(v6.json.spec.clusterIPs).toEqual(['fd00:10:96::abcd']);
  });

  it('kubectl shows the conflict as the real server reports it', async () => {
    const file = join(dirname(sim.kubeconfigPath), 'svc.yaml');
    await writeFile(file, 'apiVersion: v1\nkind: Service\nmetadata: {name: kubectl-np, namespace: default}\nspec:\n  type: NodePort\n  selector: {app: x}\n  ports:\n  - {port: 80, nodePort: 30009}\n');
    const failure = await run('kubectl', ['--kubeconfig', sim.kubeconfigPath, '--cache-dir', join(dirname(sim.kubeconfigPath), 'cache'), 'apply', '-f', file]).then(() => '', (err: { stderr: string }) => err.stderr);
    expect(failure).toContain('The Service "kubectl-np" is invalid: spec.ports[0].nodePort: Invalid value: 30009: provided port is already allocated');
  });

  it('answers a full node port range with a 500 and loses nothing', async () => {
    let last = { status: 201 } as { status: number; json?: { message: string } };
    for (let i = 0; i < 12 && last.status === 201; i++) last = await create(`fill-${i}`, { type: 'NodePort', ports: [{ port: 80 }] });
    expect(last.status).toBe(500);
    expect(last.json!.message).toContain('range is full');
  });
});
