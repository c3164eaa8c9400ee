/**
 * LB IPAM and the L2 announcement records, run by the operator beside its mirrors.
 *
 * Every instance follows pools, Services and L2 policies (a warm standby); only the leader writes:
 * - each managed Service's `status.loadBalancer.ingress` and its `sluice.io/lb-ipam-request-satisfied` condition
 *   (merge PATCH of the status subresource), as `allocate` decides from what Kubernetes holds right now;
 * - each pool's status conditions (addresses total/used/available, conflicts with an older pool, bad blocks);
 * - one etcd record per SluiceL2AnnouncementPolicy (`keys.l2Announcement`), with the addresses it selects, through a
 *   fenced KvWriter whose term sweeps what a previous leader left behind.
 * Nothing is kept between passes but the caches: a new leader's first pass reads the assignment back from the
 * Services' status and changes nothing that is already right.
 */
import { CoreV1Api, CustomObjectsApi, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { Counter, Gauge } from '@sluice/metrics';
import { encodeSlimL2Announcement, labelSelectorSchema, matchesLabelSelector, SCHEMA_VERSION, type LabelSelector, type SlimL2Announcement } from '@sluice/slim';
import { LeaderGatedLoop, type ControllerOptions } from '../leader-gated.ts';
import { allocate, canonicalIp, isOurs, REQUESTED_IPS_ANNOTATION, SERVICE_CONDITION, type Allocation, type Condition, type Family, type PoolInput, type ServiceInput } from './allocator.ts';
import { ObjectCache, type Obj } from './informer.ts';

export const POOLS_PATH = '/apis/sluice.io/v1alpha1/sluiceloadbalancerippools';
export const L2_POLICIES_PATH = '/apis/sluice.io/v1alpha1/sluicel2announcementpolicies';
const SERVICES_PATH = '/api/v1/services';

export type LbIpamOptions = ControllerOptions;

/** Status writes are merge patches: they replace our fields and leave the rest of the status alone. */
const MERGE_PATCH = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

type Any = Record<string, any>;

const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
const strMap = (v: unknown): Record<string, string> =>
  typeof v === 'object' && v !== null ? Object.fromEntries(Object.entries(v).filter((e): e is [string, string] => typeof e[1] === 'string')) : {};
const selector = (v: unknown): LabelSelector | undefined => {
  if (v === undefined || v === null) return undefined;
  const parsed = labelSelectorSchema.safeParse(v);
  // A selector we cannot read selects nothing rather than everything.
  return parsed.success ? parsed.data : { matchExpressions: [{ key: 'sluice.io/unreadable-selector', operator: 'Exists' }] };
};

export function poolInput(o: Obj): PoolInput {
  const spec = (o.spec ?? {}) as Any;
  return {
    name: str(o.metadata?.name) ?? '',
    created: str(o.metadata?.creationTimestamp) ?? '',
    blocks: Array.isArray(spec.blocks) ? spec.blocks.map((b: Any) => ({ cidr: str(b?.cidr), start: str(b?.start), stop: str(b?.stop) })) : [],
    serviceSelector: selector(spec.serviceSelector),
    disabled: spec.disabled === true,
  };
}

export function serviceInput(o: Obj): ServiceInput {
  const spec = (o.spec ?? {}) as Any;
  const ingress: Any[] = Array.isArray((o.status as Any)?.loadBalancer?.ingress) ? (o.status as Any).loadBalancer.ingress : [];
  const families = Array.isArray(spec.ipFamilies) ? spec.ipFamilies.filter((f: unknown): f is Family => f === 'IPv4' || f === 'IPv6') : undefined;
  return {
    namespace: str(o.metadata?.namespace) ?? '',
    name: str(o.metadata?.name) ?? '',
    created: str(o.metadata?.creationTimestamp) ?? '',
    type: str(spec.type) ?? 'ClusterIP',
    labels: strMap(o.metadata?.labels),
    annotations: strMap(o.metadata?.annotations),
    loadBalancerClass: str(spec.loadBalancerClass),
    loadBalancerIP: str(spec.loadBalancerIP),
    ipFamilies: families?.length ? families : undefined,
    ingressIPs: ingress.map((i) => str(i?.ip)).filter((ip): ip is string => ip !== undefined),
    assigned: Array.isArray((o.status as Any)?.conditions) && ((o.status as Any).conditions as Any[]).some((c) => c?.type === SERVICE_CONDITION && c?.status === 'True'),
  };
}

/** `fields` without those whose value is undefined. */
function defined(fields: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== undefined));
}

/**
 * What LB IPAM reads of a Service (serviceInput, l2Records, assign) and nothing else: the cache holds every Service of
 * the cluster (20,000 at scale), and whole ones as parsed cost the operator ~1 KB each for fields never read
 * (uid, ports, selector, cluster IPs). A change to none of these fields is no change to LB IPAM (no pass).
 */
export function trimService(o: Obj): Obj {
  const m = o.metadata ?? {};
  const spec = (o.spec ?? {}) as Any;
  const annotations = typeof m.annotations === 'object' && m.annotations !== null ? (m.annotations as Any) : undefined;
  const requested = annotations?.[REQUESTED_IPS_ANNOTATION];
  return defined({
    metadata: defined({
      namespace: m.namespace,
      name: m.name,
      creationTimestamp: m.creationTimestamp,
      generation: m.generation,
      labels: m.labels,
      annotations: requested === undefined ? undefined : { [REQUESTED_IPS_ANNOTATION]: requested },
    }),
    spec: defined({ type: spec.type, loadBalancerClass: spec.loadBalancerClass, loadBalancerIP: spec.loadBalancerIP, ipFamilies: spec.ipFamilies, externalIPs: spec.externalIPs }),
    status: o.status,
  }) as Obj;
}

/** A condition list with ours set (or removed when `condition` is undefined), keeping lastTransitionTime if unchanged. */
function withCondition(existing: unknown, type: string, condition: Condition | undefined, generation: number | undefined): Any[] {
  const list: Any[] = Array.isArray(existing) ? existing.filter((c) => typeof c === 'object' && c !== null) : [];
  const others = list.filter((c) => c.type !== type);
  if (!condition) return others;
  const old = list.find((c) => c.type === type);
  const lastTransitionTime = old && old.status === condition.status && typeof old.lastTransitionTime === 'string' ? old.lastTransitionTime : new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  return [...others, { type, status: condition.status, reason: condition.reason, message: condition.message, lastTransitionTime, ...(generation !== undefined ? { observedGeneration: generation } : {}) }];
}

const sameCondition = (existing: unknown, type: string, condition: Condition | undefined): boolean => {
  const old = (Array.isArray(existing) ? existing : []).find((c: Any) => c?.type === type) as Any | undefined;
  if (!condition) return old === undefined;
  return !!old && old.status === condition.status && old.reason === condition.reason && old.message === condition.message;
};

export function poolConditions(report: Allocation['pools'][number], disabled: boolean): Array<{ type: string; condition: Condition }> {
  const available = report.conflict ? 0n : report.total - BigInt(report.used);
  const out: Array<{ type: string; condition: Condition }> = [
    { type: 'sluice.io/ips-total', condition: { status: 'True', reason: 'Counted', message: String(report.total) } },
    { type: 'sluice.io/ips-used', condition: { status: 'True', reason: 'Counted', message: String(report.used) } },
    { type: 'sluice.io/ips-available', condition: { status: disabled || available === 0n ? 'False' : 'True', reason: disabled ? 'Disabled' : available === 0n ? 'Exhausted' : 'Counted', message: String(available) } },
    {
      type: 'sluice.io/pool-conflict',
      condition: report.conflict
        ? { status: 'True', reason: 'OverlapsPool', message: `its blocks overlap pool ${report.conflict}, which is older; this pool hands out no addresses until the overlap is gone` }
        : report.badBlocks.length
          ? { status: 'True', reason: 'BadBlocks', message: `blocks ignored: ${report.badBlocks.join('; ')}` }
          : { status: 'False', reason: 'NoConflict', message: 'no overlap with another pool' },
    },
  ];
  return out;
}

/** The L2 records every policy resolves to: its addresses are those of the Services its serviceSelector picks. */
export function l2Records(policies: readonly Obj[], services: readonly Obj[]): SlimL2Announcement[] {
  return policies
    .map((p) => {
      const spec = (p.spec ?? {}) as Any;
      const serviceSelector = selector(spec.serviceSelector);
      const nodeSelector = selector(spec.nodeSelector);
      const addresses: SlimL2Announcement['addresses'] = [];
      for (const o of services) {
        const s = serviceInput(o);
        if (!matchesLabelSelector(serviceSelector, s.labels)) continue;
        const ips = [
          ...(spec.loadBalancerIPs === true && isOurs(s) ? s.ingressIPs : []),
          ...(spec.externalIPs === true && Array.isArray((o.spec as Any)?.externalIPs) ? ((o.spec as Any).externalIPs as unknown[]).filter((x): x is string => typeof x === 'string') : []),
        ];
        for (const ip of ips) {
          const canonical = canonicalIp(ip);
          if (canonical) addresses.push({ ip: canonical, service: `${s.namespace}/${s.name}` });
        }
      }
      const seen = new Set<string>();
      const unique = addresses
        .sort((a, b) => (a.ip < b.ip ? -1 : a.ip > b.ip ? 1 : a.service < b.service ? -1 : a.service > b.service ? 1 : 0))
        .filter((a) => (seen.has(`${a.ip} ${a.service}`) ? false : (seen.add(`${a.ip} ${a.service}`), true)));
      const interfaces = Array.isArray(spec.interfaces) ? spec.interfaces.filter((i: unknown): i is string => typeof i === 'string' && i.length > 0) : [];
      return { v: SCHEMA_VERSION, name: str(p.metadata?.name) ?? '', ...(nodeSelector ? { nodeSelector } : {}), interfaces, addresses: unique } as SlimL2Announcement;
    })
    .filter((r) => r.name);
}

export class LbIpamController {
  private readonly pools: ObjectCache;
  private readonly services: ObjectCache;
  private readonly policies: ObjectCache;
  private readonly loop: LeaderGatedLoop;
  private readonly statusWrites: Counter<'kind' | 'result'>;
  private readonly used: Gauge<'pool'>;
  private readonly core: CoreV1Api;
  private readonly custom: CustomObjectsApi;

  constructor(private readonly options: LbIpamOptions) {
    this.loop = new LeaderGatedLoop({ ...options, name: 'LB IPAM', writerSubsystem: 'l2-writer', pass: () => this.pass() });
    const onChange = () => this.loop.schedule();
    const kube = options.kube;
    this.core = kube.makeApiClient(CoreV1Api);
    this.custom = kube.makeApiClient(CustomObjectsApi);
    const log = options.log;
    this.pools = new ObjectCache({ config: options.kube, path: POOLS_PATH, log, onChange });
    this.services = new ObjectCache({ config: options.kube, path: SERVICES_PATH, log, onChange, trim: trimService });
    this.policies = new ObjectCache({ config: options.kube, path: L2_POLICIES_PATH, log, onChange });
    const registers = options.registry ? [options.registry] : [];
    this.statusWrites = new Counter({ name: 'sluice_operator_lbipam_status_writes_total', help: 'Status PATCHes LB IPAM sent (Services, pools), by result', labelNames: ['kind', 'result'], registers });
    this.used = new Gauge({ name: 'sluice_operator_lbipam_pool_addresses_used', help: 'Addresses of each LB IPAM pool assigned to Services', labelNames: ['pool'], registers });
  }

  start(): void {
    this.pools.start();
    this.services.start();
    this.policies.start();
    this.loop.start();
  }

  async stop(): Promise<void> {
    await Promise.all([this.pools.stop(), this.services.stop(), this.policies.stop(), this.loop.stop()]);
  }

  /** The current allocation as the caches see it (for /status and tests). */
  allocation(): Allocation {
    return allocate(this.pools.list().map(poolInput), this.services.list().map(serviceInput));
  }

  private async pass(): Promise<void> {
    const { election } = this.options;
    // Decisions need every kind listed: a pass on a partial view would release addresses it has not seen yet.
    if (!election.isLeader || !this.services.hasSynced) return;
    if (this.pools.hasSynced) await this.assign();
    if (this.policies.hasSynced) await this.announce();
  }

  private async assign(): Promise<void> {
    const pools = this.pools.list();
    const services = new Map(this.services.list().map((o) => [`${str(o.metadata?.namespace)}/${str(o.metadata?.name)}`, o]));
    const allocation = allocate(pools.map(poolInput), [...services.values()].map(serviceInput));
    const failures: string[] = [];
    for (const d of allocation.services) {
      const o = services.get(`${d.namespace}/${d.name}`);
      if (!o) continue;
      const status = (o.status ?? {}) as Any;
      const ingress: Any[] = Array.isArray(status.loadBalancer?.ingress) ? status.loadBalancer.ingress : [];
      const current = ingress.map((i) => str(i?.ip)).filter(Boolean);
      // A Service we manage shows exactly our addresses; one we gave up keeps its other (foreign) entries.
      const next: Any[] = d.condition ? d.ips.map((ip) => ({ ip })) : ingress.filter((i) => !str(i?.ip) || d.ips.includes(i.ip));
      const sameIngress = current.length === d.ips.length && current.every((ip, i) => ip === d.ips[i]) && (!d.condition || ingress.length === d.ips.length);
      if (sameIngress && sameCondition(status.conditions, SERVICE_CONDITION, d.condition)) continue;
      const generation = typeof o.metadata?.generation === 'number' ? o.metadata.generation : undefined;
      const conditions = withCondition(status.conditions, SERVICE_CONDITION, d.condition, generation);
      const body = { status: { loadBalancer: next.length ? { ingress: next } : { ingress: null }, conditions: conditions.length ? conditions : null } };
      const write = () => this.core.patchNamespacedServiceStatus({ namespace: d.namespace, name: d.name, body }, MERGE_PATCH);
      if (!(await this.patch('service', write))) failures.push(`service ${d.namespace}/${d.name}`);
      else if (d.condition) this.options.log.info({ service: `${d.namespace}/${d.name}`, ips: d.ips, reason: d.condition.reason }, d.condition.status === 'True' ? 'assigned load-balancer addresses' : 'cannot assign a load-balancer address');
      else this.options.log.info({ service: `${d.namespace}/${d.name}`, released: current.filter((ip) => !d.ips.includes(ip!)) }, 'released load-balancer addresses');
    }
    const byName = new Map(pools.map((p) => [str(p.metadata?.name) ?? '', p]));
    for (const report of allocation.pools) {
      this.used.set({ pool: report.name }, report.used);
      const o = byName.get(report.name);
      if (!o) continue;
      const status = (o.status ?? {}) as Any;
      const generation = typeof o.metadata?.generation === 'number' ? o.metadata.generation : undefined;
      const wanted = poolConditions(report, poolInput(o).disabled);
      if (wanted.every((w) => sameCondition(status.conditions, w.type, w.condition)) && status.observedGeneration === generation) continue;
      let conditions: Any[] = Array.isArray(status.conditions) ? status.conditions : [];
      for (const w of wanted) conditions = withCondition(conditions, w.type, w.condition, generation);
      const body = { status: { ...(generation !== undefined ? { observedGeneration: generation } : {}), conditions } };
      const write = () => this.custom.patchClusterCustomObjectStatus({ group: 'sluice.io', version: 'v1alpha1', plural: 'sluiceloadbalancerippools', name: report.name, body }, MERGE_PATCH);
      if (!(await this.patch('pool', write))) failures.push(`pool ${report.name}`);
    }
    if (failures.length) throw new Error(`status not written for ${failures.join(', ')}`);
  }

  private async announce(): Promise<void> {
    const { keys } = this.options;
    const records = l2Records(this.policies.list(), this.services.list());
    // A term's first pass sweeps whatever a previous leader wrote that no policy asks for now.
    await this.loop.syncRecords(keys.prefix('l2announcements'), new Map(records.map((r) => [keys.l2Announcement(r.name), encodeSlimL2Announcement(r)])));
  }

  /** One merge PATCH of a status subresource; false (logged once per pass) when the API server did not take it. */
  private async patch(kind: 'service' | 'pool', write: () => Promise<unknown>): Promise<boolean> {
    if (!this.loop.isLeader) return true;
    try {
      await write();
      this.statusWrites.inc({ kind, result: 'ok' });
      return true;
    } catch (err) {
      this.statusWrites.inc({ kind, result: 'error' });
      this.options.log.debug({ kind, err: (err as Error).message }, 'status PATCH failed');
      if ((err as { code?: number }).code === 404) return true; // deleted meanwhile: its watch event follows
      return false;
    }
  }
}
