import { afterEach, describe, expect, it } from 'vitest';
import { Counter, createRegistry, startStatusServer, type StatusServer } from '../src/index.ts';

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
});
