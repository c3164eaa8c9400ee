/**
 * What `sluice health status` and `sluice status` print, in the shape cilium-health users know:
 *
 *   Probe time:   2026-11-21T22:50:01.000Z
 *   Nodes:
 *     node-1 (localhost): reachable
 *       Host connectivity to 10.0.0.1:
 *         ICMP to stack:   OK, RTT=412µs
 *         HTTP to agent:   OK, RTT=1.208ms
 *       Endpoint connectivity to 10.200.1.7:
 *         ICMP to stack:   OK, RTT=398µs
 *         HTTP to agent:   OK, RTT=1.1ms
 */
import type { AgentState, ClusterHealth, ClusterSummary, Connectivity, HealthChange, NodeHealth, ProbeStatus, Reachability } from './types.ts';

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

export interface HealthFormatOptions {
  /** The node the command asks from: printed first, as "(localhost)", and its own broken paths called out. */
  node?: string;
  /** One line per node. */
  succinct?: boolean;
  /** Who probed each path and when, reporter counts, agent and endpoint verdicts, the summaries of every kind. */
  verbose?: boolean;
  /** "now" for the verbose view's ages (tests). */
  nowMs?: number;
}

const AGENT_WORD: Record<AgentState, string> = {
  AGENT_STATE_UNSPECIFIED: 'unknown',
  AGENT_STATE_RUNNING: 'running',
  AGENT_STATE_NOT_RUNNING: 'not running',
  AGENT_STATE_UNKNOWN: 'unknown',
};
export const agentWord = (a: AgentState): string => AGENT_WORD[a];

function probeLine(status: ProbeStatus, options: HealthFormatOptions): string {
  if (!status.probed) return 'not probed yet';
  const text = status.ok ? `OK, RTT=${formatRtt(status.rttUs)}` : status.error || 'failed';
  if (!options.verbose) return text;
  const age = Math.max(0, Math.round(((options.nowMs ?? Date.now()) - status.timeUnixMs) / 1000));
  return `${text}   (by ${status.reporter}, ${age}s ago)`;
}

function connectivityLines(what: 'Host' | 'Endpoint', c: Connectivity, options: HealthFormatOptions): string[] {
  if (!c.ip) return [`    ${what} connectivity: no address known`];
  return [
    `    ${what} connectivity to ${c.ip}:`,
    `      ICMP to stack:   ${probeLine(c.icmp, options)}`,
    `      HTTP to agent:   ${probeLine(c.http, options)}`,
  ];
}

const nodeLabel = (node: NodeHealth, options: HealthFormatOptions) => `${node.name}${node.name === options.node ? ' (localhost)' : ''}`;

/** What is wrong with a node besides its reachability word, for the node's heading and the succinct line. */
function problems(node: NodeHealth, options: HealthFormatOptions): string[] {
  const out: string[] = [];
  if (node.agent === 'AGENT_STATE_NOT_RUNNING') out.push('agent not running');
  if (node.endpointReachability === 'REACHABILITY_UNREACHABLE') out.push('endpoint unreachable');
  if (node.unreachableFrom.length) {
    const from = node.unreachableFrom.map((r) => (r === options.node ? `${r} (localhost)` : r));
    out.push(`unreachable from ${from.join(', ')} (others reach it)`);
  }
  return out;
}

export function formatNodeHealth(node: NodeHealth, options: HealthFormatOptions = {}): string {
  const notes = problems(node, options);
  const heading = `  ${nodeLabel(node, options)}: ${reachabilityWord(node.reachability)}${notes.length ? `, ${notes.join(', ')}` : ''}`;
  if (options.succinct) {
    const word = (s: ProbeStatus[]) => (s.some((x) => x.probed && x.ok) ? 'OK' : s.some((x) => x.probed) ? 'FAIL' : 'not probed');
    return `${heading}   Host: ${word([node.host.icmp, node.host.http])}   Endpoint: ${word([node.endpoint.icmp, node.endpoint.http])}`;
  }
  const lines = [heading, ...connectivityLines('Host', node.host, options), ...connectivityLines('Endpoint', node.endpoint, options)];
  if (options.verbose) {
    lines.push(
      `    Agent:           ${agentWord(node.agent)}`,
      `    Endpoint:        ${reachabilityWord(node.endpointReachability)}`,
      `    Reporters:       ${node.reporters} (failing: ${node.failingReporters})`,
      `    Last probe:      ${isoTime(node.lastProbeUnixMs)}`,
    );
  }
  return lines.join('\n');
}

/** The full `sluice health status` text, ending in a newline. */
export function formatHealthStatus(health: ClusterHealth, options: HealthFormatOptions = {}): string {
  const lines = [`Probe time:   ${isoTime(health.summary.probeTimeUnixMs)}`, `Nodes:`];
  const local = options.node ? health.nodes.filter((n) => n.name === options.node) : [];
  for (const node of [...local, ...health.nodes.filter((n) => n.name !== options.node)]) lines.push(formatNodeHealth(node, options));
  lines.push(formatClusterSummary(health.summary));
  if (options.verbose) lines.push(...formatDetailSummaries(health));
  return `${lines.join('\n')}\n`;
}

/** The verbose view's summaries beside the cluster line: endpoints, agents, broken paths. */
export function formatDetailSummaries(health: ClusterHealth): string[] {
  const { summary } = health;
  const list = (names: readonly string[]) => (names.length <= 10 ? names.join(', ') : `${names.slice(0, 10).join(', ')}, … (${names.length})`);
  const reachable = health.nodes.filter((n) => n.endpointReachability === 'REACHABILITY_REACHABLE' || n.endpointReachability === 'REACHABILITY_SUSPECT').length;
  return [
    `Endpoint health: ${reachable}/${summary.total} reachable${summary.endpointUnreachable.length ? ` (unreachable: ${list(summary.endpointUnreachable)})` : ''}`,
    `Agents: ${summary.agentNotRunning.length ? `not running on ${list(summary.agentNotRunning)}` : 'none known down'}`,
    `Broken paths: ${summary.brokenPaths.length ? list(summary.brokenPaths) : 'none'}`,
  ];
}

/**
 * The one line of `sluice status`: "Cluster health: 4/5 reachable (unreachable: node-3)". `withoutAgent`: nodes
 * outside the health view, counted so that the line stays honest (kept for callers; every node record is a member).
 */
export function formatClusterSummary(summary: ClusterSummary, extra: { withoutAgent?: readonly string[] } = {}): string {
  const notes: string[] = [];
  const list = (names: readonly string[]) => (names.length <= 5 ? names.join(', ') : `${names.slice(0, 5).join(', ')}, …`);
  if (summary.unreachable.length) notes.push(`unreachable: ${summary.unreachable.join(', ')}`);
  if (summary.unknown.length) notes.push(`unknown: ${summary.unknown.join(', ')}`);
  if (summary.agentNotRunning?.length) notes.push(`agent not running: ${list(summary.agentNotRunning)}`);
  if (summary.brokenPaths?.length) notes.push(`broken paths: ${list(summary.brokenPaths)}`);
  const without = extra.withoutAgent ?? [];
  if (without.length) {
    notes.push(`${without.length} node${without.length === 1 ? '' : 's'} without an agent, not probed: ${list(without)}`);
  }
  return `Cluster health: ${summary.reachable}/${summary.total} reachable${notes.length ? ` (${notes.join('; ')})` : ''}`;
}

function probeJson(status: ProbeStatus) {
  return status.probed
    ? { status: status.ok ? 'OK' : status.error || 'failed', rttUs: status.rttUs, time: isoTime(status.timeUnixMs), reporter: status.reporter }
    : { status: 'not probed' };
}
const connectivityJson = (c: Connectivity) => ({ ip: c.ip, icmp: probeJson(c.icmp), http: probeJson(c.http) });

export const nodeHealthJson = (node: NodeHealth) => ({
  name: node.name,
  reachability: reachabilityWord(node.reachability),
  agent: agentWord(node.agent),
  endpointReachability: reachabilityWord(node.endpointReachability),
  unreachableFrom: node.unreachableFrom,
  lastProbe: isoTime(node.lastProbeUnixMs),
  reporters: node.reporters,
  failingReporters: node.failingReporters,
  host: connectivityJson(node.host),
  endpoint: connectivityJson(node.endpoint),
});

/** `sluice health status -o json`: stable field names, ISO times, reachability as one word. */
export function healthStatusJson(health: ClusterHealth) {
  return {
    probeTime: isoTime(health.summary.probeTimeUnixMs),
    reachable: health.summary.reachable,
    total: health.summary.total,
    unreachable: health.summary.unreachable,
    unknown: health.summary.unknown,
    endpointUnreachable: health.summary.endpointUnreachable,
    agentNotRunning: health.summary.agentNotRunning,
    brokenPaths: health.summary.brokenPaths,
    quorum: health.summary.quorum,
    nodes: health.nodes.map(nodeHealthJson),
  };
}

/** One watch event as JSON (`sluice health watch -o json`, one object per line). */
export const healthChangeJson = (change: HealthChange) => ({
  time: isoTime(change.timeUnixMs),
  node: change.node,
  previous: reachabilityWord(change.previous),
  current: change.removed ? 'removed' : reachabilityWord(change.current),
  removed: change.removed,
  health: nodeHealthJson(change.health),
});

/** One watch event as a line: "2026-… node-3: reachable → unreachable (agent not running)". */
export function formatHealthChange(change: HealthChange, options: HealthFormatOptions = {}): string {
  const what = change.removed
    ? `${reachabilityWord(change.previous)} → removed (left the cluster)`
    : change.previous === 'REACHABILITY_UNSPECIFIED'
      ? reachabilityWord(change.current)
      : `${reachabilityWord(change.previous)} → ${reachabilityWord(change.current)}`;
  const notes = change.removed ? [] : problems(change.health, options);
  return `${isoTime(change.timeUnixMs)}  ${nodeLabel(change.health, options)}: ${what}${notes.length ? ` (${notes.join(', ')})` : ''}\n`;
}

export const formatHealthJson = (health: ClusterHealth): string => `${JSON.stringify(healthStatusJson(health), null, 2)}\n`;
