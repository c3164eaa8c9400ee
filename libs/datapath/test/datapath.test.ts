/**
 * Real packets through the real programs: 2 node namespaces on an underlay bridge, 2 pods each, maps programmed
 * from the test. Every pod pair is checked with ping and TCP, same node and across nodes, in native routing and
 * VXLAN tunnel mode, with BPF host routing (the counters must show the redirects) and legacy (the kernel forwards).
 */
import type { ChildProcess } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, rmdirSync } from 'node:fs';
import { BPF_DIR } from '@sluice/bpf';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NetLab, ping, run, nsenterArgs } from '@sluice/netns';
import { attachNode, attachSocketLb, detachNode, detachSocketLb, LbProgrammer, simpleService, detachTcInNetns, queryTc, inNetns, ifindex, loadDatapath, type Datapath } from '../src/index.ts';
import { buildTopology, programMaps, setMode, type Node, type Pod } from './topology.ts';

const PORT = 7070;
const SERVER = `
const net = require('node:net');
net.createServer((s) => s.on('data', (d) => s.write(d))).listen(${PORT}, '0.0.0.0', () => console.log('ready'));
`;
const CLIENT = `
const net = require('node:net');
const [host, msg, port] = process.argv.slice(1);
const s = net.connect(Number(port), host, () => s.write(msg));
s.setTimeout(4000, () => { console.error('timeout'); process.exit(1); });
s.on('data', (d) => { if (d.toString() === msg) { s.end(); process.exit(0); } });
s.on('error', (e) => { console.error(e.message); process.exit(1); });
`;

// Outside the cluster: tells each client the address it sees it coming from.
const WHO_SERVER = `
const net = require('node:net');
net.createServer((s) => s.end(s.remoteAddress.replace('::ffff:', ''))).listen(${PORT}, '0.0.0.0', () => console.log('ready'));
`;
// The address a connect() reached, as getpeername() shows it (the backend, after the socket LB).
const PEER = `
const net = require('node:net');
const [host, port] = process.argv.slice(1);
const s = net.connect(Number(port), host, () => { console.log(s.remoteAddress + ':' + s.remotePort); s.destroy(); });
s.setTimeout(4000, () => { console.error('timeout'); process.exit(1); });
s.on('error', (e) => { console.error(e.message); process.exit(1); });
`;
const WHO_CLIENT = `
const net = require('node:net');
const [host, port] = process.argv.slice(1);
let got = '';
const s = net.connect(Number(port), host);
s.setTimeout(4000, () => { console.error('timeout'); process.exit(1); });
s.on('data', (d) => (got += d));
s.on('end', () => { console.log(got); process.exit(0); });
s.on('error', (e) => { console.error(e.message); process.exit(1); });
`;

async function tcp(from: Pod, to: Pod | { ip: string; name: string }, port = PORT): Promise<boolean> {
  const [cmd, args] = nsenterArgs(from.ns, process.execPath, ['-e', CLIENT, to.ip, `hello ${from.name}->${to.name}`, String(port)]);
  const r = await run(cmd, args, { timeoutMs: 10_000 });
  return r.code === 0;
}

function snapshot(dp: Datapath) {
  const c = dp.readCounters();
  return Object.fromEntries(Object.entries(c).map(([k, v]) => [k, v.packets])) as Record<keyof typeof c, bigint>;
}

describe('datapath between pods (real kernel, real packets)', () => {
  const lab = new NetLab();
  let nodes: Node[] = [];
  const servers: ChildProcess[] = [];

  beforeAll(async () => {
    execFileSync('make', ['-s', '-C', BPF_DIR]); // a no-op when the object is current
    try {
      nodes = await buildTopology(lab);
      programMaps(nodes);
      for (const pod of nodes.flatMap((n) => n.pods)) {
        const child = lab.spawnIn(pod.ns, process.execPath, ['-e', SERVER]);
        servers.push(child);
        await new Promise<void>((resolve, reject) => {
          child.stdout?.once('data', () => resolve());
          child.once('exit', (code) => reject(new Error(`echo server in ${pod.ns} exited ${code}`)));
        });
      }
    } catch (err) {
      await lab.cleanup();
      throw err;
    }
  });

  afterAll(async () => {
    const failures = await lab.cleanup();
    expect(failures).toEqual([]);
  });

  const modes = [
    { name: 'native routing, BPF host routing', bpfHostRouting: true, tunnel: false },
    { name: 'VXLAN tunnel, BPF host routing', bpfHostRouting: true, tunnel: true },
    { name: 'native routing, legacy host routing', bpfHostRouting: false, tunnel: false },
    { name: 'VXLAN tunnel, legacy host routing', bpfHostRouting: false, tunnel: true },
  ];

  for (const mode of modes) {
    it(`${mode.name}: every pod reaches every other pod (ping and TCP)`, async () => {
      await setMode(lab, nodes, mode);
      const [n1, n2] = nodes as [Node, Node];
      const before = nodes.map((n) => snapshot(n.dp));
      const pods = nodes.flatMap((n) => n.pods);
      const failures: string[] = [];
      for (const from of pods) {
        for (const to of pods) {
          if (from === to) continue;
          if (!(await ping(from.ns, to.ip, { count: 2, intervalS: 0.1 }))) failures.push(`ping ${from.name}->${to.name}`);
          if (!(await tcp(from, to))) failures.push(`tcp ${from.name}->${to.name}`);
        }
      }
      expect(failures).toEqual([]);
      const after = nodes.map((n) => snapshot(n.dp));
      const delta = (i: number, k: keyof (typeof after)[number]) => after[i]![k] - before[i]![k];
      for (const i of [0, 1]) {
        expect(delta(i, 'fromContainer')).toBeGreaterThan(0n);
        if (mode.bpfHostRouting) {
          expect(delta(i, 'fromContainerLocal')).toBeGreaterThan(0n); // same-node: bpf_redirect_peer
          if (mode.tunnel) {
            expect(delta(i, 'fromContainerTunnel')).toBeGreaterThan(0n); // bpf_skb_set_tunnel_key + redirect
            expect(delta(i, 'fromOverlayLocal')).toBeGreaterThan(0n); // decapsulated, bpf_redirect_peer
            expect(delta(i, 'fromContainerNeigh')).toBe(0n);
          } else {
            expect(delta(i, 'fromContainerNeigh')).toBeGreaterThan(0n); // bpf_redirect_neigh to the uplink
            expect(delta(i, 'fromNetdevLocal')).toBeGreaterThan(0n); // from the uplink, bpf_redirect_peer
            expect(delta(i, 'fromContainerTunnel')).toBe(0n);
          }
        } else {
          expect(delta(i, 'legacy')).toBeGreaterThan(0n);
          expect(delta(i, 'fromContainerLocal') + delta(i, 'fromContainerNeigh') + delta(i, 'fromContainerTunnel')).toBe(0n);
          if (mode.tunnel) expect(delta(i, 'toOverlayEncap')).toBeGreaterThan(0n); // the kernel routed into vx0
        }
      }
      void n1;
      void n2;
    });
  }

  for (const mode of [modes[0]!, modes[3]!]) {
    it(`service load-balancing (ClusterIP DNAT + reverse NAT), ${mode.name}`, async () => {
      await setMode(lab, nodes, mode);
      const [n1, n2] = nodes as [Node, Node];
      const backends = [n1.pods[1]!, n2.pods[0]!];
      const vip = { ip: '10.96.0.10', name: 'svc' };
      const programmers = nodes.map((node) => {
        node.dp.maps.lbCt.deleteBatch(node.dp.maps.lbCt.entries().map(([k]) => k));
        node.dp.maps.lbFwd.deleteBatch(node.dp.maps.lbFwd.entries().map(([k]) => k));
        const lb = new LbProgrammer(node.dp);
        lb.seed();
        lb.apply('svc', simpleService('svc', vip.ip, 80, 'tcp', backends.map((b) => ({ ip: b.ip, port: PORT }))));
        return lb;
      });
      const before = nodes.map((n) => snapshot(n.dp));
      const clients = [n1.pods[0]!, n2.pods[1]!];
      const failures: string[] = [];
      for (const client of clients) for (let i = 0; i < 6; i++) if (!(await tcp(client, vip, 80))) failures.push(`${client.name} -> ${vip.ip}:80 #${i}`);
      expect(failures).toEqual([]);
      for (const [i, node] of nodes.entries()) {
        expect(snapshot(node.dp).lbDnat - before[i]!.lbDnat).toBeGreaterThan(0n);
        expect(snapshot(node.dp).lbRevNat - before[i]!.lbRevNat).toBeGreaterThan(0n);
      }
      // Source ports vary, so both backends (same node and remote) were chosen.
      const chosen = new Set(nodes.flatMap((n) => n.dp.maps.lbCt.entries().map(([k]) => k.peerIp)));
      expect(chosen).toEqual(new Set(backends.map((b) => b.ip)));
      // Every flow has its forward entry, pinned to one of the backends.
      expect(nodes.flatMap((n) => n.dp.maps.lbFwd.entries()).length).toBeGreaterThanOrEqual(clients.length * 6);
      // No backends: the service rejects (TCP RST from the service address, counted), it does not blackhole.
      nodes.forEach((_, i) => programmers[i]!.apply('svc', simpleService('svc', vip.ip, 80, 'tcp', [])));
      const rejectsBefore = snapshot(n1.dp).lbReject;
      expect(await tcp(clients[0]!, vip, 80)).toBe(false);
      expect(snapshot(n1.dp).lbReject - rejectsBefore).toBeGreaterThan(0n);
      for (const [i, node] of nodes.entries()) {
        programmers[i]!.apply('svc', undefined);
        expect(node.dp.maps.services.count() + node.dp.maps.backends.count() + node.dp.maps.maglev.count()).toBe(0);
      }
    });
  }

  it('socket LB, sessionAffinity ClientIP: each network namespace of the cgroup is one client (sl_lb_affinity_sock, by its cookie), kept on its backend; without affinity its connections spread', async () => {
    await setMode(lab, nodes, modes[0]!);
    const [n1, n2] = nodes as [Node, Node];
    const backends = [n1.pods[1]!, n2.pods[0]!, n2.pods[1]!];
    const root = existsSync('/sys/fs/cgroup/cgroup.controllers') ? '/sys/fs/cgroup' : '/sys/fs/cgroup/unified';
    const cgroup = `${root}/${lab.name('cg')}`;
    mkdirSync(cgroup);
    lab.defer(`cgroup ${cgroup}`, () => rmdirSync(cgroup));
    attachSocketLb(n1.dp.pinDir, cgroup);
    lab.defer(`socket LB on ${cgroup}`, () => detachSocketLb(n1.dp.pinDir, cgroup));
    const lb = new LbProgrammer(n1.dp);
    lb.seed();
    const [stickyVip, spreadVip] = ['10.96.0.30', '10.96.0.31'];
    const to = backends.map((b) => ({ ip: b.ip, port: PORT }));
    const sticky = simpleService('sticky', stickyVip, 80, 'tcp', to);
    lb.apply('sticky', { ...sticky, sets: sticky.sets.map((set) => ({ ...set, affinityTimeout: 300 })) });
    lb.apply('spread', simpleService('spread', spreadVip, 80, 'tcp', to));
    // connect() from a process of the cgroup in `ns`: the address it reached (getpeername shows the backend).
    const peer = async (ns: string, vip: string) => {
      const r = await run('sh', ['-c', `echo $$ > ${cgroup}/cgroup.procs && exec nsenter --net=/run/netns/${ns} "$@"`, 'sh', process.execPath, '-e', PEER, vip, '80'], { timeoutMs: 10_000 });
      expect(r.code, `${ns} -> ${vip}: ${r.stderr}`).toBe(0);
      return r.stdout.trim();
    };
    const setId = n1.dp.maps.services.lookup({ vip: stickyVip, port: 80, proto: 'tcp' })!.id;
    const seen = new Map<string, string>();
    try {
      // The node's own namespace and a pod's: both in the cgroup, two clients.
      for (const ns of [n1.ns, n1.pods[0]!.ns]) {
        const kept = new Set<string>();
        for (let i = 0; i < 10; i++) kept.add(await peer(ns, stickyVip));
        expect([...kept], ns).toHaveLength(1);
        expect(to.map((b) => `${b.ip}:${b.port}`), ns).toContain([...kept][0]);
        seen.set(ns, [...kept][0]!);
        // A random Maglev slot per connect(): all 10 on one backend of 3 is a 1-in-19,700 chance.
        const spread = new Set<string>();
        for (let i = 0; i < 10; i++) spread.add(await peer(ns, spreadVip));
        expect(spread.size, ns).toBeGreaterThan(1);
      }
      const names = new Map(n1.dp.maps.backends.entries().map(([k, v]) => [k.id, `${v.ip}:${v.port}`]));
      const entries = n1.dp.maps.affinitySock.entries().filter(([k]) => k.serviceId === setId);
      expect(entries).toHaveLength(2);
      expect(new Set(entries.map(([k]) => k.netnsCookie)).size).toBe(2);
      expect(new Set(entries.map(([, v]) => names.get(v.backendId)))).toEqual(new Set(seen.values()));
      // Nothing by address: the connections never reached the per-packet path with the service address.
      expect(n1.dp.maps.affinity.entries().filter(([k]) => k.serviceId === setId)).toEqual([]);
    } finally {
      lb.apply('sticky', undefined);
      lb.apply('spread', undefined);
    }
  });

  it('masquerade: pods reach a host outside the cluster as their node IP (BPF and legacy host routing)', async () => {
    const world = await lab.addNetns(lab.name('w'));
    await lab.addVeth({ ns: lab.name('u'), name: 'uw', mtu: 9000 }, { ns: world, name: 'eth0', mtu: 9000 });
    await lab.setMaster(lab.name('u'), 'uw', 'br0');
    await lab.addAddr(world, 'eth0', '192.168.77.100/24');
    const server = lab.spawnIn(world, process.execPath, ['-e', WHO_SERVER]);
    await new Promise<void>((resolve, reject) => {
      server.stdout?.once('data', () => resolve());
      server.once('exit', (code) => reject(new Error(`world server exited ${code}`)));
    });
    const outside = { ip: '192.168.77.100', name: 'world' };
    for (const bpfHostRouting of [true, false]) {
      await setMode(lab, nodes, { bpfHostRouting, tunnel: false });
      for (const node of nodes) node.dp.setConfig({ ...node.dp.getConfig()!, masquerade: true });
      const before = nodes.map((n) => snapshot(n.dp));
      for (const [i, node] of nodes.entries()) {
        for (const pod of node.pods) {
          const [cmd, args] = nsenterArgs(pod.ns, process.execPath, ['-e', WHO_CLIENT, outside.ip, String(PORT)]);
          const r = await run(cmd, args, { timeoutMs: 10_000 });
          expect(r.stdout.trim(), `${pod.name} (bpfHostRouting=${bpfHostRouting}): ${r.stderr}`).toBe(node.ip);
        }
        const after = snapshot(node.dp);
        expect(after.snat - before[i]!.snat).toBeGreaterThan(0n);
        expect(after.snatRev - before[i]!.snatRev).toBeGreaterThan(0n);
      }
      // Cluster traffic is never masqueraded.
      const [n1, n2] = nodes as [Node, Node];
      const snat = snapshot(n1.dp).snat;
      expect(await tcp(n1.pods[0]!, n2.pods[0]!)).toBe(true);
      expect(snapshot(n1.dp).snat).toBe(snat);
      expect(n1.dp.maps.snatRev.entries().every(([k, v]) => k.addr === n1.ip && v.addr.startsWith('10.1.1.'))).toBe(true);
    }
    for (const node of nodes) node.dp.setConfig({ ...node.dp.getConfig()!, masquerade: false });
  });

  it('a deleted endpoint stops answering in BPF host routing, and comes back when re-added', async () => {
    await setMode(lab, nodes, { bpfHostRouting: true, tunnel: false });
    const [n1, n2] = nodes as [Node, Node];
    const target = n2.pods[0]!;
    const from = n1.pods[0]!;
    expect(await ping(from.ns, target.ip)).toBe(true);
    // Remove it everywhere as an agent would (and its kernel route, so the stack cannot deliver it either).
    n2.dp.maps.endpoints.deleteBatch([{ ip: target.ip }]);
    await run('ip', ['-n', n2.ns, 'route', 'del', `${target.ip}/32`]);
    expect(await ping(from.ns, target.ip, { count: 1, timeoutS: 1 })).toBe(false);
    n2.dp.maps.endpoints.upsertBatch([[{ ip: target.ip }, { ifindex: target.hostIfindex, flags: 0, mac: target.mac, nodeMac: target.hostMac }]]);
    await lab.route(n2.ns, [`${target.ip}/32`, 'dev', target.hostIf, 'scope', 'link']);
    expect(await ping(from.ns, target.ip)).toBe(true);
  });

  it('an agent restart (reload the object, reuse the pinned maps, re-attach) loses no packets', async () => {
    await setMode(lab, nodes, { bpfHostRouting: true, tunnel: false });
    const [n1, n2] = nodes as [Node, Node];
    const from = n1.pods[0]!;
    const to = n2.pods[0]!;
    const pinger = run('nsenter', [`--net=/run/netns/${from.ns}`, 'ping', '-n', '-q', '-c', '60', '-i', '0.02', '-W', '1', to.ip], { timeoutMs: 20_000 });
    await new Promise((r) => setTimeout(r, 300));
    for (const node of nodes) {
      const before = node.dp.maps.endpoints.entries();
      node.dp.close(); // the old agent goes away; tc keeps its programs attached
      const dp = loadDatapath({ pinDir: node.dp.pinDir });
      expect(dp.reusedMaps).toBe(true);
      expect(dp.maps.endpoints.entries()).toEqual(before);
      attachNode(dp, { uplink: 'eth0', vxlan: 'vx0', pods: node.pods.map((p) => p.hostIf) }, node.ns);
      lab.defer(`close reloaded datapath ${node.ns}`, () => dp.close());
      node.dp = dp;
    }
    const result = await pinger;
    expect(result.stdout).toMatch(/60 packets transmitted, 60 received, 0% packet loss/);
    // The reloaded programs carry the traffic now.
    const c1 = n1.dp.readCounters();
    expect(await ping(from.ns, to.ip)).toBe(true);
    expect(n1.dp.readCounters().fromContainerNeigh.packets).toBeGreaterThan(c1.fromContainerNeigh.packets);
  });

  it('tc attachments can be queried and detached inside a node namespace (runs last)', () => {
    const n1 = nodes[0]!;
    const pod = n1.pods[1]!;
    const id = inNetns(n1.ns, () => queryTc({ ifindex: ifindex(pod.hostIf), direction: 'ingress' }));
    expect(id).toBeGreaterThan(0);
    detachTcInNetns(n1.ns, pod.hostIf, 'ingress');
    expect(inNetns(n1.ns, () => queryTc({ ifindex: ifindex(pod.hostIf), direction: 'ingress' }))).toBeUndefined();
    // Our own namespace is untouched: the interface does not exist here.
    expect(() => ifindex(pod.hostIf)).toThrow(/ENODEV/);
    expect(n1.dp.fillLevels()).toMatchObject({ sl_endpoints: { entries: 2, capacity: 131072 }, sl_ipcache_host: { entries: 4 }, sl_ipcache: { entries: 2 } });
    detachNode({ uplink: 'eth0', vxlan: 'vx0', pods: n1.pods.map((p) => p.hostIf) }, n1.ns);
    expect(inNetns(n1.ns, () => queryTc({ ifindex: ifindex('eth0'), direction: 'ingress' }))).toBeUndefined();
    expect(inNetns(n1.ns, () => queryTc({ ifindex: ifindex('vx0'), direction: 'egress' }))).toBeUndefined();
  });
});
