/**
 * Services: Sluice's BPF load balancer against a kube-proxy-shaped iptables ruleset, side by side in one run, and the
 * load balancer's own scaling figures.
 *
 * Side by side (10, 1,000, 10,000 services, 2 backends each): client ns → router ns → server ns. In the router
 * either the iptables nat table kube-proxy would write (KUBE-SERVICES → KUBE-SVC-* → KUBE-SEP-* with statistic
 * random and DNAT, loaded with iptables-restore inside the router namespace) or Sluice's from_container/to_container
 * on the client-facing veth with the same services in its maps (the kernel forwards either way). Measured:
 * - TCP connection setup (connect() until established) to the LAST service of KUBE-SERVICES — iptables' worst
 *   case, a linear walk; the BPF lookup has no order — p50 and p99 over a run of sequential connections;
 * - one service change: iptables-restore --noflush of that service's chains (kube-proxy ≥ 1.26's minimal sync) and
 *   the full table (older kube-proxy resyncs), against LbProgrammer.apply of that service.
 * BPF alone: per-packet cost of an established flow in from_container (BPF_PROG_TEST_RUN, kernel-measured) at 10
 * services and at 20,000 services / 100,000 backends; cold programming of 20,000 / 100,000; agent heap per backend.
 * Figures move with the machine's load (other processes share its cores).
 */
import { randomBytes } from 'node:crypto';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { NetLab, execIn } from '@sluice/netns';
import type { Figure } from '../../../bench/run.ts';
import { attachTcInNetns, ifindex, inNetns, LbProgrammer, loadDatapath, MaglevPool, removePins, simpleService, testRun, type Datapath, type LbService } from '../src/index.ts';

const SCALES = [10, 1_000, 10_000];
const CONNECTIONS = 600;
const SERVER_IPS = ['10.202.0.2', '10.202.0.3'];
const CLIENT_IP = '10.201.0.2';
const vip = (i: number) => `10.96.${(i >> 8) & 255}.${i & 255}`;
const hex = (s: string) => Buffer.from(s).toString('hex').slice(0, 16).toUpperCase().padEnd(16, '0');

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

/** The nat table kube-proxy writes for `n` ClusterIP services (and, with `only`, just that service's chains). */
function kubeProxyRules(n: number, only?: number, backendPort = 8080): string {
  const lines = ['*nat'];
  const services = only === undefined ? Array.from({ length: n }, (_, i) => i) : [only];
  if (only === undefined) {
    lines.push(':PREROUTING ACCEPT [0:0]', ':INPUT ACCEPT [0:0]', ':OUTPUT ACCEPT [0:0]', ':POSTROUTING ACCEPT [0:0]', ':KUBE-SERVICES - [0:0]', ':KUBE-MARK-MASQ - [0:0]');
  }
  const chains: string[] = [];
  const rules: string[] = [];
  for (const i of services) {
    const svc = `KUBE-SVC-${hex(`svc${i}`)}`;
    chains.push(`:${svc} - [0:0]`);
    if (only === undefined) rules.push(`-A KUBE-SERVICES -d ${vip(i)}/32 -p tcp -m comment --comment "default/svc-${i}:http cluster IP" -m tcp --dport 80 -j ${svc}`);
    SERVER_IPS.forEach((ip, b) => {
      const sep = `KUBE-SEP-${hex(`sep${i}-${b}`)}`;
      chains.push(`:${sep} - [0:0]`);
      const jump = b < SERVER_IPS.length - 1 ? `-m statistic --mode random --probability ${(1 / (SERVER_IPS.length - b)).toFixed(11)} ` : '';
      rules.push(`-A ${svc} -m comment --comment "default/svc-${i}:http -> ${ip}:${backendPort}" ${jump}-j ${sep}`);
      rules.push(`-A ${sep} -s ${ip}/32 -m comment --comment "default/svc-${i}:http" -j KUBE-MARK-MASQ`);
      rules.push(`-A ${sep} -p tcp -m comment --comment "default/svc-${i}:http" -m tcp -j DNAT --to-destination ${ip}:${backendPort}`);
    });
  }
  lines.push(...chains);
  if (only === undefined) lines.push('-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES', '-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000');
  lines.push(...rules, 'COMMIT', '');
  return lines.join('\n');
}

const CONNECT = `
const net = require('node:net');
const [host, n] = [process.argv[1], Number(process.argv[2])];
const out = [];
(async () => {
  for (let i = 0; i < n; i++) {
    await new Promise((resolve, reject) => {
      const t0 = process.hrtime.bigint();
      const s = net.connect(80, host, () => { out.push(Number(process.hrtime.bigint() - t0) / 1e3); s.destroy(); resolve(); });
      s.setTimeout(3000, () => reject(new Error('timeout')));
      s.on('error', reject);
    });
  }
  console.log(JSON.stringify(out));
})().catch((e) => { console.error(e.message); process.exit(1); });
`;
const SERVER = `require('node:net').createServer((s) => { s.on('error', () => {}); s.resume(); }).listen(8080, () => console.log('ready'));`;

async function connectLatencies(client: string, target: string): Promise<{ p50: number; p99: number }> {
  const r = await execIn(client, process.execPath, ['-e', CONNECT, target, String(CONNECTIONS)], { timeoutMs: 120_000 });
  if (r.code !== 0) throw new Error(`connections to ${target} failed: ${r.stderr.trim()}`);
  const sorted = (JSON.parse(r.stdout) as number[]).slice(20).sort((a, b) => a - b); // the first few warm caches
  return { p50: percentile(sorted, 50), p99: percentile(sorted, 99) };
}

function services(n: number, backendsPer: number, backendPort = 8080): Array<[string, LbService]> {
  return Array.from({ length: n }, (_, i) => {
    const backends = Array.from({ length: backendsPer }, (_, b) => (backendsPer === SERVER_IPS.length ? { ip: SERVER_IPS[b]!, port: backendPort } : { ip: `10.${128 + ((i * backendsPer + b) >> 16)}.${((i * backendsPer + b) >> 8) & 255}.${(i * backendsPer + b) & 255}`, port: backendPort }));
    return [`default/svc-${i}`, simpleService(`default/svc-${i}`, vip(i), 80, 'tcp', backends)] as [string, LbService];
  });
}

function timeMs(fn: () => void): number {
  const t0 = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

export default async function servicesBench(): Promise<Figure[]> {
  const figures: Figure[] = [];
  const pinDirs: string[] = [];
  const fresh = (): Datapath => {
    const dir = `/sys/fs/bpf/sluice/sl-bench-svc-${randomBytes(4).toString('hex')}`;
    pinDirs.push(dir);
    return loadDatapath({ pinDir: dir });
  };
  const lab = new NetLab();
  try {
    // ---- side by side: iptables (kube-proxy) vs BPF ----------------------------------------------------------
    const client = await lab.addNetns(lab.name('c'));
    const router = await lab.addNetns(lab.name('r'), { forwarding: true });
    const server = await lab.addNetns(lab.name('s'));
    await lab.addVeth({ ns: client, name: 'eth0' }, { ns: router, name: 'r0' });
    await lab.addVeth({ ns: server, name: 'eth0' }, { ns: router, name: 'r1' });
    await lab.addAddr(client, 'eth0', `${CLIENT_IP}/24`);
    await lab.addAddr(router, 'r0', '10.201.0.1/24');
    await lab.addAddr(router, 'r1', '10.202.0.1/24');
    for (const ip of SERVER_IPS) await lab.addAddr(server, 'eth0', `${ip}/24`);
    await lab.route(client, ['default', 'via', '10.201.0.1']);
    await lab.route(server, ['default', 'via', '10.202.0.1']);
    const serverProc = lab.spawnIn(server, process.execPath, ['-e', SERVER]);
    await new Promise((resolve) => serverProc.stdout?.once('data', resolve));

    const iptRestore = async (rules: string, noflush: boolean) => {
      const r = await execIn(router, 'iptables-restore', noflush ? ['--noflush'] : [], { input: rules, timeoutMs: 600_000 });
      if (r.code !== 0) throw new Error(`iptables-restore: ${r.stderr.trim().slice(0, 300)}`);
    };
    const timed = async (fn: () => Promise<void>) => {
      const t0 = process.hrtime.bigint();
      await fn();
      return Number(process.hrtime.bigint() - t0) / 1e6;
    };
    const dp = fresh();
    dp.setConfig({ bpfHostRouting: false, tunnel: false, nodeIp: '10.201.0.1', uplinkIfindex: 0, tunnelIfindex: 0, vni: 0, uplinkMac: '02:00:00:00:00:01' });
    const r0 = inNetns(router, () => ifindex('r0'));
    dp.maps.endpoints.upsertBatch([[{ ip: CLIENT_IP }, { ifindex: r0, flags: 0, mac: '02:00:00:00:00:02', nodeMac: '02:00:00:00:00:03' }]]);
    const perScale: Record<number, { ipt: { p50: number; p99: number }; bpf: { p50: number; p99: number } }> = {};
    for (const n of SCALES) {
      const last = vip(n - 1);
      // iptables
      await iptRestore(kubeProxyRules(n), false);
      const ipt = await connectLatencies(client, last);
      const minimal = await timed(() => iptRestore(kubeProxyRules(n, n - 1, 8081), true));
      const full = await timed(() => iptRestore(kubeProxyRules(n, undefined, 8081), false));
      await iptRestore('*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n', false);
      // BPF
      const lb = new LbProgrammer(dp);
      const rows = services(n, SERVER_IPS.length);
      lb.applyMany(rows);
      attachTcInNetns(router, 'r0', 'ingress', dp.programs.from_container!);
      attachTcInNetns(router, 'r0', 'egress', dp.programs.to_container!);
      const bpf = await connectLatencies(client, last);
      const changed = services(n, SERVER_IPS.length, 8081)[n - 1]!;
      const update = timeMs(() => lb.apply(changed[0], changed[1]));
      lb.applyMany(rows.map(([k]) => [k, undefined] as const));
      dp.maps.lbFwd.deleteBatch(dp.maps.lbFwd.entries().map(([k]) => k));
      dp.maps.lbCt.deleteBatch(dp.maps.lbCt.entries().map(([k]) => k));
      await lab.exec(router, 'tc', ['qdisc', 'del', 'dev', 'r0', 'clsact']);
      perScale[n] = { ipt, bpf };
      figures.push(
        { metric: `iptables ${n} services: connect p50`, value: +ipt.p50.toFixed(1), unit: 'µs' },
        { metric: `iptables ${n} services: connect p99`, value: +ipt.p99.toFixed(1), unit: 'µs' },
        { metric: `BPF ${n} services: connect p50`, value: +bpf.p50.toFixed(1), unit: 'µs' },
        { metric: `BPF ${n} services: connect p99`, value: +bpf.p99.toFixed(1), unit: 'µs' },
        { metric: `iptables ${n} services: one service change (minimal restore)`, value: +minimal.toFixed(1), unit: 'ms' },
        { metric: `iptables ${n} services: one service change (full restore)`, value: +full.toFixed(1), unit: 'ms' },
        { metric: `BPF ${n} services: one service change`, value: +update.toFixed(3), unit: 'ms' },
      );
    }
    const lo = perScale[SCALES[0]!]!;
    const hi = perScale[SCALES[SCALES.length - 1]!]!;
    figures.push(
      { metric: `BPF connect p50, ${SCALES.at(-1)} vs ${SCALES[0]} services (goal ≤ 1.2)`, value: +(hi.bpf.p50 / lo.bpf.p50).toFixed(3), unit: 'ratio' },
      { metric: `BPF connect p99, ${SCALES.at(-1)} vs ${SCALES[0]} services`, value: +(hi.bpf.p99 / lo.bpf.p99).toFixed(3), unit: 'ratio' },
      { metric: `iptables connect p50, ${SCALES.at(-1)} vs ${SCALES[0]} services`, value: +(hi.ipt.p50 / lo.ipt.p50).toFixed(3), unit: 'ratio' },
      { metric: `iptables / BPF connect p50 at ${SCALES.at(-1)} services`, value: +(hi.ipt.p50 / hi.bpf.p50).toFixed(3), unit: 'ratio' },
    );
    dp.close();

    // ---- per-packet cost (BPF_PROG_TEST_RUN) at 10 vs 20,000 services / 100,000 backends -----------------------
    const packet = (dst: string, sport = 40000) => {
      const buf = Buffer.alloc(14 + 20 + 20);
      buf.writeUInt16BE(0x0800, 12);
      buf[14] = 0x45;
      buf.writeUInt16BE(40, 16);
      buf[22] = 64;
      buf[23] = 6;
      CLIENT_IP.split('.').forEach((o, i) => (buf[26 + i] = Number(o)));
      dst.split('.').forEach((o, i) => (buf[30 + i] = Number(o)));
      buf.writeUInt16BE(sport, 34);
      buf.writeUInt16BE(80, 36);
      buf[46] = 5 << 4;
      buf[47] = 0x10;
      return buf;
    };
    const perPacket = async (count: number, backendsPer: number): Promise<{ ns: number; newFlowNs: number; coldMs: number; coldCpuMs: number; heapPerBackend: number }> => {
      const d = fresh();
      try {
        d.maps.endpoints.upsertBatch([[{ ip: CLIENT_IP }, { ifindex: 1, flags: 0, mac: '02:00:00:00:00:02', nodeMac: '02:00:00:00:00:03' }]]);
        setFlagsFromString('--expose-gc');
        const gc = runInNewContext('gc') as () => void;
        const rows = services(count, backendsPer);
        gc();
        const heapBefore = process.memoryUsage().heapUsed;
        const maglevPool = new MaglevPool();
        const lb = new LbProgrammer(d, { maglevPool });
        // As the reconciler does: rows in batches of 4096, Maglev tables in the worker pool. CPU time (every thread's)
        // beside wall time: other processes share the cores.
        const cpu0 = process.cpuUsage();
        const t0 = process.hrtime.bigint();
        for (let i = 0; i < rows.length; i += 4096) await lb.applyManyAsync(rows.slice(i, i + 4096));
        const coldMs = Number(process.hrtime.bigint() - t0) / 1e6;
        const cpu = process.cpuUsage(cpu0);
        maglevPool.close();
        const coldCpuMs = (cpu.user + cpu.system) / 1000;
        gc();
        const heapPerBackend = (process.memoryUsage().heapUsed - heapBefore) / (count * backendsPer);
        const target = vip(count - 1);
        testRun(d.programs.from_container!, packet(target)); // creates the flow's entries
        const runs = [1, 2, 3, 4, 5].map(() => testRun(d.programs.from_container!, packet(target), 200_000).durationNs).sort((a, b) => a - b);
        // New flows: each packet a different client port (forward conntrack miss, Maglev pick, both entries written).
        let total = 0;
        const flows = 20_000;
        for (let p = 0; p < flows; p++) total += testRun(d.programs.from_container!, packet(target, 10_000 + p), 1).durationNs;
        void lb;
        return { ns: runs[2]!, newFlowNs: Math.round(total / flows), coldMs, coldCpuMs, heapPerBackend };
      } finally {
        d.close();
      }
    };
    const small = await perPacket(10, 5);
    const large = await perPacket(20_000, 5);
    figures.push(
      { metric: 'from_container, established flow, 10 services', value: small.ns, unit: 'ns/packet' },
      { metric: 'from_container, established flow, 20,000 services / 100,000 backends', value: large.ns, unit: 'ns/packet' },
      { metric: 'per-packet cost, 20,000 vs 10 services (goal ≤ 1.2)', value: +(large.ns / small.ns).toFixed(3), unit: 'ratio' },
      { metric: 'from_container, new flow, 10 services', value: small.newFlowNs, unit: 'ns/packet' },
      { metric: 'from_container, new flow, 20,000 services / 100,000 backends', value: large.newFlowNs, unit: 'ns/packet' },
      { metric: 'new-flow cost, 20,000 vs 10 services', value: +(large.newFlowNs / small.newFlowNs).toFixed(3), unit: 'ratio' },
      { metric: 'cold programming, 20,000 services / 100,000 backends (goal ≤ 2,000)', value: Math.round(large.coldMs), unit: 'ms' },
      { metric: 'cold programming, 20,000 services / 100,000 backends: CPU time', value: Math.round(large.coldCpuMs), unit: 'ms' },
      { metric: 'agent heap per backend (LbProgrammer state, 100,000 backends)', value: Math.round(large.heapPerBackend), unit: 'bytes' },
    );
  } finally {
    lab.cleanupSync();
    for (const d of pinDirs) removePins(d);
  }
  return figures;
}
