/**
 * Disaster recovery under a running lab: etcd is lost and an empty one takes its place behind the same address (same
 * CA). Traffic keeps flowing, every agent says it waits for the operator's sync and prunes nothing, and once the
 * operator has written everything again the maps are exactly what they were (nothing in Kubernetes changed).
 */
import { openPinnedMaps } from '@sluice/datapath';
import { startEtcd, type EtcdServer } from '@sluice/etcd-runner';
import { startKubeSim, type KubeSim } from '@sluice/kube-sim';
import { createKvClient, keySchema, RESOURCE_KINDS, type Etcd3 } from '@sluice/kvstore';
import { execIn } from '@sluice/netns';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentLogLines, startLab, stopAllLabs, type Lab, type LabNode } from '../src/index.ts';

let etcdA: EtcdServer;
let etcdB: EtcdServer | undefined;
let sim: KubeSim;
let lab: Lab;
const clients: Etcd3[] = [];
const WAITING = "waiting for the operator's sync of pods";

beforeAll(async () => {
  etcdA = await startEtcd({ clientCertAuth: true });
  sim = await startKubeSim({ nodes: 0, services: 0 });
  lab = await startLab({ nodes: 2, podsPerNode: 2, routing: 'native', hostRouting: 'bpf', etcdEndpoint: etcdA.endpoint, etcd: etcdA, kubeSim: sim, nodePrefix: 'dr-node-', podPrefix: 'dr-web-' });
}, 180_000);

afterAll(async () => {
  for (const c of clients) c.close();
  await lab?.stop();
  stopAllLabs();
  await sim?.close();
  await etcdB?.stop();
  await etcdA?.stop();
});

function snapshot(node: LabNode): Record<string, string> {
  const dp = openPinnedMaps(node.pinDir);
  try {
    const sorted = (rows: unknown[]) => JSON.stringify(rows.map((r) => JSON.stringify(r)).sort());
    return { endpoints: sorted(dp.maps.endpoints.entries()), ipcacheHost: sorted(dp.maps.ipcacheHost.entries()), ipcache: sorted(dp.maps.ipcache.entries()), tunnel: sorted(dp.maps.tunnel.entries()) };
  } finally {
    dp.close();
  }
}

async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

describe('etcd replaced by an empty one under a running lab', () => {
  it('keeps traffic flowing, prunes nothing while the operator re-syncs, and ends with the same maps', async () => {
    await lab.waitConverged();
    const before = lab.nodes.map(snapshot);
    const waitingBefore = lab.nodes.map((n) => agentLogLines(n, WAITING).length);
    const from = lab.pods().find((p) => p.node === lab.nodes[0]!.name)!;
    const to = lab.pods().find((p) => p.node === lab.nodes[1]!.name)!;
    const ping = execIn(from.netns, 'ping', ['-n', '-q', '-c', '150', '-i', '0.1', '-W', '1', to.ip], { timeoutMs: 60_000 });

    await etcdA.kill();
    etcdB = await startEtcd({ clientCertAuth: true, pki: etcdA.tls, clientPort: Number(new URL(etcdA.endpoint).port) });
    const b = createKvClient(etcdB.clientOptions());
    clients.push(b);
    await until('every agent to say it waits for the operator', () => lab.nodes.every((n, i) => agentLogLines(n, WAITING).length > waitingBefore[i]!));
    expect(lab.nodes.map(snapshot)).toEqual(before); // listed an empty etcd, pruned nothing
    const keys = keySchema();
    await until('the operator to re-sync the new etcd', async () => (await b.getAll().prefix(keys.prefix('synced')).keys()).length === RESOURCE_KINDS.length);
    await lab.waitConverged();

    const r = await ping;
    const m = /(\d+) packets transmitted, (\d+) received/.exec(r.stdout);
    expect(Number(m?.[1])).toBe(150);
    expect(Number(m?.[2])).toBe(150);
    expect(lab.nodes.map(snapshot)).toEqual(before);
    for (const n of lab.nodes) expect(agentLogLines(n, 'etcd was replaced or restored').length).toBeGreaterThan(0);
  }, 180_000);
});
