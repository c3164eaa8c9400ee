/**
 * The operator's memory at scale: a real etcd, kube-sim in a process of its own (kube-sim-child.ts), and the operator
 * as it is deployed (`node services/operator/dist/main.mjs`, built by bootstrap) in a third process, so that its RSS is the
 * operator's alone. The operator syncs, then pod churn and EndpointSlice churn (readiness flips) run for a while, then
 * stop and the operator settles. Figures: peak RSS (VmHWM) during the initial sync and over the whole run, RSS and
 * V8 heap used once synced and once settled (its /metrics), the longest event-loop delay it reported.
 *
 * Run alone (prints JSON; `--snapshot` also writes heap snapshots, after the sync and at the end, into --out):
 *   node --import tsx services/operator/bench/memory.ts --nodes 5000 --pods-per-node 20 --services 20000 \
 *     --churn 20 --slice-churn 10 --churn-seconds 60 --settle-seconds 20 [--heartbeat-interval-ms 10000]
 * or through the operator bench: SLUICE_BENCH_MEMORY_NODES=5000 npm run bench -- operator.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { mkdir, readdir, stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { startEtcd } from '@sluice/etcd-runner';
import type { KubeSimChildCommand, KubeSimChildMessage } from './kube-sim-child.ts';
import { metricSum, scrapeMetrics } from '@sluice/metrics';
import { processUsage, type ProcessUsage } from '@sluice/process';
import { OPERATOR_MAIN, sleep, startOperatorProcess, waitUntilSynced, type OperatorProcess } from './operator-process.ts';

/** The operator's usage, which it must still be there to give. */
function usage(pid: number): ProcessUsage {
  const u = processUsage(pid);
  if (!u) throw new Error(`the operator (pid ${pid}) is gone`);
  return u;
}

const TSX = createRequire(import.meta.url).resolve('tsx');
const KUBE_SIM_CHILD = fileURLToPath(new URL('./kube-sim-child.ts', import.meta.url));

export interface MemoryScenario {
  nodes: number;
  podsPerNode: number;
  services: number;
  /** Pod creates plus deletes per second, after the sync. */
  churnPerSecond: number;
  /** Readiness flips per second (each an EndpointSlice change), after the sync. */
  sliceChurnPerSecond: number;
  churnSeconds: number;
  /** Kubelet heartbeats (Node status writes) every this many ms per node, as the scale harness has them; 0: none. */
  heartbeatIntervalMs?: number;
  /** Quiet time after the churn before the settled figures are read. */
  settleSeconds: number;
  /** Node flags for the operator's process (none by default: as deploy/ runs it). */
  nodeFlags?: string[];
  /** Extra operator flags. */
  operatorArgs?: string[];
  /** The operator's entry point (default: this checkout's build, dist/main.mjs), e.g. an older checkout's main.ts to compare with. */
  operatorMain?: string;
  /** Write heap snapshots (SIGUSR2) into `outDir` after the sync and at the end. */
  snapshots?: boolean;
  outDir?: string;
  progress?: (line: string) => void;
}

export interface MemoryResult {
  syncSeconds: number;
  /** VmHWM once synced: the peak of the initial list and sync. */
  peakRssSync: number;
  /** VmHWM at the end: the peak over sync, churn and settling. */
  peakRss: number;
  rssSynced: number;
  rssSettled: number;
  heapUsedSynced: number;
  heapUsedSettled: number;
  /** V8's heap size (committed) and external memory (Buffers), settled. */
  heapTotalSettled: number;
  externalSettled: number;
  /** Longest event-loop delay the operator reported (prom-client, 10 ms resolution), during sync and after it. */
  loopMaxMsSync: number;
  loopMaxMsAfter: number;
  /** The operator's CPU seconds until synced, and during the churn and settling. */
  cpuSecondsSync: number;
  cpuSecondsAfter: number;
  records: Record<string, number>;
  /** A sample a second: seconds since the operator started, phase, RSS, heap used and external memory (MiB). */
  timeline: Array<[seconds: number, phase: 'sync' | 'churn' | 'settle', rssMiB: number, heapMiB: number, externalMiB: number]>;
  snapshots: string[];
  operatorLog: string;
}

async function startKubeSim(options: object): Promise<{ url: string; child: ChildProcess }> {
  const child = fork(KUBE_SIM_CHILD, [JSON.stringify(options)], { execArgv: ['--max-old-space-size=3072', '--import', TSX], stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  const url = await new Promise<string>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`kube-sim exited with ${code}`)));
    child.on('message', (m: KubeSimChildMessage) => {
      if (m.type === 'ready') resolve(m.url);
    });
  });
  return { url, child };
}

/** Waits until a heap snapshot file appears in `dir` and stops growing, and the process answers again. */
async function takeSnapshot(pid: number, dir: string, metricsUrl: string): Promise<string | undefined> {
  const before = new Set(await readdir(dir));
  process.kill(pid, 'SIGUSR2');
  const deadline = Date.now() + 600_000;
  let file: string | undefined;
  let size = -1;
  while (Date.now() < deadline) {
    await sleep(1_000);
    file ??= (await readdir(dir)).find((f) => f.endsWith('.heapsnapshot') && !before.has(f));
    if (!file) continue;
    const now = (await stat(join(dir, file))).size;
    if (now === size && (await scrapeMetrics(metricsUrl))) return join(dir, file);
    size = now;
  }
  return file && join(dir, file);
}

export async function measureOperatorMemory(s: MemoryScenario): Promise<MemoryResult> {
  const progress = s.progress ?? (() => undefined);
  const outDir = s.outDir ?? join(tmpdir(), `sluice-operator-memory-${process.pid}`);
  await mkdir(outDir, { recursive: true });
  const t0 = Date.now();
  const say = (line: string) => progress(`[${((Date.now() - t0) / 1000).toFixed(0).padStart(4)} s] ${line}`);
  const etcd = await startEtcd({ quotaBackendBytes: 8 * 1024 ** 3, startTimeoutMs: 60_000 });
  let sim: { url: string; child: ChildProcess } | undefined;
  let operator: OperatorProcess | undefined;
  try {
    say(`kube-sim: ${s.nodes} nodes × ${s.podsPerNode} pods, ${s.services} services, ${s.heartbeatIntervalMs ? `heartbeats every ${s.heartbeatIntervalMs} ms` : 'no heartbeats'}`);
    const heartbeats = (s.heartbeatIntervalMs ?? 0) > 0;
    sim = await startKubeSim({ nodes: s.nodes, podsPerNode: s.podsPerNode, services: s.services, namespaces: 10, seed: 1, heartbeats, ...(heartbeats ? { heartbeatIntervalMs: s.heartbeatIntervalMs } : {}) });
    const operatorLog = join(outDir, 'operator.log');
    const flags = [...(s.nodeFlags ?? []), ...(s.snapshots ? ['--heapsnapshot-signal=SIGUSR2', `--diagnostic-dir=${outDir}`] : [])];
    say(`operator: node ${flags.join(' ')} ${s.operatorMain ?? OPERATOR_MAIN}`);
    const started = Date.now();
    operator = await startOperatorProcess({
      kubeServer: sim.url, etcdEndpoint: etcd.endpoint, logFile: operatorLog, nodeFlags: flags, identity: 'memory-bench', args: s.operatorArgs ?? [],
      ...(s.operatorMain ? { main: s.operatorMain } : {}),
    });
    const { pid, metricsUrl } = operator;
    let loopMax = 0;
    let phase: 'sync' | 'churn' | 'settle' = 'sync';
    const timeline: MemoryResult['timeline'] = [];
    const MiB = (n: number | undefined) => Math.round((n ?? 0) / 2 ** 17) / 8;
    /** Reads the operator's metrics; the event-loop maximum (reset at every scrape) accumulates. */
    const sample = async () => {
      const text = await scrapeMetrics(metricsUrl);
      if (text) {
        loopMax = Math.max(loopMax, metricSum(text, 'nodejs_eventloop_lag_max_seconds') * 1000);
        const rss = processUsage(pid)?.rssBytes ?? 0;
        timeline.push([Math.round((Date.now() - started) / 1000), phase, MiB(rss), MiB(metricSum(text, 'nodejs_heap_size_used_bytes')), MiB(metricSum(text, 'nodejs_external_memory_bytes'))]);
      }
      return text;
    };
    await waitUntilSynced(operator, 1_800_000, sample);
    const syncSeconds = (Date.now() - started) / 1000;
    const synced = usage(pid);
    const cpuSync = synced.cpuSeconds;
    const syncedText = (await sample())!;
    const loopMaxMsSync = loopMax;
    loopMax = 0;
    say(`synced in ${syncSeconds.toFixed(1)} s: VmHWM ${(synced.peakRssBytes / 2 ** 20).toFixed(0)} MiB, VmRSS ${(synced.rssBytes / 2 ** 20).toFixed(0)} MiB, heap used ${(metricSum(syncedText, 'nodejs_heap_size_used_bytes') / 2 ** 20).toFixed(0)} MiB`);
    const snapshots: string[] = [];
    if (s.snapshots) {
      const file = await takeSnapshot(pid, outDir, metricsUrl);
      if (file) snapshots.push(file);
      say(`heap snapshot: ${file}`);
    }
    const send = (command: KubeSimChildCommand) => sim!.child.send(command);
    if (s.churnSeconds > 0) {
      say(`churn: ${s.churnPerSecond} pods/s, ${s.sliceChurnPerSecond} readiness flips/s for ${s.churnSeconds} s`);
      send({ type: 'churn', perSecond: s.churnPerSecond });
      send({ type: 'sliceChurn', perSecond: s.sliceChurnPerSecond });
      phase = 'churn';
      for (const end = Date.now() + s.churnSeconds * 1000; Date.now() < end; ) {
        await sleep(1_000);
        await sample();
        if (operator.exited) throw new Error(`the operator ${operator.exited}; see ${operatorLog}`);
      }
      send({ type: 'churn', perSecond: 0 });
      send({ type: 'sliceChurn', perSecond: 0 });
    }
    phase = 'settle';
    for (const end = Date.now() + s.settleSeconds * 1000; Date.now() < end; ) {
      await sleep(1_000);
      await sample();
    }
    const settled = usage(pid);
    const cpuEnd = settled.cpuSeconds;
    const settledText = (await sample())!;
    const status = (await (await fetch(operator.statusUrl)).json()) as { kinds: Record<string, { records: number }> };
    say(`settled: VmHWM ${(settled.peakRssBytes / 2 ** 20).toFixed(0)} MiB, VmRSS ${(settled.rssBytes / 2 ** 20).toFixed(0)} MiB, heap used ${(metricSum(settledText, 'nodejs_heap_size_used_bytes') / 2 ** 20).toFixed(0)} MiB`);
    if (s.snapshots) {
      const file = await takeSnapshot(pid, outDir, metricsUrl);
      if (file) snapshots.push(file);
      say(`heap snapshot: ${file}`);
    }
    return {
      syncSeconds,
      peakRssSync: synced.peakRssBytes,
      peakRss: settled.peakRssBytes,
      rssSynced: synced.rssBytes,
      rssSettled: settled.rssBytes,
      heapUsedSynced: metricSum(syncedText, 'nodejs_heap_size_used_bytes'),
      heapUsedSettled: metricSum(settledText, 'nodejs_heap_size_used_bytes'),
      heapTotalSettled: metricSum(settledText, 'nodejs_heap_size_total_bytes'),
      externalSettled: metricSum(settledText, 'nodejs_external_memory_bytes'),
      loopMaxMsSync,
      loopMaxMsAfter: loopMax,
      cpuSecondsSync: cpuSync,
      cpuSecondsAfter: cpuEnd - cpuSync,
      records: Object.fromEntries(Object.entries(status.kinds).map(([kind, k]) => [kind, k.records])),
      timeline,
      snapshots,
      operatorLog,
    };
  } finally {
    await operator?.stop();
    sim?.child.kill('SIGTERM');
    await etcd.stop();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { values } = parseArgs({
    options: {
      nodes: { type: 'string', default: '5000' },
      'pods-per-node': { type: 'string', default: '20' },
      services: { type: 'string', default: '20000' },
      churn: { type: 'string', default: '20' },
      'slice-churn': { type: 'string', default: '10' },
      'churn-seconds': { type: 'string', default: '60' },
      'settle-seconds': { type: 'string', default: '20' },
      'heartbeat-interval-ms': { type: 'string', default: '0' },
      'node-flag': { type: 'string', multiple: true, default: [] },
      'operator-arg': { type: 'string', multiple: true, default: [] },
      snapshot: { type: 'boolean', default: false },
      out: { type: 'string' },
      'operator-main': { type: 'string' },
    },
  });
  const result = await measureOperatorMemory({
    nodes: Number(values.nodes), podsPerNode: Number(values['pods-per-node']), services: Number(values.services),
    churnPerSecond: Number(values.churn), sliceChurnPerSecond: Number(values['slice-churn']),
    churnSeconds: Number(values['churn-seconds']), settleSeconds: Number(values['settle-seconds']), heartbeatIntervalMs: Number(values['heartbeat-interval-ms']),
    nodeFlags: values['node-flag'], operatorArgs: values['operator-arg'], snapshots: values.snapshot, outDir: values.out, operatorMain: values['operator-main'],
    progress: (line) => process.stderr.write(`${line}\n`),
  });
  const { timeline, ...figures } = result;
  process.stdout.write(`${JSON.stringify(figures, null, 2)}\ntimeline (s, phase, RSS MiB, heap used MiB, external MiB):\n${timeline.map((t) => t.join(' ')).join('\n')}\n`);
}
