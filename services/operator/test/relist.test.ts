/**
 * The relist hole: an object's state seen on the watch (S1), then a 410 and a relist that delivers S2, then a watch
 * event that reverts it to S1. The revert must reach etcd, and objects deleted while the watch was down must not stay
 * in the unchanged-event filter.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '@sluice/log';
import { createRegistry, type Registry } from '@sluice/metrics';
import { loadKubeConfig } from '../src/kube-client.ts';
import { Operator } from '../src/operator.ts';
import { startEnv, waitFor, waitForMirror, type Env, metricValue } from './env.ts';

describe('a relist between a state and its revert', () => {
  let env: Env;
  let operator: Operator;
  let registry: Registry;

  beforeAll(async () => {
    // A window of a few events per kind: a watch that is down for a handful of changes must relist (410).
    env = await startEnv({ nodes: 6, podsPerNode: 1, services: 1, windowEvents: 4 });
    registry = createRegistry();
    operator = new Operator({ kube: loadKubeConfig({ server: env.sim.url }), etcd: env.client, keys: env.keys, registry, log: createLogger({ component: 'operator', level: 'silent' }), leaseTtlSeconds: 5 });
    operator.start();
    await operator.waitUntilSynced(AbortSignal.timeout(60_000));
  });
  afterAll(async () => {
    await operator?.stop();
    await env?.close();
  });

  const nodeRecord = async (name: string) => JSON.parse((await env.client.get(env.keys.node(name)).string()) ?? 'null') as { labels: Record<string, string> } | null;
  const nodeRelists = () => metricValue(registry, 'sluice_operator_relists_total', { kind: 'Node' });

  /** Keeps the operator's watches failing while `during` changes the cluster, then lets them resume (→ 410 → relist). */
  async function whileWatchesAreDown(during: () => void): Promise<void> {
    const relistsBefore = await nodeRelists();
    env.sim.faults.failNext(1_000_000, { code: 500, verbs: ['watch'] });
    env.sim.store.closeAllWatches();
    await waitFor('the watches to be down', () => env.sim.store.watchers().length === 0);
    during();
    env.sim.faults.reset();
    await waitFor('the node informer to relist', async () => (await nodeRelists()) > relistsBefore);
  }

  it('writes the revert to S1 after a relist delivered S2: a removed label is removed, then back', async () => {
    // S1, seen on the watch, and then a heartbeat of it: the filter now knows S1's fingerprint.
    env.sim.cluster.labelNode('node-00002', { stage: 'one' });
    await waitFor('S1 in etcd', async () => (await nodeRecord('node-00002'))?.labels.stage === 'one');
    env.sim.cluster.heartbeats.tick(Date.now() + 3_600_000);
    await waitFor('the heartbeat to be recognised without decoding it', async () => (await metricValue(registry, 'sluice_operator_undecoded_events_total', { kind: 'Node' })) >= 1);

    // S2 (the label removed) while the watch is down, with enough other changes that its resourceVersion expires.
    await whileWatchesAreDown(() => {
      env.sim.cluster.labelNode('node-00002', { stage: null });
      for (let i = 0; i < 8; i++) env.sim.cluster.labelNode('node-00004', { filler: String(i) });
    });
    await waitFor('S2 in etcd', async () => (await nodeRecord('node-00002'))?.labels.stage === undefined);

    // The revert, on the watch: the same text as S1 but for the volatile fields.
    env.sim.cluster.labelNode('node-00002', { stage: 'one' });
    await waitFor('S1 again in etcd', async () => (await nodeRecord('node-00002'))?.labels.stage === 'one', 10_000);
    await waitForMirror(env);
  });

  it('forgets, at a relist, the objects deleted while the watch was down', async () => {
    env.sim.cluster.heartbeats.tick(Date.now() + 7_200_000);
    await waitFor('every node to be fingerprinted', () => operator.status().kinds.nodes?.fingerprinted === 6);
    await whileWatchesAreDown(() => {
      env.sim.store.delete('nodes', '', 'node-00005');
      for (let i = 0; i < 8; i++) env.sim.cluster.labelNode('node-00004', { filler: `again-${i}` });
    });
    await waitForMirror(env);
    expect(await env.client.get(env.keys.node('node-00005')).string()).toBeNull();
    // A relist starts the filter afresh; heartbeats of every live node fill it again, and only those.
    expect(operator.status().kinds.nodes?.fingerprinted).toBe(0);
    env.sim.cluster.heartbeats.tick(Date.now() + 10_800_000);
    env.sim.cluster.heartbeats.tick(Date.now() + 14_400_000);
    await waitFor('the live nodes to be fingerprinted', () => operator.status().kinds.nodes?.fingerprinted === 5);
    expect(operator.status().kinds.nodes?.records).toBe(5);
  });
});
