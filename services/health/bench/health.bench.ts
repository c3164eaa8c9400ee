/**
 * The health service at 5,000 nodes:
 * - the aggregator ingesting one probing round of 5,000 nodes, in process;
 * - the real service (main.ts, its own process, nodes from a real etcd holding 5,000 node records) taking the
 *   reports of 5,000 agents on open ReportProbes streams (another process), as fast as it goes and paced over a
 *   round, with GetClusterHealth latency (p50/p99) idle and under that load, and the service's CPU;
 * - detection of a node that dies, through the real service: test/scale's health simulation (the probers of 5,000
 *   nodes on the real schedule, one stream per node, flushing every second) against the same service process;
 * - the probing algorithm simulated against n: probes per node per second, and the time from a node failing to the
 *   aggregator's quorum of failures (the detection time), with clock skew, the flush delay and 1 % of nodes down.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import pLimit from 'p-limit';
import type { Figure } from '../../../bench/run.ts';
import { N, names, roundReports } from './sim.ts';
import { createHealthClient } from '@sluice/health-api';
import { freePort, startEtcd } from '@sluice/etcd-runner';
import { createKvClient, keySchema, syncedMarkerValue } from '@sluice/kvstore';
import { ownChild, stopChild } from '@sluice/process';
import { encodeSlimString, SCHEMA_VERSION } from '@sluice/slim';
import { PLAN_DEFAULTS, probePlan, roundRing, type ProbePlan } from '@sluice/prober';
import { seededRandom } from '@sluice/backoff';
import { Aggregator, type NodeInfo } from '../src/index.ts';
import { processUsage } from '@sluice/process';
const infos: NodeInfo[] = names.map((name, i) => ({ name, hostIP: `10.${(i >> 8) & 255}.${i & 255}.1`, endpointIP: `10.${128 + ((i >> 8) & 127)}.${i & 255}.2` }));

/** Rounds of the report load spread over the round length, during which GetClusterHealth latency is measured. */
const PACED_ROUNDS = 3;
/** The start of the detection run, when the simulation opens its 5,000 streams, left out of its latency figures. */
const SIM_WARMUP_MS = 4000;
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;

async function timeCalls(count: number, call: () => Promise<unknown>): Promise<number[]> {
  const samples: number[] = [];
  for (let i = 0; i < count; i++) {
    const start = performance.now();
    await call();
    samples.push(performance.now() - start);
  }
  return samples.sort((a, b) => a - b);
}

/** Detection time of one failure, simulated on the real ring schedule. */
function simulateDetection(plan: ProbePlan, n: number, random: () => number, skew: Map<string, number>, dead: Set<string>, simNames: string[]): number {
  const T = plan.intervalMs;
  const startRound = 1_000_000 + Math.floor(random() * 1_000_000);
  const failAt = startRound * T + random() * T;
  let target: string;
  do target = simNames[Math.floor(random() * n)]!; while (dead.has(target));
  const arrivals: Array<[number, string]> = [];
  for (let r = startRound; r < startRound + 4; r++) {
    const ring = roundRing(simNames, r);
    const pos = ring.indexOf(target);
    for (let j = 1; j <= plan.fanout; j++) {
      const prober = ring[(pos - j + n) % n]!;
      if (dead.has(prober)) continue;
      const sentAt = r * T + (j - 1) * plan.slotMs + skew.get(prober)!;
      if (sentAt < failAt) continue;
      // The failure is known after the probe timeout, then waits for the reporter's next flush, then travels.
      arrivals.push([sentAt + PLAN_DEFAULTS.probeTimeoutMs + random() * PLAN_DEFAULTS.flushMs + 5, prober]);
    }
  }
  arrivals.sort((a, b) => a[0] - b[0]);
  const witnesses = new Set<string>();
  for (const [at, prober] of arrivals) {
    witnesses.add(prober);
    if (witnesses.size >= plan.quorum) return at - failAt;
  }
  return Number.POSITIVE_INFINITY;
}

export default async function health(): Promise<Figure[]> {
  const figures: Figure[] = [];
  const plan = probePlan(N);

  // --- aggregator ingest, in process ---
  {
    const aggregator = new Aggregator({ staleMs: 20_000 });
    aggregator.setNodes(infos);
    const firstRound = Math.floor(Date.now() / plan.intervalMs);
    const rounds = Array.from({ length: 3 }, (_, i) => roundReports(plan, firstRound + i, Date.now()));
    const perRound = rounds[0]!.reduce((sum, r) => sum + r.results.length, 0);
    const start = performance.now();
    for (const reports of rounds) for (const r of reports) aggregator.ingest(r.reporter, r.results);
    const ingestMs = (performance.now() - start) / rounds.length;
    figures.push({ metric: 'probe results per round at 5,000 nodes', value: perRound, unit: 'results' });
    figures.push({ metric: 'aggregator ingest, in process', value: Math.round(perRound / (ingestMs / 1000)), unit: 'results/s' });
    figures.push({ metric: 'aggregator CPU per round (one core, in process)', value: ingestMs / plan.intervalMs * 100, unit: '% of one core' });
    const sweepStart = performance.now();
    aggregator.sweep();
    figures.push({ metric: 'aggregator staleness sweep at 5,000 nodes', value: performance.now() - sweepStart, unit: 'ms' });
  }

  // --- the real service ---
  const etcd = await startEtcd();
  const children: ChildProcess[] = [];
  try {
    const kv = createKvClient({ endpoints: [etcd.endpoint] });
    const keys = keySchema();
    const limit = pLimit(64);
    await Promise.all(infos.map((info) => limit(() => kv.put(keys.node(info.name)).value(encodeSlimString('node', {
      v: SCHEMA_VERSION, name: info.name, labels: {}, addresses: [{ type: 'InternalIP', ip: info.hostIP }], podCIDRs: [], ready: 'True', healthIPs: [info.endpointIP],
    })))));
    await kv.put(keys.synced('nodes')).value(syncedMarkerValue('nodes')); // the operator's "complete" for the nodes
    kv.close();
    const port = await freePort();
    const statusPort = await freePort();
    const address = `127.0.0.1:${port}`;
    // SLUICE_BENCH_CPU_PROF=<dir>: the service writes a CPU profile there when it stops.
    const profile = process.env.SLUICE_BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.SLUICE_BENCH_CPU_PROF}`] : [];
    const service = ownChild(spawn(process.execPath, [...profile, '--import', 'tsx', fileURLToPath(new URL('../src/main.ts', import.meta.url)),
      '--listen', address, '--etcd-endpoints', etcd.endpoint, '--insecure', '--metrics-port', String(statusPort), '--log-level', 'warn'],
    { stdio: ['ignore', 'ignore', 'inherit'] }));
    children.push(service);
    const status = async <T>(path: string) => (await (await fetch(`http://127.0.0.1:${statusPort}${path}`)).json()) as T;
    const reportsTaken = async () => (await status<{ reports: number }>('/stats')).reports;
    const encodesInRequest = async () => (await status<{ encodesInRequest: number }>('/stats')).encodesInRequest;
    const loadedAt = performance.now();
    for (;;) {
      const summary = await status<{ total: number }>('/status').catch(() => undefined);
      if (summary?.total === N) break;
      if (performance.now() - loadedAt > 60_000) throw new Error('the health service did not load 5,000 nodes from etcd in 60 s');
      await sleep(100);
    }
    const cpuSeconds = (pid: number) => processUsage(pid)?.cpuSeconds ?? Number.NaN;
    const cpuMeter = () => {
      const cpu0 = cpuSeconds(service.pid!);
      const t0 = performance.now();
      return () => ((cpuSeconds(service.pid!) - cpu0) / ((performance.now() - t0) / 1000)) * 100;
    };

    const client = createHealthClient(address, { deadlineMs: 30_000 });
    const queries = ownChild(spawn(process.execPath, ['--import', 'tsx', fileURLToPath(new URL('./query-load.ts', import.meta.url)), JSON.stringify({ address })],
      { stdio: ['pipe', 'pipe', 'inherit'] }));
    children.push(queries);
    const answers: Array<(r: { samples: number[]; size: number }) => void> = [];
    let pending = '';
    queries.stdout!.on('data', (chunk: Buffer) => {
      pending += chunk.toString();
      for (let nl = pending.indexOf('\n'); nl >= 0; nl = pending.indexOf('\n')) {
        answers.shift()?.(JSON.parse(pending.slice(0, nl)) as { samples: number[]; size: number });
        pending = pending.slice(nl + 1);
      }
    });
    const ask = (command: string) => new Promise<{ samples: number[]; size: number }>((resolve) => {
      answers.push(resolve);
      queries.stdin!.write(`${command}\n`);
    });
    /** GetClusterHealth every 100 ms (each returns all 5,000 nodes) until the returned stop() resolves with the latencies. */
    const queryMeanwhile = () => {
      queries.stdin!.write('start\n');
      return async () => (await ask('stop')).samples;
    };
    /** The service's event-loop delay since the last call (prom-client resets its histogram at every scrape). */
    const loopDelay = async () => {
      const text = await (await fetch(`http://127.0.0.1:${statusPort}/metrics`)).text();
      const value = (name: string) => Number(new RegExp(`^nodejs_eventloop_lag_${name}_seconds (\\S+)$`, 'm').exec(text)?.[1]) * 1000;
      return { p99: value('p99'), max: value('max') };
    };

    // The agents' side runs in another process (the second core), as it would on other machines: 5,000 open streams,
    // a warm-up round, a round as fast as it goes, then a round spread over the round length with GetClusterHealth
    // called meanwhile.
    const load = ownChild(spawn(process.execPath, ['--import', 'tsx', fileURLToPath(new URL('./report-load.ts', import.meta.url)),
      JSON.stringify({ address, round: Math.floor(Date.now() / plan.intervalMs) + 1, paces: [0, 0, ...Array<number>(PACED_ROUNDS).fill(plan.intervalMs)] })], { stdio: ['pipe', 'pipe', 'inherit'] }));
    children.push(load);
    const lines: string[] = [];
    load.stdout!.on('data', (chunk: Buffer) => lines.push(...chunk.toString().split('\n').filter(Boolean)));
    const exited = new Promise<number | null>((resolve) => load.once('close', resolve));
    /** Starts round i in the load process and resolves with the ms until the service has taken all its batches. */
    const runRound = async (i: number) => {
      const target = (await reportsTaken()) + N;
      load.stdin!.write('go\n');
      const asked = performance.now();
      while (!lines.includes(`start ${i}`)) {
        if (performance.now() - asked > 60_000) throw new Error(`the report load did not start round ${i}`);
        await sleep(1);
      }
      const began = performance.now();
      for (;;) {
        const taken = await reportsTaken();
        if (taken >= target) break;
        if (performance.now() - began > 60_000) throw new Error(`round ${i}: the service took ${taken - target + N} of ${N} batches in 60 s`);
        await sleep(20);
      }
      return performance.now() - began;
    };
    await runRound(0);

    // Idle: the view of 5,000 nodes is filled (one round), nothing arrives.
    await sleep(500);
    await loopDelay();
    const idle = await ask('burst 200');
    const idleLoop = await loopDelay();
    figures.push({ metric: 'GetClusterHealth response size at 5,000 nodes', value: idle.size / 1024, unit: 'KiB' });
    figures.push({ metric: 'GetClusterHealth p50 at 5,000 nodes (idle)', value: percentile(idle.samples, 50), unit: 'ms' });
    figures.push({ metric: 'GetClusterHealth p99 at 5,000 nodes (idle)', value: percentile(idle.samples, 99), unit: 'ms' });
    figures.push({ metric: '  service event-loop delay p99 / max meanwhile', value: idleLoop.p99, unit: `ms / ${idleLoop.max.toFixed(1)} ms` });
    const idleTyped = await timeCalls(50, () => client.getClusterHealth());
    figures.push({ metric: '  … with decoding and validation in the typed client, p50', value: percentile(idleTyped, 50), unit: 'ms' });
    figures.push({ metric: '  … with decoding and validation in the typed client, p99', value: percentile(idleTyped, 99), unit: 'ms' });
    const summaryOnly = await timeCalls(200, () => client.getClusterHealth({ summaryOnly: true }));
    figures.push({ metric: 'GetClusterHealth summary only p99 (typed client)', value: percentile(summaryOnly, 99), unit: 'ms' });

    const burstMs = await runRound(1);
    figures.push({ metric: 'one round of 5,000 batches on open ReportProbes streams', value: burstMs, unit: 'ms' });
    figures.push({ metric: 'ReportProbes throughput (52 results per batch)', value: Math.round(N / (burstMs / 1000)), unit: 'batches/s' });
    figures.push({ metric: 'needed at 5,000 nodes (one batch per node per round)', value: Math.round(N / (plan.intervalMs / 1000)), unit: 'batches/s' });

    const cpu = cpuMeter();
    await loopDelay();
    const encodes0 = await encodesInRequest();
    const stopQuerying = queryMeanwhile();
    let pacedMs = 0;
    for (let r = 0; r < PACED_ROUNDS; r++) pacedMs = Math.max(pacedMs, await runRound(2 + r));
    const loaded = await stopQuerying();
    const pacedLoop = await loopDelay();
    figures.push({ metric: `${PACED_ROUNDS} rounds paced over their length (3.47 s), slowest taken in`, value: pacedMs, unit: 'ms' });
    figures.push({ metric: 'service CPU during the paced rounds', value: cpu(), unit: '% of one core' });
    figures.push({ metric: 'GetClusterHealth p50 under the 5,000-node report load', value: percentile(loaded, 50), unit: 'ms' });
    figures.push({ metric: 'GetClusterHealth p99 under the 5,000-node report load', value: percentile(loaded, 99), unit: 'ms' });
    figures.push({ metric: '  (calls measured during the paced rounds)', value: loaded.length, unit: 'calls' });
    figures.push({ metric: '  of which waited for a full encode', value: (await encodesInRequest()) - encodes0, unit: 'calls' });
    figures.push({ metric: '  service event-loop delay p99 / max meanwhile', value: pacedLoop.p99, unit: `ms / ${pacedLoop.max.toFixed(1)} ms` });
    load.stdin!.write('end\n');
    await exited;

    // Detection through the real service: the scale harness's health simulation, 5,000 probers flushing every second
    // (~5,000 batches/s of ~15 results), one node dying half-way; GetClusterHealth is called meanwhile.
    const simMs = 24_000;
    const victim = names[Math.floor(N / 3)]!;
    const sim = ownChild(spawn(process.execPath, [...profile, '--import', 'tsx', fileURLToPath(new URL('../../../test/scale/src/health-sim.ts', import.meta.url)),
      JSON.stringify({ address, nodes: names, failAfterMs: simMs / 2, durationMs: simMs, victim })], { stdio: ['ignore', 'pipe', 'inherit'] }));
    children.push(sim);
    let simOut = '';
    sim.stdout!.on('data', (chunk: Buffer) => (simOut += chunk.toString()));
    const simExited = new Promise<void>((resolve) => sim.once('close', () => resolve()));
    const simCpu = cpuMeter();
    await loopDelay();
    // The simulation opens its 5,000 streams at once (as after a restart of the service): the service sets them up
    // in a few long turns. GetClusterHealth is measured in the steady state after that.
    await sleep(SIM_WARMUP_MS);
    const warmupLoop = await loopDelay();
    const simEncodes0 = await encodesInRequest();
    const stopSimQuerying = queryMeanwhile();
    await Promise.race([simExited, sleep(simMs + 60_000)]);
    const duringSim = await stopSimQuerying();
    const serviceCpu = simCpu();
    const simLoop = await loopDelay();
    const result = JSON.parse(simOut.trim().split('\n').at(-1) ?? '{}') as {
      detectionMs?: number | null; documentedDetectionMs?: number; cpuPercent?: number; probesPerNodePerSecondMean?: number; deliveredShare?: number; sendErrors?: number;
    };
    figures.push({ metric: 'detection at 5,000 nodes through the real service', value: result.detectionMs == null ? Number.NaN : result.detectionMs / 1000, unit: result.detectionMs == null ? 's (NOT DETECTED)' : 's' });
    figures.push({ metric: '  documented detection bound at 5,000 nodes', value: (result.documentedDetectionMs ?? Number.NaN) / 1000, unit: 's' });
    figures.push({ metric: '  probe results delivered per node (mean)', value: result.probesPerNodePerSecondMean ?? Number.NaN, unit: 'results/s' });
    figures.push({ metric: '  share of queued results delivered', value: (result.deliveredShare ?? Number.NaN) * 100, unit: '%' });
    figures.push({ metric: '  service CPU during the simulation', value: serviceCpu, unit: '% of one core' });
    figures.push({ metric: '  simulator CPU (the 5,000 probers, one process)', value: result.cpuPercent ?? Number.NaN, unit: '% of one core' });
    figures.push({ metric: '  service event-loop delay max while 5,000 streams open', value: warmupLoop.max, unit: `ms (first ${SIM_WARMUP_MS / 1000} s)` });
    figures.push({ metric: '  GetClusterHealth p50 during the simulation', value: percentile(duringSim, 50), unit: 'ms' });
    figures.push({ metric: '  GetClusterHealth p99 during the simulation', value: percentile(duringSim, 99), unit: 'ms' });
    figures.push({ metric: '  calls during the simulation / of which waited for a full encode', value: duringSim.length, unit: `calls / ${(await encodesInRequest()) - simEncodes0}` });
    figures.push({ metric: '  service event-loop delay p99 / max meanwhile', value: simLoop.p99, unit: `ms / ${simLoop.max.toFixed(1)} ms` });
    queries.stdin!.write('exit\n');
    client.close();
  } finally {
    for (const child of children.reverse()) await stopChild(child, { graceMs: 2000 });
    await etcd.stop();
  }

  // --- the algorithm against n ---
  for (const n of [10, 100, 1000, 5000]) {
    const p = probePlan(n);
    const simNames = names.slice(0, n);
    const random = seededRandom(n);
    // Probes sent and received per node per second, counted on the real rings over 10 rounds.
    const sent = new Map<string, number>();
    const received = new Map<string, number>();
    for (let r = 0; r < 10; r++) {
      const ring = roundRing(simNames, r);
      for (let i = 0; i < n; i++) {
        for (let j = 1; j <= p.fanout; j++) {
          const target = ring[(i + j) % n]!;
          sent.set(ring[i]!, (sent.get(ring[i]!) ?? 0) + PLAN_DEFAULTS.probesPerPeer);
          received.set(target, (received.get(target) ?? 0) + PLAN_DEFAULTS.probesPerPeer);
        }
      }
    }
    const perSecond = (counts: Map<string, number>) => Math.max(...counts.values()) / ((10 * p.intervalMs) / 1000);
    figures.push({ metric: `n=${n}: probes sent per node (max)`, value: perSecond(sent), unit: 'probes/s' });
    figures.push({ metric: `n=${n}: probes received per node (max)`, value: perSecond(received), unit: 'probes/s' });
    const skew = new Map(simNames.map((name) => [name, (random() - 0.5) * 100]));
    for (const [label, dead] of [
      ['', new Set<string>()],
      [', 1 % of nodes down', new Set(simNames.filter(() => random() < 0.01))],
    ] as const) {
      const trials = n >= 5000 ? 300 : 1000;
      const times = Array.from({ length: trials }, () => simulateDetection(p, n, random, skew, dead, simNames)).sort((a, b) => a - b);
      figures.push({ metric: `n=${n}: detection p50${label}`, value: percentile(times, 50) / 1000, unit: 's' });
      figures.push({ metric: `n=${n}: detection max of ${trials}${label}`, value: times.at(-1)! / 1000, unit: 's' });
    }
    figures.push({ metric: `n=${n}: documented detection bound`, value: p.detectionMs / 1000, unit: 's' });
  }
  return figures;
}
