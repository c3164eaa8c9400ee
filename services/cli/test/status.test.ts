/**
 * `sluice status`, `nodes` and `endpoints` against a real etcd holding what the operator and the agents write
 * (records written here by hand in their real formats), through a demo state file as a user would find it.
 */
import { writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeDemoState } from '@sluice/demo-state';
import { startEtcd, type EtcdServer } from '@sluice/etcd-runner';
import { realisticNode, realisticPod } from '@sluice/kube-objects';
import { createKvClient, keySchema, RECORD_VERSION, RESOURCE_KINDS, syncedMarkerValue, type AgentStatusRecord, type Etcd3 } from '@sluice/kvstore';
import { encodeSlimString, slimNode, slimPod } from '@sluice/slim';
import { runCli } from '../src/cli.ts';
import { capture, tempDir } from './helpers.ts';

const keys = keySchema();

function agent(node: string, patch: Partial<AgentStatusRecord> = {}): AgentStatusRecord {
  return {
    v: RECORD_VERSION,
    node,
    // Nothing listens there (the CLI reads each agent's /status best effort).
    statusUrl: 'http://127.0.0.1:9',
    version: '0.1.0',
    routing: 'native',
    hostRouting: { mode: 'BPF', reason: '', status: 'Host Routing: BPF' },
    masquerading: 'BPF [eth0] 10.200.0.0/16 [IPv4: Enabled, IPv6: Disabled]',
    synced: true,
    endpoints: { local: 2, cluster: 6, nodes: 3 },
    ...patch,
  };
}

describe('sluice status / nodes / endpoints on a real etcd', () => {
  let etcd: EtcdServer;
  let client: Etcd3;
  let statePath: string;
  let agentStatus: Server;

  beforeAll(async () => {
    etcd = await startEtcd();
    // n1's agent status endpoint: its etcd watch state, as the agent serves it.
    agentStatus = createServer((_req, res) => res.end(JSON.stringify({ node: 'n1', etcd: { connected: true, podsRevision: 9, nodesRevision: 9, retries: 2, decodeErrors: 0 } })));
    await new Promise<void>((resolve) => agentStatus.listen(0, '127.0.0.1', resolve));
    const port = (agentStatus.address() as { port: number }).port;
    client = createKvClient({ endpoints: [etcd.endpoint] });
    statePath = join(tempDir('sluice-status-'), 'demo.json');
    await writeDemoState(statePath, {
      version: 1,
      phase: 'ready',
      pid: process.pid,
      startedAt: new Date().toISOString(),
      etcd: { endpoints: [etcd.endpoint] },
      nodes: ['n1', 'n2', 'n3'].map((name, i) => ({ name, nodeIP: `10.0.0.${i + 1}`, netns: `sl-x-${name}`, pinDir: `/sys/fs/bpf/sluice/x/${name}` })),
    });
    for (const [i, name] of ['n1', 'n2', 'n3'].entries()) {
      const labels: Record<string, string> = name === 'n2' ? { 'kubernetes.io/hostname': name, team: 'blue' } : { 'kubernetes.io/hostname': name };
      await client.put(keys.node(name)).value(encodeSlimString('node', slimNode(realisticNode({ name, internalIP: `10.0.0.${i + 1}`, podCIDR: `10.200.${i}.0/24`, labels }))));
      for (const p of [1, 2]) {
        const pod = slimPod(realisticPod({ namespace: 'demo', name: `web-${name}-${p}`, nodeName: name, hostIP: `10.0.0.${i + 1}`, podIP: `10.200.${i}.${p + 10}` }));
        await client.put(keys.pod('demo', pod.name)).value(encodeSlimString('pod', pod));
      }
    }
    for (const kind of RESOURCE_KINDS) await client.put(keys.synced(kind)).value(syncedMarkerValue(kind));
    await client.put(keys.operatorHeartbeat()).value(JSON.stringify({ identity: 'operator-a', leaderSince: '2026-11-21T22:00:00.000Z', term: 3 }));
    await client.put(keys.agent('n1')).value(JSON.stringify(agent('n1', { statusUrl: `http://127.0.0.1:${port}`, podMtu: 8950 })));
    await client.put(keys.agent('n2')).value(JSON.stringify(agent('n2', {
      hostRouting: { mode: 'Legacy', reason: 'BPF host routing requires enable-bpf-masquerade. Falling back to legacy host routing (enable-host-legacy-routing=true).', status: 'Host Routing: Legacy (BPF host routing requires enable-bpf-masquerade. Falling back to legacy host routing (enable-host-legacy-routing=true).)' },
      masquerading: 'IPTables [IPv4: Enabled, IPv6: Disabled]',
      podMtu: 9000,
      synced: false,
    })));
  });

  afterAll(async () => {
    client?.close();
    agentStatus?.close();
    await etcd?.stop();
  });

  it('prints the cilium-style screen from the demo state file', async () => {
    const c = capture({ statePath });
    expect(await runCli(['status'], c.io)).toBe(0);
    const out = c.out();
    expect(out).toMatch(new RegExp(`^KVStore:\\s+Ok\\s+etcd: 1/1 connected, revision \\d+: ${etcd.endpoint} - 3\\.\\d+\\.\\d+ \\(Leader\\)$`, 'm'));
    expect(out).toMatch(/^Kubernetes:\s+Disabled\s+no kubeconfig/m);
    expect(out).toMatch(/^Operator:\s+Ok\s+leader operator-a \(term 3, since 2026-11-21T22:00:00.000Z\), synced$/m);
    expect(out).toMatch(/^Agents:\s+Warning\s+2\/3 running, version 0\.1\.0, 1 of 3 nodes without an agent, missing: n3$/m);
    expect(out).toMatch(/^Host Routing:\s+BPF on n1; Legacy \(BPF host routing requires enable-bpf-masquerade\. Falling back to legacy host routing \(enable-host-legacy-routing=true\)\.\) on n2$/m);
    expect(out).toMatch(/^Masquerading:\s+BPF \[eth0\] 10\.200\.0\.0\/16 \[IPv4: Enabled, IPv6: Disabled\] on n1; IPTables \[IPv4: Enabled, IPv6: Disabled\] on n2$/m);
    expect(out).toMatch(/^Pod MTU:\s+8950 on n1; 9000 on n2$/m);
    expect(out).toMatch(/^Endpoints:\s+6 pods in etcd, 4 local endpoints on 2 agents$/m);
    expect(out).toMatch(/^Controller Status:\s+5\/6 healthy \(operator mirrors synced 4\/4, agents synced 1\/2, agent etcd watches: 1\/1 connected, 2 retries, 0 decode errors, record errors 0\)$/m);
    expect(out).toMatch(/^Cluster health:\s+no health service/m);
  });

  it('names the SluiceNodeConfigs whose keys the operator refused (read from the API server)', async () => {
    // An API server answering the custom-objects list as Kubernetes does, with the operator's conditions.
    const api = createServer((req, res) => {
      if (req.url?.startsWith('/apis/sluice.io/v1alpha1/sluicenodeconfigs')) {
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({
          apiVersion: 'sluice.io/v1alpha1', kind: 'SluiceNodeConfigList', metadata: { resourceVersion: '7' },
          items: [
            { metadata: { name: '50-ebpf' }, status: { conditions: [{ type: 'sluice.io/valid', status: 'True', reason: 'Valid', message: 'all keys valid' }] } },
            { metadata: { name: '60-odd' }, status: { conditions: [{ type: 'sluice.io/valid', status: 'False', reason: 'InvalidKeys', message: 'unknown key "enable-foo"' }] } },
            { metadata: { name: '70-new' } },
          ],
        }));
      } else if (req.url?.startsWith('/version')) {
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ gitVersion: 'v1.31.0', platform: 'linux/amd64' }));
      } else {
        res.statusCode = 404;
        res.end('{}');
      }
    });
    await new Promise<void>((resolve) => api.listen(0, '127.0.0.1', resolve));
    try {
      const kubeconfig = join(tempDir('sluice-kc-'), 'kubeconfig');
      const server = `http://127.0.0.1:${(api.address() as { port: number }).port}`;
      writeFileSync(kubeconfig, `apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: '${server}', insecure-skip-tls-verify: true}}]\nusers: [{name: u, user: {}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n`);
      const c = capture({ statePath });
      expect(await runCli(['status', '--kubeconfig', kubeconfig], c.io)).toBe(0);
      expect(c.out()).toMatch(/^Kubernetes:\s+Ok\s+v1\.31\.0/m);
      expect(c.out()).toMatch(/^Node Config:\s+3 SluiceNodeConfigs, 1 with refused keys: 60-odd \(unknown key "enable-foo"\), 1 not yet checked by the operator: 70-new$/m);
    } finally {
      api.close();
    }
  });

  it('--node narrows the agent lines to one node', async () => {
    const c = capture({ statePath });
    expect(await runCli(['status', '--node', 'n2'], c.io)).toBe(0);
    expect(c.out()).toMatch(/^Node:\s+n2$/m);
    expect(c.out()).toMatch(/^Host Routing:\s+Legacy \(BPF host routing requires enable-bpf-masquerade\. Falling back to legacy host routing \(enable-host-legacy-routing=true\)\.\)$/m);
    expect(c.out()).toMatch(/^Agents:\s+Warning\s+n2: running, not synced yet/m);
    expect(c.out()).toMatch(/^Endpoints:\s+2 local, 6 cluster-wide programmed, 3 nodes; 6 pods in etcd$/m);
    const missing = capture({ statePath });
    expect(await runCli(['status', '--node', 'n9'], missing.io)).toBe(1);
    expect(missing.err()).toBe('sluice: no node n9 in etcd (known: n1, n2, n3)\n');
  });

  it('--json carries the same facts as data', async () => {
    const c = capture({ statePath });
    expect(await runCli(['status', '--json', '--etcd-endpoints', etcd.endpoint], c.io)).toBe(0);
    const report = JSON.parse(c.out());
    expect(report.kvstore.data.endpoint).toBe(etcd.endpoint);
    expect(report.operator).toMatchObject({ state: 'Ok', data: { identity: 'operator-a', term: 3, synced: true } });
    expect(report.hostRouting.data.n2).toEqual({ mode: 'Legacy', reason: 'BPF host routing requires enable-bpf-masquerade. Falling back to legacy host routing (enable-host-legacy-routing=true).', status: 'Host Routing: Legacy (BPF host routing requires enable-bpf-masquerade. Falling back to legacy host routing (enable-host-legacy-routing=true).)' });
    expect(report.agents.data.missing).toEqual(['n3']);
  });

  it('no operator heartbeat is an error line and exit 1', async () => {
    await client.delete().key(keys.operatorHeartbeat());
    try {
      const c = capture({ statePath });
      expect(await runCli(['status'], c.io)).toBe(1);
      expect(c.out()).toMatch(/^Operator:\s+Error\s+no leader \(no heartbeat in etcd; 4\/4 kinds synced\)$/m);
    } finally {
      await client.put(keys.operatorHeartbeat()).value(JSON.stringify({ identity: 'operator-a', leaderSince: '2026-11-21T22:00:00.000Z', term: 3 }));
    }
  });

  it('nodes: addresses, CIDRs, agents and the labels a user set', async () => {
    const c = capture({ statePath });
    expect(await runCli(['nodes'], c.io)).toBe(0);
    const lines = c.out().trimEnd().split('\n');
    expect(lines[0]).toMatch(/^NAME\s+INTERNAL-IP\s+POD-CIDR\s+READY\s+AGENT\s+HOST-ROUTING\s+ENDPOINTS\s+LABELS$/);
    expect(lines[1]).toMatch(/^n1\s+10\.0\.0\.1\s+10\.200\.0\.0\/24\s+True\s+synced\s+BPF\s+2\s+-$/);
    expect(lines[2]).toMatch(/^n2\s+10\.0\.0\.2\s+10\.200\.1\.0\/24\s+True\s+syncing\s+Legacy\s+2\s+team=blue$/);
    expect(lines[3]).toMatch(/^n3\s+10\.0\.0\.3\s+10\.200\.2\.0\/24\s+True\s+-\s+-\s+-\s+-$/);
  });

  it('endpoints: every pod etcd holds, or one node\'s', async () => {
    const all = capture({ statePath });
    expect(await runCli(['endpoints'], all.io)).toBe(0);
    expect(all.out().trimEnd().split('\n')).toHaveLength(7);
    const one = capture({ statePath });
    expect(await runCli(['endpoints', '--node', 'n3', '--json'], one.io)).toBe(0);
    const items = JSON.parse(one.out()).items as Array<{ name: string; podIPs: string[] }>;
    expect(items.map((p) => `${p.name} ${p.podIPs.join()}`)).toEqual(['web-n3-1 10.200.2.11', 'web-n3-2 10.200.2.12']);
  });

  it('a record that does not decode is reported, not fatal', async () => {
    await client.put(keys.agent('n3')).value('{"v":1,"node":"n3"}');
    try {
      const c = capture({ statePath });
      expect(await runCli(['nodes'], c.io)).toBe(0);
      expect(c.err()).toMatch(/^sluice: unreadable record sluice\/v1\/agents\/n3: bad agent status record: field /);
    } finally {
      await client.delete().key(keys.agent('n3'));
    }
  });
});
