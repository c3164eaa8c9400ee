/**
 * The seed's migration, with real packets: 3 nodes start with iptables masquerading (SLUICE_MASQUERADE=iptables,
 * the agents' environment) and host routing `auto`, so every agent falls back to legacy host routing and says why
 * once. A client pod on node 1 loops over the pods on nodes 2 and 3 and a server outside the cluster (a namespace on
 * the underlay that is not a node, with no route to the pods: only masquerading lets it answer) while a
 * SluiceNodeConfig selecting `sluice.io/enable-ebpf=true` is applied and the nodes are labelled one at a time —
 * each agent switches to BPF masquerading live (its record from the operator through etcd). No request fails,
 * the outside server sees node 1's address before and after, and at the end every node reports
 * `Masquerading: BPF`. Then the same in reverse.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { startEtcd, type EtcdServer } from '@sluice/etcd-runner';
import { startKubeSim, type KubeSim } from '@sluice/kube-sim';
import { execIn } from '@sluice/netns';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentLogLines, startLab, stopAllLabs, WEB_PORT, type Lab, type LabClient, type LabNode, type LabPod } from '../src/index.ts';

const CRDS = fileURLToPath(new URL('../../../deploy/crds', import.meta.url));
const run = promisify(execFile);
const REASON = 'BPF host routing requires enable-bpf-masquerade. Falling back to legacy host routing (enable-host-legacy-routing=true).';

let etcd: EtcdServer;
let sim: KubeSim;
let lab: Lab;
let dir: string;
let outside: LabClient;
const saved = process.env.SLUICE_MASQUERADE;

const kubectl = async (...args: string[]) => (await run('kubectl', ['--kubeconfig', sim.kubeconfigPath, '--cache-dir', join(dir, 'cache'), ...args], { timeout: 30_000 })).stdout;
const status = async (node: LabNode) => (await (await fetch(`${node.statusUrl}/status`)).json()) as { masquerading: string; hostRouting: { mode: string; reason: string } };
const get = async (from: LabPod, ip: string) => {
  const r = await execIn(from.netns, 'curl', ['-s', '-m', '2', `http://${ip}:${WEB_PORT}/`], { timeoutMs: 8_000 });
  return r.code === 0 ? r.stdout.trim() : undefined;
};

async function until(what: string, check: () => Promise<boolean>, ms = 60_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check().catch(() => false))) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sluice-migration-'));
  etcd = await startEtcd();
  sim = await startKubeSim({ nodes: 0, services: 0 });
  await kubectl('apply', '-k', CRDS);
  // The agents inherit it: the starting point is iptables masquerading on every node (flags > SLUICE_* > config dir).
  process.env.SLUICE_MASQUERADE = 'iptables';
  lab = await startLab({ nodes: 3, podsPerNode: 1, hostRouting: 'auto', etcdEndpoint: etcd.endpoint, kubeSim: sim, podPrefix: 'mig-', nodePrefix: 'mig-node-', rootPrefix: 'mig/', healthEndpoints: false, healthPort: 0 });
  outside = await lab.services.addClient();
  // The outside server answers with the source address it saw.
  lab.services.spawnIn(outside.netns, process.execPath, ['-e', `require('node:http').createServer((q, r) => r.end(q.socket.remoteAddress + '\\n')).listen(${WEB_PORT}, '0.0.0.0')`]);
}, 240_000);

afterAll(async () => {
  if (saved === undefined) delete process.env.SLUICE_MASQUERADE;
  else process.env.SLUICE_MASQUERADE = saved;
  await lab?.stop().catch(() => undefined);
  stopAllLabs();
  await sim?.close();
  await etcd?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('iptables → BPF masquerading, node by node, without a failed request', () => {
  it('migrates and migrates back under a request loop', async () => {
    const [n1, n2, n3] = lab.nodes as [LabNode, LabNode, LabNode];
    const pod = (node: LabNode) => lab.pods().find((p) => p.node === node.name)!;
    const client = pod(n1);
    for (const node of lab.nodes) {
      const s = await status(node);
      expect(s.masquerading).toBe('IPTables [IPv4: Enabled, IPv6: Disabled]');
      expect(s.hostRouting).toMatchObject({ mode: 'Legacy', reason: REASON });
      expect(agentLogLines(node, 'BPF host routing requires').map((l) => l.msg)).toEqual([REASON]);
    }
    await until('the outside server to answer pod 1 (masqueraded)', async () => (await get(client, outside.ip)) === n1.ip);

    const failures: string[] = [];
    let requests = 0;
    let looping = true;
    const loop = (async () => {
      while (looping) {
        for (const [what, ip, want] of [['pod on node 2', pod(n2).ip, undefined], ['pod on node 3', pod(n3).ip, undefined], ['outside', outside.ip, n1.ip]] as const) {
          const answer = await get(client, ip);
          requests++;
          if (answer === undefined || (want && answer !== want)) failures.push(`${what}: ${answer ?? 'no answer'}`);
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    })();

    const ebpf = join(dir, 'ebpf.yaml');
    writeFileSync(ebpf, 'apiVersion: sluice.io/v1alpha1\nkind: SluiceNodeConfig\nmetadata: {name: 50-ebpf}\nspec:\n  nodeSelector: {matchLabels: {sluice.io/enable-ebpf: "true"}}\n  defaults: {masquerade: bpf, host-routing: auto}\n');
    await kubectl('apply', '-f', ebpf);
    for (const node of [n1, n2, n3]) {
      await kubectl('label', 'node', node.name, 'sluice.io/enable-ebpf=true');
      await until(`${node.name} on BPF masquerading`, async () => (await status(node)).masquerading.startsWith('BPF '));
      await new Promise((r) => setTimeout(r, 1000)); // a few loop rounds in the mixed cluster
    }
    // Every node on BPF: masquerading and, its prerequisite now met, host routing.
    for (const node of lab.nodes) expect(await status(node)).toMatchObject({ masquerading: expect.stringMatching(/^BPF \[eth0\] \S+ \[IPv4: Enabled, IPv6: Disabled\]$/), hostRouting: { mode: 'BPF', reason: '' } });
    const forward = requests;
    expect(await get(client, outside.ip)).toBe(n1.ip);

    for (const node of [n3, n2, n1]) {
      await kubectl('label', 'node', node.name, 'sluice.io/enable-ebpf-');
      await until(`${node.name} back on iptables`, async () => (await status(node)).masquerading.startsWith('IPTables'));
      await new Promise((r) => setTimeout(r, 1000));
    }
    looping = false;
    await loop;
    console.log(`migration: ${forward} requests during iptables → BPF, ${requests - forward} during BPF → iptables, ${failures.length} failed`);
    expect(forward).toBeGreaterThan(10);
    expect(requests - forward).toBeGreaterThan(10);
    expect(failures).toEqual([]);
    for (const node of lab.nodes) expect((await status(node)).hostRouting).toMatchObject({ mode: 'Legacy', reason: REASON });
  }, 300_000);
});
