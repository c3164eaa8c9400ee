/**
 * kube-sim at scale: 5,000 nodes (heartbeats every 10 s: 500 Node updates/s) and 100,000 pods (20 changes/s), with
 * two node watchers, a pod watcher and an EndpointSlice watcher reading over HTTP. The simulator runs in its own
 * process so that its CPU and memory are measured apart from the watchers'.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { request as httpGet, type IncomingMessage } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Figure } from '../../../bench/run.ts';
import { ownChild, processUsage, stopChild, type ProcessUsage } from '@sluice/process';

const NODES = Number(process.env.KUBE_SIM_BENCH_NODES ?? 5000);
const PODS_PER_NODE = Number(process.env.KUBE_SIM_BENCH_PODS_PER_NODE ?? 20);
const MEASURE_MS = Number(process.env.KUBE_SIM_BENCH_SECONDS ?? 30) * 1000;

const main = fileURLToPath(new URL('../src/main.ts', import.meta.url));

/** The simulator's usage, which it must still be there to give. */
function procStat(pid: number): ProcessUsage {
  const usage = processUsage(pid);
  if (!usage) throw new Error(`kube-sim (pid ${pid}) is gone`);
  return usage;
}

function get(url: string): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => httpGet(url, (res) => resolve(res)).on('error', reject).end());
}

async function json<T>(url: string): Promise<T> {
  const res = await get(url);
  const chunks: Buffer[] = [];
  for await (const c of res) chunks.push(c as Buffer);
  return JSON.parse(Buffer.concat(chunks).toString()) as T;
}

interface Counter { events: number; bytes: number }

function watch(url: string, counter: Counter): () => void {
  const req = httpGet(url, (res) => {
    res.on('data', (chunk: Buffer) => {
      counter.bytes += chunk.length;
      for (let i = chunk.indexOf(10); i >= 0; i = chunk.indexOf(10, i + 1)) counter.events++;
    });
  });
  req.on('error', () => undefined);
  req.end();
  return () => req.destroy();
}

export default async function bench(): Promise<Figure[]> {
  const dir = await mkdtemp(join(tmpdir(), 'kube-sim-bench-'));
  const started = Date.now();
  const child = spawn(process.execPath, ['--max-old-space-size=1536', '--import', 'tsx', main, '--nodes', String(NODES), '--pods-per-node', String(PODS_PER_NODE),
    '--services', '500', '--namespaces', '20', '--churn', '20', '--heartbeat-interval', '10s', '--port', '0',
    '--kubeconfig', join(dir, 'kubeconfig'), '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'inherit'] });
  ownChild(child);
  const stops: (() => void)[] = [];
  try {
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    while (!out.includes('kubeconfig')) {
      if (child.exitCode !== null) throw new Error(`kube-sim exited: ${out}`);
      if (Date.now() - started > 180_000) throw new Error('kube-sim did not start in 3 minutes');
      await new Promise((r) => setTimeout(r, 100));
    }
    const startupS = (Date.now() - started) / 1000;
    const url = /serving (http:\S+)/.exec(out)![1]!;
    const pid = child.pid!;
    const initial = procStat(pid);

    // A paginated relist of every pod, the way a client-go reflector pages (limit 500).
    const listStart = Date.now();
    let pods = 0;
    let token: string | undefined;
    do {
      const page = await json<{ items: unknown[]; metadata: { continue?: string } }>(`${url}/api/v1/pods?limit=500${token ? `&continue=${token}` : ''}`);
      pods += page.items.length;
      token = page.metadata.continue;
    } while (token);
    const listS = (Date.now() - listStart) / 1000;

    const stats0 = await json<{ resourceVersion: number; heartbeats: number; watchEventsSent: number; eventsPublished: number }>(`${url}/kube-sim/stats`);
    const rv = stats0.resourceVersion;
    const counters: Counter[] = [];
    for (const path of ['/api/v1/nodes', '/api/v1/nodes', '/api/v1/pods', '/apis/discovery.k8s.io/v1/endpointslices']) {
      const c = { events: 0, bytes: 0 };
      counters.push(c);
      stops.push(watch(`${url}${path}?watch=1&allowWatchBookmarks=true&resourceVersion=${rv}`, c));
    }
    const cpu0 = procStat(pid);
    const t0 = Date.now();
    await new Promise((r) => setTimeout(r, MEASURE_MS));
    const cpu1 = procStat(pid);
    const seconds = (Date.now() - t0) / 1000;
    const stats1 = await json<{ memory: { heapUsed: number }; heartbeats: number; watchEventsSent: number; eventsPublished: number; droppedWatchers: number; podsCreated: number; podsDeleted: number }>(`${url}/kube-sim/stats`);
    const received = counters.reduce((n, c) => n + c.events, 0);
    const bytes = counters.reduce((n, c) => n + c.bytes, 0);
    return [
      { metric: 'nodes', value: NODES, unit: 'count' },
      { metric: 'pods', value: pods, unit: 'count' },
      { metric: 'startup (build cluster + listen)', value: startupS, unit: 's' },
      { metric: 'RSS after startup', value: Math.round(initial.rssBytes / 2 ** 20), unit: 'MiB' },
      { metric: 'paginated relist of all pods (limit 500)', value: listS, unit: 's' },
      { metric: 'node heartbeats', value: Math.round((stats1.heartbeats - stats0.heartbeats) / seconds), unit: 'updates/s' },
      { metric: 'events published (all types)', value: Math.round((stats1.eventsPublished - stats0.eventsPublished) / seconds), unit: 'events/s' },
      { metric: 'watch events served to 4 watchers', value: Math.round(received / seconds), unit: 'events/s' },
      { metric: 'watch bytes served', value: Math.round(bytes / seconds / 1024 / 1024 * 10) / 10, unit: 'MiB/s' },
      { metric: 'simulator CPU under load', value: Math.round(((cpu1.cpuSeconds - cpu0.cpuSeconds) / seconds) * 100), unit: '% of one core' },
      { metric: 'simulator RSS under load', value: Math.round(cpu1.rssBytes / 2 ** 20), unit: 'MiB' },
      { metric: 'simulator peak RSS', value: Math.round(cpu1.peakRssBytes / 2 ** 20), unit: 'MiB' },
      { metric: 'simulator JS heap used', value: Math.round(stats1.memory.heapUsed / 1024 / 1024), unit: 'MiB' },
      { metric: 'watchers dropped as too slow', value: stats1.droppedWatchers, unit: 'count' },
    ];
  } finally {
    for (const stop of stops) stop();
    await stopChild(child);
    await rm(dir, { recursive: true, force: true });
  }
}
