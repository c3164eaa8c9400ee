/**
 * The whole path, for real: kube-sim → operator → etcd → agent processes → BPF maps → packets between pod namespaces.
 * 3 nodes × 3 pods: every pod reaches every other (ping and TCP), on the same node and across nodes, in native
 * routing and in tunnel mode, with BPF host routing — and the programs' counters show the packets went through them.
 */
import type { CounterName } from '@sluice/bpf';
import { openPinnedMaps } from '@sluice/datapath';
import { startEtcd, type EtcdServer } from '@sluice/etcd-runner';
import { startKubeSim, type KubeSim } from '@sluice/kube-sim';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentLogLines, startLab, stopAllLabs, type Lab, type LabPod } from '../src/index.ts';

let etcd: EtcdServer;
let sim: KubeSim;

beforeAll(async () => {
  // Mutual TLS, each component with its own client certificate and etcd user (least privilege: etcdAuth below).
  etcd = await startEtcd({ clientCertAuth: true });
  sim = await startKubeSim({ nodes: 0, services: 0 });
});

afterAll(async () => {
  await sim?.close();
  await etcd?.stop();
});

function counters(lab: Lab): Record<CounterName, number> {
  const total = {} as Record<CounterName, number>;
  for (const n of lab.nodes) {
    const dp = openPinnedMaps(n.pinDir);
    try {
      for (const [k, v] of Object.entries(dp.readCounters()) as Array<[CounterName, { packets: bigint }]>) total[k] = (total[k] ?? 0) + Number(v.packets);
    } finally {
      dp.close();
    }
  }
  return total;
}

async function allPairs(lab: Lab, check: (from: LabPod, to: LabPod) => Promise<boolean>): Promise<string[]> {
  const pods = lab.pods();
  const failures: string[] = [];
  // A few at a time: each check is a process in a namespace.
  const pairs = pods.flatMap((a) => pods.filter((b) => b !== a).map((b) => [a, b] as const));
  for (let i = 0; i < pairs.length; i += 8) {
    await Promise.all(
      pairs.slice(i, i + 8).map(async ([a, b]) => {
        if (!(await check(a, b))) failures.push(`${a.name}@${a.node} → ${b.name}@${b.node} (${b.ip})`);
      }),
    );
  }
  return failures;
}

describe.each(['native', 'tunnel'] as const)('%s routing, BPF host routing', (routing) => {
  let lab: Lab;

  beforeAll(async () => {
    lab = await startLab({ nodes: 3, podsPerNode: 3, routing, hostRouting: 'bpf', etcdEndpoint: etcd.endpoint, etcd, etcdAuth: true, kubeSim: sim, nodePrefix: `${routing}-node-`, podPrefix: `${routing}-web-`, rootPrefix: `${routing}/` });
  }, 180_000);

  afterAll(async () => {
    await lab?.stop();
    stopAllLabs();
  });

  it('runs 9 pods with IPs from their nodes\' podCIDRs, each agent reporting BPF host routing', () => {
    const pods = lab.pods();
    expect(pods).toHaveLength(9);
    for (const n of lab.nodes) {
      expect(pods.filter((p) => p.node === n.name)).toHaveLength(3);
      expect(agentLogLines(n, 'Host Routing: BPF').length).toBeGreaterThan(0);
    }
    expect(new Set(pods.map((p) => p.ip)).size).toBe(9);
  });

  it('every pod pings every other pod, and the programs forwarded the packets', async () => {
    const before = counters(lab);
    expect(await allPairs(lab, (a, b) => lab.ping(a, b.ip, { count: 1, timeoutS: 2 }))).toEqual([]);
    const after = counters(lab);
    const delta = (k: CounterName) => after[k] - before[k];
    // 9 × 8 pings, each an echo and a reply: 144 packets into from_container.
    expect(delta('fromContainer')).toBeGreaterThanOrEqual(144);
    // Same node: 18 pairs × 2 redirected to the peer directly.
    expect(delta('fromContainerLocal')).toBeGreaterThanOrEqual(36);
    // Across nodes: 54 pairs × 2 sent by the program, and delivered to the pod by the receiving node's program.
    expect(delta(routing === 'native' ? 'fromContainerNeigh' : 'fromContainerTunnel')).toBeGreaterThanOrEqual(108);
    expect(delta(routing === 'native' ? 'fromNetdevLocal' : 'fromOverlayLocal')).toBeGreaterThanOrEqual(108);
  });

  it('every pod reaches every other pod over TCP (HTTP answered with the target pod\'s name)', async () => {
    expect(await allPairs(lab, async (a, b) => (await lab.httpGet(a, b.ip)) === b.name)).toEqual([]);
  });
});
