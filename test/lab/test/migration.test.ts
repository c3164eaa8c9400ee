/**
 * The seed's migration, with real packets: 3 nodes start with iptables masquerading (SLUICE_MASQUERADE=iptables,
 * the agents' environment) and host routing `auto`, so every agent falls back to legacy host routing and says why
 * once. A client pod on node 1 loops over the pods on nodes 2 and 3 and a server outside the cluster (a namespace on
 * the underlay that is not a node, with no route to the pods: only masquerading lets it answer) while a
 * SluiceNodeConfig selecting `sluice.io/enable-ebpf=true` is applied and the nodes are labelled one at a time —
 * each agent switches to BPF masquerading live (its record from the operator through etcd). No request fails,
 * the outside server sees node 1's address before and after, and at the end every node reports
 * `Masquerading: BPF`. Then the same in reverse.
 *
 * Long-lived connections to the outside server keep exchanging data across the switches: one opened under iptables
 * masquerading (netfilter's conntrack owns its translation, so after the switch the BPF path must leave its packets
 * to the stack) and one opened under BPF masquerading before the way back (its mapping lives in the BPF NAT table,
 * so the BPF SNAT keeps translating it after iptables takes over new flows). The server sees each connection from
 * node 1's address and the same port all along. With every node on BPF, a ping to the outside server (ICMP echo
 * masqueraded by BPF) is answered, and pings to a pod on node 2 with TTL 1, 2 and 3 show each BPF-forwarding node
 * decrementing the TTL (time exceeded from node 1, then node 2, then an answer).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SNAT_PORT_MAX, SNAT_PORT_MIN } from '@sluice/bpf';
import { type EtcdServer } from '@sluice/etcd-runner';
import { type KubeSim } from '@sluice/kube-sim';
import { execIn } from '@sluice/netns';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentLogLines, startLab, WEB_PORT, type Lab, type LabClient, type LabNode, type LabPod } from '../src/index.ts';
import { startKubeHarness, type KubeHarness } from './kube-harness.ts';

const REASON = 'BPF host routing requires enable-bpf-masquerade. Falling back to legacy host routing (enable-host-legacy-routing=true).';

let etcd: EtcdServer;
let sim: KubeSim;
let lab: Lab;
let dir: string;
let outside: LabClient;
const saved = process.env.SLUICE_MASQUERADE;

let kube: KubeHarness;
const kubectl = (...args: string[]) => kube.kubectl(...args);
const status = async (node: LabNode) => (await (await fetch(`${node.statusUrl}/status`)).json()) as { masquerading: string; hostRouting: { mode: string; reason: string } };
const natRules = async (node: LabNode) => (await execIn(node.netns, 'iptables-save', ['-t', 'nat'])).stdout.split('\n').filter((l) => l.startsWith('-A') && l.includes('SLUICE_POST_nat'));
const counters = async (node: LabNode) => (await (await fetch(`${node.statusUrl}/counters`)).json()) as Record<string, { packets: number } | undefined>;
const ECHO_PORT = 7007;

/** A TCP connection from a pod that sends a numbered line every 100 ms; the outside server echoes it with the peer it saw. */
interface LongLived {
  name: string;
  echoes: string[];
  peers: Set<string>;
  ended: string | undefined;
  /** Resolves once `n` more echoes arrived than when called (the connection still carries data both ways). */
  advances(n?: number, ms?: number): Promise<void>;
  stop(): void;
}

function longLived(name: string, pod: LabPod, ip: string): LongLived {
  const script = `const s = require('node:net').connect(${ECHO_PORT}, '${ip}'); let n = 0, buf = '';
s.setNoDelay(true);
s.on('connect', () => { console.log('connected ' + s.localPort); setInterval(() => s.write(n++ + '\\n'), 100); });
s.on('data', (d) => { buf += d; let i; while ((i = buf.indexOf('\\n')) >= 0) { console.log('echo ' + buf.slice(0, i)); buf = buf.slice(i + 1); } });
s.on('error', (e) => { console.log('error ' + e.message); process.exit(1); });
s.on('close', () => { console.log('closed'); process.exit(1); });`;
  const child = lab.services.spawnIn(pod.netns, process.execPath, ['-e', script]);
  const conn: LongLived = {
    name,
    echoes: [],
    peers: new Set(),
    ended: undefined,
    async advances(n = 5, ms = 10_000) {
      const from = conn.echoes.length;
      const end = Date.now() + ms;
      while (conn.echoes.length < from + n) {
        if (conn.ended) throw new Error(`${name} ended: ${conn.ended}`);
        if (Date.now() > end) throw new Error(`${name}: ${conn.echoes.length - from} echoes in ${ms} ms, wanted ${n} (stalled)`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    stop: () => child.kill('SIGKILL'),
  };
  let buf = '';
  child.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (line.startsWith('echo ')) {
        const [peer, seq] = line.slice(5).split(' ');
        conn.peers.add(peer!);
        conn.echoes.push(seq!);
      } else if (line === 'closed' || line.startsWith('error ')) conn.ended = line;
    }
  });
  child.on('exit', (code, signal) => (conn.ended ??= `exit ${code ?? signal}`));
  return conn;
}

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
  kube = await startKubeHarness('migration');
  ({ etcd, sim, dir } = kube);
  // The agents inherit it: the starting point is iptables masquerading on every node (flags > SLUICE_* > config dir).
  process.env.SLUICE_MASQUERADE = 'iptables';
  lab = await startLab({ nodes: 3, podsPerNode: 1, hostRouting: 'auto', etcdEndpoint: etcd.endpoint, kubeSim: sim, podPrefix: 'mig-', nodePrefix: 'mig-node-', rootPrefix: 'mig/', healthEndpoints: false, healthPort: 0 });
  outside = await lab.services.addClient();
  // The outside server answers with the source address it saw.
  lab.services.spawnIn(outside.netns, process.execPath, ['-e', `require('node:http').createServer((q, r) => r.end(q.socket.remoteAddress + '\\n')).listen(${WEB_PORT}, '0.0.0.0')`]);
  // And echoes each line of a long-lived connection, prefixed with the address:port it comes from.
  const echo = lab.services.spawnIn(outside.netns, process.execPath, [
    '-e',
    `require('node:net').createServer((s) => { let b = ''; s.on('data', (d) => { b += d; let i; while ((i = b.indexOf('\\n')) >= 0) { s.write(s.remoteAddress + ':' + s.remotePort + ' ' + b.slice(0, i) + '\\n'); b = b.slice(i + 1); } }); s.on('error', () => {}); }).listen(${ECHO_PORT}, '0.0.0.0', () => console.log('listening'))`,
  ]);
  await new Promise<void>((resolve, reject) => {
    echo.stdout!.on('data', (d: Buffer) => d.toString().includes('listening') && resolve());
    echo.on('exit', (code) => reject(new Error(`the echo server exited (${code})`)));
  });
}, 240_000);

afterAll(async () => {
  if (saved === undefined) delete process.env.SLUICE_MASQUERADE;
  else process.env.SLUICE_MASQUERADE = saved;
  await kube?.stop(lab);
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
    // Opened under iptables masquerading: netfilter's conntrack holds its translation.
    const underIptables = longLived('connection opened under iptables', client, outside.ip);
    await underIptables.advances();

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
      await underIptables.advances();
    }
    // Every node on BPF: masquerading and, its prerequisite now met, host routing.
    for (const node of lab.nodes) expect(await status(node)).toMatchObject({ masquerading: expect.stringMatching(/^BPF \[eth0\] \S+ \[IPv4: Enabled, IPv6: Disabled\]$/), hostRouting: { mode: 'BPF', reason: '' } });
    const forward = requests;
    expect(await get(client, outside.ip)).toBe(n1.ip);
    // Node 1's netfilter still translates the connection it masqueraded, so its rules stay (and keep conntrack
    // tracking it) while BPF masquerades new flows; nodes 2 and 3 had no such flow and have no rules left.
    expect(await natRules(n1)).not.toEqual([]);
    await until('nodes 2 and 3 without iptables masquerade rules', async () => (await natRules(n2)).length + (await natRules(n3)).length === 0);
    // Pod → another node's own address is not masqueraded (node IPs are in sl_ipmasq): node 2 sees the pod.
    const nodeServer = lab.services.spawnIn(n2.netns, process.execPath, ['-e', `require('node:http').createServer((q, r) => r.end(q.socket.remoteAddress + '\\n')).listen(7008, '${n2.ip}', () => console.log('listening'))`]);
    await new Promise<void>((resolve) => nodeServer.stdout!.on('data', (d: Buffer) => d.toString().includes('listening') && resolve()));
    const seen = await execIn(client.netns, 'curl', ['-s', '-m', '2', `http://${n2.ip}:7008/`], { timeoutMs: 8_000 });
    expect(seen.stdout.trim()).toBe(client.ip);
    nodeServer.kill('SIGKILL');
    // ICMP echo to the outside server, masqueraded by BPF (identifier translated both ways), is answered.
    const icmpBefore = (await counters(n1)).snatIcmp!.packets;
    const ping = await execIn(client.netns, 'ping', ['-n', '-c', '2', '-W', '2', outside.ip], { timeoutMs: 10_000 });
    expect(ping.code, ping.stdout).toBe(0);
    expect((await counters(n1)).snatIcmp!.packets - icmpBefore).toBeGreaterThanOrEqual(4);
    // BPF host routing forwards pod → remote pod itself, decrementing the TTL at each node as routers do: TTL 1 and
    // 2 end at node 1 and node 2 with ICMP time exceeded (the stack's answer), TTL 3 reaches the pod.
    const exceededBefore = (await counters(n1)).ttlExceeded!.packets;
    for (const ttl of [1, 2]) {
      const r = await execIn(client.netns, 'ping', ['-n', '-c', '1', '-W', '2', '-t', String(ttl), pod(n2).ip], { timeoutMs: 10_000 });
      expect(r.stdout, `ttl ${ttl}`).toMatch(/Time to live exceeded/);
    }
    expect((await counters(n1)).ttlExceeded!.packets - exceededBefore).toBeGreaterThanOrEqual(1);
    expect((await execIn(client.netns, 'ping', ['-n', '-c', '1', '-W', '2', '-t', '3', pod(n2).ip], { timeoutMs: 10_000 })).code).toBe(0);
    // Opened under BPF masquerading: its mapping is in the BPF NAT table, which netfilter knows nothing of.
    const underBpf = longLived('connection opened under BPF', client, outside.ip);
    await underBpf.advances();

    for (const node of [n3, n2, n1]) {
      await kubectl('label', 'node', node.name, 'sluice.io/enable-ebpf-');
      await until(`${node.name} back on iptables`, async () => (await status(node)).masquerading.startsWith('IPTables'));
      await new Promise((r) => setTimeout(r, 1000));
      await Promise.all([underIptables.advances(), underBpf.advances()]);
    }
    looping = false;
    await loop;
    for (const conn of [underIptables, underBpf]) {
      conn.stop();
      expect(conn.ended, conn.name).toBeUndefined();
      // One connection, one translation: node 1's address and the same port from the first echo to the last.
      expect([...conn.peers], conn.name).toHaveLength(1);
      expect([...conn.peers][0]!.split(':')[0], conn.name).toBe(n1.ip);
      // Whose translation: BPF's NAT ports are above ip_local_port_range; netfilter kept the pod's own port.
      const port = Number([...conn.peers][0]!.split(':')[1]);
      expect(port >= SNAT_PORT_MIN && port <= SNAT_PORT_MAX, `${conn.name}: port ${port}`).toBe(conn === underBpf);
      // Every line came back, in order: nothing lost or duplicated by a switch.
      expect(conn.echoes.map(Number), conn.name).toEqual(conn.echoes.map((_, i) => i));
    }
    console.log(`long-lived: ${underIptables.echoes.length} echoes on the connection opened under iptables, ${underBpf.echoes.length} on the one opened under BPF`);
    console.log(`migration: ${forward} requests during iptables → BPF, ${requests - forward} during BPF → iptables, ${failures.length} failed`);
    expect(forward).toBeGreaterThan(10);
    expect(requests - forward).toBeGreaterThan(10);
    expect(failures).toEqual([]);
    for (const node of lab.nodes) expect((await status(node)).hostRouting).toMatchObject({ mode: 'Legacy', reason: REASON });
  }, 300_000);
});
