/**
 * A mixed cluster, in every combination the agents allow, with real packets: 6 nodes, each routing mode (native,
 * tunnel) with each datapath mode BPF host routing + BPF masquerading, legacy host routing + iptables masquerading
 * (what `--host-routing auto` falls back to, as users run it), legacy host routing + BPF masquerading.
 *
 * - Every pod reaches every other pod (TCP, and a ping of the largest size both ends' MTU allow, don't-fragment):
 *   tunnel nodes send VXLAN to native nodes, which must decapsulate it; native nodes answer without a tunnel.
 * - Every pod reaches a ClusterIP backed by a pod on each node.
 * - Every pod reaches a server outside the cluster (a namespace on the underlay, no route to the pods), which sees
 *   the pod's node address: iptables and BPF masquerading alike.
 * - The agents make their nodes' VXLAN devices (the lab makes none), native nodes too: they must decapsulate.
 * - Pods' MTU is derived per node: the uplink's 9000 on native nodes, 8950 on tunnel nodes (VXLAN's 50 bytes).
 */
import type { CounterName } from '@sluice/bpf';
import { openPinnedMaps } from '@sluice/datapath';
import { startEtcd, type EtcdServer } from '@sluice/etcd-runner';
import { startKubeSim, type KubeSim } from '@sluice/kube-sim';
import { execIn, linkInfo } from '@sluice/netns';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startLab, stopAllLabs, WEB_PORT, type Lab, type LabClient, type LabNode, type LabPod } from '../src/index.ts';

interface Mode {
  routing: 'native' | 'tunnel';
  hostRouting: 'BPF' | 'Legacy';
  masquerade: 'bpf' | 'iptables';
}
/** Node i+1's mode. Legacy host routing with iptables masquerading is `--host-routing auto`'s fallback. */
const MODES: Mode[] = (['native', 'tunnel'] as const).flatMap((routing) => [
  { routing, hostRouting: 'BPF' as const, masquerade: 'bpf' as const },
  { routing, hostRouting: 'Legacy' as const, masquerade: 'iptables' as const },
  { routing, hostRouting: 'Legacy' as const, masquerade: 'bpf' as const },
]);
const UPLINK_MTU = 9000;
const podMtuOf = (m: Mode) => (m.routing === 'tunnel' ? UPLINK_MTU - 50 : UPLINK_MTU);
const describeMode = (m: Mode) => `${m.routing}/${m.hostRouting}/${m.masquerade}`;

let etcd: EtcdServer;
let sim: KubeSim;
let lab: Lab;
let outside: LabClient;

const modeOf = (node: LabNode) => MODES[node.index - 1]!;
const podOn = (node: LabNode) => lab.pods().find((p) => p.node === node.name)!;
const nodeOf = (pod: LabPod) => lab.node(pod.node);
const label = (pod: LabPod) => `${pod.name}@${describeMode(modeOf(nodeOf(pod)))}`;
async function get(from: LabPod, ip: string, port = WEB_PORT): Promise<string | undefined> {
  const r = await execIn(from.netns, 'curl', ['-s', '-m', '3', `http://${ip}:${port}/`], { timeoutMs: 10_000 });
  return r.code === 0 ? r.stdout.trim() : undefined;
}

function counter(node: LabNode, name: CounterName): number {
  const dp = openPinnedMaps(node.pinDir);
  try {
    return Number(dp.readCounters()[name].packets);
  } finally {
    dp.close();
  }
}

/** Runs checks a few at a time (each is a process in a namespace); returns the failures' descriptions. */
async function failuresOf(checks: Array<() => Promise<string | undefined>>): Promise<string[]> {
  const failures: string[] = [];
  for (let i = 0; i < checks.length; i += 6) {
    for (const f of await Promise.all(checks.slice(i, i + 6).map((c) => c()))) if (f) failures.push(f);
  }
  return failures;
}

beforeAll(async () => {
  etcd = await startEtcd();
  sim = await startKubeSim({ nodes: 0, services: 0 });
  lab = await startLab({
    nodes: MODES.length, podsPerNode: 1, etcdEndpoint: etcd.endpoint, kubeSim: sim, podPrefix: 'mix-', nodePrefix: 'mix-node-', rootPrefix: 'mix/',
    healthEndpoints: false, healthPort: 0,
    // Each agent makes its node's VXLAN device, native nodes included, as on a real node.
    labVxlan: false,
    nodeAgentArgs: ({ index }) => {
      const m = MODES[index - 1]!;
      return ['--routing', m.routing, '--host-routing', m.hostRouting === 'BPF' ? 'bpf' : 'legacy', '--masquerade', m.masquerade];
    },
  });
  outside = await lab.services.addClient();
  // The outside server answers with the source address it saw.
  lab.services.spawnIn(outside.netns, process.execPath, ['-e', `require('node:http').createServer((q, r) => r.end(q.socket.remoteAddress + '\\n')).listen(${WEB_PORT}, '0.0.0.0')`]);
}, 300_000);

afterAll(async () => {
  await lab?.stop().catch(() => undefined);
  stopAllLabs();
  await sim?.close();
  await etcd?.stop();
});

describe('mixed cluster: native and tunnel, BPF and legacy host routing, iptables and BPF masquerading', () => {
  it('each node runs the mode it was given, and its pods got the MTU its uplink and routing mode allow', async () => {
    for (const node of lab.nodes) {
      const m = modeOf(node);
      const s = (await (await fetch(`${node.statusUrl}/status`)).json()) as { routing: string; hostRouting: { mode: string }; masquerading: string; mtu: { pod: number; uplink: number; overhead: number } };
      expect({ routing: s.routing, hostRouting: s.hostRouting.mode, masquerading: s.masquerading.split(' ')[0] }, node.name).toEqual({ routing: m.routing, hostRouting: m.hostRouting, masquerading: m.masquerade === 'bpf' ? 'BPF' : 'IPTables' });
      expect(s.mtu, node.name).toMatchObject({ pod: podMtuOf(m), uplink: UPLINK_MTU, overhead: m.routing === 'tunnel' ? 50 : 0 });
      const pod = podOn(node);
      expect((await linkInfo(pod.netns, 'eth0')).mtu, `${label(pod)} eth0`).toBe(podMtuOf(m));
    }
  });

  it('every pod reaches every other pod: TCP, and the largest unfragmented ping both MTUs allow', async () => {
    const pods = lab.pods();
    expect(pods).toHaveLength(MODES.length);
    const pairs = pods.flatMap((a) => pods.filter((b) => b !== a).map((b) => [a, b] as const));
    const decapsulated = (n: LabNode) => counter(n, 'fromOverlay');
    const before = new Map(lab.nodes.map((n) => [n.name, decapsulated(n)]));
    const failures = await failuresOf(
      pairs.flatMap(([a, b]) => {
        // ICMP header 8 + IPv4 header 20.
        const size = Math.min(podMtuOf(modeOf(nodeOf(a))), podMtuOf(modeOf(nodeOf(b)))) - 28;
        return [
          async () => ((await get(a, b.ip)) === b.name ? undefined : `TCP ${label(a)} → ${label(b)}`),
          async () => {
            const r = await execIn(a.netns, 'ping', ['-c', '1', '-W', '2', '-M', 'do', '-s', String(size), b.ip], { timeoutMs: 8_000 });
            return r.code === 0 ? undefined : `ping -s ${size} ${label(a)} → ${label(b)}: ${r.stdout.split('\n').slice(-3).join(' ')}${r.stderr}`;
          },
        ];
      }),
    );
    expect(failures).toEqual([]);
    // Native nodes decapsulated what the tunnel nodes sent them (their vx0's program saw it), as did tunnel nodes.
    for (const n of lab.nodes) expect(decapsulated(n) - before.get(n.name)!, `${n.name} (${describeMode(modeOf(n))}) packets from the tunnel`).toBeGreaterThan(0);
  }, 180_000);

  it('every pod reaches a ClusterIP backed by a pod on each node', async () => {
    const backends = lab.nodes.map((n, i) => ({ node: n, pod: podOn(n), vip: `10.96.210.${10 + i}` }));
    for (const b of backends) {
      lab.services.apply({ name: `mix-${b.node.index}`, clusterIP: b.vip, ports: [{ name: 'http', port: 80, targetPort: 'http' }] });
      lab.services.setEndpoints(`mix-${b.node.index}`, [{ pod: b.pod }], [{ name: 'http', port: WEB_PORT }]);
    }
    for (const b of backends) await lab.services.waitFrontend({ vip: b.vip, port: 80, proto: 'tcp' }, (v) => v.count === 1);
    const failures = await failuresOf(
      lab.pods().flatMap((client) =>
        backends.map((b) => async () => {
          const answer = await get(client, b.vip, 80);
          return answer === b.pod.name ? undefined : `${label(client)} → ${b.vip} (backend ${label(b.pod)}): ${answer ?? 'no answer'}`;
        }),
      ),
    );
    expect(failures).toEqual([]);
  }, 180_000);

  it('every pod reaches a server outside the cluster, which sees the pod\'s node address (iptables and BPF masquerading)', async () => {
    const failures = await failuresOf(
      lab.pods().map((pod) => async () => {
        const seen = await get(pod, outside.ip);
        return seen === nodeOf(pod).ip ? undefined : `${label(pod)} → outside: seen as ${seen ?? 'no answer'}, want ${nodeOf(pod).ip}`;
      }),
    );
    expect(failures).toEqual([]);
  }, 120_000);

  // Last: it changes node 1's mode, by a restart with the new mode (routing-switch.test.ts switches it live).
  it('a node restarted in tunnel routing gives its new pods the tunnel\'s MTU; its existing pod keeps the MTU it was made with', async () => {
    const n1 = lab.nodes[0]!;
    const old = podOn(n1);
    await lab.restartAgent(n1.name, { args: ['--routing', 'tunnel'] });
    const s = (await (await fetch(`${n1.statusUrl}/status`)).json()) as { routing: string; mtu: { pod: number } };
    expect(s).toMatchObject({ routing: 'tunnel', mtu: { pod: UPLINK_MTU - 50 } });
    expect((await linkInfo(n1.netns, 'vx0')).mtu).toBe(UPLINK_MTU - 50);
    const fresh = await lab.createPod(n1.name, 'mix-1-tunnel');
    expect((await linkInfo(fresh.netns, 'eth0')).mtu).toBe(UPLINK_MTU - 50);
    expect((await linkInfo(old.netns, 'eth0')).mtu).toBe(UPLINK_MTU);
    // The new pod, through the tunnel now, at its full size, to a native node's pod and a tunnel node's.
    for (const to of [podOn(lab.nodes[1]!), podOn(lab.nodes[4]!)]) {
      expect(await get(fresh, to.ip), `${fresh.name} → ${label(to)}`).toBe(to.name);
      const r = await execIn(fresh.netns, 'ping', ['-c', '1', '-W', '2', '-M', 'do', '-s', String(UPLINK_MTU - 50 - 28), to.ip], { timeoutMs: 8_000 });
      expect(r.code, `ping ${fresh.name} → ${label(to)}: ${r.stdout}${r.stderr}`).toBe(0);
    }
  }, 180_000);
});
