import { describe, expect, it } from 'vitest';
import type { HealthChange, ProbeResult } from '@sluice/health-api';
import { Aggregator, type NodeInfo } from '../src/index.ts';

const nodes = (n: number): NodeInfo[] =>
  Array.from({ length: n }, (_, i) => ({ name: `node-${i}`, hostIP: `10.0.0.${i + 1}`, endpointIP: `10.200.0.${i + 1}` }));

const host = (target: string, ok: boolean, time: number): ProbeResult[] => [
  { target, kind: 'PROBE_KIND_HOST_ICMP', ip: '10.0.0.9', ok, rttUs: ok ? 300 : 0, error: ok ? '' : 'Connection timed out', timeUnixMs: time },
  { target, kind: 'PROBE_KIND_HOST_HTTP', ip: '10.0.0.9', ok, rttUs: ok ? 900 : 0, error: ok ? '' : 'Connection refused', timeUnixMs: time },
];

function setup(n = 10, options: { staleMs?: number; confirmations?: number } = {}) {
  let now = 1_800_000_000_000;
  const aggregator = new Aggregator({ now: () => now, staleMs: options.staleMs ?? 10_000, confirmations: options.confirmations });
  aggregator.setNodes(nodes(n));
  const changes: HealthChange[] = [];
  aggregator.subscribe((c) => changes.push(c));
  return { aggregator, changes, advance: (ms: number) => (now += ms), now: () => now };
}

describe('Aggregator', () => {
  it('knows nothing until the first report, then takes a success as reachable', () => {
    const { aggregator, now } = setup();
    expect(aggregator.nodeHealth('node-3')?.reachability).toBe('REACHABILITY_UNKNOWN');
    expect(aggregator.summary()).toMatchObject({ reachable: 0, total: 10, unknown: nodes(10).map((n) => n.name).sort() });
    aggregator.ingest('node-1', host('node-3', true, now()));
    const health = aggregator.nodeHealth('node-3')!;
    expect(health).toMatchObject({ reachability: 'REACHABILITY_REACHABLE', reporters: 1, host: { ip: '10.0.0.4', icmp: { probed: true, ok: true, rttUs: 300, reporter: 'node-1' } } });
    expect(health.endpoint.icmp.probed).toBe(false);
  });

  it('declares a node unreachable only when a quorum of distinct reporters failed after its last success', () => {
    const { aggregator, changes, advance, now } = setup();
    expect(aggregator.quorum).toBe(3);
    aggregator.ingest('node-1', host('node-3', true, now()));
    advance(1000);
    aggregator.ingest('node-1', host('node-3', false, now()));
    expect(aggregator.nodeHealth('node-3')?.reachability).toBe('REACHABILITY_SUSPECT');
    // The same reporter failing again is not a confirmation.
    advance(100);
    aggregator.ingest('node-1', host('node-3', false, now()));
    expect(aggregator.nodeHealth('node-3')?.reachability).toBe('REACHABILITY_SUSPECT');
    aggregator.ingest('node-2', host('node-3', false, now()));
    expect(aggregator.nodeHealth('node-3')?.reachability).toBe('REACHABILITY_SUSPECT');
    aggregator.ingest('node-4', host('node-3', false, now()));
    expect(aggregator.nodeHealth('node-3')).toMatchObject({ reachability: 'REACHABILITY_UNREACHABLE', failingReporters: 3 });
    expect(aggregator.summary()).toMatchObject({ unreachable: ['node-3'] });
    expect(changes.filter((c) => c.node === 'node-3').map((c) => c.current)).toEqual([
      'REACHABILITY_REACHABLE',
      'REACHABILITY_SUSPECT',
      'REACHABILITY_UNREACHABLE',
    ]);
    // One success (the node is back) clears every earlier failure.
    advance(500);
    aggregator.ingest('node-5', host('node-3', true, now()));
    expect(aggregator.nodeHealth('node-3')?.reachability).toBe('REACHABILITY_REACHABLE');
    expect(changes.at(-1)).toMatchObject({ node: 'node-3', previous: 'REACHABILITY_UNREACHABLE', current: 'REACHABILITY_REACHABLE' });
  });

  it('does not count a failure older than the newest success (a lone failing reporter cannot take a node down)', () => {
    const { aggregator, advance, now } = setup();
    const t0 = now();
    advance(1000);
    aggregator.ingest('node-1', host('node-3', true, now()));
    for (const reporter of ['node-2', 'node-4', 'node-5']) aggregator.ingest(reporter, host('node-3', false, t0));
    expect(aggregator.nodeHealth('node-3')?.reachability).toBe('REACHABILITY_REACHABLE');
  });

  it('counts a path as up when either host probe succeeds', () => {
    const { aggregator, now } = setup();
    for (const reporter of ['node-1', 'node-2', 'node-4']) {
      const [icmp, http] = host('node-3', false, now());
      aggregator.ingest(reporter, [icmp!, { ...http!, ok: true, error: '' }]);
    }
    expect(aggregator.nodeHealth('node-3')?.reachability).toBe('REACHABILITY_REACHABLE');
  });

  it('caps the quorum at the fanout in a small cluster', () => {
    const { aggregator, now } = setup(3);
    expect(aggregator.quorum).toBe(2);
    aggregator.ingest('node-0', host('node-2', false, now()));
    aggregator.ingest('node-1', host('node-2', false, now()));
    expect(aggregator.nodeHealth('node-2')?.reachability).toBe('REACHABILITY_UNREACHABLE');
  });

  it('forgets reports older than the staleness window', () => {
    const { aggregator, changes, advance, now } = setup(10, { staleMs: 5000 });
    aggregator.ingest('node-1', host('node-3', true, now()));
    advance(4000);
    aggregator.sweep();
    expect(aggregator.nodeHealth('node-3')?.reachability).toBe('REACHABILITY_REACHABLE');
    advance(2000);
    aggregator.sweep();
    expect(aggregator.nodeHealth('node-3')).toMatchObject({ reachability: 'REACHABILITY_UNKNOWN', reporters: 0, host: { icmp: { probed: false } } });
    expect(changes.at(-1)).toMatchObject({ node: 'node-3', previous: 'REACHABILITY_REACHABLE', current: 'REACHABILITY_UNKNOWN' });
    // A report that arrives already stale is dropped; one from the future counts as now.
    expect(aggregator.ingest('node-1', host('node-3', true, now() - 6000))).toEqual({ accepted: 0, ignored: 2 });
    expect(aggregator.ingest('node-1', host('node-3', true, now() + 60_000))).toEqual({ accepted: 2, ignored: 0 });
    expect(aggregator.nodeHealth('node-3')?.lastProbeUnixMs).toBe(now());
  });

  it('ignores reports about unknown nodes and about the reporter itself, and forgets nodes that left', () => {
    const { aggregator, now } = setup(4);
    expect(aggregator.ingest('node-1', [...host('node-99', true, now()), ...host('node-1', true, now())])).toEqual({ accepted: 0, ignored: 4 });
    aggregator.ingest('node-1', host('node-3', true, now()));
    aggregator.setNodes(nodes(3));
    expect(aggregator.nodeHealth('node-3')).toBeUndefined();
    expect(aggregator.summary().total).toBe(3);
  });

  it('rebuilds the same view after a restart from the reports that follow', () => {
    const reports: Array<[string, ProbeResult[]]> = [];
    const { aggregator, now } = setup();
    for (let i = 0; i < 10; i++) {
      for (let j = 1; j <= 3; j++) {
        const target = `node-${(i + j) % 10}`;
        reports.push([`node-${i}`, host(target, target !== 'node-7', now())]);
      }
    }
    for (const [reporter, results] of reports) aggregator.ingest(reporter, results);
    const restarted = new Aggregator({ now, staleMs: 10_000 });
    restarted.setNodes(nodes(10));
    for (const [reporter, results] of reports) restarted.ingest(reporter, results);
    expect(restarted.clusterHealth()).toEqual(aggregator.clusterHealth());
    expect(restarted.summary()).toMatchObject({ reachable: 9, unreachable: ['node-7'] });
  });

  it('shows a node whose agent is gone as "agent not running" while its host answers, then unreachable when it dies', () => {
    const { aggregator, changes, advance, now } = setup();
    const agentDown = (target: string, time: number): ProbeResult[] => [
      { target, kind: 'PROBE_KIND_HOST_ICMP', ip: '10.0.0.9', ok: true, rttUs: 300, error: '', timeUnixMs: time },
      { target, kind: 'PROBE_KIND_HOST_HTTP', ip: '10.0.0.9', ok: false, rttUs: 0, error: 'Connection refused', timeUnixMs: time },
    ];
    aggregator.ingest('node-1', host('node-3', true, now()));
    expect(aggregator.nodeHealth('node-3')?.agent).toBe('AGENT_STATE_RUNNING');
    advance(1000);
    aggregator.ingest('node-1', agentDown('node-3', now()));
    aggregator.ingest('node-2', agentDown('node-3', now()));
    // Two reporters are not the quorum (3): one refused connection may be a pair problem.
    expect(aggregator.nodeHealth('node-3')?.agent).toBe('AGENT_STATE_RUNNING');
    aggregator.ingest('node-4', agentDown('node-3', now()));
    // One round each: a lost HTTP probe is common; a reporter counts after two rounds in a row (it re-probes).
    expect(aggregator.nodeHealth('node-3')?.agent).toBe('AGENT_STATE_RUNNING');
    advance(1000);
    aggregator.ingest('node-5', host('node-3', true, now() - 500));
    advance(3000);
    aggregator.sweep();
    expect(aggregator.nodeHealth('node-3')?.agent).toBe('AGENT_STATE_RUNNING');
    // Second rounds: their runs began 4 s ago, time enough for a success in flight to have refuted them.
    for (const reporter of ['node-1', 'node-2', 'node-4']) aggregator.ingest(reporter, agentDown('node-3', now()));
    expect(aggregator.nodeHealth('node-3')).toMatchObject({ reachability: 'REACHABILITY_REACHABLE', agent: 'AGENT_STATE_NOT_RUNNING' });
    // Failing round after round keeps it so (the run's start ages, not its newest failure).
    for (let round = 0; round < 5; round++) {
      advance(1000);
      for (const reporter of ['node-1', 'node-2', 'node-4']) aggregator.ingest(reporter, agentDown('node-3', now()));
      expect(aggregator.nodeHealth('node-3')?.agent).toBe('AGENT_STATE_NOT_RUNNING');
    }
    expect(aggregator.summary()).toMatchObject({ reachable: 10 - 9, agentNotRunning: ['node-3'] });
    expect(changes.at(-1)).toMatchObject({ node: 'node-3', previous: 'REACHABILITY_REACHABLE', current: 'REACHABILITY_REACHABLE', health: { agent: 'AGENT_STATE_NOT_RUNNING' } });
    // Its health record went with the lease: still a member, still "not running" once the evidence ages out.
    aggregator.setNodes(nodes(10).map((n) => (n.name === 'node-3' ? { ...n, agent: false } : n)));
    advance(2000);
    for (const reporter of ['node-1', 'node-2', 'node-4']) aggregator.ingest(reporter, [agentDown('node-3', now())[0]!]);
    advance(9000);
    aggregator.sweep();
    expect(aggregator.nodeHealth('node-3')).toMatchObject({ reachability: 'REACHABILITY_REACHABLE', agent: 'AGENT_STATE_NOT_RUNNING' });
    // The node dies: unreachable, never dropped.
    advance(1000);
    for (const reporter of ['node-1', 'node-2', 'node-4']) aggregator.ingest(reporter, host('node-3', false, now()));
    expect(aggregator.nodeHealth('node-3')).toMatchObject({ reachability: 'REACHABILITY_UNREACHABLE', agent: 'AGENT_STATE_UNKNOWN' });
    expect(aggregator.summary().total).toBe(10);
  });

  it('gives the health endpoint its own verdict', () => {
    const { aggregator, advance, now } = setup();
    const endpoint = (target: string, ok: boolean, time: number): ProbeResult[] => [
      ...host(target, true, time),
      { target, kind: 'PROBE_KIND_ENDPOINT_ICMP', ip: '10.200.0.9', ok, rttUs: ok ? 300 : 0, error: ok ? '' : 'Connection timed out', timeUnixMs: time },
      { target, kind: 'PROBE_KIND_ENDPOINT_HTTP', ip: '10.200.0.9', ok, rttUs: ok ? 300 : 0, error: ok ? '' : 'Connection timed out', timeUnixMs: time },
    ];
    aggregator.ingest('node-1', endpoint('node-3', true, now()));
    expect(aggregator.nodeHealth('node-3')?.endpointReachability).toBe('REACHABILITY_REACHABLE');
    advance(1000);
    for (const reporter of ['node-1', 'node-2', 'node-4']) aggregator.ingest(reporter, endpoint('node-3', false, now()));
    expect(aggregator.nodeHealth('node-3')).toMatchObject({ reachability: 'REACHABILITY_REACHABLE', endpointReachability: 'REACHABILITY_UNREACHABLE' });
    expect(aggregator.summary()).toMatchObject({ reachable: 1, unreachable: [], endpointUnreachable: ['node-3'] });
  });

  it('shows a pair failure (one reporter cannot reach a node the others reach) after two failed rounds, and not a lost probe', () => {
    const { aggregator, changes, advance, now } = setup();
    // A single lost round is not a pair failure.
    aggregator.ingest('node-1', host('node-3', false, now()));
    aggregator.ingest('node-2', host('node-3', true, now() + 1));
    expect(aggregator.nodeHealth('node-3')?.unreachableFrom).toEqual([]);
    advance(1000);
    aggregator.ingest('node-1', host('node-3', true, now()));
    advance(1000);
    aggregator.ingest('node-1', host('node-3', false, now()));
    advance(1000);
    aggregator.ingest('node-2', host('node-3', true, now()));
    expect(aggregator.nodeHealth('node-3')?.unreachableFrom).toEqual([]);
    // node-1 fails again (its re-probe): two rounds in a row while node-2 reaches node-3.
    advance(1000);
    aggregator.ingest('node-1', host('node-3', false, now()));
    // Suspect for now (node-1's failure is the newest word), and the path shown.
    expect(aggregator.nodeHealth('node-3')).toMatchObject({ reachability: 'REACHABILITY_SUSPECT', unreachableFrom: ['node-1'] });
    advance(500);
    aggregator.ingest('node-2', host('node-3', true, now()));
    expect(aggregator.nodeHealth('node-3')).toMatchObject({ reachability: 'REACHABILITY_REACHABLE', unreachableFrom: ['node-1'] });
    expect(aggregator.summary().brokenPaths).toEqual(['node-1->node-3']);
    expect(changes.at(-1)).toMatchObject({ node: 'node-3', health: { unreachableFrom: ['node-1'] } });
    // One success of the pair ends it.
    advance(1000);
    aggregator.ingest('node-1', host('node-3', true, now()));
    expect(aggregator.nodeHealth('node-3')?.unreachableFrom).toEqual([]);
    expect(aggregator.summary().brokenPaths).toEqual([]);
  });

  it('tells watchers about nodes that join and nodes that leave', () => {
    const { aggregator, changes, now } = setup(4);
    aggregator.ingest('node-1', host('node-3', true, now()));
    changes.length = 0;
    aggregator.setNodes([...nodes(3), { name: 'node-9', hostIP: '10.0.0.99', endpointIP: '' }]);
    expect(changes).toContainEqual(expect.objectContaining({ node: 'node-3', previous: 'REACHABILITY_REACHABLE', current: 'REACHABILITY_UNSPECIFIED', removed: true }));
    expect(changes).toContainEqual(expect.objectContaining({ node: 'node-9', previous: 'REACHABILITY_UNSPECIFIED', current: 'REACHABILITY_UNKNOWN', removed: false }));
    expect(aggregator.nodeHealth('node-3')).toBeUndefined();
  });

  it('waits for an agent-down run to settle before it calls the agent not running', () => {
    const { aggregator, advance, now } = setup();
    const agentDown = (time: number): ProbeResult[] => [
      { target: 'node-3', kind: 'PROBE_KIND_HOST_ICMP', ip: '10.0.0.9', ok: true, rttUs: 300, error: '', timeUnixMs: time },
      { target: 'node-3', kind: 'PROBE_KIND_HOST_HTTP', ip: '10.0.0.9', ok: false, rttUs: 0, error: 'Connection refused', timeUnixMs: time },
    ];
    aggregator.ingest('node-1', host('node-3', true, now()));
    for (let round = 0; round < 2; round++) {
      advance(500);
      for (const reporter of ['node-1', 'node-2', 'node-4']) aggregator.ingest(reporter, agentDown(now()));
    }
    // Two rounds each, but begun only 1 s ago: a success still in flight could refute them.
    expect(aggregator.nodeHealth('node-3')?.agent).toBe('AGENT_STATE_RUNNING');
    for (let round = 0; round < 3; round++) {
      advance(1000);
      for (const reporter of ['node-1', 'node-2', 'node-4']) aggregator.ingest(reporter, agentDown(now()));
    }
    expect(aggregator.nodeHealth('node-3')?.agent).toBe('AGENT_STATE_NOT_RUNNING');
    // One success of the agent's health port ends it.
    advance(500);
    aggregator.ingest('node-5', host('node-3', true, now()));
    expect(aggregator.nodeHealth('node-3')?.agent).toBe('AGENT_STATE_RUNNING');
  });

  it('calls a node without a health record "agent not running" only once its host has answered for a while without it', () => {
    const { aggregator, advance, now } = setup();
    aggregator.setNodes(nodes(10).map((n) => (n.name === 'node-3' ? { ...n, agent: false } : n)));
    const icmp = (time: number): ProbeResult[] => [{ target: 'node-3', kind: 'PROBE_KIND_HOST_ICMP', ip: '10.0.0.9', ok: true, rttUs: 300, error: '', timeUnixMs: time }];
    aggregator.ingest('node-1', icmp(now()));
    // Just seen: its HTTP probe may not have come yet.
    expect(aggregator.nodeHealth('node-3')).toMatchObject({ reachability: 'REACHABILITY_REACHABLE', agent: 'AGENT_STATE_UNKNOWN' });
    advance(4000);
    aggregator.ingest('node-2', icmp(now()));
    expect(aggregator.nodeHealth('node-3')?.agent).toBe('AGENT_STATE_UNKNOWN');
    advance(1000);
    aggregator.ingest('node-4', icmp(now()));
    expect(aggregator.nodeHealth('node-3')?.agent).toBe('AGENT_STATE_NOT_RUNNING');
    // Silent for a staleness window (nothing pruned meanwhile), then answering again: it starts afresh.
    advance(11_000);
    aggregator.ingest('node-1', icmp(now()));
    expect(aggregator.nodeHealth('node-3')?.agent).toBe('AGENT_STATE_UNKNOWN');
  });

  it('does not call the failures of a reporter that is itself cut off pair failures', () => {
    const { aggregator, advance, now } = setup();
    for (const reporter of ['node-2', 'node-4', 'node-5']) aggregator.ingest(reporter, host('node-1', false, now()));
    expect(aggregator.nodeHealth('node-1')?.reachability).toBe('REACHABILITY_UNREACHABLE');
    for (let round = 0; round < 2; round++) {
      advance(1000);
      aggregator.ingest('node-1', host('node-3', false, now()));
      aggregator.ingest('node-2', host('node-3', true, now() + 1));
    }
    expect(aggregator.nodeHealth('node-3')).toMatchObject({ reachability: 'REACHABILITY_REACHABLE', unreachableFrom: [] });
  });
});
