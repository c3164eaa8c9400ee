/**
 * What happens to a running cluster (3 nodes × 3 pods, native routing, BPF host routing) when things go wrong:
 * a pod is deleted, an agent is SIGKILLed mid-traffic, etcd goes away for 30 s, bad records show up in etcd.
 */
import { lookupIpcache, openPinnedMaps } from '@sluice/datapath';
import { startEtcd, type EtcdServer } from '@sluice/etcd-runner';
import { startKubeSim, type KubeSim } from '@sluice/kube-sim';
import { createKvClient, keySchema, type Etcd3 } from '@sluice/kvstore';
import { execIn } from '@sluice/netns';
import { SCHEMA_VERSION } from '@sluice/slim';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentLogLines, startLab, stopAllLabs, type Lab, type LabNode, type LabPod } from '../src/index.ts';

let etcd: EtcdServer;
let sim: KubeSim;
let lab: Lab;
let client: Etcd3;

beforeAll(async () => {
  // Mutual TLS, each component with its own client certificate (the lab writes their etcd.config files).
  etcd = await startEtcd({ clientCertAuth: true });
  sim = await startKubeSim({ nodes: 0, services: 0 });
  lab = await startLab({ nodes: 3, podsPerNode: 3, routing: 'native', hostRouting: 'bpf', etcdEndpoint: etcd.endpoint, etcd, kubeSim: sim, nodePrefix: 'life-node-', podPrefix: 'life-web-' });
  client = createKvClient(etcd.clientOptions());
}, 180_000);

afterAll(async () => {
  client?.close();
  await lab?.stop();
  stopAllLabs();
  await sim?.close();
  await etcd?.stop();
});

function snapshot(node: LabNode): { endpoints: string; ipcacheHost: string; ipcache: string; tunnel: string } {
  const dp = openPinnedMaps(node.pinDir);
  try {
    const sorted = (rows: unknown[]) => JSON.stringify(rows.map((r) => JSON.stringify(r)).sort());
    return {
      endpoints: sorted(dp.maps.endpoints.entries()),
      ipcacheHost: sorted(dp.maps.ipcacheHost.entries()),
      ipcache: sorted(dp.maps.ipcache.entries()),
      tunnel: sorted(dp.maps.tunnel.entries()),
    };
  } finally {
    dp.close();
  }
}

function inMaps(node: LabNode, ip: string): { ipcache: boolean; endpoint: boolean } {
  const dp = openPinnedMaps(node.pinDir);
  try {
    return { ipcache: lookupIpcache(dp, { cidr: `${ip}/32` }) !== undefined, endpoint: dp.maps.endpoints.lookup({ ip }) !== undefined };
  } finally {
    dp.close();
  }
}

/** A continuous ping; resolves with transmitted/received once it ends. */
async function continuousPing(from: LabPod, to: string, count: number, intervalS: number): Promise<{ transmitted: number; received: number; output: string }> {
  const r = await execIn(from.netns, 'ping', ['-n', '-q', '-c', String(count), '-i', String(intervalS), '-W', '1', to], { timeoutMs: (count * intervalS + 30) * 1000 });
  const m = /(\d+) packets transmitted, (\d+) received/.exec(r.stdout);
  return { transmitted: Number(m?.[1] ?? 0), received: Number(m?.[2] ?? -1), output: r.stdout };
}

const otherNodePod = (pod: LabPod) => lab.pods().find((p) => p.node !== pod.node)!;

describe('lab lifecycle', () => {
  it('publishes each agent\'s status and health endpoint in etcd', async () => {
    const keys = keySchema(lab.rootPrefix);
    for (const n of lab.nodes) {
      const status = JSON.parse((await client.get(keys.agent(n.name)).string()) ?? '{}') as { synced?: boolean; hostRouting?: { status?: string }; routing?: string };
      expect(status.synced).toBe(true);
      expect(status.hostRouting?.status).toBe('Host Routing: BPF');
      expect(status.routing).toBe('native');
      const health = JSON.parse((await client.get(keys.health(n.name)).string()) ?? '{}') as { nodeIP?: string; healthIP?: string };
      expect(health).toMatchObject({ nodeIP: n.ip, healthIP: n.healthIp });
    }
    // Every node reaches every health endpoint (programmed from the node annotation) and every agent health port.
    const from = lab.pods()[0]!;
    for (const n of lab.nodes) {
      expect(await lab.ping(from, n.healthIp!, { count: 1 })).toBe(true);
      const r = await execIn(from.netns, 'curl', ['-s', '-m', '3', `${n.agentHealthUrl}/hello`]);
      expect(r.stdout.trim()).toBe(n.name);
    }
  });

  it('a pod deleted in kube-sim stops answering and leaves no map entry on any node', async () => {
    const victim = lab.pods().find((p) => p.node === lab.nodes[1]!.name)!;
    const client1 = lab.pods().find((p) => p.node === lab.nodes[0]!.name)!;
    expect(await lab.ping(client1, victim.ip, { count: 1 })).toBe(true);
    await lab.deletePod(victim);
    await lab.waitConverged();
    for (let i = 0; i < 100 && lab.nodes.some((n) => inMaps(n, victim.ip).ipcache); i++) await new Promise((r) => setTimeout(r, 100));
    for (const n of lab.nodes) expect(inMaps(n, victim.ip)).toEqual({ ipcache: false, endpoint: false });
    expect(await lab.ping(client1, victim.ip, { count: 2, timeoutS: 1 })).toBe(false);
    expect(await lab.httpGet(client1, victim.ip, 1)).toBeUndefined();
  });

  it('an agent SIGKILLed during a continuous ping loses no packet, and after restart reconciles without rewriting the maps', async () => {
    const node = lab.nodes[0]!;
    const from = lab.pods().find((p) => p.node === node.name)!;
    const to = otherNodePod(from);
    const before = snapshot(node);
    const pinging = continuousPing(from, to.ip, 150, 0.05);
    await new Promise((r) => setTimeout(r, 1500));
    await lab.killAgent(node.name, 'SIGKILL');
    await new Promise((r) => setTimeout(r, 2000)); // no agent at all
    expect(snapshot(node)).toEqual(before);
    await lab.restartAgent(node.name);
    const result = await pinging;
    expect(result.transmitted).toBe(150);
    expect(result.received).toBe(150);
    // Reconciled, not flushed: the restarted agent's full reconcile found every entry in place and wrote nothing.
    const status = (await (await fetch(`${node.statusUrl}/status`)).json()) as { synced: boolean; writes: { upserts: number; deletes: number; fullReconciles: number } };
    expect(status.synced).toBe(true);
    expect(status.writes).toEqual({ upserts: 0, deletes: 0, fullReconciles: 1 });
    expect(agentLogLines(node, 'reusing pinned maps (no flush)').length).toBeGreaterThan(0);
    expect(snapshot(node)).toEqual(before);
  });

  it('keeps forwarding while etcd is down for 30 s, and resyncs when it is back (a pod made during the outage becomes reachable)', async () => {
    const from = lab.pods().find((p) => p.node === lab.nodes[0]!.name)!;
    const to = otherNodePod(from);
    await etcd.pause();
    const pinging = continuousPing(from, to.ip, 60, 0.5);
    // A pod created while etcd is down: its node sets it up (CNI → agent works without etcd), nobody else knows yet.
    const created = lab.createPod(lab.nodes[2]!.name, 'life-outage-pod');
    await new Promise((r) => setTimeout(r, 30_000));
    await etcd.resume();
    const result = await pinging;
    expect(result.received).toBe(result.transmitted);
    const pod = await created;
    expect(await lab.ping(from, pod.ip, { count: 2 })).toBe(true);
    expect(await lab.httpGet(from, pod.ip)).toBe('life-outage-pod');
  }, 120_000);

  it('a nodeconfig record switches a node to legacy host routing: reported with its reason, traffic still flows (kernel-forwarded)', async () => {
    const keys = keySchema(lab.rootPrefix);
    const node = lab.nodes[2]!;
    await client.put(keys.nodeConfig(node.name)).value(JSON.stringify({ hostRouting: 'legacy' }));
    try {
      await lab.restartAgent(node.name);
      // The mode and its reason on lines of their own, as the agent logs a fallback (what users grep for).
      expect(agentLogLines(node, 'Host Routing: Legacy').length).toBeGreaterThan(0);
      expect(agentLogLines(node, 'BPF host routing disabled by configuration').length).toBeGreaterThan(0);
      let status: { hostRouting?: { mode?: string; reason?: string } } = {};
      for (let i = 0; i < 100 && status.hostRouting?.mode !== 'Legacy'; i++) {
        status = JSON.parse((await client.get(keys.agent(node.name)).string()) ?? '{}') as typeof status;
        if (status.hostRouting?.mode !== 'Legacy') await new Promise((r) => setTimeout(r, 100));
      }
      expect(status.hostRouting).toMatchObject({ mode: 'Legacy', reason: 'BPF host routing disabled by configuration' });
      const legacyPackets = () => {
        const dp = openPinnedMaps(node.pinDir);
        try {
          return Number(dp.readCounters().legacy.packets);
        } finally {
          dp.close();
        }
      };
      const before = legacyPackets();
      const local = lab.pods().filter((p) => p.node === node.name);
      const remote = otherNodePod(local[0]!);
      expect(await lab.ping(local[0]!, remote.ip, { count: 2 })).toBe(true);
      expect(await lab.ping(local[0]!, local[1]!.ip, { count: 2 })).toBe(true);
      expect(await lab.httpGet(remote, local[0]!.ip)).toBe(local[0]!.name);
      expect(legacyPackets()).toBeGreaterThan(before);
    } finally {
      await client.delete().key(keys.nodeConfig(node.name));
      await lab.restartAgent(node.name);
    }
  });

  it('cutLink isolates a node (its pods and its agent health port become unreachable) and restoreLink brings it back', async () => {
    const node = lab.nodes[1]!;
    const from = lab.pods().find((p) => p.node === lab.nodes[0]!.name)!;
    const target = lab.pods().find((p) => p.node === node.name)!;
    expect(await lab.ping(from, target.ip, { count: 1 })).toBe(true);
    await lab.cutLink(node.name);
    try {
      expect(await lab.ping(from, target.ip, { count: 2, timeoutS: 1 })).toBe(false);
      expect((await execIn(from.netns, 'curl', ['-s', '-m', '2', `${node.agentHealthUrl}/hello`])).code).not.toBe(0);
    } finally {
      await lab.restoreLink(node.name);
    }
    let ok = false;
    for (let i = 0; i < 20 && !ok; i++) ok = await lab.ping(from, target.ip, { count: 1, timeoutS: 1 });
    expect(ok).toBe(true);
  });

  it('skips bad records in etcd (invalid IP, invalid CIDR, unknown schema version) with a clear log line and programs nothing from them', async () => {
    const keys = keySchema(lab.rootPrefix);
    const pod = (name: string, ip: string, v: number = SCHEMA_VERSION) => JSON.stringify({
      v, namespace: 'default', name, uid: name, nodeName: lab.nodes[1]!.name, hostIP: lab.nodes[1]!.ip, podIPs: [ip], hostNetwork: false, phase: 'Running', labels: {}, deleting: false, ports: [],
    });
    const node = (name: string, cidr: string) => JSON.stringify({ v: SCHEMA_VERSION, name, labels: {}, addresses: [{ type: 'InternalIP', ip: '172.20.9.9' }], podCIDRs: [cidr], ready: 'True', healthIPs: [] });
    await client.put(keys.pod('default', 'bad-ip')).value(pod('bad-ip', '10.128.1.300'));
    await client.put(keys.pod('default', 'bad-version')).value(pod('bad-version', '10.128.1.201', 7));
    await client.put(keys.node('bad-cidr')).value(node('bad-cidr', '10.99.0.0/33'));
    // A good record after the bad ones: once every node has it, every node has also seen (and skipped) the bad ones.
    await client.put(keys.pod('default', 'good-after')).value(pod('good-after', '10.128.1.202'));
    for (let i = 0; i < 100 && !lab.nodes.every((n) => inMaps(n, '10.128.1.202').ipcache); i++) await new Promise((r) => setTimeout(r, 100));
    for (const n of lab.nodes) {
      expect(inMaps(n, '10.128.1.202').ipcache).toBe(true);
      expect(inMaps(n, '10.128.1.201')).toEqual({ ipcache: false, endpoint: false });
      const dp = openPinnedMaps(n.pinDir);
      try {
        expect(dp.maps.ipcache.entries().some(([k]) => k.cidr.startsWith('10.99.'))).toBe(false);
        expect(dp.maps.ipcacheHost.entries().some(([k]) => k.ip.startsWith('10.99.') || k.ip === '10.128.1.201')).toBe(false);
      } finally {
        dp.close();
      }
      const skippedLines = () => agentLogLines(n, 'skipping undecodable value').map((l) => `${String(l.key)}: ${String(l.error)}`);
      // The nodes watch is its own stream: its skip may be logged a moment after the pods watch delivered good-after.
      for (let i = 0; i < 100 && !skippedLines().some((s) => s.includes('/bad-cidr:')); i++) await new Promise((r) => setTimeout(r, 100));
      const skipped = skippedLines();
      expect(skipped.find((s) => s.includes('/bad-ip:'))).toMatch(/podIPs.0 is not a valid IP address/);
      expect(skipped.find((s) => s.includes('/bad-version:'))).toMatch(/unknown schema version 7/);
      expect(skipped.find((s) => s.includes('/bad-cidr:'))).toMatch(/podCIDRs.0 is not a valid CIDR/);
    }
    for (const k of ['bad-ip', 'bad-version', 'good-after']) await client.delete().key(keys.pod('default', k));
    await client.delete().key(keys.node('bad-cidr'));
  });
});
