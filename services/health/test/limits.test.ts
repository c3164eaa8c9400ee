/**
 * What an exposed health port allows: reports only with mutual TLS or when started insecure, a bounded number of
 * watch streams per client and in total, small requests for the methods that need no more, and a removed node
 * announced on the watch stream.
 */
import { afterAll, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import { createHealthClient, type HealthChange, type HealthClient } from '@sluice/health-api';
import { createLogger } from '@sluice/log';
import { Aggregator, startHealthServer, type HealthServer, type NodeInfo } from '../src/index.ts';

const quiet = createLogger({ component: 'test', level: 'silent' });
const nodes: NodeInfo[] = Array.from({ length: 4 }, (_, i) => ({ name: `node-${i}`, hostIP: `10.0.0.${i + 1}`, endpointIP: '' }));
const servers: HealthServer[] = [];
const clients: HealthClient[] = [];
afterAll(async () => {
  for (const c of clients) c.close();
  for (const s of servers) await s.stop(100);
});

async function start(options: { insecure?: boolean; maxWatchers?: number; maxWatchersPerClient?: number } = {}) {
  const aggregator = new Aggregator({ staleMs: 60_000 });
  aggregator.setNodes(nodes);
  const server = await startHealthServer({ aggregator, address: '127.0.0.1:0', logger: quiet, ...options });
  servers.push(server);
  const client = createHealthClient(`127.0.0.1:${server.port}`, { deadlineMs: 3000 });
  clients.push(client);
  return { aggregator, server, client };
}

const report = { reporter: 'node-1', results: [{ target: 'node-2', kind: 'PROBE_KIND_HOST_ICMP' as const, ip: '10.0.0.3', ok: true, rttUs: 5, error: '', timeUnixMs: Date.now() }] };

describe('what the health port allows', () => {
  it('refuses reports without mutual TLS unless started insecure, and serves the view either way', async () => {
    const secure = await start();
    await expect(secure.client.reportProbes(report)).rejects.toMatchObject({ code: grpc.status.UNAUTHENTICATED });
    expect(secure.aggregator.nodeHealth('node-2')?.reachability).toBe('REACHABILITY_UNKNOWN');
    expect((await secure.client.getClusterHealth()).summary.total).toBe(4);
    const open = await start({ insecure: true });
    await expect(open.client.reportProbes(report)).resolves.toEqual({ accepted: 1, ignored: 0 });
    expect(open.aggregator.nodeHealth('node-2')?.reachability).toBe('REACHABILITY_REACHABLE');
  });

  it('caps watch streams per client and in total', async () => {
    const { server, client } = await start({ maxWatchers: 3, maxWatchersPerClient: 2 });
    const controller = new AbortController();
    const errors: unknown[] = [];
    const watch = () => void (async () => {
      for await (const _ of client.watchClusterHealth({}, { signal: controller.signal })) void _;
    })().catch((err: unknown) => errors.push(err));
    watch();
    watch();
    await expect.poll(() => server.stats().watchers).toBe(2);
    watch();
    await expect.poll(() => errors.length).toBe(1);
    expect(errors[0]).toMatchObject({ code: grpc.status.RESOURCE_EXHAUSTED, details: expect.stringContaining('per client') });
    expect(server.stats()).toMatchObject({ watchers: 2, refusedWatchers: 1 });
    controller.abort();
    await expect.poll(() => server.stats().watchers).toBe(0);
  });

  it('refuses oversized requests of the small methods', async () => {
    const { server, client } = await start();
    await expect(client.getNodeHealth('n'.repeat(200))).rejects.toBeDefined();
    const raw = client.grpc as grpc.Client;
    const big = Buffer.concat([Buffer.from([0x0a, 0x80, 0x40]), Buffer.alloc(8192, 0x61)]);
    const answer = await new Promise<grpc.ServiceError | null>((resolve) =>
      raw.makeUnaryRequest('/sluice.health.v1.ClusterHealth/GetNodeHealth', (b: Buffer) => b, (b: Buffer) => b, big, (err) => resolve(err)));
    expect(answer).toMatchObject({ code: grpc.status.RESOURCE_EXHAUSTED });
    expect(server.stats().oversizedRequests).toBe(1);
  });

  it('streams the removal of a node that left the cluster', async () => {
    const { aggregator, client } = await start({ insecure: true });
    const controller = new AbortController();
    const seen: HealthChange[] = [];
    void (async () => {
      for await (const change of client.watchClusterHealth({}, { signal: controller.signal })) seen.push(change);
    })().catch(() => undefined);
    await client.reportProbes(report);
    await expect.poll(() => seen.some((c) => c.node === 'node-2' && c.current === 'REACHABILITY_REACHABLE')).toBe(true);
    aggregator.setNodes(nodes.filter((n) => n.name !== 'node-2'));
    await expect.poll(() => seen.find((c) => c.removed)).toMatchObject({ node: 'node-2', previous: 'REACHABILITY_REACHABLE', current: 'REACHABILITY_UNSPECIFIED', removed: true });
    controller.abort();
  });
});
