/**
 * What the service does to stay responsive under the report load of 5,000 nodes: sweeps in slices, settling once
 * per batch of reports, and GetClusterHealth answers reused for a bounded time unless a verdict changed.
 */
import { afterAll, describe, expect, it } from 'vitest';
import type { ProbeResult } from '@sluice/health-api';
import { createHealthClient } from '@sluice/health-api';
import { createLogger } from '@sluice/log';
import { Aggregator, startHealthServer, type HealthServer, type NodeInfo } from '../src/index.ts';

const nodes = (n: number): NodeInfo[] => Array.from({ length: n }, (_, i) => ({ name: `node-${i}`, hostIP: `10.0.0.${i + 1}`, endpointIP: '' }));
const host = (target: string, ok: boolean, time: number, rttUs = 300): ProbeResult[] => [
  { target, kind: 'PROBE_KIND_HOST_ICMP', ip: '10.0.0.9', ok, rttUs: ok ? rttUs : 0, error: ok ? '' : 'Connection timed out', timeUnixMs: time },
];

describe('Aggregator under load', () => {
  it('sweeps in slices: each call takes at most max nodes and says how many are left', () => {
    let now = 1_800_000_000_000;
    const aggregator = new Aggregator({ now: () => now, staleMs: 5000 });
    aggregator.setNodes(nodes(10));
    for (let i = 1; i < 10; i++) aggregator.ingest('node-0', host(`node-${i}`, true, now));
    now += 6000;
    expect(aggregator.sweep(4)).toBe(5);
    const unknown = () => nodes(10).filter((n) => aggregator.nodeHealth(n.name)?.reachability === 'REACHABILITY_UNKNOWN').length;
    // node-0 was never probed; 4 of the 9 probed nodes aged out so far.
    expect(unknown()).toBe(1 + 4);
    expect(aggregator.sweep(4)).toBe(1);
    expect(aggregator.sweep(4)).toBe(0);
    expect(unknown()).toBe(10);
  });

  it('settles deferred ingests before any read, and tells listeners once settled', () => {
    const now = 1_800_000_000_000;
    const aggregator = new Aggregator({ now: () => now, staleMs: 5000 });
    aggregator.setNodes(nodes(5));
    const seen: string[] = [];
    aggregator.subscribe((c) => seen.push(`${c.node}:${c.current}`));
    aggregator.ingest('node-0', host('node-1', true, now), false);
    aggregator.ingest('node-2', host('node-1', true, now), false);
    expect(seen).toEqual([]);
    expect(aggregator.nodeHealth('node-1')).toMatchObject({ reachability: 'REACHABILITY_REACHABLE', reporters: 2 });
    expect(seen).toEqual(['node-1:REACHABILITY_REACHABLE']);
  });

  it('counts a reporter once however often it reports, and forgets it when its newest evidence is stale', () => {
    let now = 1_800_000_000_000;
    const aggregator = new Aggregator({ now: () => now, staleMs: 5000 });
    aggregator.setNodes(nodes(5));
    aggregator.ingest('node-0', host('node-1', true, now));
    aggregator.ingest('node-2', host('node-1', true, now));
    now += 3000;
    aggregator.ingest('node-0', host('node-1', true, now));
    expect(aggregator.nodeHealth('node-1')?.reporters).toBe(2);
    now += 2500;
    aggregator.sweep();
    // node-2's only report is 5.5 s old, node-0's newest 2.5 s.
    expect(aggregator.nodeHealth('node-1')).toMatchObject({ reporters: 1, reachability: 'REACHABILITY_REACHABLE' });
  });
});

describe('GetClusterHealth answers under load', () => {
  const servers: HealthServer[] = [];
  afterAll(async () => {
    for (const server of servers) await server.stop(100);
  });

  async function start(maxAgeMs: number) {
    const aggregator = new Aggregator({ staleMs: 60_000 });
    aggregator.setNodes(nodes(6));
    const server = await startHealthServer({ aggregator, address: '127.0.0.1:0', clusterHealthMaxAgeMs: maxAgeMs, insecure: true, logger: createLogger({ component: 'test', level: 'silent' }) });
    servers.push(server);
    const client = createHealthClient(`127.0.0.1:${server.port}`);
    const rtt = async (node: string) => (await client.getClusterHealth()).nodes.find((n) => n.name === node)!.host.icmp.rttUs;
    return { aggregator, client, rtt, server };
  }

  it('serves a verdict change at once, and details at most the max age late', async () => {
    const { aggregator, client, rtt } = await start(400);
    aggregator.ingest('node-0', host('node-1', true, Date.now(), 100));
    expect(await rtt('node-1')).toBe(100);
    aggregator.ingest('node-0', host('node-1', true, Date.now(), 200));
    // Within the max age, with no verdict changed, the answer may be the previous one; it is refreshed in the
    // background and never older than the max age.
    const seen = await rtt('node-1');
    expect([100, 200]).toContain(seen);
    // The newer details arrive without a new report (how soon is the benchmark's business).
    await expect.poll(() => rtt('node-1'), { timeout: 20_000, interval: 50 }).toBe(200);
    for (const reporter of ['node-2', 'node-3', 'node-4']) aggregator.ingest(reporter, host('node-1', false, Date.now()));
    const health = await client.getClusterHealth();
    expect(health.summary.unreachable).toEqual(['node-1']);
    expect(health.nodes.find((n) => n.name === 'node-1')?.reachability).toBe('REACHABILITY_UNREACHABLE');
    client.close();
  });

  it('serves a verdict change by re-encoding only the nodes whose verdict changed', async () => {
    const { aggregator, client, server } = await start(10_000);
    aggregator.ingest('node-0', [...host('node-1', true, Date.now(), 100), ...host('node-2', true, Date.now(), 100)]);
    await client.getClusterHealth();
    const encodes = server.stats().encodesInRequest;
    aggregator.ingest('node-0', host('node-2', true, Date.now(), 999));
    for (const reporter of ['node-3', 'node-4', 'node-5']) aggregator.ingest(reporter, host('node-1', false, Date.now()));
    const health = await client.getClusterHealth();
    const byName = new Map(health.nodes.map((n) => [n.name, n]));
    expect(byName.get('node-1')?.reachability).toBe('REACHABILITY_UNREACHABLE');
    expect(byName.get('node-1')?.failingReporters).toBe(3);
    expect(health.summary.unreachable).toEqual(['node-1']);
    // node-2's verdict did not change: its details are the previous answer's, within the max age.
    expect(byName.get('node-2')?.host.icmp.rttUs).toBe(100);
    expect(server.stats().encodesInRequest).toBe(encodes);
    expect(server.stats().verdictPatches).toBe(1);
    client.close();
  });

  it('keeps the answer warm while clients keep asking: a poller slower than the max age never waits for a full encode', async () => {
    const { aggregator, client, server } = await start(1000);
    aggregator.ingest('node-0', host('node-1', true, Date.now(), 100));
    await client.getClusterHealth();
    const inRequest = server.stats().encodesInRequest;
    for (let poll = 1; poll <= 3; poll++) {
      // The details change all the time (no verdict does), and the client asks only every 2.2 s.
      const until = Date.now() + 2200;
      while (Date.now() < until) {
        aggregator.ingest('node-0', host('node-1', true, Date.now(), 100 + poll));
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      const health = await client.getClusterHealth();
      expect(health.nodes.find((n) => n.name === 'node-1')?.host.icmp.rttUs).toBe(100 + poll);
    }
    expect(server.stats().encodesInRequest).toBe(inRequest);
    expect(server.stats().encodesInBackground).toBeGreaterThanOrEqual(3);
    client.close();
  });

  it('with a max age of 0, always answers the current details', async () => {
    const { aggregator, client, rtt } = await start(0);
    for (let i = 1; i <= 5; i++) {
      aggregator.ingest('node-0', host('node-1', true, Date.now(), i * 100));
      expect(await rtt('node-1')).toBe(i * 100);
    }
    client.close();
  });
});
