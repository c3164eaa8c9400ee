/**
 * The operator's ingestion cost: node heartbeats and pod churn from a kube-sim process, into a real etcd.
 * The operator runs in this process, so its CPU time is this process's; kube-sim runs apart so it does not share it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { startEtcd } from '@sluice/etcd-runner';
import { createKvClient, keySchema } from '@sluice/kvstore';
import { createLogger } from '@sluice/log';
import { createRegistry, type Registry } from '@sluice/metrics';
import type { Figure } from '../../../bench/run.ts';
import { loadKubeConfig } from '../src/kube-client.ts';
import { Operator } from '../src/operator.ts';
import { trackApiTraffic } from '../src/traffic.ts';

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

async function sum(registry: Registry, name: string, labels: Record<string, string> = {}): Promise<number> {
  const metric = (await registry.getMetricsAsJSON()).find((m) => m.name === name);
  const values = (metric?.values ?? []) as { value: number; labels: Record<string, string | number> }[];
  return values.filter((v) => Object.entries(labels).every(([k, l]) => String(v.labels[k]) === l)).reduce((total, v) => total + v.value, 0);
}

interface Sample {
  events: number;
  writes: number;
  deletes: number;
  bytesIn: number;
  cpuMicros: number;
  heap: number;
  at: number;
}

async function phase(name: string, simArgs: string[], eventKind: string, seconds: number): Promise<Figure[]> {
  const etcd = await startEtcd();
  const sim = await startKubeSimProcess(simArgs);
  const client = createKvClient({ endpoints: [etcd.endpoint] });
  const registry = createRegistry();
  const kube = loadKubeConfig({ server: sim.url });
  const traffic = trackApiTraffic(new URL(sim.url), registry);
  const operator = new Operator({ kube, etcd: client, keys: keySchema(), registry, log: createLogger({ component: 'operator', level: 'warn' }) });
  try {
    operator.start();
    await operator.waitUntilSynced(AbortSignal.timeout(600_000));
    const sample = async (): Promise<Sample> => ({
      events: await sum(registry, 'sluice_operator_kube_events_total', { kind: eventKind }),
      writes: await sum(registry, 'sluice_kv_writes_total'),
      deletes: await sum(registry, 'sluice_kv_deletes_total'),
      bytesIn: traffic.bytesIn(),
      cpuMicros: process.cpuUsage().user + process.cpuUsage().system,
      heap: process.memoryUsage().heapUsed,
      at: performance.now(),
    });
    const before = await sample();
    await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
    const after = await sample();
    const events = after.events - before.events;
    const cpuSeconds = (after.cpuMicros - before.cpuMicros) / 1e6;
    const etcdOps = after.writes - before.writes + (after.deletes - before.deletes);
    return [
      { metric: `${name}: events received`, value: events, unit: 'events' },
      { metric: `${name}: events/s received`, value: Math.round(events / ((after.at - before.at) / 1000)), unit: 'events/s' },
      { metric: `${name}: events per CPU-second of the operator (one core)`, value: Math.round(events / cpuSeconds), unit: 'events/s' },
      // Pod churn also moves EndpointSlices: their writes count here, against Pod events only.
      { metric: `${name}: etcd writes+deletes per 1,000 ${eventKind} events`, value: events ? (etcdOps * 1000) / events : 0, unit: 'ops' },
      { metric: `${name}: bytes in from Kubernetes`, value: after.bytesIn - before.bytesIn, unit: 'bytes' },
      { metric: `${name}: bytes in per event`, value: events ? Math.round((after.bytesIn - before.bytesIn) / events) : 0, unit: 'bytes' },
      { metric: `${name}: etcd transactions since the start (initial sync included)`, value: operator.status().writes?.transactions ?? 0, unit: 'txns' },
      { metric: `${name}: heap growth per event`, value: events ? Math.round((after.heap - before.heap) / events) : 0, unit: 'bytes' },
    ];
  } finally {
    await operator.stop();
    traffic.close();
    client.close();
    sim.child.kill('SIGTERM');
    await etcd.stop();
  }
}

export default async function operatorBench(): Promise<Figure[]> {
  // kube-sim itself tops out at a few thousand updates/s per core, so the operator's ceiling on one core is measured as
  // events handled per CPU-second of the operator at a rate kube-sim can sustain: 5,000 nodes every 2.5 s = 2,000/s.
  const heartbeats = await phase('heartbeats', ['--nodes', '5000', '--pods-per-node', '0', '--services', '0', '--heartbeat-interval', '2500ms'], 'Node', 20);
  const churn = await phase('pod churn', ['--nodes', '500', '--pods-per-node', '20', '--services', '20', '--no-heartbeats', '--churn', '200'], 'Pod', 20);
  return [...heartbeats, ...churn];
}
