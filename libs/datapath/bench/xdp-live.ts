/**
 * Real packets for the xdp bench: a generator namespace floods a node namespace's uplink veth with NodePort / LB
 * frames and counts what comes back forwarded (DNAT to a backend on another node + SNAT to the node, the
 * NodePort path), once through xdp_netdev in native (driver) mode and once through the tc path (GRO + from_netdev,
 * bpf_redirect_neigh), and once with a bare XDP reflector in the node (the baseline).
 *
 *   generator ns:  pktgen (test_run, live frames) ──▶ g0 ══ veth ══ up0 ── node ns: xdp_netdev │ from_netdev
 *                  pktgen_sink (XDP on g0, counts) ◀── g0 ══ veth ══ up0 ◀── XDP_TX │ redirect_neigh
 *
 * Everything runs on the generator's CPU: veth schedules the receiving NAPI on the sending CPU, and the live-frames
 * loop enables bottom halves after every batch, so the kernel's per-frame timer covers the generator, both veth
 * hops, the node's work and the sink, and excludes time the thread was preempted (others share the machine).
 * The node's own cost per packet is that time minus the baseline's (same generator, hops and sink, a reflector
 * instead of the node's work); pps per core is 1 s over it.
 */
import { attachTcInNetns, attachXdpInNetns, detachTcInNetns, detachXdpInNetns, inNetns } from '../src/index.ts';
import { setOffload } from '../src/xdp.ts';
import { loadPktgen, transmit, type Pktgen } from './pktgen.ts';

/**
 * baseline: a bare XDP reflector in the node; xdp: xdp_netdev native; tc: no XDP, GRO + from_netdev;
 * tcBare: no XDP, GRO + a tc program that only sends the frame back (the skb path without the load balancer).
 */
export type LivePath = 'baseline' | 'xdp' | 'tc' | 'tcBare';

export interface LiveSetup {
  node: string;
  gen: string;
  /** Node uplink (in `node`) and generator device (in `gen`). */
  uplink: string;
  genDev: string;
  xdpProg: number;
  tcProg: number;
}

export interface LiveRun {
  path: LivePath;
  nsPerFrame: number;
  sent: number;
  forwarded: number;
  other: number;
}

/** Ethernet + IPv4 + TCP ACK with 6 payload bytes (a 60-byte frame, the minimum), checksums valid. */
export function tcpFrame(dstMac: string, srcMac: string, src: string, sport: number, dst: string, dport: number): Buffer {
  const buf = Buffer.alloc(60);
  Buffer.from(dstMac.split(':').map((h) => parseInt(h, 16))).copy(buf, 0);
  Buffer.from(srcMac.split(':').map((h) => parseInt(h, 16))).copy(buf, 6);
  buf.writeUInt16BE(0x0800, 12);
  buf[14] = 0x45;
  buf.writeUInt16BE(46, 16);
  buf[20] = 0x40; // DF
  buf[22] = 64;
  buf[23] = 6;
  const put = (ip: string, off: number) => ip.split('.').forEach((o, i) => (buf[off + i] = Number(o)));
  put(src, 26);
  put(dst, 30);
  buf.writeUInt16BE(checksum(buf, 14, 34, 0), 24);
  buf.writeUInt16BE(sport, 34);
  buf.writeUInt16BE(dport, 36);
  buf.writeUInt32BE(1000, 38);
  buf.writeUInt32BE(1, 42);
  buf[46] = 5 << 4;
  buf[47] = 0x10; // ACK
  buf.writeUInt16BE(65535, 48);
  let pseudo = 0;
  for (let off = 26; off < 34; off += 2) pseudo += buf.readUInt16BE(off);
  pseudo += 6 + 26;
  buf.writeUInt16BE(checksum(buf, 34, 60, pseudo), 50);
  return buf;
}

function checksum(buf: Buffer, from: number, to: number, initial: number): number {
  let sum = initial;
  for (let off = from; off < to; off += 2) sum += buf.readUInt16BE(off);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** The generator, the sink on `genDev` (native XDP) and GRO on the node's uplink, until close(). */
export function startLive(setup: LiveSetup): { pktgen: Pktgen; genIndex: number; close(): void } {
  const pktgen = loadPktgen();
  let genIndex: number;
  try {
    const sink = attachXdpInNetns(setup.gen, setup.genDev, pktgen.programs.sink, 'native');
    if (sink.mode !== 'native') throw new Error(`the sink on ${setup.genDev} got ${sink.mode} XDP, not native`);
    genIndex = sink.ifindex;
    // The tc path's uplink has no XDP program: GRO keeps its NAPI on, so the generator's frames reach it (and the
    // skb path is a real NIC's, where GRO is on by default).
    inNetns(setup.node, () => setOffload(setup.uplink, 'gro', true));
    attachTcInNetns(setup.node, setup.uplink, 'ingress', setup.tcProg);
  } catch (err) {
    pktgen.close();
    throw err;
  }
  return {
    pktgen,
    genIndex,
    close() {
      detachXdpInNetns(setup.node, setup.uplink);
      detachXdpInNetns(setup.gen, setup.genDev);
      detachTcInNetns(setup.node, setup.uplink, 'ingress');
      pktgen.close();
    },
  };
}

/** Puts the node's uplink in the state of `path` (see LivePath). */
export function selectPath(setup: LiveSetup, pktgen: Pktgen, path: LivePath): void {
  if (path === 'tc' || path === 'tcBare') {
    detachXdpInNetns(setup.node, setup.uplink);
    attachTcInNetns(setup.node, setup.uplink, 'ingress', path === 'tc' ? setup.tcProg : pktgen.programs.tcReflect);
    return;
  }
  attachTcInNetns(setup.node, setup.uplink, 'ingress', setup.tcProg);
  const prog = path === 'xdp' ? setup.xdpProg : pktgen.programs.reflect;
  const { mode } = attachXdpInNetns(setup.node, setup.uplink, prog, 'native');
  if (mode !== 'native') throw new Error(`${path}: ${setup.uplink} got ${mode} XDP, not native`);
}

/** One measured run of `frames` frames of `frame` (flows rotating source ports) on the current path. */
export function runLive(setup: LiveSetup, live: ReturnType<typeof startLive>, path: LivePath, frames: number): LiveRun {
  live.pktgen.resetCounters();
  const nsPerFrame = inNetns(setup.gen, () => transmit(live.pktgen.programs.pktgen, Buffer.alloc(60), live.genIndex, frames));
  const c = live.pktgen.counters();
  return { path, nsPerFrame, ...c };
}
