/**
 * The records that agents publish about themselves (and that admins write for them), defined once here so that the
 * agent (writer), the CLI and the health service (readers) validate the same shape. Slim Kubernetes records live in
 * @sluice/slim; these are Sluice's own.
 */
import { SCHEMA_VERSION, ipString } from '@sluice/slim';
import { z } from 'zod';

export const RECORD_VERSION = SCHEMA_VERSION;

export const routingMode = z.enum(['native', 'tunnel']);
export type RoutingMode = z.infer<typeof routingMode>;
export const hostRoutingRequest = z.enum(['auto', 'bpf', 'legacy']);
export type HostRoutingRequest = z.infer<typeof hostRoutingRequest>;

/**
 * `<root>v1/nodeconfig/<node>`: per-node datapath settings, written by an admin or the demo; every field optional
 * (the agent's flags are the defaults). Read by the agent at start.
 */
export const nodeConfigRecord = z.strictObject({
  v: z.literal(RECORD_VERSION).optional(),
  routing: routingMode.optional(),
  hostRouting: hostRoutingRequest.optional(),
  /** Masquerading of pod traffic leaving the cluster: off, iptables or bpf (to_netdev); the old boolean: bpf/off. */
  masquerade: z.union([z.boolean(), z.enum(['off', 'iptables', 'bpf'])]).optional(),
  /** ip-masq-agent's nonMasqueradeCIDRs (IPv4): replaces the agent's --non-masquerade-cidrs, live. */
  nonMasqueradeCidrs: z.array(z.string().regex(/^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/).refine((c) => c.split(/[./]/).every((p, i) => Number(p) <= (i === 4 ? 32 : 255)), 'not an IPv4 CIDR')).max(1024).optional(),
  /** The pods' MTU, over the one derived from the uplink and routing mode; new pods get it. */
  mtu: z.number().int().min(1280).max(65_535).optional(),
  /** In the operator's record (keys.effectiveNodeConfig): the SluiceNodeConfigs it was resolved from, in order. */
  sources: z.array(z.string()).optional(),
});
export type NodeConfigRecord = z.infer<typeof nodeConfigRecord>;

/** `<root>v1/agents/<node>`: what an agent reports about itself, on its own lease (gone when the agent dies). */
export const agentStatusRecord = z.strictObject({
  v: z.literal(RECORD_VERSION),
  node: z.string().min(1),
  /** The agent's local status endpoint (/status, /healthz, /readyz, /metrics). */
  statusUrl: z.string(),
  version: z.string(),
  routing: routingMode,
  hostRouting: z.strictObject({
    mode: z.enum(['BPF', 'Legacy']),
    /** Empty for BPF; why legacy otherwise. */
    reason: z.string(),
    /** One line, Cilium style: "Host Routing: BPF" or "Host Routing: Legacy (…)". */
    status: z.string(),
  }),
  /** e.g. "BPF [IPv4: Enabled]" or "Disabled". */
  masquerading: z.string(),
  /** The MTU new pods' veths get: the uplink's, less the tunnel overhead (absent from agents before it). */
  podMtu: z.number().int().min(68).max(65535).optional(),
  /** The agent has programmed its maps from a complete view of etcd. */
  synced: z.boolean(),
  endpoints: z.strictObject({
    /** Pods on this node (in the endpoints map). */
    local: z.number().int().min(0),
    /** Pod IPs in the whole cluster this agent has programmed. */
    cluster: z.number().int().min(0),
    nodes: z.number().int().min(0),
  }),
});
export type AgentStatusRecord = z.infer<typeof agentStatusRecord>;

/**
 * `<root>v1/health/<node>`: where peers probe a node (like cilium-health), written by the node's agent on its lease
 * (gone when the agent dies). The ONE format of this key: the agent writes it, the probers (@sluice/prober peerOf),
 * the health service (its node list) and the CLI read it. A node with this record has an agent that probes and
 * answers probes; nodes without one (e.g. simulated nodes) are not part of the health view.
 */
export const healthEndpointRecord = z.strictObject({
  v: z.literal(RECORD_VERSION),
  node: z.string().min(1),
  /** The node IP the agent's health port listens on (the node record's InternalIP). */
  nodeIP: ipString,
  /** The agent's health HTTP port on nodeIP (GET /hello → 200); absent when the agent serves none. */
  agentPort: z.number().int().min(1).max(65535).optional(),
  /** The health endpoint's IP, from the node's podCIDR; absent while the node has no health endpoint. */
  healthIP: ipString.optional(),
  /** The HTTP port the health endpoint answers on; absent when it answers ICMP only. */
  healthPort: z.number().int().min(1).max(65535).optional(),
});
export type HealthEndpointRecord = z.infer<typeof healthEndpointRecord>;

/** Parses one of these records from etcd bytes; throws an Error naming the bad field. */
export function decodeRecord<S extends z.ZodType>(schema: S, what: string, bytes: Uint8Array | string): z.infer<S> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(typeof bytes === 'string' ? bytes : Buffer.from(bytes).toString('utf8'));
  } catch (err) {
    throw new Error(`${what} record is not valid JSON: ${(err as Error).message}`);
  }
  const result = schema.safeParse(parsed);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    throw new Error(`bad ${what} record: field ${issue.path.map(String).join('.') || '(record)'} ${issue.message}`);
  }
  return result.data;
}
