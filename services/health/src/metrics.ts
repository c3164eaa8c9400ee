/**
 * The health service's Prometheus metrics, in the shape Cilium exposes node connectivity
 * (cilium_node_connectivity_status / _latency_seconds), computed from the aggregator at scrape time.
 *
 * Cardinality is bounded: per-target series (label `target`) exist for at most `maxTargets` nodes — the ones with a
 * problem first (unreachable, suspect, unknown, endpoint or agent down, a broken path), then the others by name — and
 * per-pair series (label `source` = the reporter) only for the broken paths, at most `maxTargets` of them. Series of
 * the cluster's verdict carry source="cluster". The totals (unreachable nodes, endpoints, ...) are always complete.
 */
import { Counter, Gauge, type Registry } from '@sluice/metrics';
import { REACHABILITIES, PROBE_KINDS, type NodeHealth, type ProbeStatus, type Reachability } from '@sluice/health-api';
import type { Aggregator } from './aggregator.ts';

const STATUS_WORD: Record<Reachability, string> = {
  REACHABILITY_UNSPECIFIED: 'unknown',
  REACHABILITY_REACHABLE: 'reachable',
  REACHABILITY_SUSPECT: 'suspect',
  REACHABILITY_UNREACHABLE: 'unreachable',
  REACHABILITY_UNKNOWN: 'unknown',
};
const STATUSES = [...new Set(REACHABILITIES.map((r) => STATUS_WORD[r]))];

const healthy = (n: NodeHealth) =>
  n.reachability === 'REACHABILITY_REACHABLE' && n.endpointReachability !== 'REACHABILITY_UNREACHABLE' && n.agent !== 'AGENT_STATE_NOT_RUNNING' && n.unreachableFrom.length === 0;

/** The nodes that get per-target series: problems first, then by name, at most `max`. */
export function metricTargets(nodes: readonly NodeHealth[], max: number): NodeHealth[] {
  const problems = nodes.filter((n) => !healthy(n));
  if (problems.length >= max) return problems.slice(0, max);
  const rest = nodes.filter(healthy).slice(0, max - problems.length);
  return [...problems, ...rest];
}

export function registerHealthMetrics(registry: Registry, aggregator: Aggregator, options: { maxTargets?: number; watchers: () => number }): void {
  const maxTargets = options.maxTargets ?? 100;
  const registers = [registry];
  const gauge = (name: string, help: string, value: () => number) =>
    new Gauge({ name, help, registers, collect() { this.set(value()); } });
  gauge('sluice_health_nodes', 'Nodes in the health view (every node record)', () => aggregator.summary().total);
  gauge('sluice_health_reachable_nodes', 'Nodes reachable or suspect', () => aggregator.summary().reachable);
  gauge('sluice_unreachable_nodes', 'Nodes confirmed unreachable', () => aggregator.summary().unreachable.length);
  gauge('sluice_unreachable_health_endpoints', 'Health endpoints confirmed unreachable', () => aggregator.summary().endpointUnreachable.length);
  gauge('sluice_health_agents_not_running', 'Nodes whose host answers but whose agent does not', () => aggregator.summary().agentNotRunning.length);
  gauge('sluice_health_broken_paths', 'Reporter→node paths that fail while others reach the node', () => aggregator.summary().brokenPaths.length);
  gauge('sluice_health_watchers', 'Open WatchClusterHealth streams', options.watchers);

  new Gauge({
    name: 'sluice_node_connectivity_status',
    help: 'Connectivity to a node (type "node": its host, "endpoint": its health endpoint), as seen by source ("cluster": the quorum verdict; a node name: that reporter\'s path); 1 for the current status',
    labelNames: ['source', 'target', 'type', 'status'],
    registers,
    collect() {
      this.reset();
      const health = aggregator.clusterHealth();
      for (const n of metricTargets(health.nodes, maxTargets)) {
        for (const status of STATUSES) {
          this.set({ source: 'cluster', target: n.name, type: 'node', status }, STATUS_WORD[n.reachability] === status ? 1 : 0);
          this.set({ source: 'cluster', target: n.name, type: 'endpoint', status }, STATUS_WORD[n.endpointReachability] === status ? 1 : 0);
        }
      }
      let pairs = 0;
      for (const path of health.summary.brokenPaths) {
        if (pairs++ >= maxTargets) break;
        const [source, target] = path.split('->') as [string, string];
        this.set({ source, target, type: 'node', status: 'unreachable' }, 1);
      }
    },
  });
  new Gauge({
    name: 'sluice_node_connectivity_latency_seconds',
    help: 'Round-trip time of the newest successful probe of a node (type node|endpoint, protocol icmp|http), by whichever reporter ran it',
    labelNames: ['source', 'target', 'type', 'protocol'],
    registers,
    collect() {
      this.reset();
      const set = (n: NodeHealth, type: string, protocol: string, status: ProbeStatus) => {
        if (status.probed && status.ok) this.set({ source: 'cluster', target: n.name, type, protocol }, status.rttUs / 1e6);
      };
      for (const n of metricTargets(aggregator.clusterHealth().nodes, maxTargets)) {
        set(n, 'node', 'icmp', n.host.icmp);
        set(n, 'node', 'http', n.host.http);
        set(n, 'endpoint', 'icmp', n.endpoint.icmp);
        set(n, 'endpoint', 'http', n.endpoint.http);
      }
    },
  });

  const { counters } = aggregator;
  new Counter({
    name: 'sluice_health_verdict_changes_total',
    help: 'Changes of a node\'s state, by what changed (reachability, endpoint, agent, paths, joined, removed)',
    labelNames: ['kind'],
    registers,
    collect() {
      this.reset();
      for (const [kind, value] of Object.entries(counters.changes)) this.inc({ kind }, value);
    },
  });
  new Counter({
    name: 'sluice_health_probe_results_total',
    help: 'Probe results taken from the agents\' reports, by type (node|endpoint), protocol and result (ok|failed)',
    labelNames: ['type', 'protocol', 'result'],
    registers,
    collect() {
      this.reset();
      for (const kind of PROBE_KINDS) {
        const type = kind.includes('ENDPOINT') ? 'endpoint' : 'node';
        const protocol = kind.endsWith('ICMP') ? 'icmp' : 'http';
        const c = counters.results[kind];
        this.inc({ type, protocol, result: 'ok' }, c.ok);
        this.inc({ type, protocol, result: 'failed' }, c.failed);
      }
    },
  });
}
