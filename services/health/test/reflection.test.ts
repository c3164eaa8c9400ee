/** The API read by a client that knows only gRPC reflection and the standard health protocol (no project code). */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '@sluice/log';
import { Aggregator, startHealthServer, type HealthServer } from '../src/index.ts';
import { ReflectionClient } from './fixtures/reflection-client.ts';

let server: HealthServer;
let aggregator: Aggregator;
let client: ReflectionClient;
beforeAll(async () => {
  aggregator = new Aggregator({ staleMs: 60_000 });
  server = await startHealthServer({ aggregator, address: '127.0.0.1:0', insecure: true, logger: createLogger({ component: 'test', level: 'silent' }) });
  client = new ReflectionClient(`127.0.0.1:${server.port}`);
});
afterAll(async () => {
  client?.close();
  await server?.stop(100);
});

describe('an independent client (reflection + raw calls)', () => {
  it('lists the services, reads the cluster view, and follows the standard health service', async () => {
    expect(await client.listServices()).toEqual(['grpc.health.v1.Health', 'grpc.reflection.v1.ServerReflection', 'grpc.reflection.v1alpha.ServerReflection', 'sluice.health.v1.ClusterHealth']);
    expect(await client.check('')).toBe('NOT_SERVING');
    aggregator.setNodes([{ name: 'node-a', hostIP: '10.0.0.1', endpointIP: '', agent: false }, { name: 'node-b', hostIP: '10.0.0.2', endpointIP: '' }]);
    server.setServing(true);
    expect(await client.check('')).toBe('SERVING');
    expect(await client.check('sluice.health.v1.ClusterHealth')).toBe('SERVING');
    // node-a has no agent and its host has answered for 31 s (half this aggregator's staleness window and more).
    aggregator.ingest('node-b', [{ target: 'node-a', kind: 'PROBE_KIND_HOST_ICMP', ok: true, rttUs: 7, error: '', timeUnixMs: Date.now() - 31_000 }]);
    aggregator.ingest('node-b', [{ target: 'node-a', kind: 'PROBE_KIND_HOST_ICMP', ok: true, rttUs: 7, error: '', timeUnixMs: Date.now() }]);
    const view = await client.call('sluice.health.v1.ClusterHealth', 'GetClusterHealth', {});
    expect(view).toMatchObject({
      summary: { total: 2, reachable: 1, agentNotRunning: ['node-a'] },
      nodes: [
        { name: 'node-a', reachability: 'REACHABILITY_REACHABLE', agent: 'AGENT_STATE_NOT_RUNNING', host: { ip: '10.0.0.1', icmp: { ok: true, rttUs: 7, reporter: 'node-b' } } },
        { name: 'node-b', reachability: 'REACHABILITY_UNKNOWN' },
      ],
    });
    expect(await client.call('sluice.health.v1.ClusterHealth', 'GetNodeHealth', { node: 'node-a' })).toMatchObject({ node: { name: 'node-a', agent: 'AGENT_STATE_NOT_RUNNING' } });
  });
});
