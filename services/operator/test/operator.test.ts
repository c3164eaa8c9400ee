import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '@sluice/log';
import { createRegistry, type Registry } from '@sluice/metrics';
import { parseSyncedMarker } from '@sluice/kvstore';
import { loadKubeConfig } from '../src/kube-client.ts';
import { Operator } from '../src/operator.ts';
import { allKeys, etcdRecords, etcdRevision, expectedRecords, RESOURCE_KINDS, startEnv, waitFor, waitForMirror, type Env, metricValue } from './env.ts';

function capturedLog() {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk, _enc, done) {
      for (const line of String(chunk).trim().split('\n')) if (line) lines.push(JSON.parse(line));
      done();
    },
  });
  return { log: createLogger({ component: 'operator', level: 'info', destination: stream }), lines };
}

describe('operator against kube-sim and a real etcd: 200 nodes × 20 pods', () => {
  let env: Env;
  let operator: Operator;
  let registry: Registry;
  let captured: ReturnType<typeof capturedLog>;

  beforeAll(async () => {
    env = await startEnv({ nodes: 200, podsPerNode: 20, services: 20, namespaces: 4 });
    registry = createRegistry();
    captured = capturedLog();
    operator = new Operator({ kube: loadKubeConfig({ server: env.sim.url }), etcd: env.client, keys: env.keys, registry, log: captured.log, leaseTtlSeconds: 5 });
    operator.start();
    await operator.waitUntilSynced(AbortSignal.timeout(60_000));
  });
  afterAll(async () => {
    await operator?.stop();
    await env?.close();
  });

  it('holds exactly the expected records after the initial sync, and nothing else', async () => {
    const expected = expectedRecords(env.sim, env.keys);
    expect(expected.size).toBeGreaterThan(200 * 20);
    const actual = await etcdRecords(env.client, env.keys);
    expect(new Map([...actual].map(([k, v]) => [k, v.value]))).toEqual(expected);

    const markers = RESOURCE_KINDS.map((kind) => env.keys.synced(kind));
    for (const kind of RESOURCE_KINDS) {
      // The marker names this term (its election key's create revision) and the revision its sweep ended at.
      const marker = parseSyncedMarker((await env.client.get(env.keys.synced(kind)).buffer())!);
      expect(marker).toMatchObject({ kind, schema: 'v1', term: expect.stringMatching(/^\d+$/), revision: expect.any(Number) });
    }
    const heartbeat = JSON.parse((await env.client.get(env.keys.operatorHeartbeat()).string()) ?? '{}');
    expect(heartbeat.identity).toBe(operator.identity);
    const leaderKeys = (await allKeys(env.client, env.keys)).filter((k) => k.startsWith(`${env.keys.operatorElection()}/`));
    expect(leaderKeys).toHaveLength(1);
    expect((await allKeys(env.client, env.keys)).sort()).toEqual(
      [...expected.keys(), ...markers, env.keys.operatorHeartbeat(), ...leaderKeys].sort(),
    );
  });

  it('writes nothing for 30 rounds of heartbeats from every node', async () => {
    const before = await etcdRevision(env.client);
    const eventsBefore = await metricValue(registry, 'sluice_operator_kube_events_total', { kind: 'Node', type: 'MODIFIED' });
    const start = Date.now();
    const interval = env.sim.cluster.options.heartbeatIntervalMs;
    for (let round = 1; round <= 30; round++) {
      // A tick far enough ahead makes every node due once: one full round of kubelet status updates.
      expect(env.sim.cluster.heartbeats.tick(start + round * interval * 2)).toBe(200);
      const target = env.sim.store.resourceVersion;
      await waitFor(`round ${round} to reach the operator`, () => Number(operator.status().kinds.nodes?.resourceVersion ?? 0) >= target);
    }
    expect((await metricValue(registry, 'sluice_operator_kube_events_total', { kind: 'Node', type: 'MODIFIED' })) - eventsBefore).toBeGreaterThanOrEqual(200 * 30);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(await etcdRevision(env.client)).toBe(before);
    expect(await metricValue(registry, 'sluice_operator_unchanged_events_total', { kind: 'Node' })).toBeGreaterThanOrEqual(200 * 30);
    // The first heartbeat after the list is decoded (the list gives no fingerprints); every later one is not.
    expect(await metricValue(registry, 'sluice_operator_undecoded_events_total', { kind: 'Node' })).toBeGreaterThanOrEqual(200 * 29);
  });

  it('writes exactly once for a label change on one node', async () => {
    const before = await etcdRevision(env.client);
    env.sim.cluster.labelNode('node-00007', { 'sluice.io/test': 'blue' });
    const key = env.keys.node('node-00007');
    await waitFor('the label to reach etcd', async () => ((await env.client.get(key).string()) ?? '').includes('"sluice.io/test":"blue"'));
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(await etcdRevision(env.client)).toBe(before + 1);
  });

  it('removes a deleted pod and a pod that turned Succeeded', async () => {
    const pods = env.sim.store.objectsIn('pods');
    const [deleted, finished] = [pods[3]!, pods[4]!];
    env.sim.cluster.deletePod(deleted.namespace, deleted.name);
    env.sim.cluster.setPodPhase(finished.namespace, finished.name, 'Succeeded');
    for (const pod of [deleted, finished]) {
      await waitFor(`${pod.name} to leave etcd`, async () => (await env.client.get(env.keys.pod(pod.namespace, pod.name)).string()) === null);
    }
    await waitForMirror(env);
  });

  it('logs a malformed object once, skips it, and keeps mirroring', async () => {
    const pod = JSON.parse(env.sim.store.objectsIn('pods')[10]!.json);
    const bad = { ...pod, metadata: { namespace: pod.metadata.namespace, name: 'broken-ip', labels: { app: 'broken' } }, status: { ...pod.status, podIP: '999.1.2.3', podIPs: [{ ip: '999.1.2.3' }] } };
    env.sim.store.create('pods', bad);
    env.sim.store.update('pods', bad.metadata.namespace, 'broken-ip', { ...bad, metadata: { ...bad.metadata, labels: { app: 'broken', again: 'yes' } } });
    env.sim.cluster.labelNode('node-00008', { after: 'malformed' });
    await waitFor('the later change to land', async () => ((await env.client.get(env.keys.node('node-00008')).string()) ?? '').includes('"after":"malformed"'));
    expect(await env.client.get(env.keys.pod(bad.metadata.namespace, 'broken-ip')).string()).toBeNull();
    expect(await metricValue(registry, 'sluice_operator_malformed_objects_total', { kind: 'Pod' })).toBe(2);
    const warnings = captured.lines.filter((l) => l.msg === 'skipping malformed object');
    expect(warnings).toHaveLength(1);
    expect(String(warnings[0]!.reason)).toMatch(/podIPs\.0 is not a valid IP/);
    env.sim.store.delete('pods', bad.metadata.namespace, 'broken-ip');
  });

  it('loses its lease while etcd is stopped, leads again without relisting, and writes what changed meanwhile', async () => {
    const termBefore = operator.status().term;
    const podAdds = () => metricValue(registry, 'sluice_operator_kube_events_total', { kind: 'Pod', type: 'ADDED' });
    const relists = () => metricValue(registry, 'sluice_operator_relists_total');
    const addsBefore = await podAdds();
    const relistsBefore = await relists();
    await env.etcd.pause();
    try {
      await waitFor('the operator to step down', () => !operator.isLeader, 20_000);
      const pod = env.sim.store.objectsIn('pods')[20]!;
      env.sim.cluster.deletePod(pod.namespace, pod.name);
      env.sim.cluster.labelNode('node-00009', { during: 'outage' });
      env.sim.cluster.createPod({ nodeName: 'node-00011' });
    } finally {
      await env.etcd.resume();
    }
    await waitFor('a new term to sync', () => operator.isSynced && operator.status().term > termBefore, 30_000);
    await waitForMirror(env);
    // Only the pod created during the outage was added: the informers were not restarted, Kubernetes not relisted.
    expect((await podAdds()) - addsBefore).toBe(1);
    expect(await relists()).toBe(relistsBefore);
    expect(relistsBefore).toBe(4);
    const replays = captured.lines.filter((l) => l.msg === 'replayed the state the informers hold');
    expect(replays.at(-1)?.replayed).toBeGreaterThan(200 * 20);
  });
});

describe('operator under API faults', () => {
  let env: Env;
  let operator: Operator;

  beforeAll(async () => {
    env = await startEnv({ nodes: 20, podsPerNode: 5, services: 3 });
    operator = new Operator({ kube: loadKubeConfig({ server: env.sim.url }), etcd: env.client, keys: env.keys, registry: createRegistry(), log: createLogger({ component: 'operator', level: 'silent' }), leaseTtlSeconds: 5 });
  });
  afterAll(async () => {
    await operator?.stop();
    await env?.close();
  });

  it('recovers from 429s, 500s and closed watches without losing a change', async () => {
    // Start under a tight rate limit and failing lists: the initial sync must still complete.
    env.sim.faults.setRateLimit({ qps: 2, burst: 2, retryAfterSeconds: 1, verbs: ['list'] });
    env.sim.faults.failNext(3, { code: 500, verbs: ['list', 'watch'] });
    operator.start();
    await operator.waitUntilSynced(AbortSignal.timeout(60_000));
    await waitForMirror(env);
    expect(env.sim.faults.counters.injectedFailures).toBeGreaterThan(0);
    env.sim.faults.reset();

    for (let round = 0; round < 5; round++) {
      env.sim.store.closeAllWatches();
      env.sim.faults.failNext(2, { code: 500, verbs: ['watch', 'list'] });
      const pod = env.sim.cluster.createPod({ nodeName: `node-0000${round + 1}` });
      env.sim.cluster.labelNode(`node-0001${round}`, { round: String(round) });
      env.sim.cluster.deletePod(pod.namespace, env.sim.store.objectsIn('pods', pod.namespace)[0]!.name);
    }
    await waitForMirror(env, 45_000);
  });
});
