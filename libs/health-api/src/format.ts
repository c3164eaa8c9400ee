/**
 * What `sluice health status` and `sluice status` print, in the shape cilium-health users know:
 *
 *   Probe time:   2026-11-21T22:50:01.000Z
 *   Nodes:
 *     node-1: reachable
 *       Host connectivity to 10.0.0.1:
 *         ICMP to stack:   OK, RTT=412µs
 *         HTTP to agent:   OK, RTT=1.208ms
 *       Endpoint connectivity to 10.200.1.7:
 *         ICMP to stack:   OK, RTT=398µs
 *         HTTP to agent:   OK, RTT=1.1ms
 */
import type { ClusterHealth, ClusterSummary, Connectivity, NodeHealth, ProbeStatus, Reachability } from './types.ts';

/** An RTT the way Go prints a duration: 412µs, 1.208ms, 1.5s. */
export function formatRtt(rttUs: number): string {
  if (rttUs < 1000) return `${rttUs}µs`;
  if (rttUs < 1_000_000) return `${trim(rttUs / 1000)}ms`;
  return `${trim(rttUs / 1_000_000)}s`;
}
const trim = (value: number) => String(Number(value.toFixed(3)));

const REACHABILITY_WORD: Record<Reachability, string> = {
  REACHABILITY_UNSPECIFIED: 'unknown',
  REACHABILITY_REACHABLE: 'reachable',
  REACHABILITY_SUSPECT: 'suspect',
  REACHABILITY_UNREACHABLE: 'unreachable',
  REACHABILITY_UNKNOWN: 'unknown',
};
export const reachabilityWord = (r: Reachability): string => REACHABILITY_WORD[r];

const isoTime = (ms: number) => (ms > 0 ? new Date(ms).toISOString() : 'never');

function probeLine(status: ProbeStatus): string {
  if (!status.probed) return 'not probed yet';
  if (status.ok) return `OK, RTT=${formatRtt(status.rttUs)}`;
  return status.error || 'failed';
}

function connectivityLines(what: string, c: Connectivity): string[] {
  if (!c.ip) return [`    ${what} connectivity: no address known`];
  return [
    `    ${what} connectivity to ${c.ip}:`,
    `      ICMP to stack:   ${probeLine(c.icmp)}`,
    `      HTTP to agent:   ${probeLine(c.http)}`,
  ];
}

export function formatNodeHealth(node: NodeHealth): string {
  return [
    `  ${node.name}: ${reachabilityWord(node.reachability)}`,
    ...connectivityLines('Host', node.host),
    ...connectivityLines('Endpoint', node.endpoint),
  ].join('\n');
}

/** The full `sluice health status` text, ending in a newline. */
export function formatHealthStatus(health: ClusterHealth): string {
  const lines = [`Probe time:   ${isoTime(health.summary.probeTimeUnixMs)}`, `Nodes:`];
  for (const node of health.nodes) lines.push(formatNodeHealth(node));
  lines.push(formatClusterSummary(health.summary));
  return `${lines.join('\n')}\n`;
}

/**
 * The one line of `sluice status`: "Cluster health: 4/5 reachable (unreachable: node-3)". `withoutAgent`: nodes
 * outside the health view (no agent to probe or be probed, e.g. simulated nodes), counted so that the line stays honest.
 */
export function formatClusterSummary(summary: ClusterSummary, extra: { withoutAgent?: readonly string[] } = {}): string {
  const notes: string[] = [];
  if (summary.unreachable.length) notes.push(`unreachable: ${summary.unreachable.join(', ')}`);
  if (summary.unknown.length) notes.push(`unknown: ${summary.unknown.join(', ')}`);
  const without = extra.withoutAgent ?? [];
  if (without.length) {
    const names = without.length <= 5 ? without.join(', ') : `${without.slice(0, 5).join(', ')}, …`;
    notes.push(`${without.length} node${without.length === 1 ? '' : 's'} without an agent, not probed: ${names}`);
  }
  return `Cluster health: ${summary.reachable}/${summary.total} reachable${notes.length ? ` (${notes.join('; ')})` : ''}`;
}

function probeJson(status: ProbeStatus) {
  return status.probed
    ? { status: status.ok ? 'OK' : status.error || 'failed', rttUs: status.rttUs, time: isoTime(status.timeUnixMs), reporter: status.reporter }
    : { status: 'not probed' };
}
const connectivityJson = (c: Connectivity) => ({ ip: c.ip, icmp: probeJson(c.icmp), http: probeJson(c.http) });

/** `sluice health status --json`: stable field names, ISO times, reachability as one word. */
export function healthStatusJson(health: ClusterHealth) {
  return {
    probeTime: isoTime(health.summary.probeTimeUnixMs),
    reachable: health.summary.reachable,
    total: health.summary.total,
    unreachable: health.summary.unreachable,
    unknown: health.summary.unknown,
    quorum: health.summary.quorum,
    nodes: health.nodes.map((node) => ({
      name: node.name,
      reachability: reachabilityWord(node.reachability),
      lastProbe: isoTime(node.lastProbeUnixMs),
      reporters: node.reporters,
      failingReporters: node.failingReporters,
      host: connectivityJson(node.host),
      endpoint: connectivityJson(node.endpoint),
    })),
  };
}

export const formatHealthJson = (health: ClusterHealth): string => `${JSON.stringify(healthStatusJson(health), null, 2)}\n`;
