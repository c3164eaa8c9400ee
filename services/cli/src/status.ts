/**
 * `sluice status`: gathers one snapshot of the cluster (etcd, Kubernetes, operator, agents, health) into a report
 * that render.ts prints in the shape of `cilium status`, or --json prints as it is.
 */
import type { AgentStatusRecord } from '@sluice/kvstore';
import { formatClusterSummary, type ClusterSummary } from '@sluice/health-api';
import { healthClientFor, type HealthTls } from './health-commands.ts';
import { countPrefix, etcdStatus, openCluster, readAgents, readNodes, readOperator, type EtcdStatus } from './cluster.ts';
import { CliError, oneLine } from './errors.ts';
import { readKube, readNodeConfigs, type NodeConfigView } from './kube.ts';
import type { Target } from './target.ts';
import { z } from '@sluice/config';

/** The part of an agent's local /status this command reads: its etcd watch health, its reconcilers' rows. */
const agentWatchSchema = z.object({
  etcd: z.object({ connected: z.boolean(), retries: z.number(), decodeErrors: z.number(), lastError: z.string().optional() }),
  reconcilers: z.array(z.object({ name: z.string(), rows: z.object({ done: z.number(), pending: z.number(), error: z.number() }), driftRepaired: z.number().optional() })).optional(),
  conflicts: z.object({ counts: z.record(z.string(), z.number()) }).optional(),
  kubeProxyReplacement: z.object({ enabled: z.boolean(), socketLb: z.boolean().optional(), xdpAcceleration: z.enum(['Native', 'Generic', 'Disabled']).optional(), synced: z.boolean(), services: z.number(), programmed: z.number() }).optional(),
  l2Announcements: z.object({ eligible: z.number(), announcing: z.array(z.string()), uplinkUp: z.boolean() }).optional(),
});
type AgentLocalStatus = z.infer<typeof agentWatchSchema>;
type AgentWatch = AgentLocalStatus['etcd'];

/** Each agent's local status from its status endpoint (best effort: an endpoint this host cannot reach is left out). */
async function readAgentWatches(agents: AgentStatusRecord[], timeoutMs: number): Promise<Map<string, AgentLocalStatus>> {
  const out = new Map<string, AgentLocalStatus>();
  await Promise.all(
    agents.map(async (a) => {
      if (!a.statusUrl) return;
      try {
        const response = await fetch(`${a.statusUrl.replace(/\/$/, '')}/status`, { signal: AbortSignal.timeout(timeoutMs) });
        out.set(a.node, agentWatchSchema.parse(await response.json()));
      } catch {
        // not reachable from here (another host) or not answering: the etcd record still speaks for it
      }
    }),
  );
  return out;
}

export type Level = 'Ok' | 'Warning' | 'Error' | 'Disabled';

export interface Section {
  state: Level;
  /** What follows the state on the status line. */
  summary: string;
  data?: Record<string, unknown>;
}

export interface StatusReport {
  node?: string;
  time: string;
  kvstore: Section;
  kubernetes: Section;
  operator: Section;
  agents: Section;
  hostRouting: Section;
  masquerading: Section;
  podMtu: Section;
  nodeConfig: Section;
  kubeProxyReplacement: Section;
  l2Announcements: Section;
  endpoints: Section;
  controllers: Section;
  reconcilers: Section;
  clusterHealth: Section;
}

export const SECTION_LABELS: Record<Exclude<keyof StatusReport, 'node' | 'time'>, string> = {
  kvstore: 'KVStore',
  kubernetes: 'Kubernetes',
  operator: 'Operator',
  agents: 'Agents',
  hostRouting: 'Host Routing',
  masquerading: 'Masquerading',
  podMtu: 'Pod MTU',
  nodeConfig: 'Node Config',
  kubeProxyReplacement: 'KubeProxyReplacement',
  l2Announcements: 'L2 Announcements',
  endpoints: 'Endpoints',
  controllers: 'Controller Status',
  reconcilers: 'Reconcilers',
  clusterHealth: 'Cluster health',
};

export const failed = (report: StatusReport): boolean =>
  Object.entries(report).some(([, v]) => typeof v === 'object' && v !== null && (v as Section).state === 'Error');

function kvstoreSection(status: EtcdStatus, total: number): Section {
  const role = status.isLeader ? 'Leader' : `Follower, leader ${status.leader}`;
  return {
    state: status.connected === total ? 'Ok' : 'Warning',
    summary: `etcd: ${status.connected}/${total} connected, revision ${status.revision}: ${status.endpoint} - ${status.version} (${role})`,
    data: { ...status, total },
  };
}

/** Groups agents by a one-line value: "BPF" on all, or "BPF on a, b; Legacy (why) on c". */
export function byValue(agents: AgentStatusRecord[], value: (a: AgentStatusRecord) => string): string {
  const groups = new Map<string, string[]>();
  for (const a of agents) groups.set(value(a), [...(groups.get(value(a)) ?? []), a.node]);
  if (groups.size === 1) {
    const [[text, nodes]] = [...groups] as [[string, string[]]];
    return agents.length === 1 ? `${text}` : `${text}   [${nodes.length}/${agents.length} nodes]`;
  }
  return [...groups].map(([text, nodes]) => `${text} on ${nodes.sort().join(', ')}`).join('; ');
}

const hostRoutingText = (a: AgentStatusRecord) => (a.hostRouting.mode === 'BPF' ? 'BPF' : `Legacy (${a.hostRouting.reason || 'no reason given'})`);

export interface StatusOptions {
  node?: string;
  /** TLS to the health service (the CLI's --health-tls-* flags). */
  healthTls?: HealthTls;
  /** Deadline for each remote call. */
  timeoutMs?: number;
}

export async function gatherStatus(target: Target, options: StatusOptions = {}): Promise<StatusReport> {
  const reader = openCluster(target.etcd, target.etcdRoot);
  try {
    const etcd = await etcdStatus(reader);
    const [operator, agentsRead, nodesRead, podCount, kube, health, nodeConfigs] = await Promise.all([
      readOperator(reader),
      readAgents(reader),
      readNodes(reader),
      countPrefix(reader, reader.keys.prefix('pods')),
      target.kubeconfig ? readKube(target.kubeconfig, options.timeoutMs) : Promise.resolve(undefined),
      readHealth(target.healthAddress, options.timeoutMs, options.healthTls),
      target.kubeconfig ? readNodeConfigs(target.kubeconfig, options.timeoutMs) : Promise.resolve(undefined),
    ]);
    let agents = agentsRead.items.sort((a, b) => a.node.localeCompare(b.node));
    const nodeNames = nodesRead.items.map((n) => n.name);
    if (options.node) {
      const known = nodeNames.includes(options.node) || agents.some((a) => a.node === options.node);
      if (!known) throw new CliError(`no node ${options.node} in etcd (known: ${nodeNames.slice(0, 10).join(', ') || 'none'}${nodeNames.length > 10 ? ', …' : ''})`);
      agents = agents.filter((a) => a.node === options.node);
    }
    const expected = target.demo ? target.demo.nodes.map((n) => n.name) : undefined;
    const locals = await readAgentWatches(agents, Math.min(options.timeoutMs ?? 3000, 1500));
    const watches = new Map([...locals].map(([node, l]) => [node, l.etcd]));
    const report: StatusReport = {
      node: options.node,
      time: new Date().toISOString(),
      kvstore: kvstoreSection(etcd, reader.endpoints.length),
      kubernetes: kube
        ? kube.reachable
          ? { state: 'Ok', summary: `${kube.version ?? 'unknown version'} [${kube.platform ?? '?'}] at ${kube.server}`, data: { ...kube } }
          : { state: 'Error', summary: `${kube.server || 'API server'} unreachable: ${kube.error}`, data: { ...kube } }
        : { state: 'Disabled', summary: 'no kubeconfig (pass --kubeconfig)' },
      operator: operatorSection(operator),
      agents: agentsSection(agents, options.node, expected, nodeNames.length, agentsRead.errors),
      hostRouting: agents.length
        ? { state: 'Ok', summary: byValue(agents, hostRoutingText), data: Object.fromEntries(agents.map((a) => [a.node, a.hostRouting])) }
        : { state: 'Disabled', summary: 'unknown (no agent reporting)' },
      masquerading: agents.length
        ? { state: 'Ok', summary: byValue(agents, (a) => a.masquerading), data: Object.fromEntries(agents.map((a) => [a.node, a.masquerading])) }
        : { state: 'Disabled', summary: 'unknown (no agent reporting)' },
      // The MTU new pods' veths get (the uplink's, less the tunnel's overhead in tunnel mode), per agent.
      podMtu: agents.some((a) => a.podMtu)
        ? { state: 'Ok', summary: byValue(agents, (a) => (a.podMtu ? String(a.podMtu) : 'unknown')), data: Object.fromEntries(agents.map((a) => [a.node, a.podMtu ?? null])) }
        : { state: 'Disabled', summary: 'unknown (no agent reports it)' },
      nodeConfig: nodeConfigSection(nodeConfigs),
      kubeProxyReplacement: kubeProxyReplacementSection(locals, agents.length),
      l2Announcements: l2AnnouncementsSection(locals),
      endpoints: endpointsSection(agents, podCount, options.node),
      controllers: controllersSection(operator.syncedKinds.length, operator.kinds.length, agents, watches, [...agentsRead.errors, ...nodesRead.errors]),
      reconcilers: reconcilersSection(locals, agents.length),
      // Every node record is a member of the health view (one without an agent shows as such): nothing left out.
      clusterHealth: health.summary ? summarySection(health.summary) : health.section,
    };
    return report;
  } finally {
    reader.close();
  }
}

/** SluiceNodeConfigs whose keys the operator refused are a warning, each named with the reason: never silently ignored. */
export function nodeConfigSection(configs: NodeConfigView[] | string | undefined): Section {
  if (configs === undefined) return { state: 'Disabled', summary: 'no kubeconfig (pass --kubeconfig)' };
  if (typeof configs === 'string') return { state: 'Warning', summary: `SluiceNodeConfigs not read: ${configs}` };
  const invalid = configs.filter((c) => c.valid === false);
  const pending = configs.filter((c) => c.valid === undefined);
  const parts = [`${configs.length} SluiceNodeConfig${configs.length === 1 ? '' : 's'}`];
  if (invalid.length) parts.push(`${invalid.length} with refused keys: ${invalid.map((c) => `${c.name} (${c.message || 'no message'})`).join('; ')}`);
  if (pending.length) parts.push(`${pending.length} not yet checked by the operator: ${pending.map((c) => c.name).join(', ')}`);
  return { state: invalid.length ? 'Warning' : 'Ok', summary: parts.join(', '), data: { configs } };
}

function operatorSection(view: Awaited<ReturnType<typeof readOperator>>): Section {
  const synced = `${view.syncedKinds.length}/${view.kinds.length} kinds synced`;
  if (view.heartbeat) {
    const h = view.heartbeat;
    const isSynced = view.syncedKinds.length === view.kinds.length;
    return {
      state: isSynced ? 'Ok' : 'Warning',
      summary: `leader ${h.identity} (term ${h.term}, since ${h.leaderSince}), ${isSynced ? 'synced' : synced}`,
      data: { ...h, synced: isSynced, syncedKinds: view.syncedKinds },
    };
  }
  if (view.heartbeatError) return { state: 'Error', summary: `unreadable heartbeat: ${view.heartbeatError}` };
  return { state: 'Error', summary: `no leader (no heartbeat in etcd; ${synced})`, data: { syncedKinds: view.syncedKinds } };
}

function agentsSection(agents: AgentStatusRecord[], node: string | undefined, expected: string[] | undefined, nodes: number, errors: string[]): Section {
  const versions = [...new Set(agents.map((a) => a.version))].join(', ');
  if (node) {
    const a = agents[0];
    return a
      ? { state: a.synced ? 'Ok' : 'Warning', summary: `${a.node}: ${a.synced ? 'running, synced' : 'running, not synced yet'} (${a.version}, ${a.routing} routing) ${a.statusUrl}`, data: { ...a } }
      : { state: 'Error', summary: `no agent reporting for ${node}` };
  }
  const missing = expected?.filter((n) => !agents.some((a) => a.node === n)) ?? [];
  const want = expected?.length ?? agents.length;
  const parts = [`${agents.length - (expected ? agents.filter((a) => !expected.includes(a.node)).length : 0)}/${want} running`];
  if (versions) parts.push(`version ${versions}`);
  if (nodes > agents.length) parts.push(`${nodes - agents.length} of ${nodes} nodes without an agent`);
  if (missing.length) parts.push(`missing: ${missing.join(', ')}`);
  if (errors.length) parts.push(`${errors.length} unreadable records`);
  const state: Level = missing.length || errors.length ? 'Warning' : agents.length ? 'Ok' : 'Warning';
  return { state, summary: parts.join(', '), data: { running: agents.map((a) => a.node), missing, errors } };
}

function endpointsSection(agents: AgentStatusRecord[], podCount: number, node: string | undefined): Section {
  const local = agents.reduce((sum, a) => sum + a.endpoints.local, 0);
  if (node) {
    const a = agents[0];
    return a
      ? { state: 'Ok', summary: `${a.endpoints.local} local, ${a.endpoints.cluster} cluster-wide programmed, ${a.endpoints.nodes} nodes; ${podCount} pods in etcd`, data: { ...a.endpoints, podsInEtcd: podCount } }
      : { state: 'Disabled', summary: `${podCount} pods in etcd` };
  }
  return { state: 'Ok', summary: `${podCount} pods in etcd, ${local} local endpoints on ${agents.length} agents`, data: { podsInEtcd: podCount, local } };
}

function controllersSection(syncedKinds: number, kinds: number, agents: AgentStatusRecord[], watches: Map<string, AgentWatch>, errors: string[]): Section {
  const healthyAgent = (a: AgentStatusRecord) => a.synced && watches.get(a.node)?.connected !== false;
  const syncedAgents = agents.filter((a) => a.synced).length;
  const total = kinds + agents.length;
  const healthy = syncedKinds + agents.filter(healthyAgent).length;
  const seen = [...watches.values()];
  const retries = seen.reduce((sum, w) => sum + w.retries, 0);
  const decodeErrors = seen.reduce((sum, w) => sum + w.decodeErrors, 0);
  const disconnected = [...watches].filter(([, w]) => !w.connected).map(([node]) => node);
  const watchNote = seen.length
    ? `, agent etcd watches: ${seen.length - disconnected.length}/${seen.length} connected, ${retries} retries, ${decodeErrors} decode errors`
    : '';
  return {
    state: healthy === total && !errors.length ? 'Ok' : 'Warning',
    summary: `${healthy}/${total} healthy (operator mirrors synced ${syncedKinds}/${kinds}, agents synced ${syncedAgents}/${agents.length}${watchNote}, record errors ${errors.length})`,
    data: { syncedKinds, kinds, syncedAgents, agents: agents.length, watches: Object.fromEntries(watches), disconnected, errors },
  };
}

/** Rows per target summed over the agents whose status endpoint answered: done, pending, in error; drift; conflicts. */
/** What the agents' service load balancer does (their local /status), like cilium's "KubeProxyReplacement: True". */
export function kubeProxyReplacementSection(locals: Map<string, AgentLocalStatus>, agents: number): Section {
  const reporting = [...locals].filter(([, l]) => l.kubeProxyReplacement);
  if (!reporting.length) return { state: 'Disabled', summary: 'unknown (no agent status endpoint reachable from here)' };
  const off = reporting.filter(([, l]) => !l.kubeProxyReplacement!.enabled).map(([n]) => n);
  const syncing = reporting.filter(([, l]) => !l.kubeProxyReplacement!.synced).map(([n]) => n);
  const services = Math.max(...reporting.map(([, l]) => l.kubeProxyReplacement!.services));
  const socketLb = reporting.filter(([, l]) => l.kubeProxyReplacement!.socketLb).length;
  const socket = socketLb === reporting.length ? 'socket LB' : socketLb ? `socket LB on ${socketLb}/${reporting.length}` : 'no socket LB';
  const features = `[ClusterIP, NodePort, ExternalIPs, LoadBalancer IPs; TCP, UDP; Maglev, connection tracking, session affinity, traffic policies; ${socket}]`;
  const parts = [off.length === reporting.length ? 'False' : `True   ${features}`, `${services} services`, `${reporting.length}/${agents} agents reporting`];
  if (off.length && off.length < reporting.length) parts.push(`off on ${off.join(', ')}`);
  if (syncing.length) parts.push(`not synced yet on ${syncing.join(', ')}`);
  // `XDP Acceleration: Native` under the line with --verbose, per node when the agents differ.
  const xdpByNode = reporting.map(([n, l]) => ({ node: n, xdp: l.kubeProxyReplacement!.xdpAcceleration ?? 'Disabled' }));
  const xdpModes = [...new Set(xdpByNode.map((x) => x.xdp))];
  const xdp = xdpModes.length === 1 ? xdpModes[0]! : xdpModes.map((m) => `${m} on ${xdpByNode.filter((x) => x.xdp === m).map((x) => x.node).join(', ')}`).join('; ');
  return {
    state: syncing.length ? 'Warning' : 'Ok',
    summary: parts.join(', '),
    data: { 'XDP Acceleration': xdp, ...Object.fromEntries(reporting.map(([n, l]) => [n, l.kubeProxyReplacement])) },
  };
}

/**
 * Which node answers ARP for each LoadBalancer/external address (the agents' local /status): one node per address;
 * an address two nodes announce is a Warning (a partition, or an agent that died holding it).
 */
export function l2AnnouncementsSection(locals: Map<string, AgentLocalStatus>): Section {
  const reporting = [...locals].filter(([, l]) => l.l2Announcements);
  const byIp = new Map<string, string[]>();
  for (const [node, l] of reporting) for (const ip of l.l2Announcements!.announcing) byIp.set(ip, [...(byIp.get(ip) ?? []), node]);
  const eligible = reporting.filter(([, l]) => l.l2Announcements!.eligible > 0);
  if (!byIp.size && !eligible.length) return { state: 'Disabled', summary: reporting.length ? 'no address to announce (no SluiceL2AnnouncementPolicy selects one)' : 'unknown (no agent status endpoint reachable from here)' };
  const twice = [...byIp].filter(([, nodes]) => nodes.length > 1);
  const down = reporting.filter(([, l]) => !l.l2Announcements!.uplinkUp).map(([n]) => n);
  const list = [...byIp].sort(([a], [b]) => (a < b ? -1 : 1)).map(([ip, nodes]) => `${ip} on ${nodes.join('+')}`);
  const parts = [`${byIp.size} address${byIp.size === 1 ? '' : 'es'} announced${list.length ? ` (${list.slice(0, 8).join(', ')}${list.length > 8 ? ', ...' : ''})` : ''}`, `${eligible.length}/${reporting.length} agents eligible`];
  if (down.length) parts.push(`uplink down on ${down.join(', ')}`);
  if (twice.length) parts.push(`announced by more than one node: ${twice.map(([ip]) => ip).join(', ')}`);
  return { state: twice.length || (eligible.length && !byIp.size) ? 'Warning' : 'Ok', summary: parts.join(', '), data: Object.fromEntries(byIp) };
}

export function reconcilersSection(locals: Map<string, AgentLocalStatus>, agents: number): Section {
  const reporting = [...locals].filter(([, l]) => l.reconcilers);
  if (!reporting.length) return { state: 'Disabled', summary: 'unknown (no agent status endpoint reachable from here)' };
  const byTarget = new Map<string, { done: number; pending: number; error: number; drift: number; errorNodes: string[] }>();
  let conflicts = 0;
  for (const [node, l] of reporting) {
    for (const r of l.reconcilers ?? []) {
      const t = byTarget.get(r.name) ?? { done: 0, pending: 0, error: 0, drift: 0, errorNodes: [] };
      t.done += r.rows.done;
      t.pending += r.rows.pending;
      t.error += r.rows.error;
      t.drift += r.driftRepaired ?? 0;
      if (r.rows.error) t.errorNodes.push(node);
      byTarget.set(r.name, t);
    }
    for (const n of Object.values(l.conflicts?.counts ?? {})) conflicts += n;
  }
  const sum = (k: 'done' | 'pending' | 'error' | 'drift') => [...byTarget.values()].reduce((a, t) => a + t[k], 0);
  const inError = [...byTarget].filter(([, t]) => t.error).map(([name, t]) => `${name} ${t.error} (${t.errorNodes.join(', ')})`);
  const summary = `${byTarget.size} targets on ${reporting.length}/${agents} agents: ${sum('done')} rows done, ${sum('pending')} pending, ${sum('error')} in error${inError.length ? ` [${inError.join('; ')}]` : ''}; drift repaired ${sum('drift')}; records refused ${conflicts}`;
  return {
    state: sum('error') || conflicts ? 'Warning' : 'Ok',
    summary,
    data: { targets: Object.fromEntries(byTarget), conflicts, agents: Object.fromEntries(reporting.map(([node, l]) => [node, { reconcilers: l.reconcilers, conflicts: l.conflicts?.counts ?? {} }])) },
  };
}

async function readHealth(address: string | undefined, timeoutMs = 3000, tls: HealthTls = {}): Promise<{ summary?: ClusterSummary; section: Section }> {
  if (!address) return { section: { state: 'Disabled', summary: 'no health service (pass --health host:port)' } };
  const client = await healthClientFor(address, tls, timeoutMs);
  try {
    const health = await client.getClusterHealth({ summaryOnly: true });
    return { summary: health.summary, section: summarySection(health.summary) };
  } catch (err) {
    return { section: { state: 'Error', summary: `health service at ${address} unreachable: ${oneLine(err)}` } };
  } finally {
    client.close();
  }
}

/** Nodes in etcd without a health record: no agent probes them or answers probes, so the health view leaves them out. */
export function withoutAgent(nodeNames: readonly string[], healthRecordNodes: readonly string[]): string[] {
  const members = new Set(healthRecordNodes);
  return nodeNames.filter((n) => !members.has(n)).sort();
}

/** `--wait`: nothing in error and the health service (when there is one) sees every node reachable. */
export function ready(report: StatusReport): boolean {
  if (failed(report)) return false;
  const health = report.clusterHealth.data as ClusterSummary | undefined;
  return report.clusterHealth.state === 'Disabled' || (!!health && health.total > 0 && health.reachable === health.total && health.unreachable.length === 0);
}

export function summarySection(summary: ClusterSummary, withoutAgentNodes: readonly string[] = []): Section {
  const line = formatClusterSummary(summary, { withoutAgent: withoutAgentNodes }).replace(/^Cluster health:\s*/, '');
  const time = summary.probeTimeUnixMs > 0 ? `   (${new Date(summary.probeTimeUnixMs).toISOString()})` : '';
  const state: Level = summary.unreachable.length || summary.agentNotRunning.length || summary.brokenPaths.length || summary.endpointUnreachable.length ? 'Warning' : 'Ok';
  return { state, summary: `${line}${time}`, data: { ...summary, withoutAgent: [...withoutAgentNodes] } };
}
