/**
 * The BPF masquerade and the TTL of BPF-forwarded packets in the kernel (BPF_PROG_TEST_RUN on the real programs):
 * to_netdev maps a pod's TCP/UDP/ICMP echo leaving the cluster to the node's IP and a NAT port above
 * ip_local_port_range, from_netdev translates the replies back; a mapping outlives a switch of masquerading to
 * iptables or off (only new flows need BPF masquerading on); a packet netfilter already translated is left alone; a
 * packet that cannot be translated is dropped and counted, never sent with the pod's address. And the paths that
 * forward in BPF (bpf_redirect_neigh, bpf_redirect_peer) decrement the TTL with the checksum fixed up, leaving
 * TTL <= 1 to the stack (which answers ICMP time exceeded).
 */
import { randomBytes } from 'node:crypto';
import { SNAT_PORT_MAX, SNAT_PORT_MIN, type CounterName, type SnatKey } from '@sluice/bpf';
import { afterAll, describe, expect, it } from 'vitest';
import { l4Frame, loadDatapath, removePins, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, testRun, type Datapath } from '../src/index.ts';

const pinDirs: string[] = [];
afterAll(() => {
  for (const d of pinDirs) removePins(d);
});

const NODE_IP = '192.168.0.1';
const POD = '10.0.0.1';
const REMOTE_POD = '10.2.0.5';
const OUTSIDE = '203.0.113.7';

function setup(masquerade: boolean, bpfHostRouting = false): Datapath {
  const dir = `/sys/fs/bpf/sluice/test-masq-${randomBytes(4).toString('hex')}`;
  pinDirs.push(dir);
  const dp = loadDatapath({ pinDir: dir });
  // The uplink is BPF_PROG_TEST_RUN's device (lo, ifindex 1), and so is the pod's veth (from_container's check).
  dp.setConfig({ bpfHostRouting, tunnel: false, masquerade, nodeIp: NODE_IP, uplinkIfindex: 1, tunnelIfindex: 0, vni: 0, uplinkMac: '02:00:00:00:00:01' });
  dp.maps.endpoints.upsertBatch([[{ ip: POD }, { ifindex: 1, flags: 0, mac: '02:aa:bb:cc:dd:01', nodeMac: '02:11:22:33:44:01' }]]);
  dp.maps.ipcacheHost.upsertBatch([[{ ip: REMOTE_POD }, { nodeIp: '192.168.0.2', flags: 0 }]]);
  return dp;
}

const ip = (b: Buffer, off: number) => `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}`;
const put = (b: Buffer, off: number, addr: string) => addr.split('.').forEach((o, i) => (b[off + i] = Number(o)));

/** The ones'-complement sum of a byte range (16-bit words, network order), folded. */
function sum16(b: Buffer, start: number, end: number, initial = 0): number {
  let s = initial;
  for (let i = start; i < end; i += 2) s += (b[i]! << 8) | (i + 1 < end ? b[i + 1]! : 0);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

/** Fills in the IP and L4 (TCP, UDP, ICMP) checksums of an Ethernet + IPv4 frame. */
function withChecksums(frame: Buffer): Buffer {
  const proto = frame[23]!;
  const l4 = 34;
  const len = frame.readUInt16BE(16) - 20;
  frame.writeUInt16BE(0, 24);
  frame.writeUInt16BE(~sum16(frame, 14, 34) & 0xffff, 24);
  const csumOff = proto === 6 ? l4 + 16 : proto === 17 ? l4 + 6 : l4 + 2;
  frame.writeUInt16BE(0, csumOff);
  const pseudo = proto === 1 ? 0 : sum16(frame, 26, 34) + proto + len;
  frame.writeUInt16BE(~sum16(frame, l4, l4 + len, pseudo) & 0xffff, csumOff);
  return frame;
}

/** Both checksums verify (a sum over the covered bytes including the checksum is 0xffff). */
function checksumsValid(frame: Buffer): boolean {
  const proto = frame[23]!;
  const len = frame.readUInt16BE(16) - 20;
  const pseudo = proto === 1 ? 0 : sum16(frame, 26, 34) + proto + len;
  return sum16(frame, 14, 34) === 0xffff && sum16(frame, 34, 34 + len, pseudo) === 0xffff;
}

const tcp = (src: string, sport: number, dst: string, dport: number, flags = 0x10) => withChecksums(l4Frame('tcp', src, sport, dst, dport, flags));
const udp = (src: string, sport: number, dst: string, dport: number) => withChecksums(l4Frame('udp', src, sport, dst, dport));

/** Ethernet + IPv4 + ICMP (echo request 8 / reply 0, or another type) with an identifier and 4 payload bytes. */
function icmp(src: string, dst: string, type: number, id: number): Buffer {
  const b = Buffer.alloc(14 + 20 + 8 + 4);
  b.writeUInt16BE(0x0800, 12);
  b[14] = 0x45;
  b.writeUInt16BE(20 + 8 + 4, 16);
  b[22] = 64;
  b[23] = 1;
  put(b, 26, src);
  put(b, 30, dst);
  b[34] = type;
  b.writeUInt16BE(id, 38);
  b.writeUInt16BE(7, 40);
  b.write('ping', 42);
  return withChecksums(b);
}

const src = (b: Buffer) => `${ip(b, 26)}:${b.readUInt16BE(34)}`;
const dst = (b: Buffer) => `${ip(b, 30)}:${b.readUInt16BE(36)}`;
const counter = (dp: Datapath, name: CounterName) => dp.readCounters()[name].packets;

describe('BPF masquerade (to_netdev, from_netdev)', () => {
  it('maps a pod\'s flow to the node IP and a port above ip_local_port_range, and its replies back', () => {
    const dp = setup(true);
    const out = testRun(dp.programs.to_netdev!, tcp(POD, 40000, OUTSIDE, 80, 0x02));
    expect(out.retval).toBe(TC_ACT_OK);
    const [addr, port] = src(out.dataOut).split(':');
    expect(addr).toBe(NODE_IP);
    expect(Number(port)).toBeGreaterThanOrEqual(SNAT_PORT_MIN);
    expect(Number(port)).toBeLessThanOrEqual(SNAT_PORT_MAX);
    expect(checksumsValid(out.dataOut)).toBe(true);
    // The next packet of the flow: the same mapping.
    expect(src(testRun(dp.programs.to_netdev!, tcp(POD, 40000, OUTSIDE, 80)).dataOut)).toBe(`${NODE_IP}:${port}`);

    const reply = testRun(dp.programs.from_netdev!, tcp(OUTSIDE, 80, NODE_IP, Number(port), 0x12));
    expect(reply.retval).toBe(TC_ACT_OK);
    expect(dst(reply.dataOut)).toBe(`${POD}:40000`);
    expect(checksumsValid(reply.dataOut)).toBe(true);

    // UDP the same way.
    const u = testRun(dp.programs.to_netdev!, udp(POD, 5353, OUTSIDE, 53));
    expect(ip(u.dataOut, 26)).toBe(NODE_IP);
    expect(checksumsValid(u.dataOut)).toBe(true);
  });

  it('stamps each direction of a mapping with its last packet and marks a flow that saw FIN or RST closing (the GC reads both)', async () => {
    const dp = setup(true);
    const now = () => Number(process.hrtime.bigint() / 1_000_000_000n);
    const t0 = now();
    const port = Number(src(testRun(dp.programs.to_netdev!, tcp(POD, 40000, OUTSIDE, 80, 0x02)).dataOut).split(':')[1]);
    const fwdKey = { addr: POD, port: 40000, peerIp: OUTSIDE, peerPort: 80, proto: 'tcp' as const };
    const revKey = { addr: NODE_IP, port, peerIp: OUTSIDE, peerPort: 80, proto: 'tcp' as const };
    const fwd = dp.maps.snat.lookup(fwdKey)!;
    const rev = dp.maps.snatRev.lookup(revKey)!;
    expect(rev).toMatchObject({ addr: POD, port: 40000, flags: 0 });
    for (const v of [fwd, rev]) expect(v.lastSeen! - t0).toBeGreaterThanOrEqual(0);
    expect(fwd.flags).toBe(0);
    // Time passes (the clock has second resolution), a reply comes, then the server closes.
    await new Promise((r) => setTimeout(r, 1100));
    testRun(dp.programs.from_netdev!, tcp(OUTSIDE, 80, NODE_IP, port, 0x11)); // FIN+ACK
    expect(dp.maps.snatRev.lookup(revKey)).toMatchObject({ flags: 1 });
    expect(dp.maps.snatRev.lookup(revKey)!.lastSeen).toBeGreaterThan(rev.lastSeen!);
    expect(dp.maps.snat.lookup(fwdKey)).toMatchObject({ flags: 0, lastSeen: fwd.lastSeen });
    testRun(dp.programs.to_netdev!, tcp(POD, 40000, OUTSIDE, 80, 0x04)); // RST
    expect(dp.maps.snat.lookup(fwdKey)!.flags).toBe(1);
  });

  it('translates ICMP echo identifiers both ways', () => {
    const dp = setup(true);
    const before = counter(dp, 'snatIcmp');
    const out = testRun(dp.programs.to_netdev!, icmp(POD, OUTSIDE, 8, 0x1234));
    expect(out.retval).toBe(TC_ACT_OK);
    expect(ip(out.dataOut, 26)).toBe(NODE_IP);
    const id = out.dataOut.readUInt16BE(38);
    expect(id).toBeGreaterThanOrEqual(SNAT_PORT_MIN);
    expect(checksumsValid(out.dataOut)).toBe(true);
    expect(dp.maps.snat.lookup({ addr: POD, port: 0x1234, peerIp: OUTSIDE, peerPort: 0, proto: 'icmp' })).toMatchObject({ addr: NODE_IP, port: id });

    const reply = testRun(dp.programs.from_netdev!, icmp(OUTSIDE, NODE_IP, 0, id));
    expect(ip(reply.dataOut, 30)).toBe(POD);
    expect(reply.dataOut.readUInt16BE(38)).toBe(0x1234);
    expect(checksumsValid(reply.dataOut)).toBe(true);
    expect(counter(dp, 'snatIcmp') - before).toBe(2n);
  });

  it('keeps translating a flow it mapped after masquerading goes to iptables or off, and maps no new one', () => {
    const dp = setup(true);
    const port = Number(src(testRun(dp.programs.to_netdev!, tcp(POD, 40000, OUTSIDE, 80, 0x02)).dataOut).split(':')[1]);
    dp.setConfig({ ...dp.getConfig()!, masquerade: false });
    expect(src(testRun(dp.programs.to_netdev!, tcp(POD, 40000, OUTSIDE, 80)).dataOut)).toBe(`${NODE_IP}:${port}`);
    expect(dst(testRun(dp.programs.from_netdev!, tcp(OUTSIDE, 80, NODE_IP, port)).dataOut)).toBe(`${POD}:40000`);
    // A new flow is netfilter's now (or nobody's): left as it is, no mapping.
    const fresh = testRun(dp.programs.to_netdev!, tcp(POD, 40001, OUTSIDE, 80, 0x02));
    expect([fresh.retval, src(fresh.dataOut)]).toEqual([TC_ACT_OK, `${POD}:40001`]);
    expect(dp.maps.snat.count()).toBe(1);
  });

  it('never maps a packet netfilter already translated (it leaves with the node\'s address)', () => {
    const dp = setup(true);
    const out = testRun(dp.programs.to_netdev!, tcp(NODE_IP, 45678, OUTSIDE, 80));
    expect([out.retval, src(out.dataOut)]).toEqual([TC_ACT_OK, `${NODE_IP}:45678`]);
    expect(dp.maps.snat.count()).toBe(0);
    // Its reply, unknown to BPF, goes on to the stack (netfilter's conntrack translates it) unchanged.
    const reply = testRun(dp.programs.from_netdev!, tcp(OUTSIDE, 80, NODE_IP, 45678));
    expect([reply.retval, dst(reply.dataOut)]).toEqual([TC_ACT_OK, `${NODE_IP}:45678`]);
  });

  it('drops and counts what it cannot translate instead of sending it with the pod\'s address', () => {
    const dp = setup(true);
    const timestamp = icmp(POD, OUTSIDE, 13, 1); // ICMP timestamp: no identifier to translate
    const gre = Buffer.from(timestamp);
    gre[23] = 47;
    const before = counter(dp, 'snatUnsupported');
    for (const frame of [timestamp, gre]) expect(testRun(dp.programs.to_netdev!, frame).retval).toBe(TC_ACT_SHOT);
    expect(counter(dp, 'snatUnsupported') - before).toBe(2n);
    // Inside the cluster nothing is masqueraded, so nothing is dropped.
    expect(testRun(dp.programs.to_netdev!, icmp(POD, REMOTE_POD, 13, 1)).retval).toBe(TC_ACT_OK);
    // With BPF masquerading off it is not BPF's to judge (netfilter's, or none).
    dp.setConfig({ ...dp.getConfig()!, masquerade: false });
    expect(testRun(dp.programs.to_netdev!, timestamp).retval).toBe(TC_ACT_OK);
  });

  it('leaves destinations in nonMasqueradeCIDRs (sl_ipmasq) alone, the rest of the world masqueraded', () => {
    const dp = setup(true);
    dp.maps.ipmasq.upsertBatch([[{ cidr: '198.51.100.0/24' }, { flags: 0 }]]);
    const kept = testRun(dp.programs.to_netdev!, tcp(POD, 40000, '198.51.100.9', 80, 0x02));
    expect([kept.retval, src(kept.dataOut)]).toEqual([TC_ACT_OK, `${POD}:40000`]);
    // Not translatable but not to be translated either: passes.
    expect(testRun(dp.programs.to_netdev!, icmp(POD, '198.51.100.9', 13, 1)).retval).toBe(TC_ACT_OK);
    expect(dp.maps.snat.count()).toBe(0);
    expect(ip(testRun(dp.programs.to_netdev!, tcp(POD, 40000, '198.51.101.9', 80, 0x02)).dataOut, 26)).toBe(NODE_IP);
  });

  it('drops and counts a new flow when no NAT port is free for its peer', () => {
    const dp = setup(true);
    const taken: Array<[SnatKey, { addr: string; port: number }]> = [];
    for (let p = SNAT_PORT_MIN; p <= SNAT_PORT_MAX; p++) taken.push([{ addr: NODE_IP, port: p, peerIp: OUTSIDE, peerPort: 443, proto: 'tcp' }, { addr: '10.0.0.9', port: p }]);
    dp.maps.snatRev.upsertBatch(taken);
    const before = counter(dp, 'snatNoPort');
    const out = testRun(dp.programs.to_netdev!, tcp(POD, 40000, OUTSIDE, 443, 0x02));
    expect(out.retval).toBe(TC_ACT_SHOT);
    expect(counter(dp, 'snatNoPort') - before).toBe(1n);
    // Another peer port has every NAT port free.
    expect(ip(testRun(dp.programs.to_netdev!, tcp(POD, 40000, OUTSIDE, 80, 0x02)).dataOut, 26)).toBe(NODE_IP);
  });
});

describe('TTL on the paths BPF forwards', () => {
  const withTtl = (frame: Buffer, ttl: number) => {
    frame[22] = ttl;
    return withChecksums(frame);
  };

  it('decrements it (checksum fixed up) to a remote pod (bpf_redirect_neigh) and to a local one (bpf_redirect_peer)', () => {
    const dp = setup(false, true);
    const remote = testRun(dp.programs.from_container!, withTtl(tcp(POD, 40000, REMOTE_POD, 80), 64));
    expect(remote.retval).toBe(TC_ACT_REDIRECT);
    expect(remote.dataOut[22]).toBe(63);
    expect(checksumsValid(remote.dataOut)).toBe(true);

    const local = testRun(dp.programs.from_netdev!, withTtl(tcp(REMOTE_POD, 80, POD, 40000), 2));
    expect(local.retval).toBe(TC_ACT_REDIRECT);
    expect(local.dataOut[22]).toBe(1);
    expect(checksumsValid(local.dataOut)).toBe(true);
  });

  it('leaves TTL <= 1 to the stack (its ip_forward answers ICMP time exceeded), unchanged and counted', () => {
    const dp = setup(false, true);
    const before = counter(dp, 'ttlExceeded');
    for (const [prog, frame] of [
      [dp.programs.from_container!, withTtl(tcp(POD, 40000, REMOTE_POD, 80), 1)],
      [dp.programs.from_netdev!, withTtl(tcp(REMOTE_POD, 80, POD, 40000), 1)],
      [dp.programs.from_netdev!, withTtl(tcp(REMOTE_POD, 80, POD, 40000), 0)],
    ] as const) {
      const out = testRun(prog, frame);
      expect(out.retval).toBe(TC_ACT_OK);
      expect(out.dataOut.equals(frame)).toBe(true);
    }
    expect(counter(dp, 'ttlExceeded') - before).toBe(3n);
  });

  it('leaves the TTL alone in legacy host routing (the kernel forwards and decrements)', () => {
    const dp = setup(false, false);
    const frame = withTtl(tcp(POD, 40000, REMOTE_POD, 80), 64);
    const out = testRun(dp.programs.from_container!, frame);
    expect([out.retval, out.dataOut[22]]).toEqual([TC_ACT_OK, 64]);
  });
});
