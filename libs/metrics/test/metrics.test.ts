import { afterEach, describe, expect, it } from 'vitest';
import { Counter, createRegistry, metricSum, scrapeMetrics, startStatusServer, type StatusServer } from '../src/index.ts';

let server: StatusServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

describe('startStatusServer', () => {
  it('serves metrics, health, readiness and extra JSON routes', async () => {
    const registry = createRegistry({ labels: { node: 'n1' } });
    const writes = new Counter({ name: 'sluice_test_writes_total', help: 'writes', registers: [registry] });
    writes.inc(3);
    let ready = false;
    server = await startStatusServer({ registry, ready: () => ready, routes: { '/status': () => ({ synced: ready }) } });

    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    expect(metrics).toContain('sluice_test_writes_total{node="n1"} 3');
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
    expect((await fetch(`${server.url}/readyz`)).status).toBe(503);
    ready = true;
    expect((await fetch(`${server.url}/readyz`)).status).toBe(200);
    expect(await (await fetch(`${server.url}/status`)).json()).toEqual({ synced: true });
    expect((await fetch(`${server.url}/nope`)).status).toBe(404);
  });

  it('binds the host it is given, a routable one too, and says where it listens', async () => {
    server = await startStatusServer({ registry: createRegistry(), host: '0.0.0.0' });
    expect((server.server.address() as { address: string }).address).toBe('0.0.0.0');
    expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
  });
});

describe('createRegistry', () => {
  it("exports Node's default metrics under their standard names", async () => {
    const text = await createRegistry({ defaultMetrics: true }).metrics();
    for (const name of ['process_cpu_seconds_total', 'process_resident_memory_bytes', 'nodejs_heap_size_used_bytes', 'nodejs_eventloop_lag_seconds']) {
      expect(text).toMatch(new RegExp(`^# TYPE ${name} `, 'm'));
    }
    expect(text).not.toMatch(/^# TYPE sluice_(process|nodejs)_/m);
    // Only counters end in _total.
    for (const m of text.matchAll(/^# TYPE (\S+_total) (\S+)$/gm)) expect(m[2], m[1]).toBe('counter');
  });
});

describe('metricSum and scrapeMetrics', () => {
  it('sums the samples of one metric whose labels include the given pairs, from a live /metrics', async () => {
    const registry = createRegistry();
    const events = new Counter({ name: 'demo_events_total', help: 'events', labelNames: ['kind', 'node'], registers: [registry] });
    new Counter({ name: 'demo_events_total_other', help: 'a longer name with the same start', registers: [registry] }).inc(100);
    events.inc({ kind: 'Pod', node: 'a' }, 2);
    events.inc({ kind: 'Pod', node: 'b' }, 3);
    events.inc({ kind: 'Node', node: 'a' }, 7);
    server = await startStatusServer({ port: 0, registry });
    const url = `${server.url}/metrics`;
    const text = await scrapeMetrics(url);
    expect(text).toBeDefined();
    expect(metricSum(text!, 'demo_events_total')).toBe(12);
    expect(metricSum(text!, 'demo_events_total', { kind: 'Pod' })).toBe(5);
    expect(metricSum(text!, 'demo_events_total', { kind: 'Pod', node: 'b' })).toBe(3);
    expect(metricSum(text!, 'demo_events_total', { kind: 'Po' })).toBe(0);
    expect(metricSum(text!, 'demo_missing_total')).toBe(0);
    await server.close();
    server = undefined;
    expect(await scrapeMetrics(url, 1_000)).toBeUndefined();
  });
});
