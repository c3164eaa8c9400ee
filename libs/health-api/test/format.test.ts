import { describe, expect, it } from 'vitest';
import {
  clusterHealthSchema,
  emptyProbeStatus,
  formatClusterSummary,
  formatHealthJson,
  formatHealthChange,
  formatHealthStatus,
  formatRtt,
  HealthApiError,
  parseMessage,
  reportProbesRequestSchema,
  type ClusterHealth,
  type NodeHealth,
} from '../src/index.ts';

const ok = (rttUs: number) => ({ probed: true, ok: true, rttUs, error: '', timeUnixMs: 1_790_000_000_000, reporter: 'node-b' });
const node = (name: string, reachability: NodeHealth['reachability'], overrides: Partial<NodeHealth> = {}): NodeHealth => ({
  name,
  reachability,
  host: { ip: '10.0.0.1', icmp: ok(412), http: ok(1208) },
  endpoint: { ip: '10.200.0.1', icmp: ok(398), http: emptyProbeStatus() },
  lastProbeUnixMs: 1_790_000_000_000,
  failingReporters: 0,
  reporters: 3,
  agent: 'AGENT_STATE_RUNNING',
  endpointReachability: 'REACHABILITY_REACHABLE',
  unreachableFrom: [],
  ...overrides,
});

const health: ClusterHealth = {
  summary: { reachable: 1, total: 2, probeTimeUnixMs: 1_790_000_000_000, unreachable: ['node-2'], unknown: [], quorum: 3, endpointUnreachable: [], agentNotRunning: [], brokenPaths: [] },
  nodes: [
    node('node-1', 'REACHABILITY_REACHABLE'),
    node('node-2', 'REACHABILITY_UNREACHABLE', {
      host: { ip: '10.0.0.2', icmp: { ...ok(0), ok: false, error: 'Connection timed out' }, http: { ...ok(0), ok: false, error: 'Connection refused' } },
    }),
  ],
};

describe('formatters', () => {
  it('prints RTTs the way Go prints durations', () => {
    expect(formatRtt(412)).toBe('412µs');
    expect(formatRtt(1208)).toBe('1.208ms');
    expect(formatRtt(1_500_000)).toBe('1.5s');
  });

  it('prints the cilium-health shape', () => {
    const text = formatHealthStatus(health);
    expect(text).toContain('Probe time:   2026-09-21T');
    expect(text).toContain('Nodes:\n  node-1: reachable\n    Host connectivity to 10.0.0.1:\n      ICMP to stack:   OK, RTT=412µs\n      HTTP to agent:   OK, RTT=1.208ms\n');
    expect(text).toContain('    Endpoint connectivity to 10.200.0.1:\n      ICMP to stack:   OK, RTT=398µs\n      HTTP to agent:   not probed yet\n');
    expect(text).toContain('  node-2: unreachable\n    Host connectivity to 10.0.0.2:\n      ICMP to stack:   Connection timed out\n      HTTP to agent:   Connection refused\n');
    expect(text.trimEnd().split('\n').pop()).toBe('Cluster health: 1/2 reachable (unreachable: node-2)');
  });

  it('prints the one-line summary', () => {
    expect(formatClusterSummary({ reachable: 5, total: 5, probeTimeUnixMs: 0, unreachable: [], unknown: [], quorum: 3, endpointUnreachable: [], agentNotRunning: [], brokenPaths: [] })).toBe('Cluster health: 5/5 reachable');
    expect(formatClusterSummary({ reachable: 3, total: 5, probeTimeUnixMs: 0, unreachable: ['b'], unknown: ['e'], quorum: 3, endpointUnreachable: [], agentNotRunning: [], brokenPaths: [] })).toBe(
      'Cluster health: 3/5 reachable (unreachable: b; unknown: e)',
    );
  });

  it('counts the nodes outside the health view (no agent) in the summary line', () => {
    const all = { reachable: 3, total: 3, probeTimeUnixMs: 0, unreachable: [], unknown: [], quorum: 2, endpointUnreachable: [], agentNotRunning: [], brokenPaths: [] };
    expect(formatClusterSummary(all, { withoutAgent: ['sim-1', 'sim-2'] })).toBe('Cluster health: 3/3 reachable (2 nodes without an agent, not probed: sim-1, sim-2)');
    expect(formatClusterSummary(all, { withoutAgent: ['a', 'b', 'c', 'd', 'e', 'f'] })).toMatch(/\(6 nodes without an agent, not probed: a, b, c, d, e, …\)$/);
    expect(formatClusterSummary(all, { withoutAgent: [] })).toBe('Cluster health: 3/3 reachable');
  });

  it('prints JSON with stable names', () => {
    const json = JSON.parse(formatHealthJson(health));
    expect(json).toMatchObject({ reachable: 1, total: 2, unreachable: ['node-2'] });
    expect(json.nodes[0]).toMatchObject({ name: 'node-1', reachability: 'reachable', host: { ip: '10.0.0.1', icmp: { status: 'OK', rttUs: 412 } } });
    expect(json.nodes[0].endpoint.http).toEqual({ status: 'not probed' });
    expect(json.nodes[1].host.icmp.status).toBe('Connection timed out');
  });
});

describe('message validation', () => {
  it('accepts a valid message and names the first bad field of an invalid one', () => {
    expect(parseMessage(clusterHealthSchema, health, 'GetClusterHealthResponse')).toEqual(health);
    const bad = { reporter: 'node-1', results: [{ target: '', kind: 'PROBE_KIND_HOST_ICMP', ip: '', ok: true, rttUs: 1, error: '', timeUnixMs: 1 }] };
    expect(() => parseMessage(reportProbesRequestSchema, bad, 'ReportProbesRequest')).toThrow(HealthApiError);
    expect(() => parseMessage(reportProbesRequestSchema, bad, 'ReportProbesRequest')).toThrow(/results\.0\.target/);
    expect(() => parseMessage(reportProbesRequestSchema, { reporter: 'n', results: [{ ...bad.results[0], target: 'x', kind: 'PROBE_KIND_UNSPECIFIED' }] }, 'r')).toThrow(/kind/);
  });

  it('prints the asking node first as localhost, the succinct and the verbose views', () => {
    const view: ClusterHealth = {
      summary: { ...health.summary, agentNotRunning: ['node-2'], brokenPaths: ['node-2->node-1'], endpointUnreachable: ['node-2'] },
      nodes: [
        node('node-1', 'REACHABILITY_REACHABLE', { unreachableFrom: ['node-2'] }),
        node('node-2', 'REACHABILITY_REACHABLE', { agent: 'AGENT_STATE_NOT_RUNNING', endpointReachability: 'REACHABILITY_UNREACHABLE' }),
      ],
    };
    const text = formatHealthStatus(view, { node: 'node-2' });
    expect(text).toContain('Nodes:\n  node-2 (localhost): reachable, agent not running, endpoint unreachable\n    Host connectivity to 10.0.0.1:\n      ICMP to stack:   OK, RTT=412µs\n');
    expect(text).toContain('  node-1: reachable, unreachable from node-2 (localhost) (others reach it)\n');
    expect(text).toContain('Cluster health: 1/2 reachable (unreachable: node-2; agent not running: node-2; broken paths: node-2->node-1)');
    const succinct = formatHealthStatus(view, { succinct: true }).split('\n');
    expect(succinct).toContain('  node-1: reachable, unreachable from node-2 (others reach it)   Host: OK   Endpoint: OK');
    expect(succinct.some((l) => l.includes('connectivity to'))).toBe(false);
    const verbose = formatHealthStatus(view, { verbose: true, nowMs: 1_790_000_002_000 });
    expect(verbose).toContain('      ICMP to stack:   OK, RTT=412µs   (by node-b, 2s ago)');
    expect(verbose).toContain('    Agent:           not running');
    expect(verbose).toContain('Endpoint health: 1/2 reachable (unreachable: node-2)');
    expect(verbose).toContain('Broken paths: node-2->node-1');
  });

  it('prints a watch event as one line, a removal included', () => {
    const n = node('node-3', 'REACHABILITY_UNREACHABLE');
    expect(formatHealthChange({ node: 'node-3', previous: 'REACHABILITY_REACHABLE', current: 'REACHABILITY_UNREACHABLE', timeUnixMs: 1_790_000_000_000, health: n, removed: false }))
      .toBe(`${new Date(1_790_000_000_000).toISOString()}  node-3: reachable → unreachable\n`);
    expect(formatHealthChange({ node: 'node-3', previous: 'REACHABILITY_UNREACHABLE', current: 'REACHABILITY_UNSPECIFIED', timeUnixMs: 1_790_000_000_000, health: n, removed: true }))
      .toContain('node-3: unreachable → removed (left the cluster)');
  });
});
