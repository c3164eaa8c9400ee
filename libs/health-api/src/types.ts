/**
 * The messages of sluice.health.v1 as TypeScript types, each inferred from a zod schema that validates what arrives
 * from the wire (proto-loader hands out untyped objects). Field names are proto-loader's camelCase; enums are their
 * proto names; int64 fields are numbers (milliseconds and microseconds stay far below 2^53).
 */
import { z } from 'zod';

export const PROBE_KINDS = ['PROBE_KIND_HOST_ICMP', 'PROBE_KIND_HOST_HTTP', 'PROBE_KIND_ENDPOINT_ICMP', 'PROBE_KIND_ENDPOINT_HTTP'] as const;
export const probeKind = z.enum(PROBE_KINDS);
export type ProbeKind = z.infer<typeof probeKind>;

export const REACHABILITIES = ['REACHABILITY_UNSPECIFIED', 'REACHABILITY_REACHABLE', 'REACHABILITY_SUSPECT', 'REACHABILITY_UNREACHABLE', 'REACHABILITY_UNKNOWN'] as const;
export const reachability = z.enum(REACHABILITIES);
export type Reachability = z.infer<typeof reachability>;

export const AGENT_STATES = ['AGENT_STATE_UNSPECIFIED', 'AGENT_STATE_RUNNING', 'AGENT_STATE_NOT_RUNNING', 'AGENT_STATE_UNKNOWN'] as const;
export const agentState = z.enum(AGENT_STATES);
export type AgentState = z.infer<typeof agentState>;

/** Kubernetes node names: DNS subdomains. */
export const NODE_NAME_PATTERN = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;
export const nodeName = z.string().min(1).max(253).regex(NODE_NAME_PATTERN, 'is not a valid node name');
const millis = z.number().int().min(0);

export const probeResultSchema = z.object({
  // Not matched against the name pattern (the cost shows at 75,000 results/s): the service ignores targets that are
  // not known nodes anyway.
  target: z.string().min(1).max(253),
  kind: probeKind,
  ip: z.string().max(64),
  ok: z.boolean(),
  rttUs: z.number().int().min(0),
  error: z.string().max(512),
  timeUnixMs: millis.positive(),
});
export type ProbeResult = z.infer<typeof probeResultSchema>;

/** At most this many results per ReportProbes call; a node reports a few dozen per round. */
export const MAX_RESULTS_PER_REPORT = 10_000;

export const reportProbesRequestSchema = z.object({
  reporter: nodeName,
  results: z.array(probeResultSchema).max(MAX_RESULTS_PER_REPORT),
});
export type ReportProbesRequest = z.infer<typeof reportProbesRequestSchema>;

export const reportProbesResponseSchema = z.object({ accepted: z.number().int(), ignored: z.number().int() });
export type ReportProbesResponse = z.infer<typeof reportProbesResponseSchema>;

export const probeStatusSchema = z.object({
  probed: z.boolean(),
  ok: z.boolean(),
  rttUs: z.number().int().min(0),
  error: z.string(),
  timeUnixMs: millis,
  reporter: z.string(),
});
export type ProbeStatus = z.infer<typeof probeStatusSchema>;

export const connectivitySchema = z.object({ ip: z.string(), icmp: probeStatusSchema, http: probeStatusSchema });
export type Connectivity = z.infer<typeof connectivitySchema>;

export const nodeHealthSchema = z.object({
  name: z.string().min(1),
  reachability,
  host: connectivitySchema,
  endpoint: connectivitySchema,
  lastProbeUnixMs: millis,
  failingReporters: z.number().int().min(0),
  reporters: z.number().int().min(0),
  agent: agentState,
  endpointReachability: reachability,
  unreachableFrom: z.array(z.string()),
});
export type NodeHealth = z.infer<typeof nodeHealthSchema>;

export const clusterSummarySchema = z.object({
  reachable: z.number().int().min(0),
  total: z.number().int().min(0),
  probeTimeUnixMs: millis,
  unreachable: z.array(z.string()),
  unknown: z.array(z.string()),
  quorum: z.number().int().min(0),
  endpointUnreachable: z.array(z.string()),
  agentNotRunning: z.array(z.string()),
  brokenPaths: z.array(z.string()),
});
export type ClusterSummary = z.infer<typeof clusterSummarySchema>;

export const clusterHealthSchema = z.object({ summary: clusterSummarySchema, nodes: z.array(nodeHealthSchema) });
export type ClusterHealth = z.infer<typeof clusterHealthSchema>;

export const getNodeHealthRequestSchema = z.object({ node: nodeName });
export const getClusterHealthRequestSchema = z.object({ summaryOnly: z.boolean() });
export const watchClusterHealthRequestSchema = z.object({ sendInitial: z.boolean() });

export const healthChangeSchema = z.object({
  node: z.string().min(1),
  previous: reachability,
  current: reachability,
  timeUnixMs: millis,
  health: nodeHealthSchema,
  removed: z.boolean(),
});
export type HealthChange = z.infer<typeof healthChangeSchema>;

/** A wire message that does not match its schema; `field` names the first bad one. */
export class HealthApiError extends Error {
  constructor(message: string, readonly field: string) {
    super(message);
    this.name = 'HealthApiError';
  }
}

/** Validates a decoded message; throws HealthApiError naming the first bad field. */
export function parseMessage<S extends z.ZodType>(schema: S, value: unknown, what: string): z.infer<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  const field = issue.path.map(String).join('.') || '(message)';
  throw new HealthApiError(`bad ${what}: ${field} ${issue.message}`, field);
}

export const emptyProbeStatus = (): ProbeStatus => ({ probed: false, ok: false, rttUs: 0, error: '', timeUnixMs: 0, reporter: '' });
