import { describe, expect, it } from 'vitest';
import type { ProbeResult } from '@sluice/health-api';
import { createRegistry } from '@sluice/metrics';
import { Aggregator, type NodeInfo } from '../src/index.ts';
import { registerHealthMetrics } from '../src/metrics.ts';

const nodes: NodeInfo[] = Array.from({ length: 50 }, (_, i) => ({ name: `node-${String(i).padStart(2, '0')}`, hostIP: `10.0.0.${i + 1}`, endpointIP: `10.200.0.${i + 1}` }));
const probe = (target: string, kind: ProbeResult['kind'], ok: boolean, time: number): ProbeResult =>
  ({ target, kind, ip: '10.0.0.1', ok, rttUs: ok ? 250 : 0, error: ok ? '' : 'Connection timed out', timeUnixMs: time });

describe('health metrics', () => {
  it('exposes per-target status and latency for a bounded set of nodes (problems first), the totals and the counters', async () => {
    const now = Date.now();
    const aggregator = new Aggregator({ staleMs: 60_000 });
    aggregator.setNodes(nodes);
    for (const n of nodes.slice(1)) aggregator.ingest('node-00', [probe(n.name, 'PROBE_KIND_HOST_ICMP', true, now), probe(n.name, 'PROBE_KIND_ENDPOINT_ICMP', true, now)]);
    for (const reporter of ['node-01', 'node-02', 'node-03']) aggregator.ingest(reporter, [probe('node-49', 'PROBE_KIND_HOST_ICMP', false, now + 1)]);
    const registry = createRegistry();
    registerHealthMetrics(registry, aggregator, { maxTargets: 10, watchers: () => 2 });
    const text = await registry.metrics();
    expect(text).toContain('sluice_node_connectivity_status{source="cluster",target="node-49",type="node",status="unreachable"} 1');
    expect(text).toContain('sluice_node_connectivity_status{source="cluster",target="node-01",type="node",status="reachable"} 1');
    expect(text).toMatch(/sluice_node_connectivity_latency_seconds\{source="cluster",target="node-01",type="node",protocol="icmp"\} 0\.00025/);
    // 10 targets at most, node-49 (the problem) among them although it sorts last.
    const targets = new Set([...text.matchAll(/sluice_node_connectivity_status\{[^}]*target="([^"]+)"/g)].map((m) => m[1]));
    expect(targets.size).toBe(10);
    expect(targets.has('node-49')).toBe(true);
    expect(text).toContain('sluice_unreachable_nodes 1');
    expect(text).toContain('sluice_unreachable_health_endpoints 0');
    expect(text).toContain('sluice_health_watchers 2');
    expect(text).toContain('sluice_health_probe_results_total{type="node",protocol="icmp",result="failed"} 3');
    expect(text).toContain('sluice_health_probe_results_total{type="endpoint",protocol="icmp",result="ok"} 49');
    expect(text).toMatch(/sluice_health_verdict_changes_total\{kind="reachability"\} \d+/);
  });
});
