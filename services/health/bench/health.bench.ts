/**
 * The health service at 5,000 nodes:
 * - the aggregator ingesting one probing round of 5,000 nodes (in process, and through gRPC ReportProbes);
 * - GetClusterHealth latency at 5,000 nodes (p50/p99), idle and while reports arrive;
 * - the probing algorithm simulated against n: probes per node per second, and the time from a node failing to the
 *   aggregator's quorum of failures (the detection time), with clock skew, the flush delay and 1 % of nodes down.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Figure } from '../../../bench/run.ts';
import { N, names, roundReports } from './sim.ts';
import { createHealthClient } from '@sluice/health-api';
import { createLogger } from '@sluice/log';
import { PLAN_DEFAULTS, probePlan, roundRing, type ProbePlan } from '@sluice/prober';
import { seededRandom } from '@sluice/backoff';
import * as grpc from '@grpc/grpc-js';
import { Aggregator, startHealthServer, type NodeInfo } from '../src/index.ts';

const infos: NodeInfo[] = names.map((name, i) => ({ name, hostIP: `10.${(i >> 8) & 255}.${i & 255}.1`, endpointIP: `10.${128 + ((i >> 8) & 127)}.${i & 255}.2` }));

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
  const quiet = createLogger({ component: 'bench', level: 'silent' });

  // --- aggregator ingest, in process ---
  const aggregator = new Aggregator({ staleMs: 20_000 });
  aggregator.setNodes(infos);
  let round = Math.floor(Date.now() / plan.intervalMs);
  const firstRound = round;
  const rounds = Array.from({ length: 3 }, (_, i) => roundReports(plan, firstRound + i, Date.now()));
  round += 3;
  const perRound = rounds[0]!.reduce((sum, r) => sum + r.results.length, 0);
  let start = performance.now();
  for (const reports of rounds) for (const r of reports) aggregator.ingest(r.reporter, r.results);
  const ingestMs = (performance.now() - start) / rounds.length;
  figures.push({ metric: 'probe results per round at 5,000 nodes', value: perRound, unit: 'results' });
  figures.push({ metric: 'aggregator ingest, in process', value: Math.round(perRound / (ingestMs / 1000)), unit: 'results/s' });
  figures.push({ metric: 'aggregator CPU per round (one core, in process)', value: ingestMs / plan.intervalMs * 100, unit: '% of one core' });
  start = performance.now();
  aggregator.sweep();
  figures.push({ metric: 'aggregator staleness sweep at 5,000 nodes', value: performance.now() - start, unit: 'ms' });

  // --- through gRPC ---
  const server = await startHealthServer({ aggregator, address: '127.0.0.1:0', logger: quiet });
  const client = createHealthClient(`127.0.0.1:${server.port}`, { deadlineMs: 30_000 });
  const raw = client.grpc as unknown as Record<string, (r: unknown, m: grpc.Metadata, o: grpc.CallOptions, cb: (e: Error | null, v?: unknown) => void) => void>;
  const rawCall = (method: string, request: unknown) =>
    new Promise<unknown>((resolve, reject) => raw[method]!(request, new grpc.Metadata(), { deadline: Date.now() + 30_000 }, (e, v) => (e ? reject(e) : resolve(v))));

  // Server latency: a client that keeps the answer as bytes (no decoding on our side of the wire).
  const bytesCall = () =>
    new Promise<Buffer>((resolve, reject) =>
      client.grpc.makeUnaryRequest<Buffer, Buffer>(
        '/sluice.health.v1.ClusterHealth/GetClusterHealth',
        (b) => b,
        (b) => b,
        Buffer.alloc(0),
        new grpc.Metadata(),
        { deadline: Date.now() + 30_000 },
        (e, v) => (e ? reject(e) : resolve(v!)),
      ),
    );
  const idleBytes = await timeCalls(200, bytesCall);
  figures.push({ metric: 'GetClusterHealth response size at 5,000 nodes', value: (await bytesCall()).length / 1024, unit: 'KiB' });
  figures.push({ metric: 'GetClusterHealth p50 at 5,000 nodes (idle)', value: percentile(idleBytes, 50), unit: 'ms' });
  figures.push({ metric: 'GetClusterHealth p99 at 5,000 nodes (idle)', value: percentile(idleBytes, 99), unit: 'ms' });
  const idleTyped = await timeCalls(50, () => client.getClusterHealth());
  figures.push({ metric: '  … with decoding and validation in the typed client, p50', value: percentile(idleTyped, 50), unit: 'ms' });
  figures.push({ metric: '  … with decoding and validation in the typed client, p99', value: percentile(idleTyped, 99), unit: 'ms' });
  const summaryOnly = await timeCalls(200, () => client.getClusterHealth({ summaryOnly: true }));
  figures.push({ metric: 'GetClusterHealth summary only p99 (typed client)', value: percentile(summaryOnly, 99), unit: 'ms' });

  // The agents' side runs in another process (the second core), as it would on other machines: 5,000 open streams,
  // a warm-up round, a round as fast as it goes, then a round spread over the round length with GetClusterHealth
  // called meanwhile (10 per second: each returns all 5,000 nodes).
  const load = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(new URL('./report-load.ts', import.meta.url)),
    JSON.stringify({ address: `127.0.0.1:${server.port}`, round: round + 1, paces: [0, 0, plan.intervalMs] })], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines: string[] = [];
  load.stdout!.on('data', (chunk: Buffer) => lines.push(...chunk.toString().split('\n').filter(Boolean)));
  const exited = new Promise<number | null>((resolve) => load.once('close', resolve));
  /** Starts round i in the load process and resolves with the ms until the server has taken all its batches. */
  const runRound = async (i: number) => {
    const target = server.stats().reports + N;
    load.stdin!.write('go\n');
    const asked = performance.now();
    while (!lines.includes(`start ${i}`)) {
      if (performance.now() - asked > 60_000) throw new Error(`the report load did not start round ${i}`);
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    const began = performance.now();
    while (server.stats().reports < target) {
      if (performance.now() - began > 60_000) throw new Error(`round ${i}: the server took ${server.stats().reports - target + N} of ${N} batches in 60 s`);
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    return performance.now() - began;
  };
  await runRound(0);
  const burstMs = await runRound(1);
  figures.push({ metric: 'one round of 5,000 batches on open ReportProbes streams', value: burstMs, unit: 'ms' });
  figures.push({ metric: 'ReportProbes throughput (52 results per batch)', value: Math.round(N / (burstMs / 1000)), unit: 'batches/s' });
  figures.push({ metric: 'needed at 5,000 nodes (one batch per node per round)', value: Math.round(N / (plan.intervalMs / 1000)), unit: 'batches/s' });

  let reporting = true;
  const loaded: number[] = [];
  const querying = (async () => {
    while (reporting) {
      const t = performance.now();
      await bytesCall();
      loaded.push(performance.now() - t);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  })();
  const pacedMs = await runRound(2);
  reporting = false;
  await querying;
  loaded.sort((a, b) => a - b);
  figures.push({ metric: 'a round paced over its length (3.47 s), taken in', value: pacedMs, unit: 'ms' });
  figures.push({ metric: 'GetClusterHealth p50 under the 5,000-node report load', value: percentile(loaded, 50), unit: 'ms' });
  figures.push({ metric: 'GetClusterHealth p99 under the 5,000-node report load', value: percentile(loaded, 99), unit: 'ms' });
  await exited;
  client.close();
  await server.stop(500);

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
