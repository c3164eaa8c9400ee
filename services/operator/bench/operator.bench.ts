/**
 * The operator's ingestion cost: node heartbeats (both heartbeat modes) and pod churn from a kube-sim process, into a
 * real etcd, and a warm standby's takeover. For the costs the operator runs as deployed, in a process of its own
 * (operator-process.ts), so its CPU time is its own; the takeover runs two operators in this process. On a shared
 * machine the CPU figures move with the load of others.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { startEtcd } from '@sluice/etcd-runner';
import { createKvClient, keySchema } from '@sluice/kvstore';
import { createLogger } from '@sluice/log';
import { createRegistry, metricSum, scrapeMetrics } from '@sluice/metrics';
import type { Figure } from '../../../bench/run.ts';
import { loadKubeConfig } from '../src/kube-client.ts';
import { Operator } from '../src/operator.ts';
import { measureOperatorMemory } from './memory.ts';
import { processUsage } from '@sluice/process';
import { startOperatorProcess, waitUntilSynced } from './operator-process.ts';

const KUBE_SIM = fileURLToPath(new URL('../../kube-sim/src/main.ts', import.meta.url));

async function startKubeSimProcess(args: string[]): Promise<{ url: string; child: ChildProcess }> {
  const child = spawn(process.execPath, ['--max-old-space-size=1536', '--import', 'tsx', KUBE_SIM, '--port', '0', '--kubeconfig', '/dev/null', '--log-level', 'warn', ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const lines = createInterface(child.stdout!);
  const url = await new Promise<string>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`kube-sim exited with ${code}`)));
    lines.on('line', (line) => {
      const match = /serving (http:\/\/\S+)/.exec(line);
      if (match) resolve(match[1]!);
    });
  });
  return { url, child };
}

interface Sample {
  events: number;
  writes: number;
  deletes: number;
  bytesIn: number;
  cpuSeconds: number;
  heap: number;
  heartbeats: number;
  at: number;
}

async function simStats(url: string): Promise<{ heartbeats: number }> {
  return (await (await fetch(`${url}/kube-sim/stats`)).json()) as { heartbeats: number };
}

/**
 * One phase: kube-sim in a process of its own, and the operator as deploy/ runs it (its build, in its own process:
 * operator-process.ts), its CPU read from /proc and its counts from its /metrics.
 */
async function phase(name: string, simArgs: string[], eventKind: string, seconds: number, what: string): Promise<Figure[]> {
  const etcd = await startEtcd();
  const sim = await startKubeSimProcess(simArgs);
  const dir = mkdtempSync(join(tmpdir(), 'sluice-operator-bench-'));
  const operator = await startOperatorProcess({ kubeServer: sim.url, etcdEndpoint: etcd.endpoint, logFile: join(dir, 'operator.log'), logLevel: 'warn' });
  try {
    await waitUntilSynced(operator, 600_000);
    const sample = async (): Promise<Sample> => {
      const text = await scrapeMetrics(operator.metricsUrl);
      if (!text) throw new Error(`the operator did not answer at ${operator.metricsUrl}; see ${operator.logFile}`);
      return {
        events: metricSum(text, 'sluice_operator_kube_events_total', { kind: eventKind }),
        writes: metricSum(text, 'sluice_kv_writes_total'),
        deletes: metricSum(text, 'sluice_kv_deletes_total'),
        bytesIn: metricSum(text, 'sluice_operator_kube_received_bytes_total'),
        cpuSeconds: processUsage(operator.pid)?.cpuSeconds ?? Number.NaN,
        heap: metricSum(text, 'nodejs_heap_size_used_bytes'),
        heartbeats: (await simStats(sim.url)).heartbeats,
        at: performance.now(),
      };
    };
    const before = await sample();
    await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
    const after = await sample();
    const transactions = ((await (await fetch(operator.statusUrl)).json()) as { writes?: { transactions?: number } }).writes?.transactions ?? 0;
    const events = after.events - before.events;
    const beats = after.heartbeats - before.heartbeats;
    const cpu = after.cpuSeconds - before.cpuSeconds;
    const etcdOps = after.writes - before.writes + (after.deletes - before.deletes);
    const figures: Figure[] = [
      { metric: `${name}: ${eventKind} watch events received`, value: events, unit: 'events' },
      { metric: `${name}: ${eventKind} watch events received per second`, value: Math.round(events / ((after.at - before.at) / 1000)), unit: 'events/s' },
      { metric: `${name}: ${eventKind} watch events per CPU-second of the operator (${what})`, value: Math.round(events / cpu), unit: 'events/s' },
      { metric: `${name}: operator CPU, share of one core`, value: Math.round((cpu / ((after.at - before.at) / 1000)) * 1000) / 1000, unit: 'cores' },
      // Pod churn also moves EndpointSlices: their writes count here, against Pod events only.
      { metric: `${name}: etcd writes+deletes per 1,000 ${eventKind} watch events`, value: events ? (etcdOps * 1000) / events : 0, unit: 'ops' },
      { metric: `${name}: bytes received from Kubernetes per ${eventKind} watch event (all kinds' bytes)`, value: events ? Math.round((after.bytesIn - before.bytesIn) / events) : 0, unit: 'bytes' },
      { metric: `${name}: etcd transactions since the start (initial sync included)`, value: transactions, unit: 'txns' },
      { metric: `${name}: operator heap used after the window`, value: after.heap, unit: 'bytes' },
    ];
    if (eventKind === 'Node') {
      figures.push(
        { metric: `${name}: kubelet heartbeats made by kube-sim (Node status writes or Lease renewals)`, value: beats, unit: 'heartbeats' },
        { metric: `${name}: etcd writes+deletes per heartbeat`, value: beats ? etcdOps / beats : 0, unit: 'ops' },
        // The heartbeat path's cost in either mode: in Lease mode the operator does not even see the renewals.
        { metric: `${name}: kubelet heartbeats per CPU-second of the operator`, value: Math.round(beats / cpu), unit: 'heartbeats/s' },
      );
    }
    return figures;
  } finally {
    await operator.stop();
    sim.child.kill('SIGTERM');
    await etcd.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * A warm standby's takeover: two operators follow kube-sim, the leader resigns, and a node label made at that moment
 * is timed until the new leader has written it (takeover → first write), with the lists kube-sim served meanwhile.
 */
async function failover(simArgs: string[], name: string): Promise<Figure[]> {
  const etcd = await startEtcd();
  const sim = await startKubeSimProcess(simArgs);
  const client = createKvClient({ endpoints: [etcd.endpoint] });
  const kube = loadKubeConfig({ server: sim.url });
  const make = (identity: string) => new Operator({ kube, etcd: client, keys: keySchema(), registry: createRegistry(), log: createLogger({ component: 'operator', level: 'warn' }), identity, leaseTtlSeconds: 5 });
  const leader = make('bench-leader');
  const standby = make('bench-standby');
  const keys = keySchema();
  try {
    leader.start();
    await leader.waitUntilSynced(AbortSignal.timeout(600_000));
    standby.start();
    while (!standby.informersSynced) await new Promise((resolve) => setTimeout(resolve, 100));
    const listsBefore = (await (await fetch(`${sim.url}/kube-sim/stats`)).json()) as { requests: Record<string, number> };
    const started = performance.now();
    await leader.stop();
    const resigned = performance.now();
    await fetch(`${sim.url}/api/v1/nodes/node-00001`, { method: 'PATCH', headers: { 'content-type': 'application/merge-patch+json' }, body: JSON.stringify({ metadata: { labels: { 'bench.sluice.io/failover': 'yes' } } }) });
    const key = keys.node('node-00001');
    let firstWrite = 0;
    for (;;) {
      const value = await client.get(key).string();
      if (value?.includes('bench.sluice.io/failover')) {
        firstWrite = performance.now();
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    await standby.waitUntilSynced(AbortSignal.timeout(600_000));
    const synced = performance.now();
    const listsAfter = (await (await fetch(`${sim.url}/kube-sim/stats`)).json()) as { requests: Record<string, number> };
    return [
      { metric: `${name}: leader's resignation (stop) duration`, value: Math.round(resigned - started), unit: 'ms' },
      { metric: `${name}: takeover → first write (resignation done → a change made then is in etcd)`, value: Math.round(firstWrite - resigned), unit: 'ms' },
      { metric: `${name}: takeover → the new term's sync finished (sweep done)`, value: Math.round(synced - resigned), unit: 'ms' },
      { metric: `${name}: lists served by the API server during the takeover`, value: (listsAfter.requests['list 200'] ?? 0) - (listsBefore.requests['list 200'] ?? 0), unit: 'lists' },
    ];
  } finally {
    await standby.stop();
    await leader.stop();
    client.close();
    sim.child.kill('SIGTERM');
    await etcd.stop();
  }
}

export default async function operatorBench(): Promise<Figure[]> {
  // kube-sim itself tops out at a few thousand updates/s per core, so the operator's ceiling on one core is measured as
  // events handled per CPU-second of the operator at a rate kube-sim can sustain: 5,000 nodes every 2.5 s = 2,000/s.
  const nodes = ['--nodes', '5000', '--pods-per-node', '0', '--services', '0', '--heartbeat-interval', '2500ms'];
  const statusMode = await phase('heartbeats, Node status mode', [...nodes, '--heartbeat-mode', 'node-status'], 'Node', 20, 'heartbeats decoded or recognised undecoded');
  // KEP-589: a Lease renewal per heartbeat (the operator watches no Leases) and a Node status write every 10 s here (5 min
  // by default) so that Node events still flow.
  const leaseMode = await phase('heartbeats, Lease mode', [...nodes, '--heartbeat-mode', 'lease', '--node-status-report-interval', '10s'], 'Node', 20, 'Node status writes every 10 s');
  const churnArgs = ['--nodes', '500', '--pods-per-node', '20', '--services', '20', '--no-heartbeats'];
  const churn = await phase('pod churn', [...churnArgs, '--churn', '200'], 'Pod', 20, 'EndpointSlice events and etcd writes included in the CPU');
  // A burst's rate: 2,000 pod events/s, as many as the Node phases get. What a pod event costs falls with the rate (the
  // per-transaction and per-read costs are shared by more events), so both rates are shown.
  const burst = await phase('pod churn at 1,000 pods/s', [...churnArgs, '--churn', '1000'], 'Pod', 20, 'EndpointSlice events and etcd writes included in the CPU');
  // SLUICE_BENCH_FAILOVER_NODES=5000 measures the takeover at 5,000 nodes / 100,000 pods (minutes, GiBs of memory).
  const failoverNodes = Number(process.env.SLUICE_BENCH_FAILOVER_NODES ?? 500);
  const takeover = await failover(
    ['--nodes', String(failoverNodes), '--pods-per-node', '20', '--services', String(Math.max(20, failoverNodes / 50)), '--no-heartbeats'],
    `failover at ${failoverNodes.toLocaleString('en-US')} nodes, ${(failoverNodes * 20).toLocaleString('en-US')} pods`,
  );
  return [...statusMode, ...leaseMode, ...churn, ...burst, ...takeover, ...(await memory())];
}

/**
 * The operator's own process (as deploy/ runs it) syncing a cluster and following pod and EndpointSlice churn: its
 * peak and settled RSS and heap (memory.ts). SLUICE_BENCH_MEMORY_NODES=5000 measures it at 5,000 nodes / 100,000
 * pods / 20,000 services (the scale goal: peak RSS ≤ 400 MiB; ~4 minutes); 500 nodes by default.
 */
async function memory(): Promise<Figure[]> {
  const nodes = Number(process.env.SLUICE_BENCH_MEMORY_NODES ?? 500);
  const pods = nodes * 20;
  const services = nodes * 4;
  const churnSeconds = Number(process.env.SLUICE_BENCH_MEMORY_CHURN_SECONDS ?? 60);
  const r = await measureOperatorMemory({ nodes, podsPerNode: 20, services, churnPerSecond: 20, sliceChurnPerSecond: 10, churnSeconds, settleSeconds: 20 });
  const at = `at ${nodes.toLocaleString('en-US')} nodes / ${pods.toLocaleString('en-US')} pods / ${services.toLocaleString('en-US')} services`;
  return [
    { metric: `operator peak RSS ${at} (initial sync)`, value: r.peakRssSync, unit: 'bytes' },
    { metric: `operator peak RSS ${at} (sync, then ${churnSeconds} s of 20 pods/s and 10 slice changes/s)`, value: r.peakRss, unit: 'bytes' },
    { metric: `operator RSS ${at}, synced`, value: r.rssSynced, unit: 'bytes' },
    { metric: `operator RSS ${at}, settled after the churn`, value: r.rssSettled, unit: 'bytes' },
    { metric: `operator heap used ${at}, synced`, value: r.heapUsedSynced, unit: 'bytes' },
    { metric: `operator heap used ${at}, settled after the churn`, value: r.heapUsedSettled, unit: 'bytes' },
    { metric: `operator external memory (Buffers) ${at}, settled`, value: r.externalSettled, unit: 'bytes' },
    { metric: `operator initial sync ${at}`, value: Math.round(r.syncSeconds * 1000), unit: 'ms' },
    { metric: `operator longest event-loop delay ${at}, initial sync`, value: Math.round(r.loopMaxMsSync), unit: 'ms' },
    { metric: `operator longest event-loop delay ${at}, churn and settling`, value: Math.round(r.loopMaxMsAfter), unit: 'ms' },
  ];
}
