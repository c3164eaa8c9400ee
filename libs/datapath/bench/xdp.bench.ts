/**
 * XDP acceleration: packets per second per core of the NodePort / LoadBalancer path, xdp_netdev against
 * from_netdev (the tc path it accelerates), at 10 and 20,000 services (2 remote backends each, so both programs do
 * the whole job: frontend lookup, conntrack, DNAT + SNAT to this node, forwarding). Two measurements:
 *
 * - `xdp_live_*`: real frames (xdp-live.ts). A generator namespace transmits 60-byte TCP frames of 256 established
 *   flows into the node namespace's uplink veth (BPF_PROG_TEST_RUN with live frames), where xdp_netdev (native,
 *   driver mode) or the tc path (GRO on, from_netdev, bpf_redirect_neigh) forwards them back out to the backend's
 *   next hop; a sink counts them. The kernel's timer covers the whole round trip on one CPU, so the node's own
 *   time per packet is a run's time minus a baseline run's (the node a bare XDP reflector): pps per core is 1 s
 *   over it. A second baseline (the node a bare tc redirect, no XDP) gives what the skb path itself costs.
 *   `pipeline_speedup` compares the whole round trips (generator and sink included), and
 *   `speedup_vs_tc_without_skb_path` leaves the skb path out of tc's time altogether: two floors of the ratio.
 * - `xdp_program_cost_*`: BPF_PROG_TEST_RUN of each program on a packet, without a device: the programs' own
 *   cost (for tc: the program on an skb built once, so none of the skb allocation, GRO and stack work XDP skips).
 *   Each run is a fresh copy of the same packet (repeat 1, many calls, the kernel's own per-run duration averaged):
 *   with repeat > 1 the kernel runs the program again on the packet it has already rewritten, which no longer
 *   addresses the service, so the figure would be of a lookup miss. The kernel's timer calls are inside every
 *   duration, for both programs alike.
 *
 * Everything happens in namespaces the bench creates and removes. Figures move with the machine's load (other
 * processes share its cores and caches; preempted time is outside the kernel's timers, cache pollution is not).
 */
import { randomBytes } from 'node:crypto';
import { NetLab } from '@sluice/netns';
import type { Figure } from '../../../bench/run.ts';
import { linkInfo } from '@sluice/netns';
import { ifindex, inNetns, l4Frame, LbProgrammer, loadDatapath, removePins, testRun, TC_ACT_REDIRECT, XDP_REDIRECT, type Datapath, type LbService } from '../src/index.ts';
import { onOneCpu } from './pktgen.ts';
import { runLive, selectPath, startLive, tcpFrame, type LivePath, type LiveSetup } from './xdp-live.ts';

const SCALES = [10, 20_000];
const RUNS = 20_000;
const WARMUP = 2_000;
/** Live frames per run, rounds of every path per case (the median taken), established flows per case. */
const LIVE_FRAMES = 400_000;
const LIVE_ROUNDS = 3;
const FLOWS = 256;
const NODE_IP = '192.168.0.1';
const GW = '192.168.0.2';
const GW_MAC = '02:00:00:00:00:02';
const lbIp = (i: number) => `172.16.${(i >> 8) & 255}.${i & 255}`;
const backendIp = (i: number) => `10.${1 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;

const frame = (src: string, sport: number, dst: string, dport: number, tcpFlags: number) => l4Frame('tcp', src, sport, dst, dport, tcpFlags);

function services(n: number): Array<[string, LbService]> {
  return Array.from({ length: n }, (_, i) => {
    const set = `svc-${i}`;
    const frontends: LbService['frontends'] = [{ vip: lbIp(i), port: 80, proto: 'tcp', external: true, set }];
    if (i === n - 1) frontends.push({ vip: '0.0.0.0', port: 30080, proto: 'tcp', external: true, set });
    const backends = [0, 1].map((b) => ({ ip: backendIp(i * 2 + b), port: 8080, ready: true, serving: true, terminating: false, local: false }));
    return [`default/${set}`, { frontends, sets: [{ name: set, backends, affinityTimeout: 0, dropWhenEmpty: false }] }];
  });
}

/** Average kernel-measured ns per packet over RUNS fresh packets (`make(run)`), each checked for its verdict. */
function measure(netns: string, fd: number, expect: number, make: (run: number) => Buffer): number {
  return inNetns(netns, () => {
    for (let r = RUNS; r < RUNS + WARMUP; r++) testRun(fd, make(r)); // warm caches, on runs of their own
    let total = 0;
    for (let r = 0; r < RUNS; r++) {
      const res = testRun(fd, make(r));
      if (res.retval !== expect) throw new Error(`unexpected verdict ${res.retval} (wanted ${expect})`);
      total += res.durationNs;
    }
    return total / RUNS;
  });
}

export default async function xdpBench(): Promise<Figure[]> {
  const figures: Figure[] = [];
  const pinDirs: string[] = [];
  const lab = new NetLab();
  try {
    const node = await lab.addNetns(lab.name('n'), { forwarding: true });
    const peer = await lab.addNetns(lab.name('p'));
    await lab.addVeth({ ns: node, name: 'up0' }, { ns: peer, name: 'eth0', mac: GW_MAC });
    await lab.addAddr(node, 'up0', `${NODE_IP}/24`);
    await lab.route(node, ['10.0.0.0/8', 'via', GW, 'dev', 'up0']);
    await lab.neigh(node, GW, GW_MAC, 'up0');
    const up = inNetns(node, () => ifindex('up0'));
    const upMac = (await linkInfo(node, 'up0')).mac;
    let minForwarded = 1;

    for (const n of SCALES) {
      const dir = `/sys/fs/bpf/sluice/sl-bench-xdp-${randomBytes(4).toString('hex')}`;
      pinDirs.push(dir);
      const dp: Datapath = loadDatapath({ pinDir: dir });
      try {
        // Zero destination MAC: BPF_PROG_TEST_RUN's lo, so tc sees PACKET_HOST and XDP the uplink's address.
        dp.setConfig({ bpfHostRouting: true, tunnel: false, nodeIp: NODE_IP, uplinkIfindex: up, tunnelIfindex: 0, vni: 0, uplinkMac: '00:00:00:00:00:00' });
        const lb = new LbProgrammer(dp);
        const rows = services(n);
        for (let i = 0; i < rows.length; i += 4096) lb.applyMany(rows.slice(i, i + 4096));
        const xdp = dp.programs.xdp_netdev!;
        const tc = dp.programs.from_netdev!;
        const cases: Array<{ name: string; dst: string; dport: number }> = [
          { name: 'nodeport', dst: NODE_IP, dport: 30080 },
          { name: 'loadbalancer', dst: lbIp(n - 1), dport: 80 },
        ];
        for (const c of cases) {
          // Established flows: one per program (its own client), created by a SYN, then ACKs.
          const clients = { xdp: '203.0.113.1', tc: '203.0.113.2' };
          inNetns(node, () => testRun(xdp, frame(clients.xdp, 40000, c.dst, c.dport, 0x02)));
          inNetns(node, () => testRun(tc, frame(clients.tc, 40000, c.dst, c.dport, 0x02)));
          const est = {
            xdp: measure(node, xdp, XDP_REDIRECT, () => frame(clients.xdp, 40000, c.dst, c.dport, 0x10)),
            tc: measure(node, tc, TC_ACT_REDIRECT, () => frame(clients.tc, 40000, c.dst, c.dport, 0x10)),
          };
          for (const [prog, ns] of Object.entries(est)) figures.push({ metric: `xdp_program_cost_${c.name}_established_${prog}_runs_per_second_${n}_services`, value: Math.round(1e9 / ns), unit: 'runs/s' });
          figures.push({ metric: `xdp_program_cost_${c.name}_established_speedup_vs_tc_${n}_services`, value: ratio(est.tc, est.xdp), unit: 'ratio' });
          if (c.name === 'nodeport') {
            // New flows: every packet a new client port (conntrack miss, Maglev pick, NAT port, both entries written);
            // the two programs' ports do not overlap, so each flow keeps its own port as the NAT port.
            const fresh = {
              xdp: measure(node, xdp, XDP_REDIRECT, (r) => frame('198.51.100.1', 1024 + r, c.dst, c.dport, 0x02)),
              tc: measure(node, tc, TC_ACT_REDIRECT, (r) => frame('198.51.100.2', 1024 + RUNS + WARMUP + r, c.dst, c.dport, 0x02)),
            };
            for (const [prog, ns] of Object.entries(fresh)) figures.push({ metric: `xdp_program_cost_${c.name}_new_flow_${prog}_runs_per_second_${n}_services`, value: Math.round(1e9 / ns), unit: 'runs/s' });
            figures.push({ metric: `xdp_program_cost_${c.name}_new_flow_speedup_vs_tc_${n}_services`, value: ratio(fresh.tc, fresh.xdp), unit: 'ratio' });
          }
        }

        // Real frames: the uplink's own MAC, so tc sees PACKET_HOST and XDP its uplink's address.
        dp.setConfig({ bpfHostRouting: true, tunnel: false, nodeIp: NODE_IP, uplinkIfindex: up, tunnelIfindex: 0, vni: 0, uplinkMac: upMac });
        const setup: LiveSetup = { node, gen: peer, uplink: 'up0', genDev: 'eth0', xdpProg: xdp, tcProg: tc };
        const live = startLive(setup);
        try {
          for (const [i, c] of cases.entries()) {
            live.pktgen.configure(tcpFrame(upMac, GW_MAC, `198.18.${i}.1`, 10_000, c.dst, c.dport), FLOWS, { saddr: NODE_IP, dnet: '10.0.0.0', dprefix: 8 });
            const ns: Record<LivePath, number[]> = { baseline: [], xdp: [], tc: [], tcBare: [] };
            onOneCpu(() => {
              for (let round = 0; round < LIVE_ROUNDS; round++) {
                for (const path of ['baseline', 'xdp', 'tc', 'tcBare'] as const) {
                  selectPath(setup, live.pktgen, path);
                  runLive(setup, live, path, 4 * FLOWS); // the flows' conntrack entries (the first round), warm caches
                  const r = runLive(setup, live, path, LIVE_FRAMES);
                  // The reflector's frames come back untranslated; every other path must have forwarded them.
                  const delivered = path === 'baseline' || path === 'tcBare' ? r.forwarded + r.other : r.forwarded;
                  if (delivered < r.sent * 0.5) throw new Error(`${c.name} ${path}: only ${delivered} of ${r.sent} frames came back forwarded (${JSON.stringify(r)})`);
                  minForwarded = Math.min(minForwarded, delivered / r.sent);
                  ns[path].push((r.nsPerFrame * r.sent) / delivered);
                }
              }
            });
            const m = Object.fromEntries(Object.entries(ns).map(([k, v]) => [k, median(v)])) as Record<LivePath, number>;
            const own = { xdp: m.xdp - m.baseline, tc: m.tc - m.baseline };
            const p = `xdp_live_${c.name}`;
            figures.push({ metric: `${p}_xdp_pps_per_core_${n}_services`, value: Math.round(1e9 / own.xdp), unit: 'packets/s' });
            figures.push({ metric: `${p}_tc_pps_per_core_${n}_services`, value: Math.round(1e9 / own.tc), unit: 'packets/s' });
            figures.push({ metric: `${p}_speedup_vs_tc_${n}_services`, value: ratio(own.tc, own.xdp), unit: 'ratio' });
            figures.push({ metric: `${p}_pipeline_speedup_vs_tc_${n}_services`, value: ratio(m.tc, m.xdp), unit: 'ratio' });
            // A floor: as if the skb path (measured by the bare tc redirect) cost tc nothing.
            figures.push({ metric: `${p}_speedup_vs_tc_without_skb_path_${n}_services`, value: ratio(m.tc - m.tcBare, own.xdp), unit: 'ratio' });
            figures.push({ metric: `${p}_baseline_ns_per_packet_${n}_services`, value: round1(m.baseline), unit: 'ns' });
            figures.push({ metric: `${p}_xdp_node_ns_per_packet_${n}_services`, value: round1(own.xdp), unit: 'ns' });
            figures.push({ metric: `${p}_tc_node_ns_per_packet_${n}_services`, value: round1(own.tc), unit: 'ns' });
            figures.push({ metric: `${p}_tc_skb_path_ns_per_packet_${n}_services`, value: round1(m.tcBare - m.baseline), unit: 'ns' });
          }
        } finally {
          live.close();
        }
      } finally {
        dp.close();
      }
    }
    figures.push({ metric: 'xdp_live_min_delivered_ratio', value: Number(minForwarded.toFixed(4)), unit: 'ratio' });
  } finally {
    for (const d of pinDirs) removePins(d);
    await lab.cleanup();
  }
  return figures;
}

const ratio = (a: number, b: number) => Number((a / b).toFixed(2));
const round1 = (x: number) => Math.round(x * 10) / 10;
function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1]!;
}
