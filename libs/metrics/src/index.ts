import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Registry, collectDefaultMetrics } from 'prom-client';

export { Counter, Gauge, Histogram, Registry } from 'prom-client';

const NON_COUNTER_TOTALS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

/**
 * A registry per process (or per simulated agent), with Node's default metrics when asked, under their standard
 * names (process_cpu_seconds_total, nodejs_heap_size_used_bytes, ...) so that the usual dashboards and alerts on
 * Node processes work; the `job` label tells the components apart.
 */
export function createRegistry(options: { defaultMetrics?: boolean; labels?: Record<string, string> } = {}): Registry {
  const registry = new Registry();
  if (options.labels) registry.setDefaultLabels(options.labels);
  if (options.defaultMetrics) {
    collectDefaultMetrics({ register: registry });
    // prom-client's gauges named *_total break the convention that only counters end in _total (promtool rejects
    // them); nodejs_active_handles / _requests / _resources carry the same counts, by type.
    for (const name of NON_COUNTER_TOTALS) registry.removeSingleMetric(name);
  }
  return registry;
}

/** Latency buckets in seconds from 100 µs to 10 s: etcd transactions and BPF map batches both land in this range. */
export const LATENCY_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export interface StatusServerOptions {
  registry: Registry;
  host?: string;
  port?: number;
  /** Liveness: the process is not wedged. */
  healthy?: () => boolean;
  /** Readiness: the component has finished its initial sync and can serve. */
  ready?: () => boolean;
  /** Extra JSON routes, e.g. an agent's /status. */
  routes?: Record<string, () => unknown | Promise<unknown>>;
}

export interface StatusServer {
  server: Server;
  url: string;
  close(): Promise<void>;
}

/** Serves /metrics, /healthz, /readyz and any extra JSON routes on one small HTTP listener. */
export async function startStatusServer(options: StatusServerOptions): Promise<StatusServer> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    const reply = (code: number, type: string, body: string) => {
      res.writeHead(code, { 'content-type': type });
      res.end(body);
    };
    void (async () => {
      try {
        if (path === '/metrics') return reply(200, options.registry.contentType, await options.registry.metrics());
        if (path === '/healthz') {
          const ok = options.healthy?.() ?? true;
          return reply(ok ? 200 : 503, 'text/plain', ok ? 'ok\n' : 'unhealthy\n');
        }
        if (path === '/readyz') {
          const ok = options.ready?.() ?? true;
          return reply(ok ? 200 : 503, 'text/plain', ok ? 'ok\n' : 'not ready\n');
        }
        const route = options.routes?.[path];
        if (route) return reply(200, 'application/json', JSON.stringify(await route()));
        return reply(404, 'text/plain', 'not found\n');
      } catch (err) {
        return reply(500, 'text/plain', `${(err as Error).message}\n`);
      }
    })();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => resolve());
  });
  const address = server.address() as AddressInfo;
  // A wildcard listener (0.0.0.0, ::) is reached on the loopback from this host; an IPv6 address needs brackets.
  const host = address.address === '0.0.0.0' ? '127.0.0.1' : address.address === '::' ? '::1' : address.address;
  return {
    server,
    url: `http://${host.includes(':') ? `[${host}]` : host}:${address.port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** Another process's /metrics as text; undefined while it does not answer. */
export async function scrapeMetrics(url: string, timeoutMs = 5_000): Promise<string | undefined> {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    return response.ok ? await response.text() : undefined;
  } catch {
    return undefined;
  }
}

/** The sum of a metric's samples in Prometheus text whose labels include every given pair (0 when it has none). */
export function metricSum(text: string, name: string, labels: Record<string, string> = {}): number {
  const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name) || (line[name.length] !== '{' && line[name.length] !== ' ')) continue;
    const labelText = line[name.length] === '{' ? line.slice(name.length + 1, line.indexOf('}')) : '';
    if (!wanted.every((pair) => labelText.split(',').includes(pair))) continue;
    const value = Number(line.slice(line.lastIndexOf(' ') + 1));
    if (Number.isFinite(value)) sum += value;
  }
  return sum;
}
