import { describe, expect, it } from 'vitest';
import { clusterHealthService, emptyProbeStatus, type ClusterHealth } from '@sluice/health-api';
import { ClusterHealthEncoder } from '../src/encode.ts';

const decode = (bytes: Buffer) => clusterHealthService.GetClusterHealth!.responseDeserialize(bytes);

describe('ClusterHealthEncoder', () => {
  it('produces what the generic decoder reads back as the same message', () => {
    const health: ClusterHealth = {
      summary: { reachable: 1, total: 3, probeTimeUnixMs: 1_800_000_123_456, unreachable: ['node-b'], unknown: ['node-c'], quorum: 2, endpointUnreachable: ['node-c'], agentNotRunning: ['node-a'], brokenPaths: ['node-b->node-a', 'node-c->node-a'] },
      nodes: [
        {
          name: 'node-a',
          reachability: 'REACHABILITY_REACHABLE',
          host: { ip: '10.0.0.1', icmp: { probed: true, ok: true, rttUs: 2 ** 40 + 7, error: '', timeUnixMs: 1_800_000_123_456, reporter: 'node-b' }, http: emptyProbeStatus() },
          endpoint: { ip: 'fd00::1', icmp: emptyProbeStatus(), http: { probed: true, ok: false, rttUs: 0, error: 'délai dépassé ⏱', timeUnixMs: 1, reporter: 'node-c' } },
          lastProbeUnixMs: 1_800_000_123_456,
          failingReporters: 0,
          reporters: 300,
          agent: 'AGENT_STATE_NOT_RUNNING',
          endpointReachability: 'REACHABILITY_REACHABLE',
          unreachableFrom: ['node-b', 'node-c'],
        },
        {
          name: 'node-b',
          reachability: 'REACHABILITY_UNREACHABLE',
          host: { ip: '', icmp: emptyProbeStatus(), http: emptyProbeStatus() },
          endpoint: { ip: '', icmp: emptyProbeStatus(), http: emptyProbeStatus() },
          lastProbeUnixMs: 0,
          failingReporters: 3,
          reporters: 3,
          agent: 'AGENT_STATE_UNKNOWN',
          endpointReachability: 'REACHABILITY_UNREACHABLE',
          unreachableFrom: [],
        },
        {
          name: 'node-c',
          reachability: 'REACHABILITY_UNKNOWN',
          host: { ip: '10.0.0.3', icmp: emptyProbeStatus(), http: emptyProbeStatus() },
          endpoint: { ip: '', icmp: emptyProbeStatus(), http: emptyProbeStatus() },
          lastProbeUnixMs: 0,
          failingReporters: 0,
          reporters: 0,
          agent: 'AGENT_STATE_UNSPECIFIED',
          endpointReachability: 'REACHABILITY_UNKNOWN',
          unreachableFrom: [],
        },
      ],
    };
    const encoder = new ClusterHealthEncoder();
    expect(decode(encoder.encode(health))).toEqual(health);
    // The cached node entries give the same bytes the second time.
    expect(encoder.encode(health).equals(encoder.encode(health))).toBe(true);
    // Sub-messages of 128 bytes and more take a longer length prefix.
    const long = structuredClone(health);
    long.nodes[1]!.host.icmp = { probed: true, ok: false, rttUs: 0, error: 'e'.repeat(300), timeUnixMs: 5, reporter: 'node-a' };
    long.nodes[1]!.endpoint.http = { probed: true, ok: false, rttUs: 0, error: 'ü'.repeat(20_000), timeUnixMs: 5, reporter: 'node-a' };
    expect(decode(new ClusterHealthEncoder().encode(long))).toEqual(long);
    const empty: ClusterHealth = { summary: { reachable: 0, total: 0, probeTimeUnixMs: 0, unreachable: [], unknown: [], quorum: 0, endpointUnreachable: [], agentNotRunning: [], brokenPaths: [] }, nodes: [] };
    expect(decode(encoder.encode(empty))).toEqual(empty);
  });
});
