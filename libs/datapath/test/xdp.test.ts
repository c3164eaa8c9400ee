/**
 * XDP acceleration: xdp_netdev and from_netdev (BPF_PROG_TEST_RUN inside a lab namespace, so bpf_fib_lookup sees
 * that namespace's routes and neighbours) make the same choice for the same packet, a flow started on one path
 * continues on the other, what XDP cannot finish reaches tc unchanged; attach in native/generic mode and detach.
 */
import { randomBytes } from 'node:crypto';
import { NetLab } from '@sluice/netns';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { attachXdp, attachXdpInNetns, detachXdpInNetns, ifindex, inNetns, l4Frame, LbProgrammer, loadDatapath, queryXdp, removePins, setOffload, setOffloadInNetns, TC_ACT_REDIRECT, testRun, XDP_DROP, XDP_PASS, XDP_REDIRECT, type Datapath, type LbService } from '../src/index.ts';

const NODE_IP = '192.168.0.1';
const GW = '192.168.0.2';
const GW_MAC = '02:00:00:00:00:02';
const REMOTE = ['10.1.0.7', '10.1.0.8', '10.1.0.9'];
const LOCAL_BACKEND = '10.0.0.5';

/** l4Frame with some checksums: the programs update them incrementally, and must agree on the result. */
function frame(proto: 'tcp' | 'udp', src: string, sport: number, dst: string, dport: number, tcpFlags = 0x02): Buffer {
  const buf = l4Frame(proto, src, sport, dst, dport, tcpFlags);
  buf.writeUInt16BE(0x4321, 24);
  buf.writeUInt16BE(proto === 'tcp' ? 0x1234 : 0xabcd, proto === 'tcp' ? 50 : 40);
  return buf;
}
const ip = (b: Buffer, off: number) => `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}`;
const dstOf = (b: Buffer) => `${ip(b, 30)}:${b.readUInt16BE(36)}`;
const srcOf = (b: Buffer) => `${ip(b, 26)}:${b.readUInt16BE(34)}`;
const l3l4 = (b: Buffer) => b.subarray(14).toString('hex');
const mac = (b: Buffer, off: number) => [...b.subarray(off, off + 6)].map((x) => x.toString(16).padStart(2, '0')).join(':');

const pinDirs: string[] = [];
const lab = new NetLab();
let node = '';
let dummyNs = '';

function load(): Datapath {
  const dir = `/sys/fs/bpf/sluice/test-xdp-${randomBytes(4).toString('hex')}`;
  pinDirs.push(dir);
  const dp = loadDatapath({ pinDir: dir });
  const up = inNetns(node, () => ifindex('up0'));
  // Test-run frames have a zero destination MAC: that is lo's, so tc sees PACKET_HOST; XDP compares with uplinkMac.
  dp.setConfig({ bpfHostRouting: true, tunnel: false, nodeIp: NODE_IP, uplinkIfindex: up, tunnelIfindex: 0, vni: 0, uplinkMac: '00:00:00:00:00:00' });
  const lb = new LbProgrammer(dp);
  lb.seed();
  const np: LbService = {
    frontends: [
      { vip: '0.0.0.0', port: 30080, proto: 'tcp', external: true, set: 'remote' },
      { vip: '0.0.0.0', port: 30053, proto: 'udp', external: true, set: 'remote' },
      { vip: '172.18.255.10', port: 80, proto: 'tcp', external: true, set: 'remote' },
      { vip: '0.0.0.0', port: 30090, proto: 'tcp', external: true, set: 'local' },
    ],
    sets: [
      { name: 'remote', backends: REMOTE.map((b) => ({ ip: b, port: 8080, ready: true, serving: true, terminating: false, local: false })), affinityTimeout: 0, dropWhenEmpty: false },
      { name: 'local', backends: [{ ip: LOCAL_BACKEND, port: 8080, ready: true, serving: true, terminating: false, local: true }], affinityTimeout: 0, dropWhenEmpty: false },
    ],
  };
  lb.apply('np', np);
  lb.apply('empty-local', {
    frontends: [{ vip: '0.0.0.0', port: 30099, proto: 'tcp', external: true, set: 'none' }],
    sets: [{ name: 'none', backends: [], affinityTimeout: 0, dropWhenEmpty: true }],
  });
  return dp;
}
const run = (fd: number, pkt: Buffer) => inNetns(node, () => testRun(fd, pkt));

beforeAll(async () => {
  node = await lab.addNetns(lab.name('n'), { forwarding: true });
  const peer = await lab.addNetns(lab.name('p'));
  await lab.addVeth({ ns: node, name: 'up0' }, { ns: peer, name: 'eth0', mac: GW_MAC });
  await lab.addAddr(node, 'up0', `${NODE_IP}/24`);
  await lab.route(node, ['10.1.0.0/16', 'via', GW, 'dev', 'up0']);
  await lab.neigh(node, GW, GW_MAC, 'up0');
  dummyNs = await lab.addNetns(lab.name('d'));
  // A bridge: a device whose driver has no XDP support.
  await lab.addBridge(dummyNs, 'dm0');
});

afterAll(async () => {
  for (const d of pinDirs) removePins(d);
  await lab.cleanup();
});

describe('xdp_netdev', () => {
  it('chooses the same backend and NAT as from_netdev for the same packets (TCP, UDP, LoadBalancer IP) and forwards them itself', () => {
    const viaXdp = load();
    const viaTc = load();
    try {
      const seen = new Set<string>();
      const packets = [
        ...Array.from({ length: 40 }, (_, i) => frame('tcp', `203.0.113.${1 + (i % 7)}`, 40000 + i * 13, NODE_IP, 30080)),
        ...Array.from({ length: 10 }, (_, i) => frame('udp', '203.0.113.9', 41000 + i, NODE_IP, 30053)),
        ...Array.from({ length: 10 }, (_, i) => frame('tcp', '198.51.100.4', 42000 + i, '172.18.255.10', 80)),
      ];
      for (const pkt of packets) {
        const x = run(viaXdp.programs.xdp_netdev!, Buffer.from(pkt));
        const t = run(viaTc.programs.from_netdev!, Buffer.from(pkt));
        expect(x.retval).toBe(XDP_REDIRECT);
        expect(t.retval).toBe(TC_ACT_REDIRECT);
        // Same backend, same SNAT address and port, and the same checksums (tc's kernel helpers vs XDP's own).
        expect(l3l4(x.dataOut)).toBe(l3l4(t.dataOut));
        expect(srcOf(x.dataOut).startsWith(`${NODE_IP}:`)).toBe(true);
        expect(mac(x.dataOut, 0)).toBe(GW_MAC);
        seen.add(dstOf(x.dataOut));
      }
      expect(seen).toEqual(new Set(REMOTE.map((b) => `${b}:8080`)));
      expect(viaXdp.readCounters().xdpFwd.packets).toBe(BigInt(packets.length));
    } finally {
      viaXdp.close();
      viaTc.close();
    }
  });

  it('a flow started in XDP continues in tc and the other way round; replies go to tc unchanged', () => {
    const dp = load();
    try {
      const syn = frame('tcp', '203.0.113.50', 45000, NODE_IP, 30080);
      const first = run(dp.programs.xdp_netdev!, Buffer.from(syn));
      expect(first.retval).toBe(XDP_REDIRECT);
      const ack = frame('tcp', '203.0.113.50', 45000, NODE_IP, 30080, 0x10);
      const next = run(dp.programs.from_netdev!, Buffer.from(ack));
      expect(dstOf(next.dataOut)).toBe(dstOf(first.dataOut));
      expect(srcOf(next.dataOut)).toBe(srcOf(first.dataOut));
      expect(dp.readCounters().lbCtHit.packets).toBe(1n);

      const tcSyn = frame('tcp', '203.0.113.51', 45001, NODE_IP, 30080);
      const tcFirst = run(dp.programs.from_netdev!, Buffer.from(tcSyn));
      const xdpNext = run(dp.programs.xdp_netdev!, frame('tcp', '203.0.113.51', 45001, NODE_IP, 30080, 0x10));
      expect(xdpNext.retval).toBe(XDP_REDIRECT);
      expect(dstOf(xdpNext.dataOut)).toBe(dstOf(tcFirst.dataOut));
      expect(srcOf(xdpNext.dataOut)).toBe(srcOf(tcFirst.dataOut));

      // The backend's reply: XDP leaves it to tc's reverse NAT, which sends it back to the client from the NodePort.
      const [bip, bport] = dstOf(first.dataOut).split(':');
      const natPort = Number(srcOf(first.dataOut).split(':')[1]);
      const reply = frame('tcp', bip!, Number(bport), NODE_IP, natPort, 0x12);
      const xr = run(dp.programs.xdp_netdev!, Buffer.from(reply));
      expect(xr.retval).toBe(XDP_PASS);
      expect(xr.dataOut.equals(reply)).toBe(true);
      const tr = run(dp.programs.from_netdev!, Buffer.from(reply));
      expect(srcOf(tr.dataOut)).toBe(`${NODE_IP}:30080`);
      expect(dstOf(tr.dataOut)).toBe('203.0.113.50:45000');
    } finally {
      dp.close();
    }
  });

  it('leaves local backends, other addresses and other MACs to tc unchanged, drops a Local frontend without backends', () => {
    const dp = load();
    try {
      const local = frame('tcp', '203.0.113.60', 46000, NODE_IP, 30090);
      const x = run(dp.programs.xdp_netdev!, Buffer.from(local));
      expect(x.retval).toBe(XDP_PASS);
      expect(x.dataOut.equals(local)).toBe(true);
      // tc continues the flow XDP recorded (a forward-entry hit) to the local backend, client address kept.
      run(dp.programs.from_netdev!, Buffer.from(local));
      expect(dp.readCounters().lbCtHit.packets).toBe(1n);

      const other = frame('tcp', '203.0.113.60', 46001, '192.168.0.9', 30080);
      expect(run(dp.programs.xdp_netdev!, Buffer.from(other)).dataOut.equals(other)).toBe(true);
      const flooded = frame('tcp', '203.0.113.60', 46002, NODE_IP, 30080);
      flooded[0] = 0x02; // another node's MAC
      const f = run(dp.programs.xdp_netdev!, Buffer.from(flooded));
      expect(f.retval).toBe(XDP_PASS);
      expect(f.dataOut.equals(flooded)).toBe(true);
      expect(run(dp.programs.xdp_netdev!, frame('tcp', '203.0.113.60', 46003, NODE_IP, 30099)).retval).toBe(XDP_DROP);
    } finally {
      dp.close();
    }
  });

  it('attaches in driver mode on a veth, falls back to generic on a device without XDP support, detaches', () => {
    const dp = load();
    try {
      const fd = dp.programs.xdp_netdev!;
      expect(attachXdpInNetns(node, 'up0', fd, 'native').mode).toBe('native');
      expect(inNetns(node, () => queryXdp(ifindex('up0')))?.mode).toBe('native');
      // Switching mode replaces the attachment (one mode at a time).
      expect(attachXdpInNetns(node, 'up0', fd, 'generic').mode).toBe('generic');
      expect(inNetns(node, () => queryXdp(ifindex('up0')))?.mode).toBe('generic');
      detachXdpInNetns(node, 'up0');
      expect(inNetns(node, () => queryXdp(ifindex('up0')))).toBeUndefined();
      expect(attachXdpInNetns(dummyNs, 'dm0', fd, 'native').mode).toBe('generic');
      detachXdpInNetns(dummyNs, 'dm0');
      expect(inNetns(dummyNs, () => queryXdp(ifindex('dm0')))).toBeUndefined();
      // Never in the machine's own namespace.
      expect(() => attachXdp(ifindex('lo'), fd, 'generic')).toThrow(/initial network namespace/);
    } finally {
      dp.close();
    }
  });

  it('turns GRO and TX checksumming on and off on a veth in a namespace, names a missing device, refuses the initial namespace', () => {
    for (const offload of ['gro', 'tx-checksumming'] as const) {
      setOffloadInNetns(node, 'up0', offload, false);
      setOffloadInNetns(node, 'up0', offload, true);
    }
    expect(() => setOffloadInNetns(node, 'nosuch0', 'gro', true)).toThrow(/ENODEV/);
    expect(() => setOffload('lo', 'gro', true)).toThrow(/initial network namespace/);
  });
});
