/**
 * Map programming rate (one bpf(2) call per entry vs bpf_map_update_batch) and per-packet cost of the tc programs
 * (BPF_PROG_TEST_RUN, kernel-measured) with 10 and with 100,000 endpoints in the maps.
 */
import { randomBytes } from 'node:crypto';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { EndpointValue } from '@sluice/bpf';
import type { Figure } from '../../../bench/run.ts';
import { bpf } from '../src/libbpf.ts';
import { ipv4Frame, loadDatapath, memoryDatapath, reconcile, reconcileIpcache, removePins, testRun, upsertIpcache, type Datapath } from '../src/index.ts';

const N = 100_000;
const ip = (i: number) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
const endpoints = (n: number) =>
  Array.from({ length: n }, (_, i) => [{ ip: ip(i) }, { ifindex: 3 + (i % 100), flags: 0, mac: '02:00:00:00:00:02', nodeMac: '02:00:00:00:00:03' }] as const);
// Remote pods: /32s in 172.16/12 plus one podCIDR per node, as the agent programs them.
const ipcache = (n: number) => [
  ...Array.from({ length: n }, (_, i) => [{ cidr: `172.${16 + ((i >> 16) & 15)}.${(i >> 8) & 255}.${i & 255}/32` }, { nodeIp: `192.168.${(i >> 8) & 255}.1`, flags: 0 }] as const),
  ...Array.from({ length: Math.min(n, 5000) }, (_, i) => [{ cidr: `172.${16 + ((i >> 8) & 15)}.${i & 255}.0/24` }, { nodeIp: `192.168.${i & 255}.1`, flags: 0 }] as const),
];

function rate(count: number, fn: () => void): number {
  const start = process.hrtime.bigint();
  fn();
  return count / (Number(process.hrtime.bigint() - start) / 1e9);
}

export default async function datapathBench(): Promise<Figure[]> {
  const figures: Figure[] = [];
  const dirs: string[] = [];
  const fresh = () => {
    const dir = `/sys/fs/bpf/sluice/sl-bench-${randomBytes(4).toString('hex')}`;
    dirs.push(dir);
    return loadDatapath({ pinDir: dir });
  };
  try {
    // ---- programming rate -------------------------------------------------------------------------------------
    const eps = endpoints(N);
    const single = fresh();
    const raw = single.maps.endpoints.encodeEntries(eps);
    const fd = (single.maps.endpoints.raw as unknown as { fd: number }).fd;
    const singleRate = rate(N, () => {
      for (let i = 0; i < N; i++) bpf.mapUpdateElem(fd, raw.keys.subarray(i * 4, i * 4 + 4), raw.values.subarray(i * 20, i * 20 + 20), 0);
    });
    figures.push({ metric: 'endpoints map, single updates (100k)', value: Math.round(singleRate), unit: 'entries/s' });
    single.close();

    const batched = fresh();
    const batchRaw = batched.maps.endpoints.encodeEntries(eps);
    figures.push({
      metric: 'endpoints map, batched update (100k, pre-encoded)',
      value: Math.round(rate(N, () => batched.maps.endpoints.raw.updateRaw(batchRaw.keys, batchRaw.values, N))),
      unit: 'entries/s',
    });
    batched.maps.endpoints.deleteBatch(eps.map(([k]) => k));
    figures.push({
      metric: 'endpoints map, batched incl. encoding (100k)',
      value: Math.round(rate(N, () => batched.maps.endpoints.upsertBatch(eps))),
      unit: 'entries/s',
    });
    const ipc = ipcache(N);
    figures.push({
      metric: 'ipcache (100k /32 hash + 5k LPM), batched incl. encoding',
      value: Math.round(rate(ipc.length, () => upsertIpcache(batched, ipc))),
      unit: 'entries/s',
    });
    figures.push({ metric: 'reconcile 100k endpoints, nothing to change', value: Math.round(rate(N, () => reconcileNoop(batched, eps))), unit: 'entries/s' });
    batched.close();

    // ---- in-memory backend (the scale harness's) ----------------------------------------------------------------
    // A real gc() for honest heap figures even without --expose-gc on the command line.
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    gc();
    const heapBefore = process.memoryUsage().heapUsed;
    const mem = memoryDatapath();
    const memRate = rate(ipc.length, () => reconcileIpcache(mem, ipc));
    gc();
    const heapAfter = process.memoryUsage().heapUsed;
    figures.push({ metric: 'in-memory ipcache reconcile from empty (105k)', value: Math.round(memRate), unit: 'entries/s' });
    figures.push({ metric: 'in-memory backend heap per ipcache entry', value: Math.round((heapAfter - heapBefore) / ipc.length), unit: 'bytes' });
    mem.close();

    // ---- per-packet cost --------------------------------------------------------------------------------------
    // Both node datapaths stay loaded and are measured alternately, so drift on a busy 2-core machine hits both.
    const setup = (n: number) => {
      const dp = fresh();
      dp.setConfig({ bpfHostRouting: true, tunnel: false, nodeIp: '192.168.0.1', uplinkIfindex: 2, tunnelIfindex: 0, vni: 0, uplinkMac: '02:00:00:00:00:01' });
      dp.maps.endpoints.upsertBatch(endpoints(n));
      upsertIpcache(dp, ipcache(n));
      return { dp, local: ipv4Frame('10.0.0.1', ip(n - 1)), remote: ipv4Frame('10.0.0.1', `172.16.0.${(n - 1) & 255}`) };
    };
    const small = setup(10);
    const large = setup(N);
    const samples = { smallLocal: [] as number[], largeLocal: [] as number[], smallRemote: [] as number[], largeRemote: [] as number[] };
    const run = (s: typeof small, frame: Buffer) => testRun(s.dp.programs.from_container!, frame, 100_000).durationNs;
    for (const s of [small, large]) run(s, s.local); // warm up
    for (let i = 0; i < 9; i++) {
      samples.smallLocal.push(run(small, small.local));
      samples.largeLocal.push(run(large, large.local));
      samples.smallRemote.push(run(small, small.remote));
      samples.largeRemote.push(run(large, large.remote));
    }
    const median = (xs: number[]) => xs.sort((a, b) => a - b)[xs.length >> 1]!;
    const m = { smallLocal: median(samples.smallLocal), largeLocal: median(samples.largeLocal), smallRemote: median(samples.smallRemote), largeRemote: median(samples.largeRemote) };
    small.dp.close();
    large.dp.close();
    figures.push({ metric: 'from_container to local pod, 10 endpoints', value: m.smallLocal, unit: 'ns/packet' });
    figures.push({ metric: 'from_container to local pod, 100k endpoints', value: m.largeLocal, unit: 'ns/packet' });
    figures.push({ metric: 'from_container to remote pod, 10 endpoints', value: m.smallRemote, unit: 'ns/packet' });
    figures.push({ metric: 'from_container to remote pod, 100k endpoints', value: m.largeRemote, unit: 'ns/packet' });
    figures.push({ metric: 'per-packet ratio 100k/10, local (goal <= 1.2)', value: Number((m.largeLocal / m.smallLocal).toFixed(3)), unit: 'x' });
    figures.push({ metric: 'per-packet ratio 100k/10, remote (goal <= 1.2)', value: Number((m.largeRemote / m.smallRemote).toFixed(3)), unit: 'x' });
  } finally {
    for (const dir of dirs) removePins(dir);
  }
  return figures;
}

function reconcileNoop(dp: Datapath, eps: ReadonlyArray<readonly [{ ip: string }, EndpointValue]>): void {
  const r = reconcile(dp.maps.endpoints, eps);
  if (r.updated || r.deleted) throw new Error(`unexpected reconcile writes: ${JSON.stringify(r)}`);
}
