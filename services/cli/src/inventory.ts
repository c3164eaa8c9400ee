/** `sluice nodes` and `sluice endpoints`: what etcd holds, as the agents see it. */
import type { AgentStatusRecord } from '@sluice/kvstore';
import type { SlimNode, SlimPod } from '@sluice/slim';
import { openCluster, readAgents, readNodes, readPods } from './cluster.ts';
import { renderTable } from './render.ts';
import type { Target } from './target.ts';

export interface NodeRow {
  name: string;
  internalIP: string;
  podCIDRs: string[];
  ready: string;
  labels: Record<string, string>;
  agent?: { synced: boolean; hostRouting: string; routing: string; localEndpoints: number };
}

export interface Inventory<T> {
  items: T[];
  errors: string[];
}

export async function listNodes(target: Target): Promise<Inventory<NodeRow>> {
  const reader = openCluster(target.etcd, target.etcdRoot);
  try {
    const [nodes, agents] = await Promise.all([readNodes(reader), readAgents(reader)]);
    const byNode = new Map<string, AgentStatusRecord>(agents.items.map((a) => [a.node, a]));
    const items = nodes.items.sort((a, b) => a.name.localeCompare(b.name)).map((n: SlimNode): NodeRow => {
      const a = byNode.get(n.name);
      return {
        name: n.name,
        internalIP: n.addresses.find((x) => x.type === 'InternalIP')?.ip ?? '',
        podCIDRs: n.podCIDRs,
        ready: n.ready,
        labels: n.labels,
        agent: a && { synced: a.synced, hostRouting: a.hostRouting.mode, routing: a.routing, localEndpoints: a.endpoints.local },
      };
    });
    return { items, errors: [...nodes.errors, ...agents.errors] };
  } finally {
    reader.close();
  }
}

/** Labels every node carries (kubelet's well-known ones) would drown the ones a user set. */
const WELL_KNOWN = /^(kubernetes\.io|beta\.kubernetes\.io|node\.kubernetes\.io|topology\.kubernetes\.io|node-role\.kubernetes\.io|failure-domain\.beta\.kubernetes\.io)\//;

export function renderNodes(rows: NodeRow[]): string {
  if (!rows.length) return 'No nodes in etcd (is the operator running?)\n';
  return renderTable(
    ['NAME', 'INTERNAL-IP', 'POD-CIDR', 'READY', 'AGENT', 'HOST-ROUTING', 'ENDPOINTS', 'LABELS'],
    rows.map((r) => [
      r.name,
      r.internalIP,
      r.podCIDRs.join(',') || '-',
      r.ready,
      r.agent ? (r.agent.synced ? 'synced' : 'syncing') : '-',
      r.agent ? r.agent.hostRouting : '-',
      r.agent ? String(r.agent.localEndpoints) : '-',
      Object.entries(r.labels)
        .filter(([k]) => !WELL_KNOWN.test(k))
        .map(([k, v]) => `${k}=${v}`)
        .join(',') || '-',
    ]),
  );
}

export async function listEndpoints(target: Target, node?: string): Promise<Inventory<SlimPod>> {
  const reader = openCluster(target.etcd, target.etcdRoot);
  try {
    const pods = await readPods(reader);
    const items = pods.items
      .filter((p) => !node || p.nodeName === node)
      .sort((a, b) => a.namespace.localeCompare(b.namespace) || a.name.localeCompare(b.name));
    return { items, errors: pods.errors };
  } finally {
    reader.close();
  }
}

export function renderEndpoints(pods: SlimPod[]): string {
  if (!pods.length) return 'No endpoints in etcd\n';
  return renderTable(
    ['NAMESPACE', 'NAME', 'NODE', 'IPS', 'PHASE'],
    pods.map((p) => [p.namespace, p.name, p.nodeName || '-', p.podIPs.join(',') || '-', p.deleting ? `${p.phase} (deleting)` : p.phase]),
  );
}
