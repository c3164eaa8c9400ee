/**
 * Records from etcd (or the CNI plugin) that the tables refuse to program: a podCIDR outside the cluster CIDR, two
 * nodes' overlapping podCIDRs, a pod IP outside its node's podCIDR, one IP claimed by two pods... Each conflict is
 * logged once when it appears (and once when it clears), counted in sluice_agent_conflicts_total{reason}, and the
 * ones present now are in sluice_agent_active_conflicts{reason} and the agent's /status.
 */
import { RepeatSuppressor, type Logger } from '@sluice/log';
import { Counter, Gauge, type Registry } from '@sluice/metrics';

export type ConflictReason =
  | 'node_ip_in_cluster_cidr'
  | 'pod_cidr_outside_cluster'
  | 'pod_cidr_prefix_length'
  | 'pod_cidr_overlap'
  | 'pod_ip_outside_node_cidr'
  | 'pod_ip_claimed_twice'
  | 'health_ip_outside_node_cidr'
  | 'local_ip_outside_node_cidr'
  | 'service_ip_outside_service_cidr'
  | 'external_ip_in_cluster_range';

interface ConflictMetrics {
  total: Counter<'reason'>;
  current: Gauge<'reason'>;
}
const metricsByRegistry = new WeakMap<Registry, ConflictMetrics>();
function conflictMetrics(registry: Registry): ConflictMetrics {
  let m = metricsByRegistry.get(registry);
  if (!m) {
    const registers = [registry];
    m = {
      total: new Counter({ name: 'sluice_agent_conflicts_total', help: 'Records refused by the agent (not programmed), by reason, counted when the conflict appears', labelNames: ['reason'], registers }),
      current: new Gauge({ name: 'sluice_agent_active_conflicts', help: 'Conflicts present now, by reason', labelNames: ['reason'], registers }),
    };
    metricsByRegistry.set(registry, m);
  }
  return m;
}

export interface Conflict {
  reason: ConflictReason;
  subject: string;
  message: string;
}

const LISTED = 20;

export class Conflicts {
  private readonly active = new Map<string, Conflict>();
  private readonly metrics: ConflictMetrics | undefined;
  private readonly repeats = new RepeatSuppressor(60_000);

  constructor(private readonly log: Logger, registry?: Registry) {
    this.metrics = registry ? conflictMetrics(registry) : undefined;
  }

  get size(): number {
    return this.active.size;
  }

  has(reason: ConflictReason, subject: string): boolean {
    return this.active.has(`${reason}|${subject}`);
  }

  /** Reports a conflict; only its first report is logged and counted. */
  report(reason: ConflictReason, subject: string, message: string, detail: Record<string, unknown> = {}): void {
    const id = `${reason}|${subject}`;
    if (this.active.has(id)) return;
    this.active.set(id, { reason, subject, message });
    this.metrics?.total.inc({ reason });
    this.metrics?.current.inc({ reason });
    const suppressed = this.repeats.shouldLog(`report:${reason}`);
    if (suppressed !== undefined) this.log.warn({ reason, subject, ...detail, ...(suppressed ? { moreSinceLastLine: suppressed } : {}) }, `not programmed: ${message}`);
  }

  clear(reason: ConflictReason, subject: string): void {
    if (!this.active.size) return;
    const id = `${reason}|${subject}`;
    const c = this.active.get(id);
    if (!c) return;
    this.active.delete(id);
    this.metrics?.current.dec({ reason });
    const suppressed = this.repeats.shouldLog(`clear:${reason}`);
    if (suppressed !== undefined) this.log.info({ reason, subject, ...(suppressed ? { moreSinceLastLine: suppressed } : {}) }, `conflict cleared: ${c.message}`);
  }

  counts(): Partial<Record<ConflictReason, number>> {
    const out: Partial<Record<ConflictReason, number>> = {};
    for (const c of this.active.values()) out[c.reason] = (out[c.reason] ?? 0) + 1;
    return out;
  }

  list(limit = LISTED): Conflict[] {
    return [...this.active.values()].slice(0, limit);
  }
}
