import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { KubeSim } from '../src/index.ts';
import { readWatch, request, startSmall } from './helpers.ts';

let sim: KubeSim;

beforeAll(async () => {
  sim = await startSmall();
});
afterAll(async () => {
  await sim.close();
});

const pod = (name: string, extra: Record<string, unknown> = {}) => ({
  apiVersion: 'v1', kind: 'Pod', metadata: { name, labels: { app: 'x' } }, spec: { containers: [{ name: 'c', image: 'i' }] }, ...extra,
});

describe('bad requests get Status errors and never crash the server', () => {
  it('answers 400, 404, 405, 409, 415 and 422 with Status objects', async () => {
    const cases: [string, string, unknown, number, string, string?][] = [
      ['POST', '/api/v1/namespaces/default/pods', '{not json', 400, 'BadRequest'],
      ['POST', '/api/v1/namespaces/default/pods', '[1,2]', 400, 'BadRequest'],
      ['POST', '/api/v1/namespaces/default/pods', { ...pod('x'), metadata: { name: 'x', namespace: 'other' } }, 400, 'BadRequest'],
      ['GET', '/api/v1/pods?labelSelector=app%20in', undefined, 400, 'BadRequest'],
      ['GET', '/api/v1/pods?fieldSelector=spec.bogus%3D1', undefined, 400, 'BadRequest'],
      ['GET', '/api/v1/pods?resourceVersion=abc&watch=1', undefined, 400, 'BadRequest'],
      ['GET', '/api/v1/pods?limit=-3', undefined, 400, 'BadRequest'],
      ['GET', '/api/v1/namespaces/default/pods/missing', undefined, 404, 'NotFound'],
      ['GET', '/api/v1/widgets', undefined, 404, 'NotFound'],
      ['GET', '/apis/nope.example.com/v1', undefined, 404, 'NotFound'],
      ['POST', '/api/v1/namespaces/nowhere/pods', pod('y'), 404, 'NotFound'],
      ['PUT', '/api/v1/namespaces/default/pods', pod('y'), 405, 'MethodNotAllowed'],
      ['POST', '/api/v1/namespaces/default/pods', { ...pod('bad_name') }, 422, 'Invalid'],
      ['POST', '/api/v1/namespaces/default/pods', { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'nocontainers' }, spec: {} }, 422, 'Invalid'],
      ['POST', '/api/v1/namespaces/default/pods', { ...pod('badlabel'), metadata: { name: 'badlabel', labels: { 'a b': 'c' } } }, 422, 'Invalid'],
      ['POST', '/api/v1/nodes', { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'n' } }, 400, 'BadRequest'],
    ];
    for (const [method, path, body, code, reason] of cases) {
      const res = await request(sim, method, path, body);
      expect({ path, status: res.status }).toEqual({ path, status: code });
      expect(res.json).toMatchObject({ kind: 'Status', apiVersion: 'v1', status: 'Failure', code, reason });
    }
    const created = await request(sim, 'POST', '/api/v1/namespaces/default/pods', pod('dup'));
    expect(created.status).toBe(201);
    const dup = await request(sim, 'POST', '/api/v1/namespaces/default/pods', pod('dup'));
    expect(dup.json).toMatchObject({ code: 409, reason: 'AlreadyExists' });
    const patch = await request(sim, 'PATCH', '/api/v1/namespaces/default/pods/dup', { metadata: {} }, 'application/x-yaml');
    expect(patch.json).toMatchObject({ code: 415, reason: 'UnsupportedMediaType' });
    const stale = await request(sim, 'PATCH', '/api/v1/namespaces/default/pods/dup', { metadata: { resourceVersion: '1', labels: { a: 'b' } } }, 'application/merge-patch+json');
    expect(stale.json).toMatchObject({ code: 409, reason: 'Conflict' });
    const badJsonPatch = await request(sim, 'PATCH', '/api/v1/namespaces/default/pods/dup', [{ op: 'remove', path: '/nope/x' }], 'application/json-patch+json');
    expect(badJsonPatch.json).toMatchObject({ code: 422 });
    const big = await request(sim, 'POST', '/api/v1/namespaces/default/pods', JSON.stringify({ ...pod('big'), pad: 'x'.repeat(4 * 1024 * 1024) }));
    expect(big.status).toBe(413);
    // Still serving.
    expect((await request(sim, 'GET', '/version')).json.gitVersion).toMatch(/^v1\./);
  });

  it('patches status through the /status subresource (merge and strategic), and binds a pod', async () => {
    await request(sim, 'POST', '/api/v1/namespaces/default/pods', pod('kubelet-pod'));
    const bind = await request(sim, 'POST', '/api/v1/namespaces/default/pods/kubelet-pod/binding', { apiVersion: 'v1', kind: 'Binding', metadata: { name: 'kubelet-pod' }, target: { kind: 'Node', name: 'node-00001' } });
    expect(bind.status).toBe(201);
    const rebind = await request(sim, 'POST', '/api/v1/namespaces/default/pods/kubelet-pod/binding', { target: { kind: 'Node', name: 'node-00002' } });
    expect(rebind.status).toBe(409);
    const status = await request(sim, 'PATCH', '/api/v1/namespaces/default/pods/kubelet-pod/status',
      { status: { phase: 'Running', podIP: '10.128.0.200', podIPs: [{ ip: '10.128.0.200' }] }, spec: { nodeName: 'ignored' } }, 'application/merge-patch+json');
    expect(status.status).toBe(200);
    expect(status.json.status.podIP).toBe('10.128.0.200');
    expect(status.json.spec.nodeName).toBe('node-00001');
    const strategic = await request(sim, 'PATCH', '/api/v1/namespaces/default/pods/kubelet-pod/status',
      { status: { conditions: [{ type: 'Ready', status: 'True' }] } }, 'application/strategic-merge-patch+json');
    expect(strategic.json.status.conditions.find((c: { type: string }) => c.type === 'Ready').status).toBe('True');
    // A status change through the main resource is ignored, as the real server's strategy does.
    const main = await request(sim, 'PATCH', '/api/v1/namespaces/default/pods/kubelet-pod', { status: { phase: 'Failed' } }, 'application/merge-patch+json');
    expect(main.json.status.phase).toBe('Running');
    const pods = await request(sim, 'GET', '/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-00001,status.phase%3DRunning');
    expect(pods.json.items.map((p: { metadata: { name: string } }) => p.metadata.name)).toContain('kubelet-pod');
  });

  it('injects 500s for the next N requests and by fraction, and rate limits with 429 and Retry-After', async () => {
    sim.faults.failNext(2, { verbs: ['list'] });
    expect((await request(sim, 'GET', '/api/v1/nodes')).json).toMatchObject({ code: 500, reason: 'InternalError' });
    expect((await request(sim, 'GET', '/api/v1/nodes')).status).toBe(500);
    expect((await request(sim, 'GET', '/api/v1/nodes/node-00001')).status).toBe(200);
    expect((await request(sim, 'GET', '/api/v1/nodes')).status).toBe(200);

    sim.faults.setFailureRate(1, { resources: ['pods'] });
    expect((await request(sim, 'GET', '/api/v1/pods')).status).toBe(500);
    expect((await request(sim, 'GET', '/api/v1/nodes')).status).toBe(200);
    sim.faults.setFailureRate(0);

    sim.faults.setRateLimit({ qps: 0.001, burst: 3, retryAfterSeconds: 2 });
    const codes: number[] = [];
    let retryAfter: string | null = null;
    for (let i = 0; i < 6; i++) {
      const res = await request(sim, 'GET', '/api/v1/namespaces');
      codes.push(res.status);
      if (res.status === 429) {
        retryAfter = res.headers.get('retry-after');
        expect(res.json).toMatchObject({ kind: 'Status', code: 429, reason: 'TooManyRequests', details: { retryAfterSeconds: 2 } });
      }
    }
    expect(codes).toEqual([200, 200, 200, 429, 429, 429]);
    expect(retryAfter).toBe('2');
    sim.faults.reset();
    expect(sim.stats().requests['list 429']).toBe(3);
    expect(sim.stats().injectedFailures).toBe(3);
  });

  it('closes every watch on demand; the stream ends cleanly', async () => {
    const rv = sim.store.resourceVersion;
    const done = readWatch(`${sim.url}/api/v1/nodes?watch=1&resourceVersion=${rv}`, () => false);
    await new Promise((r) => setTimeout(r, 200));
    sim.cluster.labelNode('node-00001', { closing: 'soon' });
    await new Promise((r) => setTimeout(r, 100));
    expect(sim.store.closeAllWatches()).toBeGreaterThan(0);
    const events = await done;
    expect(events.map((e) => e.type)).toEqual(['MODIFIED']);
    const watcher = sim.stats().watchers.find((w) => w.resource === 'nodes');
    expect(watcher).toBeUndefined();
  });

  it('survives a barrage of malformed requests, answering each with a Status', async () => {
    const paths = [
      '/api/v1/namespaces/default/pods/x', '/api/v1/nodes/node-00001', '/api/v1/nodes/node-00001/status', '/api/v1/namespaces/default/pods/x/binding',
      '/api/v1/namespaces//pods', '/api/v1/namespaces/default/services/a/b/c', '/apis/discovery.k8s.io/v1/endpointslices?watch=1&resourceVersion=-1',
      '/api/v1/pods?continue=%7B', '/api/v1/pods?labelSelector=%28%28%28', '/api/v1/pods?fieldSelector=%3D%3D', '/api/v1/namespaces/default/pods?limit=abc',
      '/api/v1/nodes/node-00002?watch=true&timeoutSeconds=-5', '/apis/discovery.k8s.io', '/apis//v1/x', '/api/v1/namespaces/default',
    ];
    const bodies = ['', 'null', '"str"', '42', '{"metadata":[]}', '{"metadata":{"name":7}}', '{"metadata":{"labels":{"a":5}}}', '[{"op":"nope"}]',
      '{"status":{"conditions":"x"}}', '{"spec":{"containers":[]}}', '{"kind":"Node","metadata":{"name":"node-00001","resourceVersion":"abc"}}'];
    const types = ['application/json', 'application/merge-patch+json', 'application/strategic-merge-patch+json', 'application/json-patch+json', 'text/plain'];
    let seed = 1;
    const pick = <T,>(xs: T[]) => xs[(seed = (seed * 1103515245 + 12345) % 2 ** 31) % xs.length]!;
    for (let i = 0; i < 300; i++) {
      const method = pick(['GET', 'POST', 'PUT', 'PATCH', 'DELETE']);
      const res = await request(sim, method, pick(paths), method === 'GET' ? undefined : pick(bodies), pick(types));
      expect(res.status).toBeLessThan(500);
      if (res.status >= 400) expect(res.json).toMatchObject({ kind: 'Status', code: res.status });
    }
    expect((await request(sim, 'GET', '/api/v1/nodes')).json.items.length).toBeGreaterThan(0);
  });
});
