import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import { createHealthClient, packageDefinition, type HealthChange, type HealthClient, type ProbeResult } from '@sluice/health-api';
import { createLogger } from '@sluice/log';
import { Aggregator, startHealthServer, type HealthServer, type NodeInfo } from '../src/index.ts';

const N = 3000;
const nodes: NodeInfo[] = Array.from({ length: N }, (_, i) => ({ name: `node-${i}`, hostIP: `10.${i >> 8}.${i & 255}.1`, endpointIP: '' }));
const host = (target: string, ok: boolean): ProbeResult[] => [
  { target, kind: 'PROBE_KIND_HOST_ICMP', ip: '10.0.0.1', ok, rttUs: ok ? 250 : 0, error: ok ? '' : 'Connection timed out', timeUnixMs: Date.now() },
];

const loaded = grpc.loadPackageDefinition(packageDefinition) as unknown as {
  grpc: {
    health: { v1: { Health: grpc.ServiceClientConstructor } };
    reflection: { v1: { ServerReflection: grpc.ServiceClientConstructor } };
  };
};

let aggregator: Aggregator;
let server: HealthServer;
let client: HealthClient;
let raw: grpc.Client & Record<string, (...args: unknown[]) => unknown>;
let address: string;

beforeAll(async () => {
  aggregator = new Aggregator({ staleMs: 60_000 });
  aggregator.setNodes(nodes);
  server = await startHealthServer({ aggregator, address: '127.0.0.1:0', insecure: true, logger: createLogger({ component: 'test', level: 'silent' }) });
  address = `127.0.0.1:${server.port}`;
  client = createHealthClient(address);
  raw = client.grpc as typeof raw;
});
afterAll(async () => {
  client?.close();
  await server?.stop();
});

function rawCall(method: string, request: unknown, deadline = Date.now() + 5000): Promise<unknown> {
  return new Promise((resolve, reject) =>
    raw[method]!(request, new grpc.Metadata(), { deadline }, (err: grpc.ServiceError | null, value: unknown) => (err ? reject(err) : resolve(value))),
  );
}

/** ReportProbes on a raw stream, bypassing the typed client's own validation. */
function rawReport(batches: unknown[]): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const stream = (raw as unknown as { ReportProbes(m: grpc.Metadata, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null, v?: unknown) => void): grpc.ClientWritableStream<unknown> })
      .ReportProbes(new grpc.Metadata(), { deadline: Date.now() + 5000 }, (err, value) => (err ? reject(err) : resolve(value)));
    for (const batch of batches) stream.write(batch);
    stream.end();
  });
}

describe('health gRPC service', () => {
  it('answers grpc.health.v1/Check with NOT_SERVING until the node list is loaded, then SERVING', async () => {
    const health = new loaded.grpc.health.v1.Health(address, grpc.credentials.createInsecure());
    const check = (service: string) =>
      new Promise<unknown>((resolve, reject) =>
        (health as unknown as Record<string, (r: unknown, cb: (e: Error | null, v: unknown) => void) => void>).Check!({ service }, (e, v) => (e ? reject(e) : resolve(v))),
      );
    // Nobody said the node list is loaded yet: the whole server ('') and the service are not serving.
    expect(await check('')).toEqual({ status: 'NOT_SERVING' });
    expect(await check('sluice.health.v1.ClusterHealth')).toEqual({ status: 'NOT_SERVING' });
    server.setServing(true);
    expect(await check('')).toEqual({ status: 'SERVING' });
    expect(await check('sluice.health.v1.ClusterHealth')).toEqual({ status: 'SERVING' });
    server.setServing(false);
    expect(await check('')).toEqual({ status: 'NOT_SERVING' });
    expect(await check('sluice.health.v1.ClusterHealth')).toEqual({ status: 'NOT_SERVING' });
    server.setServing(true);
    health.close();
  });

  it('lists every service through reflection', async () => {
    const reflection = new loaded.grpc.reflection.v1.ServerReflection(address, grpc.credentials.createInsecure());
    const call = (reflection as unknown as { ServerReflectionInfo(): grpc.ClientDuplexStream<unknown, { listServicesResponse?: { service: { name: string }[] } }> }).ServerReflectionInfo();
    const response = new Promise<string[]>((resolve, reject) => {
      call.on('data', (message) => resolve((message.listServicesResponse?.service ?? []).map((s: { name: string }) => s.name)));
      call.on('error', reject);
    });
    call.write({ listServices: '*' });
    const services = await response;
    call.end();
    reflection.close();
    expect(services).toEqual(expect.arrayContaining(['sluice.health.v1.ClusterHealth', 'grpc.health.v1.Health', 'grpc.reflection.v1.ServerReflection']));
  });

  it('serves the cluster view, one node, and the summary alone', async () => {
    await client.reportProbes({ reporter: 'node-1', results: host('node-2', true) });
    const cluster = await client.getClusterHealth();
    expect(cluster.nodes).toHaveLength(N);
    expect(cluster.summary).toMatchObject({ total: N, reachable: 1 });
    expect((await client.getClusterHealth({ summaryOnly: true })).nodes).toEqual([]);
    expect(await client.getNodeHealth('node-2')).toMatchObject({ name: 'node-2', reachability: 'REACHABILITY_REACHABLE', host: { ip: nodes[2]!.hostIP } });
  });

  it('answers INVALID_ARGUMENT to bad requests and NOT_FOUND to unknown nodes', async () => {
    await expect(rawCall('GetNodeHealth', { node: '' })).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    await expect(rawCall('GetNodeHealth', { node: 'no-such-node' })).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });
    await expect(rawReport([{ reporter: 'node-1', results: [{ ...host('node-2', true)[0], kind: 'PROBE_KIND_UNSPECIFIED' }] }])).rejects.toMatchObject({
      code: grpc.status.INVALID_ARGUMENT,
      details: expect.stringContaining('results.0.kind'),
    });
    await expect(rawReport([{ reporter: 'node-1', results: host('node-2', true) }, { reporter: '', results: [] }])).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    await expect(client.getNodeHealth('no-such-node')).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });
  });

  it('takes many batches on one ReportProbes stream and answers the totals when it ends', async () => {
    const stream = client.openReportStream();
    await stream.send({ reporter: 'node-7', results: host('node-8', true) });
    await stream.send({ reporter: 'node-7', results: [...host('node-9', true), ...host('no-such-node', true)] });
    expect(stream.open).toBe(true);
    expect(await stream.end()).toEqual({ accepted: 2, ignored: 1 });
    expect(stream.open).toBe(false);
    expect((await client.getNodeHealth('node-9')).reachability).toBe('REACHABILITY_REACHABLE');
  });

  it('honours deadlines on unary calls and on the watch stream', async () => {
    await expect(rawCall('GetClusterHealth', {}, Date.now() - 1)).rejects.toMatchObject({ code: grpc.status.DEADLINE_EXCEEDED });
    const stream = (raw as unknown as { WatchClusterHealth(r: unknown, m: grpc.Metadata, o: grpc.CallOptions): grpc.ClientReadableStream<unknown> })
      .WatchClusterHealth({ sendInitial: false }, new grpc.Metadata(), { deadline: Date.now() + 300 });
    const ended = new Promise<grpc.ServiceError>((resolve) => stream.on('error', resolve));
    stream.on('data', () => {});
    await expect.poll(() => server.stats().watchers).toBe(1);
    expect((await ended).code).toBe(grpc.status.DEADLINE_EXCEEDED);
    await expect.poll(() => server.stats().watchers).toBe(0);
  });

  it('streams changes and stops watching when the client cancels', async () => {
    const controller = new AbortController();
    const seen: HealthChange[] = [];
    const watching = (async () => {
      for await (const change of client.watchClusterHealth({}, { signal: controller.signal })) {
        seen.push(change);
        if (change.node === 'node-5' && change.current === 'REACHABILITY_UNREACHABLE') break;
      }
    })();
    await expect.poll(() => server.stats().watchers).toBe(1);
    await client.reportProbes({ reporter: 'node-1', results: host('node-5', true) });
    for (const reporter of ['node-1', 'node-2', 'node-3']) await client.reportProbes({ reporter, results: host('node-5', false) });
    await watching;
    expect(seen.filter((c) => c.node === 'node-5').map((c) => c.current)).toEqual([
      'REACHABILITY_REACHABLE',
      'REACHABILITY_SUSPECT',
      'REACHABILITY_UNREACHABLE',
    ]);
    await expect.poll(() => server.stats().watchers).toBe(0);
  });

  it('waits for drain when a slow client stops reading, with at most one queued change per node', async () => {
    const stream = (raw as unknown as { WatchClusterHealth(r: unknown): grpc.ClientReadableStream<HealthChange> }).WatchClusterHealth({ sendInitial: true });
    stream.on('error', () => {}); // the CANCELLED at the end
    stream.pause();
    await expect.poll(() => server.stats().watchers).toBe(1);
    const waitsBefore = server.stats().backpressureWaits;
    // Flap every node a few times while the client reads nothing.
    for (let round = 0; round < 4; round++) {
      for (let i = 0; i < N; i += 100) {
        const batch = nodes.slice(i, i + 100).flatMap((n) => host(n.name, round % 2 === 1));
        for (const reporter of ['node-0', 'node-1', 'node-2']) aggregator.ingest(reporter, batch.filter((r) => r.target !== reporter));
      }
    }
    await expect.poll(() => server.stats().backpressureWaits).toBeGreaterThan(waitsBefore);
    expect(server.stats().maxPending).toBeLessThanOrEqual(N);
    // Once the client reads again, it converges on the aggregator's current state for every node.
    const last = new Map<string, string>();
    stream.on('data', (change: HealthChange) => last.set(change.node, change.current));
    stream.resume();
    const expected = new Map(aggregator.clusterHealth().nodes.map((n) => [n.name, n.reachability]));
    await expect.poll(() => [...expected].every(([name, r]) => last.get(name) === r), { timeout: 30_000 }).toBe(true);
    stream.cancel();
    await expect.poll(() => server.stats().watchers).toBe(0);
  });
});
