/**
 * A live routing switch, native → tunnel → native, with real packets (reconcilers/datapath-mode.ts): 3 native nodes
 * with BPF host routing; a SluiceNodeConfig selecting `sluice.io/routing=tunnel` is applied and node 1 labelled,
 * so its agent switches to tunnel routing from its record (operator → etcd), without a restart; then the label goes
 * and node 1 is native again. Meanwhile, every 100 ms: node 1's pod → the pods on nodes 2 and 3, node 2's pod →
 * node 1's pod, node 1's pod → a ClusterIP whose backend is on node 2; and a long-lived TCP connection from node 1's
 * pod to node 3's keeps exchanging data. No request fails, the connection survives both switches.
 *
 * In tunnel mode node 1's status says so, its pod traffic goes through the tunnel (BPF's tunnel counter moves), its
 * routes to the other podCIDRs are via vx0, vx0 and new pods get the uplink's MTU less VXLAN's 50 bytes. The pod made
 * in native mode keeps its 9000-byte MTU: a bulk transfer from it still completes, and its path MTU to the remote
 * pod narrows to the tunnel's (BPF hands packets too big for vx0 to the stack, which answers "fragmentation needed").
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type EtcdServer } from '@sluice/etcd-runner';
import { type KubeSim } from '@sluice/kube-sim';
import { execIn, linkInfo } from '@sluice/netns';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentLogLines, startLab, WEB_PORT, type Lab, type LabNode, type LabPod } from '../src/index.ts';
import { startKubeHarness, type KubeHarness } from './kube-harness.ts';

const UPLINK_MTU = 9000;
const ECHO_PORT = 7007;
const SINK_PORT = 7009;
const VIP = '10.96.211.10';

let etcd: EtcdServer;
let sim: KubeSim;
let lab: Lab;
let dir: string;

interface Status {
  routing: string;
  hostRouting: { mode: string };
  mtu: { pod: number; uplink: number; overhead: number };
}
let kube: KubeHarness;
const kubectl = (...args: string[]) => kube.kubectl(...args);
const status = async (node: LabNode) => (await (await fetch(`${node.statusUrl}/status`)).json()) as Status;
const counters = async (node: LabNode) => (await (await fetch(`${node.statusUrl}/counters`)).json()) as Record<string, { packets: number } | undefined>;
const podOn = (node: LabNode) => lab.pods().find((p) => p.node === node.name)!;
/** Sluice's routes (proto 77) in the node's namespace: podCIDR → device. */
const routes = async (node: LabNode) => {
  const r = await execIn(node.netns, 'ip', ['-j', 'route', 'show', 'proto', '77']);
  return (JSON.parse(r.stdout || '[]') as Array<{ dst: string; dev: string }>).map((x) => x.dev);
};

const get = async (from: LabPod, ip: string, port = WEB_PORT) => {
  const r = await execIn(from.netns, 'curl', ['-s', '-m', '2', `http://${ip}:${port}/`], { timeoutMs: 8_000 });
  return r.code === 0 ? r.stdout.trim() : undefined;
};

async function until(what: string, check: () => Promise<boolean>, ms = 60_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check().catch(() => false))) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Spawns a node script in a namespace and resolves once it printed `ready`. */
async function server(netns: string, script: string): Promise<void> {
  const child = lab.services.spawnIn(netns, process.execPath, ['-e', script]);
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => d.toString().includes('ready') && resolve());
    child.on('exit', (code) => reject(new Error(`a server in ${netns} exited (${code})`)));
  });
}

/** A TCP connection from `pod` that sends a numbered line every 100 ms; the server echoes each. */
function longLived(pod: LabPod, ip: string) {
  const script = `const s = require('node:net').connect(${ECHO_PORT}, '${ip}'); let n = 0, buf = '';
s.setNoDelay(true);
s.on('connect', () => setInterval(() => s.write(n++ + '\\n'), 100));
s.on('data', (d) => { buf += d; let i; while ((i = buf.indexOf('\\n')) >= 0) { console.log('echo ' + buf.slice(0, i)); buf = buf.slice(i + 1); } });
s.on('error', (e) => { console.log('error ' + e.message); process.exit(1); });
s.on('close', () => { console.log('closed'); process.exit(1); });`;
  const child = lab.services.spawnIn(pod.netns, process.execPath, ['-e', script]);
  const conn = { echoes: 0, ended: undefined as string | undefined };
  child.stdout!.on('data', (d: Buffer) => {
    for (const line of d.toString().split('\n')) {
      if (line.startsWith('echo ')) conn.echoes++;
      else if (line === 'closed' || line.startsWith('error ')) conn.ended = line;
    }
  });
  child.on('exit', (code, signal) => (conn.ended ??= `exit ${code ?? signal}`));
  return {
    conn,
    async advances(n = 5, ms = 10_000) {
      const from = conn.echoes;
      const end = Date.now() + ms;
      while (conn.echoes < from + n) {
        if (conn.ended) throw new Error(`long-lived connection ended: ${conn.ended}`);
        if (Date.now() > end) throw new Error(`long-lived connection: ${conn.echoes - from} echoes in ${ms} ms, wanted ${n} (stalled)`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    stop: () => child.kill('SIGKILL'),
  };
}

/** Sends `bytes` from `pod` to the sink on `ip` in full-size writes; resolves with what the sink says it received. */
async function bulk(pod: LabPod, ip: string, bytes: number): Promise<number> {
  const script = `const s = require('node:net').connect(${SINK_PORT}, '${ip}', () => s.end(Buffer.alloc(${bytes}, 120)));
let out = ''; s.on('data', (d) => (out += d)); s.on('end', () => { console.log(out.trim()); process.exit(0); });
s.on('error', (e) => { console.error(e.message); process.exit(1); }); setTimeout(() => { console.error('timeout'); process.exit(1); }, 20000);`;
  const r = await execIn(pod.netns, process.execPath, ['-e', script], { timeoutMs: 30_000 });
  if (r.code !== 0) throw new Error(`bulk transfer from ${pod.name} to ${ip}: ${r.stderr.trim()}`);
  return Number(r.stdout.trim());
}

beforeAll(async () => {
  kube = await startKubeHarness('routing-switch');
  ({ etcd, sim, dir } = kube);
  lab = await startLab({
    nodes: 3, podsPerNode: 1, etcdEndpoint: etcd.endpoint, kubeSim: sim, podPrefix: 'rsw-', nodePrefix: 'rsw-node-', rootPrefix: 'rsw/',
    healthEndpoints: false, healthPort: 0, labVxlan: false,
    nodeAgentArgs: () => ['--routing', 'native', '--host-routing', 'bpf', '--masquerade', 'bpf'],
  });
  const [, n2, n3] = lab.nodes as [LabNode, LabNode, LabNode];
  // Node 3's pod echoes lines (the long-lived connection) and counts what a bulk sender sends it.
  await server(podOn(n3).netns, `const net = require('node:net');
net.createServer((s) => { let b = ''; s.on('data', (d) => { b += d; let i; while ((i = b.indexOf('\\n')) >= 0) { s.write(b.slice(0, i) + '\\n'); b = b.slice(i + 1); } }); s.on('error', () => {}); }).listen(${ECHO_PORT}, '0.0.0.0');
net.createServer((s) => { let n = 0; s.on('data', (d) => (n += d.length)); s.on('end', () => s.end(n + '\\n')); s.on('error', () => {}); }).listen(${SINK_PORT}, '0.0.0.0', () => console.log('ready'));`);
  lab.services.apply({ name: 'rsw', clusterIP: VIP, ports: [{ name: 'http', port: 80, targetPort: 'http' }] });
  lab.services.setEndpoints('rsw', [{ pod: podOn(n2) }], [{ name: 'http', port: WEB_PORT }]);
  await lab.services.waitFrontend({ vip: VIP, port: 80, proto: 'tcp' }, (v) => v.count === 1);
}, 300_000);

afterAll(async () => {
  await kube?.stop(lab);
});

describe('routing switched live: native → tunnel → native, without a failed request', () => {
  it('switches node 1 through its node configuration under a request loop and a long-lived connection', async () => {
    const [n1, n2, n3] = lab.nodes as [LabNode, LabNode, LabNode];
    const client = podOn(n1);
    for (const node of lab.nodes) expect(await status(node)).toMatchObject({ routing: 'native', hostRouting: { mode: 'BPF' }, mtu: { pod: UPLINK_MTU } });
    expect(await routes(n1)).toEqual(['eth0', 'eth0']);
    expect((await linkInfo(client.netns, 'eth0')).mtu).toBe(UPLINK_MTU);

    const conn = longLived(client, podOn(n3).ip);
    await conn.advances();
    const failures: string[] = [];
    let requests = 0;
    let looping = true;
    const loop = (async () => {
      while (looping) {
        const checks: Array<[string, LabPod, string, number, string]> = [
          ['node 1 → pod on node 2', client, podOn(n2).ip, WEB_PORT, podOn(n2).name],
          ['node 1 → pod on node 3', client, podOn(n3).ip, WEB_PORT, podOn(n3).name],
          ['node 2 → pod on node 1', podOn(n2), client.ip, WEB_PORT, client.name],
          ['node 1 → ClusterIP (backend on node 2)', client, VIP, 80, podOn(n2).name],
        ];
        for (const [what, from, ip, port, want] of checks) {
          const answer = await get(from, ip, port);
          requests++;
          if (answer !== want) failures.push(`${what}: ${answer ?? 'no answer'}`);
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    })();

    const tunnelBefore = (await counters(n1)).fromContainerTunnel!.packets;
    const yaml = join(dir, 'tunnel.yaml');
    writeFileSync(yaml, 'apiVersion: sluice.io/v1alpha1\nkind: SluiceNodeConfig\nmetadata: {name: 60-tunnel}\nspec:\n  nodeSelector: {matchLabels: {sluice.io/routing: "tunnel"}}\n  defaults: {routing: tunnel}\n');
    await kubectl('apply', '-f', yaml);
    await kubectl('label', 'node', n1.name, 'sluice.io/routing=tunnel');
    await until(`${n1.name} in tunnel routing`, async () => (await status(n1)).routing === 'tunnel');
    await until(`${n1.name}'s routes via vx0`, async () => (await routes(n1)).join() === 'vx0,vx0');
    await conn.advances();
    await new Promise((r) => setTimeout(r, 1000)); // a few loop rounds through the tunnel
    expect(await status(n1)).toMatchObject({ routing: 'tunnel', hostRouting: { mode: 'BPF' }, mtu: { pod: UPLINK_MTU - 50, uplink: UPLINK_MTU, overhead: 50 } });
    expect((await counters(n1)).fromContainerTunnel!.packets).toBeGreaterThan(tunnelBefore);
    expect((await linkInfo(n1.netns, 'vx0')).mtu).toBe(UPLINK_MTU - 50);
    for (const node of [n2, n3]) expect((await status(node)).routing).toBe('native');
    // A new pod gets the tunnel's MTU; the old one keeps 9000, and its full-size packets still get through: its
    // path MTU to the remote pod narrows to the tunnel's (the stack's "fragmentation needed").
    const fresh = await lab.createPod(n1.name, 'rsw-1-tunnel');
    expect((await linkInfo(fresh.netns, 'eth0')).mtu).toBe(UPLINK_MTU - 50);
    expect(await get(fresh, podOn(n3).ip)).toBe(podOn(n3).name);
    expect((await linkInfo(client.netns, 'eth0')).mtu).toBe(UPLINK_MTU);
    expect(await bulk(client, podOn(n3).ip, 4_000_000)).toBe(4_000_000);
    const pmtu = await execIn(client.netns, 'ip', ['route', 'get', podOn(n3).ip]);
    expect(pmtu.stdout).toContain(`mtu ${UPLINK_MTU - 50}`);

    await kubectl('label', 'node', n1.name, 'sluice.io/routing-');
    await until(`${n1.name} back in native routing`, async () => (await status(n1)).routing === 'native');
    await until(`${n1.name}'s routes via the uplink`, async () => (await routes(n1)).join() === 'eth0,eth0');
    await new Promise((r) => setTimeout(r, 1000));
    await conn.advances();
    expect(await status(n1)).toMatchObject({ routing: 'native', mtu: { pod: UPLINK_MTU, overhead: 0 } });
    const tunnelAfter = (await counters(n1)).fromContainerTunnel!.packets;
    expect(await get(client, podOn(n2).ip)).toBe(podOn(n2).name);
    expect((await counters(n1)).fromContainerTunnel!.packets).toBe(tunnelAfter);
    expect(await bulk(client, podOn(n3).ip, 1_000_000)).toBe(1_000_000);

    looping = false;
    await loop;
    conn.stop();
    console.log(`routing switch: ${requests} requests, ${conn.conn.echoes} echoes on the long-lived connection`);
    expect(requests).toBeGreaterThan(20);
    expect(failures).toEqual([]);
    // Said once each way, without a restart; the routes the switch rewrote are not taken for drift.
    expect(agentLogLines(n1, 'routing switched live').map((l) => l.msg)).toEqual(['routing switched live: Routing: Tunnel [vxlan]', 'routing switched live: Routing: Network: Native']);
    expect(agentLogLines(n1, 'repaired drift')).toEqual([]);
  }, 240_000);
});
