/**
 * The scale run: real etcd, kube-sim (own process), the operator and the health service (processes), simulated
 * agents (worker processes), a timeline (heartbeats only; churn with a burst and an etcd restart; health), and
 * every figure collected into one Results object (results.json) from which the report is made.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from '@sluice/etcd-runner';
import { startScaleEtcd, type ScaleEtcd } from './etcd.ts';
import { createKvClient, keySchema, prefixRangeEnd, type Etcd3 } from '@sluice/kvstore';
import { metricSum, scrapeMetrics } from '@sluice/metrics';
import { processUsage } from '@sluice/process';
import type { HostCommand, HostMessage, KubeSimCounters, PodChange, SliceChange, WorkerCommand, WorkerMessage, WorkerSample } from './ipc.ts';
import { forkTs, spawnService, type Child } from './processes.ts';
import type { Scenario } from './scenario.ts';
import { runHealthPhase } from './health-phase.ts';
import { lowerBound, summarize } from './stats.ts';
import { TOO_MANY, type LightEpisode } from './light-watcher.ts';
import type { HerdPhase, Results, SeriesPoint } from './results.ts';

const here = (file: string) => fileURLToPath(new URL(file, import.meta.url));
const repo = fileURLToPath(new URL('../../../', import.meta.url));
const ROOT = 'sluice/';

export interface RunOptions {
  outDir: string;
  /** Receives progress lines (the CLI prints them). */
  progress?: (line: string, final?: boolean) => void;
}

type Worker = Child<WorkerCommand, WorkerMessage> & { full: string[]; light: string[]; baseline?: { heapUsed: number; rss: number } };

interface OperatorMetrics {
  kubeEvents: number;
  nodeEvents: number;
  podEvents: number;
  bytesIn: number;
  writes: number;
  skipped: number;
  deletes: number;
  retries: number;
  /** prom-client's max event-loop delay since the previous scrape, ms. */
  eventLoopMaxMs: number;
}

function operatorMetrics(text: string | undefined): OperatorMetrics | undefined {
  if (!text) return undefined;
  return {
    kubeEvents: metricSum(text, 'sluice_operator_kube_events_total'),
    nodeEvents: metricSum(text, 'sluice_operator_kube_events_total', { kind: 'Node' }),
    podEvents: metricSum(text, 'sluice_operator_kube_events_total', { kind: 'Pod' }),
    bytesIn: metricSum(text, 'sluice_operator_kube_received_bytes_total'),
    writes: metricSum(text, 'sluice_kv_writes_total'),
    skipped: metricSum(text, 'sluice_kv_writes_skipped_total'),
    deletes: metricSum(text, 'sluice_kv_deletes_total'),
    retries: metricSum(text, 'sluice_kv_write_retries_total'),
    eventLoopMaxMs: metricSum(text, 'nodejs_eventloop_lag_max_seconds') * 1000,
  };
}

/**
 * The operator's --receipt-log: "<type> <key>" → when the operator received that watch event. With pods that start
 * Pending, a pod's creation is measured from when it runs with an IP (the change the operator writes), which reaches
 * the operator as the first MODIFIED after its ADDED: that receipt is the creation's, not the ADDED's.
 */
export function parseReceipts(text: string, podsStartPending: boolean): Map<string, number> {
  const out = new Map<string, number>();
  const awaitingRun = new Set<string>();
  for (const line of text.split('\n')) {
    const [at, type, key] = line.split(' ');
    if (!at || !type || !key) continue;
    if (type === 'M') {
      if (podsStartPending && awaitingRun.delete(key)) out.set(`A ${key}`, Number(at));
      continue;
    }
    if (out.has(`${type} ${key}`)) continue;
    if (type === 'A' && podsStartPending) awaitingRun.add(key);
    else out.set(`${type} ${key}`, Number(at));
  }
  return out;
}

async function readReceipts(file: string, podsStartPending: boolean): Promise<Map<string, number>> {
  return parseReceipts(await readFile(file, 'utf8').catch(() => ''), podsStartPending);
}

interface EtcdMetrics {
  dbSize: number;
  sentBytes: number;
  receivedBytes: number;
  watchers: number;
  watchStreams: number;
  slowWatchers: number;
  resourceExhausted: number;
}

function etcdMetrics(text: string | undefined): EtcdMetrics | undefined {
  if (!text) return undefined;
  return {
    dbSize: metricSum(text, 'etcd_mvcc_db_total_size_in_bytes'),
    sentBytes: metricSum(text, 'etcd_network_client_grpc_sent_bytes_total'),
    receivedBytes: metricSum(text, 'etcd_network_client_grpc_received_bytes_total'),
    watchers: metricSum(text, 'etcd_debugging_mvcc_watcher_total'),
    watchStreams: metricSum(text, 'etcd_debugging_mvcc_watch_stream_total'),
    slowWatchers: metricSum(text, 'etcd_debugging_mvcc_slow_watcher_total'),
    resourceExhausted: metricSum(text, 'grpc_server_handled_total', { grpc_code: 'ResourceExhausted' }),
  };
}

/** Highest modRevision among the node keys, and how many there are: heartbeats must leave it unchanged. */
async function nodeKeysRevision(client: Etcd3): Promise<{ count: number; maxModRevision: number; revision: number }> {
  const key = Buffer.from(keySchema(ROOT).prefix('nodes'));
  let start = key;
  let max = 0;
  let count = 0;
  let revision = 0;
  for (;;) {
    const page = await client.kv.range({ key: start, range_end: prefixRangeEnd(key), limit: 5000, keys_only: true, revision });
    if (revision === 0) revision = Number(page.header.revision);
    for (const kv of page.kvs) {
      count++;
      max = Math.max(max, Number(kv.mod_revision));
    }
    const last = page.kvs.at(-1);
    if (!page.more || !last) break;
    start = Buffer.concat([last.key, Buffer.from([0])]);
  }
  return { count, maxModRevision: max, revision };
}

async function currentRevision(client: Etcd3): Promise<number> {
  const r = await client.kv.range({ key: Buffer.from(`${ROOT}\u0000`), limit: 1 });
  return Number(r.header.revision);
}

async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs: number, everyMs = 250): Promise<number> {
  const start = Date.now();
  while (!(await check())) {
    if (Date.now() - start > timeoutMs) throw new Error(`${what}: not within ${Math.round(timeoutMs / 1000)} s`);
    await sleep(everyMs);
  }
  return Date.now() - start;
}

function split<T>(items: readonly T[], parts: number): T[][] {
  const out: T[][] = Array.from({ length: parts }, () => []);
  items.forEach((item, i) => out[i % parts]!.push(item));
  return out;
}

export async function runScale(scenario: Scenario, options: RunOptions): Promise<Results> {
  const progress = options.progress ?? (() => undefined);
  const logs = join(options.outDir, 'logs');
  await mkdir(logs, { recursive: true });
  const startedAt = new Date().toISOString();
  const cleanups: Array<() => Promise<void>> = [];
  const t0 = Date.now();
  const phase = (name: string) => progress(`[${((Date.now() - t0) / 1000).toFixed(0).padStart(4)} s] ${name}`);

  let etcd: ScaleEtcd | undefined;
  let client: Etcd3 | undefined;
  try {
    // --- etcd ---
    phase('starting etcd');
    etcd = await startScaleEtcd(scenario.etcdMembers, scenario.etcdFault, { quotaBackendBytes: 8 * 1024 ** 3, logFile: join(logs, 'etcd.log'), startTimeoutMs: 60_000 });
    const etcdServer = etcd;
    cleanups.push(() => etcdServer.stop());
    client = createKvClient({ endpoints: etcd.endpoints });

    // --- kube-sim ---
    phase(`starting kube-sim: ${scenario.nodes} nodes × ${scenario.podsPerNode} pods (own process, --max-old-space-size=1536 --heap-growing-percent=100)`);
    const kubeStart = Date.now();
    const kube = forkTs<HostCommand, HostMessage>('kube-sim', here('./kube-sim-host.ts'), [], join(logs, 'kube-sim.log'), ['--max-old-space-size=1536', '--heap-growing-percent=100']);
    cleanups.push(() => kube.stop());
    kube.send({
      type: 'start',
      options: {
        nodes: scenario.nodes, podsPerNode: scenario.podsPerNode, services: scenario.services, namespaces: 10,
        heartbeatIntervalMs: scenario.heartbeatInterval, heartbeatJitter: 0.1, churnPerSecond: 0, seed: scenario.seed, heartbeats: true,
        podStartDelayMs: scenario.podStartDelay,
      },
    });
    const ready = await kube.next((m): m is Extract<HostMessage, { type: 'ready' }> => m.type === 'ready', 600_000, 'ready');
    const kubeSimStartMs = Date.now() - kubeStart;
    const changes: PodChange[] = [];
    const sliceChanges: SliceChange[] = [];
    let burst: { started: number; ended: number; pods: number; keys: string[] } | undefined;
    let kubeLoopMaxMs: number | undefined;
    kube.onMessage((m) => {
      if (m.type === 'changes') {
        for (const c of m.changes) changes.push(c);
        for (const c of m.slices ?? []) sliceChanges.push(c);
      }
      else if (m.type === 'burstDone') burst = m;
      else if (m.type === 'eventLoop') kubeLoopMaxMs = Math.max(kubeLoopMaxMs ?? 0, m.maxMs);
    });
    let statsId = 0;
    const kubeStats = async (): Promise<KubeSimCounters | undefined> => {
      const id = ++statsId;
      kube.send({ type: 'stats', id });
      return kube.next((m): m is Extract<HostMessage, { type: 'stats' }> => m.type === 'stats' && m.id === id, 30_000, 'stats').then((m) => m.stats, () => undefined);
    };

    // --- operator ---
    phase('starting the operator');
    const operatorPort = await freePort();
    const operatorStart = Date.now();
    const receiptLog = join(logs, 'operator-receipts.log');
    const operator = spawnService('operator', join(repo, 'services/operator/dist/main.mjs'), [
      '--etcd-endpoints', etcd.endpoints.join(','), '--kube-server', ready.url, '--metrics-port', String(operatorPort), '--log-level', 'info', '--identity', 'scale-operator',
      '--receipt-log', receiptLog,
    ], join(logs, 'operator.log'));
    cleanups.push(() => operator.stop());
    const operatorUrl = `http://127.0.0.1:${operatorPort}/metrics`;
    await until('operator synced', async () => {
      if (operator.exitReason) throw new Error(`operator ${operator.exitReason}; see ${operator.logFile}`);
      const text = await scrapeMetrics(operatorUrl);
      return !!text && metricSum(text, 'sluice_operator_synced') === 1;
    }, 900_000, 1000);
    const operatorSyncMs = Date.now() - operatorStart;
    phase(`operator synced in ${(operatorSyncMs / 1000).toFixed(1)} s`);

    // --- health service ---
    const healthPort = await freePort();
    const healthStatusPort = await freePort();
    const health = spawnService('health', join(repo, 'services/health/dist/main.mjs'), [
      // Every node record is a member; the simulated probers report without mutual TLS.
      '--listen', `127.0.0.1:${healthPort}`, '--etcd-endpoints', etcd.endpoints.join(','), '--insecure', '--metrics-port', String(healthStatusPort), '--log-level', 'warn',
    ], join(logs, 'health.log'));
    cleanups.push(() => health.stop());
    const healthMetricsUrl = `http://127.0.0.1:${healthStatusPort}/metrics`;

    // --- agents ---
    const fullNames = ready.nodes.slice(0, scenario.fullAgents);
    const lightNames = ready.nodes.slice(scenario.fullAgents, scenario.fullAgents + scenario.lightWatchers);
    const startRevision = await currentRevision(client);
    const workers: Worker[] = [];
    const fullSplit = split(fullNames, scenario.fullWorkers);
    const lightSplit = split(lightNames, scenario.lightWorkers);
    const lightClientsSplit = split(Array.from({ length: scenario.lightClients }, (_, i) => i), scenario.lightWorkers).map((c) => c.length);
    const listers = (light: string[]) => (scenario.lightList === 'none' ? 0 : Math.round(light.length * scenario.lightListShare));
    const lightListers = lightSplit.reduce((a, names) => a + listers(names), 0);
    const serviceSplit = split(Array.from({ length: scenario.serviceAgents }, (_, i) => i), scenario.fullWorkers).map((x) => x.length);
    const spawnWorker = (name: string, full: string[], light: string[], lightClients: number, trackRevisions: boolean, serviceAgents = 0) => {
      const w = forkTs<WorkerCommand, WorkerMessage>(name, here('./agents-worker.ts'), [], join(logs, `${name}.log`), ['--expose-gc', '--max-old-space-size=12288']) as Worker;
      w.full = full;
      w.light = light;
      cleanups.push(() => w.stop());
      w.send({ type: 'init', etcd: etcd!.endpoints.join(','), root: ROOT, clusterSize: scenario.nodes, full, light, lightClients, trackRevisions, startRevision, lightList: scenario.lightList, lightListers: listers(light), serviceAgents: Math.min(serviceAgents, full.length) });
      workers.push(w);
      return w;
    };
    phase(`starting ${fullNames.length} full agents in ${scenario.fullWorkers} process(es), ${lightNames.length} lightweight watchers on ${scenario.lightClients} etcd clients in ${scenario.lightWorkers} process(es)`);
    const agentStart = Date.now();
    fullSplit.forEach((names, i) => spawnWorker(`agents-full-${i}`, names, [], 0, i === 0, serviceSplit[i] ?? 0));
    lightSplit.forEach((names, i) => spawnWorker(`agents-light-${i}`, [], names, lightClientsSplit[i] ?? 1, false));
    await Promise.all(workers.map(async (w) => {
      const r = await w.next((m): m is Extract<WorkerMessage, { type: 'ready' }> => m.type === 'ready', 120_000, 'ready');
      w.baseline = r.baseline;
    }));
    // Full agents: [agent global index] → programmed [revision, at] pairs.
    const fullOffset = new Map<Worker, number>();
    let offset = 0;
    for (const w of workers) {
      fullOffset.set(w, offset);
      offset += w.full.length;
    }
    const programmedRev: number[][] = fullNames.map(() => []);
    // The same for the services table of the full agents that run it, and every EndpointSlice change in etcd.
    const svcRev: number[][] = fullNames.map(() => []);
    const svcAt: number[][] = fullNames.map(() => []);
    const svcAgents: number[] = [];
    for (const w of workers) for (let i = 0; i < Math.min(serviceSplit[workers.indexOf(w)] ?? 0, w.full.length); i++) svcAgents.push(fullOffset.get(w)! + i);
    const sliceEtcd = new Map<string, Array<[type: 'P' | 'D', rev: number, at: number]>>();
    const programmedAt: number[][] = fullNames.map(() => []);
    const etcdEvents = new Map<string, Array<[type: 'P' | 'D', rev: number, at: number]>>();
    const retries: Array<[number, 'full' | 'light']> = [];
    const episodes: LightEpisode[] = [];
    const samples = new Map<Worker, WorkerSample>();
    for (const w of workers) {
      const base = fullOffset.get(w)!;
      w.onMessage((m) => {
        if (m.type === 'programmed') {
          for (const [i, rev, at] of m.items) {
            const revs = programmedRev[base + i]!;
            if (revs.length === 0 || rev > revs.at(-1)!) {
              revs.push(rev);
              programmedAt[base + i]!.push(at);
            }
          }
        } else if (m.type === 'etcdEvents') {
          for (const [key, type, rev, at] of m.items) {
            let list = etcdEvents.get(key);
            if (!list) etcdEvents.set(key, (list = []));
            list.push([type, rev, at]);
          }
        } else if (m.type === 'svcProgrammed') {
          for (const [i, rev, at] of m.items) {
            const revs = svcRev[base + i]!;
            if (revs.length === 0 || rev > revs.at(-1)!) {
              revs.push(rev);
              svcAt[base + i]!.push(at);
            }
          }
        } else if (m.type === 'sliceEvents') {
          for (const [key, type, rev, at] of m.items) {
            let list = sliceEtcd.get(key);
            if (!list) sliceEtcd.set(key, (list = []));
            list.push([type, rev, at]);
          }
        } else if (m.type === 'retries') retries.push(...m.items);
        else if (m.type === 'back') episodes.push(...m.items);
      });
    }
    let sampleId = 0;
    const sampleWorkers = async (gc = false) => {
      const id = ++sampleId;
      await Promise.all(workers.map(async (w) => {
        w.send({ type: 'sample', id, gc });
        const m = await w.next((x): x is Extract<WorkerMessage, { type: 'sample' }> => x.type === 'sample' && x.id === id, 60_000, 'sample').catch(() => undefined);
        if (m) samples.set(w, m.sample);
      }));
    };
    const totals = () => {
      const all = [...samples.values()];
      const sum = (f: (s: WorkerSample) => number) => all.reduce((a, s) => a + f(s), 0);
      const errors: Record<string, number> = {};
      for (const s of all) for (const [k, v] of Object.entries(s.errors)) errors[k] = (errors[k] ?? 0) + v;
      const unretried: Record<string, number> = {};
      for (const s of all) for (const [k, v] of Object.entries(s.unretried ?? {})) unretried[k] = (unretried[k] ?? 0) + v;
      return {
        lightLists: sum((s) => s.lightLists), lightListKeys: sum((s) => s.lightListKeys), lightListBytes: sum((s) => s.lightListBytes), unretried,
        fullSynced: sum((s) => s.fullSynced), fullConnected: sum((s) => s.fullConnected), lightConnected: sum((s) => s.lightConnected),
        lightEvents: sum((s) => s.lightEvents), lightBytes: sum((s) => s.lightBytes), fullRetries: sum((s) => s.fullRetries),
        lightRetries: sum((s) => s.lightRetries), errors,
      };
    };
    await until('full agents synced', async () => {
      for (const w of workers) if (w.exitReason) throw new Error(`${w.name} ${w.exitReason}; see ${w.logFile}`);
      await sampleWorkers();
      const t = totals();
      phase(`agents: ${t.fullSynced}/${fullNames.length} full agents synced; ${t.lightConnected}/${lightNames.length} lightweight watchers connected`);
      return t.fullSynced === fullNames.length && t.lightConnected === lightNames.length;
    }, 1_800_000, 3000);
    const agentsSyncMs = Date.now() - agentStart;
    await sampleWorkers(true);
    const fullMemory = workers.filter((w) => w.full.length > 0).map((w) => ({
      agents: w.full.length, heapBytes: samples.get(w)!.heapUsed - w.baseline!.heapUsed, rssBytes: samples.get(w)!.rss - w.baseline!.rss,
    }));
    const kubeAtSync = await kubeStats();
    const podsInCluster = kubeAtSync?.objects.pods ?? scenario.nodes * scenario.podsPerNode;
    const fullHeap = fullMemory.reduce((a, m) => a + m.heapBytes, 0);
    const fullRss = fullMemory.reduce((a, m) => a + m.rssBytes, 0);
    const endpointsHeld = [...samples.values()].flatMap((s) => s.clusterEndpoints);

    // --- sampling loop (series) ---
    const series: SeriesPoint[] = [];
    const pids = () => ({ etcd: etcd!.pid, 'kube-sim': kube.pid, operator: operator.pid, health: health.pid, ...Object.fromEntries(workers.map((w) => [w.name, w.pid])) });
    const lastCpu = new Map<string, number>();
    let lastT = Date.now();
    const peakRss = new Map<string, number>();
    let lastEtcdMetrics: EtcdMetrics | undefined;
    let etcdSentTotal = 0;
    let lastOperator: OperatorMetrics | undefined;
    // etcd gets a new pid when it restarts: its CPU is the sum over its pids.
    const etcdCpuByPid = new Map<number, number>();
    const cpuTotal = (name: string, pid: number | undefined): number | undefined => {
      const s = pid === undefined ? undefined : processUsage(pid);
      if (!s) return name === 'etcd' && etcdCpuByPid.size > 0 ? [...etcdCpuByPid.values()].reduce((a, b) => a + b, 0) : undefined;
      if (s.rssBytes > (peakRss.get(name) ?? 0)) peakRss.set(name, s.rssBytes);
      if (name !== 'etcd' || pid === undefined) return s.cpuSeconds;
      etcdCpuByPid.set(pid, s.cpuSeconds);
      return [...etcdCpuByPid.values()].reduce((a, b) => a + b, 0);
    };
    const takeSample = async (phaseT0: number) => {
      const now = Date.now();
      const dt = (now - lastT) / 1000;
      const point: SeriesPoint = { t: (now - phaseT0) / 1000, cpu: {}, rssMiB: {} };
      for (const [name, pid] of Object.entries(pids())) {
        const total = cpuTotal(name, pid);
        if (total === undefined) continue;
        const prev = lastCpu.get(name);
        if (prev !== undefined && dt > 0) point.cpu[name] = Math.max(0, ((total - prev) / dt) * 100);
        lastCpu.set(name, total);
        const s = pid === undefined ? undefined : processUsage(pid);
        if (s) point.rssMiB[name] = s.rssBytes / 1024 / 1024;
      }
      lastT = now;
      const em = etcdMetrics(await scrapeMetrics(`${etcd!.endpoint}/metrics`));
      if (em) {
        // etcd's counters restart from 0 with the process: a drop is a restart, count what came after it.
        if (lastEtcdMetrics) etcdSentTotal += em.sentBytes >= lastEtcdMetrics.sentBytes ? em.sentBytes - lastEtcdMetrics.sentBytes : em.sentBytes;
        lastEtcdMetrics = em;
        point.etcdDbMiB = em.dbSize / 1024 / 1024;
      }
      const om = operatorMetrics(await scrapeMetrics(operatorUrl));
      if (om) lastOperator = om;
      await sampleWorkers();
      const loops: Record<string, number> = {};
      if (om) loops.operator = om.eventLoopMaxMs;
      const hm = await scrapeMetrics(healthMetricsUrl);
      if (hm) loops.health = metricSum(hm, 'nodejs_eventloop_lag_max_seconds') * 1000;
      if (kubeLoopMaxMs !== undefined) loops['kube-sim'] = kubeLoopMaxMs;
      kubeLoopMaxMs = undefined;
      for (const w of workers) {
        const ws = samples.get(w);
        if (ws) loops[w.name] = ws.eventLoopMaxMs;
      }
      point.eventLoopMaxMs = loops;
      const t = totals();
      point.lightEvents = t.lightEvents;
      point.fullConnected = t.fullConnected;
      point.lightConnected = t.lightConnected;
      series.push(point);
      return point;
    };

    // --- heartbeats only ---
    phase(`heartbeats only for ${(scenario.heartbeatOnly / 1000).toFixed(0)} s (no churn): node keys must not be written`);
    const hbNodesBefore = await nodeKeysRevision(client);
    const hbOpBefore = operatorMetrics(await scrapeMetrics(operatorUrl));
    const hbKubeBefore = await kubeStats();
    await sleep(scenario.heartbeatOnly);
    const hbNodesAfter = await nodeKeysRevision(client);
    const hbOpAfter = operatorMetrics(await scrapeMetrics(operatorUrl));
    const hbKubeAfter = await kubeStats();

    // --- measured phase ---
    const phaseT0 = Date.now();
    const kubeBefore = await kubeStats();
    const opBefore = operatorMetrics(await scrapeMetrics(operatorUrl));
    const etcdBefore = etcdMetrics(await scrapeMetrics(`${etcd.endpoint}/metrics`));
    const revBefore = await currentRevision(client);
    await takeSample(phaseT0);
    const cpuAtPhase = new Map(lastCpu);
    const etcdSentAtPhase = etcdSentTotal;
    const lightBefore = totals();
    kube.send({ type: 'record', on: true });
    kube.send({ type: 'churn', perSecond: scenario.churnPerSecond });
    if (scenario.sliceChurnPerSecond > 0 && scenario.services > 0) kube.send({ type: 'sliceChurn', perSecond: scenario.sliceChurnPerSecond });
    phase(`measured phase: ${scenario.churnPerSecond} pod changes/s for ${(scenario.duration / 1000).toFixed(0)} s; burst of ${scenario.burstPods} at ${scenario.burstAt / 1000} s; etcd restart at ${scenario.etcdRestartAt / 1000} s for ${scenario.etcdDowntime / 1000} s`);
    let burstSent = false;
    let restart: { pausedAt: number; resumedAt?: number; revisionAtResume?: number } | undefined;
    let restartTask: Promise<void> | undefined;
    let lastProgress = 0;
    while (Date.now() - phaseT0 < scenario.duration) {
      const elapsed = Date.now() - phaseT0;
      if (!burstSent && elapsed >= scenario.burstAt) {
        burstSent = true;
        kube.send({ type: 'burst', pods: scenario.burstPods });
        phase(`burst: ${scenario.burstPods} pods created at once`);
      }
      if (!restart && elapsed >= scenario.etcdRestartAt) {
        restart = { pausedAt: Date.now() };
        const r = restart;
        phase(`${etcd!.fault}, down for ${scenario.etcdDowntime / 1000} s`);
        restartTask = (async () => {
          await etcd!.pause();
          await sleep(scenario.etcdDowntime);
          await etcd!.resume();
          r.resumedAt = Date.now();
          r.revisionAtResume = await currentRevision(client!).catch(() => undefined);
          phase('etcd is back');
        })();
      }
      const point = await takeSample(phaseT0);
      if (Date.now() - lastProgress >= scenario.progressEvery) {
        lastProgress = Date.now();
        const t = totals();
        const fmt = (n: number | undefined) => (n === undefined ? '–' : n.toFixed(0));
        progress(`[${((Date.now() - t0) / 1000).toFixed(0).padStart(4)} s] t=${point.t.toFixed(0)}s changes=${changes.length} ` +
          `full ${t.fullConnected}/${fullNames.length} light ${t.lightConnected}/${lightNames.length} connected; ` +
          `cpu% etcd ${fmt(point.cpu.etcd)} kube-sim ${fmt(point.cpu['kube-sim'])} operator ${fmt(point.cpu.operator)}; ` +
          `etcd db ${(point.etcdDbMiB ?? 0).toFixed(0)} MiB`);
      }
      await sleep(2000);
    }
    kube.send({ type: 'churn', perSecond: 0 });
    kube.send({ type: 'sliceChurn', perSecond: 0 });
    await restartTask;
    const phaseEnd = Date.now();
    phase('churn stopped; waiting for every change to reach every full agent');
    await sleep(1000);
    kube.send({ type: 'record', on: false });

    // --- matching changes to etcd events and to each full agent's maps ---
    const used = new Set<string>();
    const matchChange = (c: PodChange): [rev: number, at: number] | undefined => {
      const list = etcdEvents.get(c[0]);
      if (!list) return undefined;
      const want = c[1] === 'A' ? 'P' : 'D';
      for (let i = 0; i < list.length; i++) {
        const [type, rev, at] = list[i]!;
        const id = `${c[0]}#${i}`;
        if (type === want && !used.has(id)) {
          used.add(id);
          return [rev, at];
        }
      }
      return undefined;
    };
    const arrival = (agent: number, rev: number): number | undefined => {
      const i = lowerBound(programmedRev[agent]!, rev);
      return i < programmedRev[agent]!.length ? programmedAt[agent]![i] : undefined;
    };
    // A pod created and deleted while the operator could not write is a net no-op: the writer coalesces the two and
    // etcd never sees the key. Such pairs are counted apart, not as lost changes.
    const changeKinds = new Map<string, string>();
    const evaluate = () => {
      used.clear();
      changeKinds.clear();
      for (const c of changes) changeKinds.set(c[0], (changeKinds.get(c[0]) ?? '') + c[1]);
      const out: Array<{ c: PodChange; rev?: number; etcdAt?: number; allAt?: number; perAgent: number[]; missing: number; coalesced?: boolean }> = [];
      for (const c of changes) {
        const m = matchChange(c);
        if (!m) {
          const coalesced = changeKinds.get(c[0]) === 'AD' && !etcdEvents.has(c[0]);
          out.push({ c, perAgent: [], missing: coalesced ? 0 : fullNames.length, coalesced });
          continue;
        }
        const perAgent: number[] = [];
        let missing = 0;
        let allAt = 0;
        for (let a = 0; a < fullNames.length; a++) {
          const at = arrival(a, m[0]);
          if (at === undefined) missing++;
          else {
            perAgent.push(at - c[2]);
            allAt = Math.max(allAt, at);
          }
        }
        out.push({ c, rev: m[0], etcdAt: m[1], perAgent, missing, ...(missing === 0 ? { allAt } : {}) });
      }
      return out;
    };
    // Services: each EndpointSlice change → the first etcd event of that slice after it (a later change the operator
    // coalesced with it lands in the same write) → the first services-table revision ≥ it in each agent running it.
    const svcArrival = (agent: number, rev: number): number | undefined => {
      const i = lowerBound(svcRev[agent]!, rev);
      return i < svcRev[agent]!.length ? svcAt[agent]![i] : undefined;
    };
    type SliceEval = { c: SliceChange; rev?: number; etcdAt?: number; allAt?: number; perAgent: number[]; missing: number };
    const evaluateSlices = () => sliceChanges.map((c): SliceEval => {
      const want = c[1] === 'S' ? 'P' : 'D';
      const m = sliceEtcd.get(c[0])?.find(([type, , at]) => type === want && at >= c[2]);
      if (!m) return { c, missing: svcAgents.length, perAgent: [] };
      const perAgent: number[] = [];
      let allAt = 0;
      let missing = 0;
      for (const a of svcAgents) {
        const at = svcArrival(a, m[1]);
        if (at === undefined) missing++;
        else {
          perAgent.push(at - c[2]);
          allAt = Math.max(allAt, at);
        }
      }
      return { c, rev: m[1], etcdAt: m[2], perAgent, missing, ...(missing === 0 ? { allAt } : {}) };
    });
    let slicesEvaluated = evaluateSlices();
    if (svcAgents.length > 0) {
      await until('every slice change in every services table', () => {
        slicesEvaluated = evaluateSlices();
        return slicesEvaluated.every((e) => e.missing === 0);
      }, 60_000, 1000).catch(() => undefined);
      slicesEvaluated = evaluateSlices();
    }

    // The herd after the etcd fault may outlast the churn: wait for every lightweight watcher to be back.
    await until('every lightweight watcher back', async () => {
      await sampleWorkers();
      return totals().lightConnected === lightNames.length;
    }, 300_000, 2000).catch(() => phase('not every lightweight watcher came back within 300 s'));
    let evaluated = evaluate();
    let receipts = new Map<string, number>();
    await until('every change in every full agent', () => {
      evaluated = evaluate();
      return evaluated.every((e) => e.missing === 0);
    }, 120_000, 1000).catch(() => undefined);
    evaluated = evaluate();
    receipts = await readReceipts(receiptLog, scenario.podStartDelay > 0);
    const kubeAfter = await kubeStats();
    const opAfter = operatorMetrics(await scrapeMetrics(operatorUrl));
    const etcdAfter = etcdMetrics(await scrapeMetrics(`${etcd.endpoint}/metrics`));
    const revAfter = await currentRevision(client);
    await takeSample(phaseT0);
    const etcdSent = etcdSentTotal - etcdSentAtPhase;
    const lightAfter = totals();
    const cpuAtEnd = new Map(lastCpu);
    const nodesAtEnd = await nodeKeysRevision(client);

    // --- resync after the etcd restart ---
    let resync: Results['restart'] = undefined;
    // The first pod change etcd took after it came back: when the operator was writing again.
    let writesResumedAt: number | undefined;
    let firstRevAfterResume: number | undefined;
    if (restart?.resumedAt) {
      for (const list of etcdEvents.values()) {
        for (const [, rev, at] of list) {
          if (at >= restart.resumedAt && (firstRevAfterResume === undefined || rev < firstRevAfterResume)) {
            firstRevAfterResume = rev;
            writesResumedAt = at;
          }
        }
      }
    }
    if (restart?.resumedAt) {
      const resumedAt = restart.resumedAt;
      const reconnects = retries.filter(([at]) => at >= restart!.pausedAt).map(([at, kind]) => ({ at, kind }));
      // Resynced: every full agent has programmed a revision at or past the one etcd had when it came back, and every
      // lightweight watcher is connected again (sampled every 2 s).
      const target = firstRevAfterResume ?? Number.MAX_SAFE_INTEGER;
      const fullResyncedAt = fullNames.map((_, a) => arrival(a, target));
      const lightBack = series.find((p) => p.t * 1000 + phaseT0 > resumedAt && p.lightConnected === lightNames.length && p.fullConnected === fullNames.length);
      const allFull = fullResyncedAt.every((x) => x !== undefined) ? Math.max(...(fullResyncedAt as number[])) : undefined;
      const bucketMs = 1000;
      const hist = new Map<number, { full: number; light: number }>();
      for (const r of reconnects) {
        const b = Math.floor((r.at - restart.pausedAt) / bucketMs);
        const h = hist.get(b) ?? { full: 0, light: 0 };
        h[r.kind]++;
        hist.set(b, h);
      }
      resync = {
        pausedAtS: (restart.pausedAt - phaseT0) / 1000, resumedAtS: (resumedAt - phaseT0) / 1000, downtimeS: (resumedAt - restart.pausedAt) / 1000,
        revisionAtResume: restart.revisionAtResume ?? 0,
        operatorWritesResumedMs: writesResumedAt === undefined ? null : writesResumedAt - resumedAt,
        firstRevisionAfterResume: firstRevAfterResume ?? null,
        retries: { full: reconnects.filter((r) => r.kind === 'full').length, light: reconnects.filter((r) => r.kind === 'light').length },
        histogram: [...hist.entries()].sort((a, b) => a[0] - b[0]).map(([b, h]) => ({ secondAfterStop: b, ...h })),
        fullResyncMs: allFull === undefined ? null : allFull - resumedAt,
        lightReconnectedMs: lightBack ? lightBack.t * 1000 + phaseT0 - resumedAt : null,
      };
    }

    // --- the thundering herd: every lightweight watcher's way back (list of nodes and pods, then watch) ---
    const herdOf = (list: LightEpisode[], zero: number, expected: number): HerdPhase => {
      const times = list.map((e) => (e.backAt - zero) / 1000).sort((a, b) => a - b);
      const step = Math.max(1, Math.ceil(times.length / 400));
      const curve = [{ s: 0, back: 0 }, ...times.flatMap((t, i) => (i % step === 0 || i === times.length - 1 ? [{ s: t, back: i + 1 }] : []))];
      return {
        watchers: expected, back: list.length,
        allBackS: list.length >= expected && times.length > 0 ? times.at(-1)! : null,
        backS: summarize(times), ownS: summarize(list.map((e) => (e.backAt - e.lostAt) / 1000)),
        retries: list.reduce((a, e) => a + e.retries, 0), tooMany: list.reduce((a, e) => a + e.tooMany, 0), curve,
      };
    };
    const coldEpisodes = episodes.filter((e) => e.kind === 'cold' && e.listed);
    const coldZero = Math.min(...coldEpisodes.map((e) => e.lostAt));
    const faultZero = restart?.resumedAt === undefined ? undefined : scenario.etcdFault === 'leader-kill' ? restart.pausedAt : restart.resumedAt;
    const faultEpisodes = restart ? episodes.filter((e) => e.kind === 'reconnect' && e.listed && e.lostAt >= restart!.pausedAt - 1000) : [];

    const herd: Results['herd'] = {
      list: scenario.lightList,
      listers: lightListers,
      cold: coldEpisodes.length ? herdOf(coldEpisodes, coldZero, lightListers) : null,
      fault: faultZero !== undefined ? { ...herdOf(faultEpisodes, faultZero, faultEpisodes.length), zero: scenario.etcdFault === 'leader-kill' ? 'leader killed' : 'etcd serving again', fullAgentsS: summarize(fullNames.map((_, a) => arrival(a, firstRevAfterResume ?? Number.MAX_SAFE_INTEGER)).filter((x): x is number => x !== undefined).map((x) => (x - faultZero) / 1000)) } : null,
      stillAway: lightNames.length - lightAfter.lightConnected,
      lists: lightAfter.lightLists, listKeys: lightAfter.lightListKeys, listBytes: lightAfter.lightListBytes,
      errorsReachingCallers: Object.values(lightAfter.unretried).reduce((a, v) => a + v, 0),
      unretried: lightAfter.unretried,
    };

    // --- health ---
    let healthResult: Results['health'] = undefined;
    if (scenario.healthPhase > 0) {
      phase(`health: ${ready.nodes.length} simulated probers report to the health service (${scenario.healthLoss * 100} % probe loss, a broken pair); one node dies half-way`);
      healthResult = await runHealthPhase({
        address: `127.0.0.1:${healthPort}`, nodes: ready.nodes, durationMs: scenario.healthPhase, lossRate: scenario.healthLoss, pair: scenario.healthPair,
        servicePid: health.pid, logFile: join(logs, 'health-sim.log'),
      });
    }

    // --- figures ---
    const lat = evaluated.filter((e) => e.allAt !== undefined).map((e) => e.allAt! - e.c[2]);
    const outage = restart?.resumedAt ? [restart.pausedAt, (writesResumedAt ?? restart.resumedAt) + 2000] as const : undefined;
    const burstKeys = new Set(burst?.keys ?? []);
    const burstChanges = burst ? evaluated.filter((e) => e.c[1] === 'A' && burstKeys.has(e.c[0])) : [];
    // A perturbation lasts until the backlog it made has drained, not only while it acts: the burst until its last pod
    // is in every full agent; the etcd outage until every change made while the operator could not write is. Changes
    // made in those windows wait behind the backlog; they are the recovery, measured apart, not the steady state.
    const lastArrival = (list: typeof evaluated) => Math.max(0, ...list.filter((e) => e.allAt !== undefined).map((e) => e.allAt!));
    const perturbations: Array<{ name: 'burst' | 'outage'; from: number; to: number }> = [];
    if (burst) perturbations.push({ name: 'burst', from: burst.started - 100, to: Math.max(burst.ended + 100 + scenario.podStartDelay, lastArrival(burstChanges)) });
    if (outage) {
      const madeWhileDown = evaluated.filter((e) => e.c[2] >= outage[0] - 2000 && e.c[2] <= outage[1]);
      perturbations.push({ name: 'outage', from: outage[0] - 2000, to: Math.max(outage[1], lastArrival(madeWhileDown)) });
    }
    const perturbed = (at: number) => perturbations.some((w) => at >= w.from && at <= w.to);
    const steady = evaluated.filter((e) => e.allAt !== undefined && !perturbed(e.c[2]));
    const slicesSteady = slicesEvaluated.filter((e) => e.allAt !== undefined && !perturbed(e.c[2]));
    const lastTables = [...samples.values()].flatMap((x) => x.serviceTables ?? []);
    const servicesResult: Results['services'] = {
      services: scenario.services, agents: svcAgents.length, sliceChurnPerSecond: scenario.sliceChurnPerSecond,
      slicesInCluster: kubeAfter?.objects.endpointslices ?? null,
      tableServices: summarize(lastTables.map((t) => t.services)), tableSlices: summarize(lastTables.map((t) => t.slices)), programmedServices: summarize(lastTables.map((t) => t.programmed)),
      changes: sliceChanges.length,
      reachedEveryAgent: slicesEvaluated.filter((e) => e.allAt !== undefined).length,
      notInEtcd: slicesEvaluated.filter((e) => e.rev === undefined).length,
      incomplete: slicesEvaluated.filter((e) => e.missing > 0).length,
      toAllAgentsMs: summarize(slicesEvaluated.filter((e) => e.allAt !== undefined).map((e) => e.allAt! - e.c[2])),
      steadyMs: summarize(slicesSteady.map((e) => e.allAt! - e.c[2])),
      perAgentMs: summarize(slicesEvaluated.flatMap((e) => e.perAgent)),
      kubeToEtcdMs: summarize(slicesEvaluated.filter((e) => e.etcdAt !== undefined).map((e) => e.etcdAt! - e.c[2])),
      etcdToAllAgentsMs: summarize(slicesEvaluated.filter((e) => e.allAt !== undefined && e.etcdAt !== undefined).map((e) => e.allAt! - e.etcdAt!)),
    };

    // The split at the operator's receipt; a change the operator never received as such (coalesced, or listed after a
    // relist) has no receipt and is left out of it.
    const splitAtReceipt = (list: typeof evaluated) => {
      const parts = list.flatMap((e) => {
        const at = receipts.get(`${e.c[1]} ${e.c[0]}`);
        return at === undefined || e.etcdAt === undefined || e.allAt === undefined ? [] : [[at - e.c[2], e.etcdAt - at, e.allAt - e.etcdAt] as const];
      });
      return {
        kubeSimToOperatorMs: summarize(parts.map((p) => p[0])),
        operatorToEtcdMs: summarize(parts.map((p) => p[1])),
        etcdToAllAgentsMs: summarize(parts.map((p) => p[2])),
      };
    };
    const receiptsMatched = evaluated.filter((e) => receipts.has(`${e.c[1]} ${e.c[0]}`)).length;
    const loopStats = (name: string) => {
      const values = series.filter((p) => p.t >= 0 && p.t <= phaseS).map((p) => p.eventLoopMaxMs?.[name]).filter((v): v is number => v !== undefined);
      return values.length ? { eventLoopMaxMs: Math.max(...values), eventLoopWindowsOver200Ms: values.filter((v) => v > 200).length } : { eventLoopMaxMs: null, eventLoopWindowsOver200Ms: null };
    };
    const perAgent = evaluated.flatMap((e) => e.perAgent);
    const incomplete = evaluated.filter((e) => e.missing > 0);
    const phaseS = (phaseEnd - phaseT0) / 1000;
    const cpuPct = (name: string) => {
      const a = cpuAtPhase.get(name);
      const b = cpuAtEnd.get(name);
      return a === undefined || b === undefined ? null : ((b - a) / ((Date.now() - phaseT0) / 1000)) * 100;
    };
    const d = <K extends string>(a: Partial<Record<K, number>> | undefined, b: Partial<Record<K, number>> | undefined, k: K) => (b?.[k] ?? 0) - (a?.[k] ?? 0);
    const kubeEventsIn = d(opBefore, opAfter, 'kubeEvents');
    const etcdWritesOut = d(opBefore, opAfter, 'writes') + d(opBefore, opAfter, 'deletes');
    const kubeToOperator = d(kubeBefore, kubeAfter, 'watchBytesSent');
    const lightBytes = lightAfter.lightBytes - lightBefore.lightBytes;
    const lightEvents = lightAfter.lightEvents - lightBefore.lightEvents;
    const perAgentBytes = lightNames.length > 0 ? lightBytes / lightNames.length : 0;
    const agentsBytesAllNodes = perAgentBytes * scenario.nodes;
    // Every agent would watch what the operator watches (nodes, pods, services, EndpointSlices: what Cilium's agents
    // watched before 1.5) and so receive what the operator received.
    const counterfactualBytes = scenario.nodes * kubeToOperator;
    const mbit = (bytes: number) => (bytes * 8) / phaseS / 1e6;
    // Reaching a caller: an error the kvstore's retry policy does not retry (what a watcher's consumer would get).
    // Every other error seen was retried with backoff: counted apart, by kind.
    const tooManyToCallers = Object.entries(lightAfter.unretried).filter(([k]) => TOO_MANY.test(k)).reduce((a, [, v]) => a + v, 0);
    const tooManySeen = Object.entries(lightAfter.errors).filter(([k]) => TOO_MANY.test(k)).reduce((a, [, v]) => a + v, 0);
    const operatorLogTooMany = await (async () => {
      const { readFile } = await import('node:fs/promises');
      const text = await readFile(operator.logFile, 'utf8').catch(() => '');
      return (text.match(/too many requests/gi) ?? []).length;
    })();
    const results: Results = {
      version: 1,
      startedAt,
      host: { cpus: cpus().length, memoryGiB: totalmem() / 1024 ** 3, node: process.version },
      scenario,
      setup: { kubeSimStartS: kubeSimStartMs / 1000, operatorSyncS: operatorSyncMs / 1000, agentsSyncS: agentsSyncMs / 1000 },
      agents: {
        full: { count: fullNames.length, processes: scenario.fullWorkers, nodes: fullNames, endpointsHeld: summarize(endpointsHeld) },
        light: { count: lightNames.length, processes: scenario.lightWorkers, etcdClients: scenario.lightClients },
        etcdWatchStreams: (etcdBefore ?? etcdAfter)?.watchStreams ?? null,
        etcdWatchers: (etcdBefore ?? etcdAfter)?.watchers ?? null,
        clientConnections: scenario.fullWorkers + scenario.lightClients,
      },
      heartbeats: {
        windowS: scenario.heartbeatOnly / 1000,
        heartbeatsSent: d(hbKubeBefore, hbKubeAfter, 'heartbeats'),
        nodeEventsAtOperator: d(hbOpBefore, hbOpAfter, 'nodeEvents'),
        operatorWrites: d(hbOpBefore, hbOpAfter, 'writes') + d(hbOpBefore, hbOpAfter, 'deletes'),
        skippedWrites: d(hbOpBefore, hbOpAfter, 'skipped'),
        nodeKeys: hbNodesAfter.count,
        nodeKeysWritten: hbNodesAfter.maxModRevision > hbNodesBefore.maxModRevision ? 1 : 0,
        nodeKeysMaxModRevision: [hbNodesBefore.maxModRevision, hbNodesAfter.maxModRevision],
        wholeRun: { heartbeatsSent: d(hbKubeBefore, kubeAfter, 'heartbeats'), nodeKeysMaxModRevision: [hbNodesBefore.maxModRevision, nodesAtEnd.maxModRevision] },
      },
      events: {
        phaseS,
        kubeEventsIn,
        nodeEvents: d(opBefore, opAfter, 'nodeEvents'),
        podEvents: d(opBefore, opAfter, 'podEvents'),
        etcdWritesOut,
        skippedWrites: d(opBefore, opAfter, 'skipped'),
        writeRetries: d(opBefore, opAfter, 'retries'),
        etcdRevisions: revAfter - revBefore,
        eventsPerWrite: etcdWritesOut > 0 ? kubeEventsIn / etcdWritesOut : null,
        writesPer1000Events: kubeEventsIn > 0 ? (etcdWritesOut / kubeEventsIn) * 1000 : null,
      },
      bytes: {
        kubeSimToOperator: kubeToOperator,
        kubeSimToOperatorMbitS: mbit(kubeToOperator),
        perLightWatcher: perAgentBytes,
        lightWatcherEvents: lightEvents,
        agentsAllNodesEstimate: agentsBytesAllNodes,
        agentsAllNodesMbitS: mbit(agentsBytesAllNodes),
        etcdGrpcSent: etcdSent,
        etcdGrpcSentMbitS: mbit(etcdSent),
        counterfactualDirectWatches: counterfactualBytes,
        counterfactualMbitS: mbit(counterfactualBytes),
        reduction: agentsBytesAllNodes > 0 ? counterfactualBytes / agentsBytesAllNodes : null,
      },
      propagation: {
        changes: changes.length,
        reachedEveryFullAgent: evaluated.filter((e) => e.allAt !== undefined).length,
        incomplete: incomplete.length,
        coalesced: evaluated.filter((e) => e.coalesced).length,
        notInEtcd: evaluated.filter((e) => e.rev === undefined && !e.coalesced).length,
        incompleteSample: incomplete.slice(0, 20).map((e) => ({ key: e.c[0], type: e.c[1], t: (e.c[2] - phaseT0) / 1000, inEtcd: e.rev !== undefined, missingAgents: e.missing })),
        toAllFullAgentsMs: summarize(lat),
        steadyMs: summarize(steady.map((e) => e.allAt! - e.c[2])),
        perturbedWindows: perturbations.map((w) => ({ name: w.name, fromS: (w.from - phaseT0) / 1000, toS: (w.to - phaseT0) / 1000 })),
        perAgentMs: summarize(perAgent),
        kubeToEtcdMs: summarize(evaluated.filter((e) => e.etcdAt !== undefined).map((e) => e.etcdAt! - e.c[2])),
        split: { all: splitAtReceipt(evaluated), steady: splitAtReceipt(steady), receiptsMatched },
        burst: burst ? { pods: burst.pods, createMs: burst.ended - burst.started, lastArrivalMs: Math.max(0, ...burstChanges.filter((e) => e.allAt !== undefined).map((e) => e.allAt! - burst!.started)), latencyMs: summarize(burstChanges.filter((e) => e.allAt !== undefined).map((e) => e.allAt! - e.c[2])) } : null,
        series: evaluated.filter((e) => e.allAt !== undefined).map((e) => ({ t: (e.c[2] - phaseT0) / 1000, ms: e.allAt! - e.c[2], ...(e.etcdAt !== undefined ? { etcdMs: e.etcdAt - e.c[2] } : {}), type: e.c[1] })),
      },
      memory: {
        podsInCluster,
        fullAgentHeapBytes: fullHeap / fullNames.length,
        fullAgentRssBytes: fullRss / fullNames.length,
        heapBytesPerPod: fullHeap / fullNames.length / podsInCluster,
        rssBytesPerPod: fullRss / fullNames.length / podsInCluster,
        byProcess: fullMemory,
      },
      processes: Object.fromEntries(Object.keys(pids()).map((name) => [name, { cpuPercentMean: cpuPct(name), peakRssMiB: (peakRss.get(name) ?? 0) / 1024 / 1024, ...loopStats(name) }])),
      etcd: {
        dbSizeBytes: etcdAfter?.dbSize ?? lastEtcdMetrics?.dbSize ?? null,
        resourceExhaustedReturned: etcdAfter?.resourceExhausted ?? null,
        slowWatchers: etcdAfter?.slowWatchers ?? null,
      },
      tooManyRequests: { reachingWatchConsumers: tooManyToCallers, seenAndRetried: tooManySeen, operatorLogMentions: operatorLogTooMany, etcdReturnedResourceExhausted: etcdAfter?.resourceExhausted ?? null },
      herd,
      services: servicesResult,
      errorsSeenByWatchers: lightAfter.errors,
      restart: resync,
      health: healthResult,
      kubeSim: { stats: kubeAfter ?? null },
      operator: { metrics: lastOperator ? { ...lastOperator } : null },
      series,
    };
    await writeFile(join(options.outDir, 'results.json'), `${JSON.stringify(results, null, 1)}\n`);
    phase(`done: ${changes.length} changes, ${incomplete.length} incomplete; p99 ${results.propagation.toAllFullAgentsMs.p99.toFixed(0)} ms`);
    return results;
  } finally {
    progress('stopping processes');
    for (const w of cleanups.reverse()) await w().catch(() => undefined);
    client?.close();
  }
}
