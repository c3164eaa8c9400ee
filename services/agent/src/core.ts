/**
 * The agent's core: etcd (nodes, pods) + the node's local endpoints → desired-state tables → one reconciler per
 * target (sl_endpoints, the ipcache maps, sl_tunnel, and through a routes target the kernel routes to other nodes'
 * podCIDRs). No processes, sockets or namespaces here, so the scale harness can run dozens of these in one process
 * against memoryDatapath().
 *
 * Tables (tables/): nodes (validated against the cluster CIDR, podCIDR ownership), pods (IP ownership), local
 * endpoints; derived rows (tables/derived.ts) are computed from them on demand, never stored twice. Memory per pod:
 * key → {ip, node} and ip → key, nothing else; the reconcilers remember only rows that are not done.
 *
 * Programming: nothing is written before BOTH watches delivered listDone; then each reconciler runs a full pass
 * (write what differs, prune what is not desired — after a restart usually nothing; maps are never flushed), then
 * incremental passes on changed rows, and a periodic full pass that repairs drift. While etcd is unreachable the
 * watchers retry and nothing changes: the datapath stays as it is.
 *
 * "Programmed up to revision R" (Programmed, whenProgrammed): every change of that watch up to R is in every target,
 * i.e. R is below the lowest revision of any row not done — a row in error holds it until its retry lands.
 */
import type { EndpointValue, IpcacheValue, TunnelValue } from '@sluice/bpf';
import type { Datapath } from '@sluice/datapath';
import { keySchema, watchPrefix, watchSyncMarkers, type Etcd3, type KeySchema, type PrefixWatch, type SyncMarkers, type WatchEvent } from '@sluice/kvstore';
import { createLogger, RepeatSuppressor, type Logger } from '@sluice/log';
import { Gauge, type Registry } from '@sluice/metrics';
import { decodeSlim, holdsIP, podPhase, SCHEMA_VERSION } from '@sluice/slim';
import { z } from 'zod';
import ipaddr from 'ipaddr.js';
import { Reconciler, type ReconcilerStatus, type ReconcileTarget } from './reconciler.ts';
import { endpointsMapTarget } from './reconcilers/endpoints-map.ts';
import { ipcacheMapTarget } from './reconcilers/ipcache-map.ts';
import { tunnelMapTarget } from './reconcilers/tunnel-map.ts';
import { parseV4Cidr } from './tables/cidr.ts';
import { Conflicts, type Conflict, type ConflictReason } from './tables/conflicts.ts';
import { ClusterView, endpointRows, ipcacheRows, LocalTable, routeRows, tunnelRows, type LocalEndpoint, type RouteRow } from './tables/derived.ts';
import { NodeTable, type NodeEntry } from './tables/nodes.ts';
import { PodTable, type PodEntry } from './tables/pods.ts';

export type { LocalEndpoint, RouteRow } from './tables/derived.ts';
export type { NodeEntry } from './tables/nodes.ts';
export type { PodEntry } from './tables/pods.ts';

/** kube-sim's (and kube-controller-manager's usual) cluster CIDR; the agent's --cluster-cidr default. */
export const DEFAULT_CLUSTER_CIDR = '10.128.0.0/9';
/** Kubernetes' default --service-cluster-ip-range, and kube-sim's. */
export const DEFAULT_SERVICE_CIDR = '10.96.0.0/12';

export interface Programmed {
  /** Highest etcd revision of the pods / nodes watch whose change is now in every target. */
  podsRevision: number;
  nodesRevision: number;
  /** True for the first report, after the full passes that follow both lists. */
  full: boolean;
  /** Rows written / removed since the previous report. */
  upserts: number;
  deletes: number;
}

export interface AgentCoreOptions {
  nodeName: string;
  client: Etcd3;
  /** A loaded node datapath or memoryDatapath(). */
  datapath: Pick<Datapath, 'maps'>;
  keys?: KeySchema;
  /** This node's IP, when known before its node record arrives (the agent reads it from the uplink). */
  nodeIp?: string;
  /** podCIDRs must lie inside it (default DEFAULT_CLUSTER_CIDR). */
  clusterCidr?: string;
  /** Nodes in the cluster before the node list arrives (reconnect backoff scaling); then the live node count. */
  clusterSize?: number;
  /**
   * The completeness contract (@sluice/kvstore sync.ts): the nodes and pods lists count as done, and the first full
   * pass runs, only once the operator's sync markers are there; a relist never prunes without them ("waiting for the
   * operator's sync" in the log and status). Off by default for tests that write records without an operator.
   */
  waitForSync?: boolean;
  registry?: Registry;
  log?: Logger;
  /** Local endpoints known at start (persisted by the agent across restarts). */
  localEndpoints?: Iterable<LocalEndpoint>;
  /** The kernel routes target (reconcilers/routes.ts); none: routes are not managed. */
  routes?: ReconcileTarget<RouteRow>;
  /** A node's IP, podCIDRs or presence changed (tables outside the core that derive from nodes, e.g. masquerade). */
  onNodesChanged?: () => void;
  /** Called after passes that may have moved the programmed revisions (coalesced per macrotask). */
  onProgrammed?: (programmed: Programmed) => void;
  /** Coalescing window for deltas, ms (0: the next macrotask). */
  batchMs?: number;
  /** Periodic full pass of every reconciler (drift repair), ms; 0: none. Default 60 s. */
  refreshIntervalMs?: number;
  /** Retry backoff of rows in error (default 200 ms … 30 s). */
  retryBackoff?: { minMs: number; maxMs: number };
  /**
   * Keys per page of the lists; by default the kvstore sizes pages by bytes (~4 MiB: ~10,000 slim pods), since etcd
   * walks the rest of the range for every page and small pages make a 100,000-pod list quadratic.
   */
  listPageSize?: number;
}

export class AgentRecordError extends Error {}

/** The first IPv4 address of a list (the datapath is IPv4-only). */
function firstV4(values: readonly string[]): string | undefined {
  return values.find((v) => ipaddr.IPv4.isValidFourPartDecimal(v));
}

/**
 * What the agent reads of a SlimPod: only the fields it programs or filters on, validated (zod) — the rest of the
 * record is not the agent's business. Checking 6 fields instead of the whole strict record halves the cold-start
 * decode at 100,000 pods. The version check comes first, so a record of an unknown schema is never interpreted.
 */
const podFields = z.object({
  namespace: z.string(),
  name: z.string(),
  nodeName: z.string(),
  podIPs: z.array(z.string().refine((ip) => ipaddr.isValid(ip) && (ipaddr.IPv4.isValidFourPartDecimal(ip) || ip.includes(':')), { message: 'is not a valid IP address' })),
  hostNetwork: z.boolean(),
  phase: podPhase,
});

/** Decodes a SlimPod into what the agent keeps; null when the pod is not (or no longer) an endpoint. */
export function decodePodEntry(bytes: Uint8Array): PodEntry | null {
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.isBuffer(bytes) ? bytes.toString('utf8') : Buffer.from(bytes).toString('utf8'));
  } catch (err) {
    throw new AgentRecordError(`pod record is not valid JSON: ${(err as Error).message}`);
  }
  const version = (parsed as { v?: unknown } | null)?.v;
  if (version !== SCHEMA_VERSION) throw new AgentRecordError(`pod record has unknown schema version ${JSON.stringify(version)} (this reader knows ${SCHEMA_VERSION})`);
  const result = podFields.safeParse(parsed);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    throw new AgentRecordError(`bad pod record: field ${issue.path.map(String).join('.') || '(record)'} ${issue.message}`);
  }
  const pod = result.data;
  // The operator's endpoint rule: a terminating pod keeps its entries until it releases its IP, so its connections drain.
  if (!holdsIP(pod)) return null;
  const ip = firstV4(pod.podIPs);
  if (!ip) return null; // IPv6-only pods: not programmed by this IPv4 datapath
  if (!pod.nodeName) throw new AgentRecordError(`pod ${pod.namespace}/${pod.name} is Running with IP ${ip} but has no nodeName`);
  return { ip, node: pod.nodeName };
}

export function decodeNodeEntry(bytes: Uint8Array): NodeEntry {
  const node = decodeSlim('node', bytes);
  const ip = firstV4(node.addresses.filter((a) => a.type === 'InternalIP').map((a) => a.ip)) ?? firstV4(node.addresses.map((a) => a.ip));
  if (!ip) throw new AgentRecordError(`node ${node.name} has no IPv4 address; skipped`);
  const cidrs = node.podCIDRs.filter((c) => c.includes('.'));
  return { name: node.name, ip, cidrs, healthIPs: node.healthIPs.filter((h) => ipaddr.IPv4.isValidFourPartDecimal(h)) };
}

const endpointGauges = new WeakMap<Registry, Gauge<'scope'>>();
function endpointsGauge(registry: Registry): Gauge<'scope'> {
  let g = endpointGauges.get(registry);
  if (!g) {
    g = new Gauge({ name: 'sluice_agent_endpoints', help: 'Endpoints known to the agent', labelNames: ['scope'], registers: [registry] });
    endpointGauges.set(registry, g);
  }
  return g;
}

export interface AgentCoreStatus {
  node: string;
  synced: boolean;
  etcd: {
    connected: boolean; podsRevision: number; nodesRevision: number; retries: number; decodeErrors: number; lastError: string | undefined;
    /** With waitForSync: the prefixes waiting for the operator's sync marker (not reconciled, or not pruned, yet). */
    waitingForSync?: string[];
  };
  endpoints: { local: number; cluster: number; nodes: number };
  /** Cumulative rows written / removed by the reconcilers, and full passes (of the endpoints reconciler). */
  writes: { upserts: number; deletes: number; fullReconciles: number };
  /** Per target: rows done / pending / in error, drift repaired. */
  reconcilers: ReconcilerStatus[];
  /** Records refused (not programmed), by reason, and a few of them. */
  conflicts: { counts: Partial<Record<ConflictReason, number>>; examples: Conflict[] };
}

interface Targets {
  endpoints: Reconciler<EndpointValue>;
  ipcache: Reconciler<IpcacheValue>;
  tunnel: Reconciler<TunnelValue>;
  routes: Reconciler<RouteRow> | undefined;
}

export class AgentCore {
  readonly nodeName: string;
  private readonly keys: KeySchema;
  private readonly log: Logger;
  private readonly repeats = new RepeatSuppressor(60_000);
  private readonly endpointsGauge: Gauge<'scope'> | undefined;
  /** What the tables refused; shared with the agent's other tables (services). */
  readonly conflicts: Conflicts;
  private readonly nodes: NodeTable;
  private syncMarkers: SyncMarkers | undefined;
  private readonly pods: PodTable;
  private readonly local = new LocalTable();
  private readonly view: ClusterView;
  private readonly reconcilers: Targets;
  private readonly all: Array<Reconciler<never>>;
  /** Nodes whose pods' rows must be re-derived (IP, owned CIDRs or presence changed), with the revision. */
  private readonly nodesToDerive = new Map<string, number>();
  private podsListed = false;
  private nodesListed = false;
  private startedReconcilers = false;
  private fullDone = false;
  private podsRevision = 0;
  private nodesRevision = 0;
  /** The revision being applied (events mark their rows with it). */
  private eventRevision = 0;
  private programmedPods = 0;
  private programmedNodes = 0;
  private reported = { upserts: 0, deletes: 0, full: false };
  private notifyTimer: NodeJS.Timeout | undefined;
  private readonly waiters: Array<{ kind: 'pods' | 'nodes'; revision: number; resolve: () => void }> = [];
  private watches: PrefixWatch[] = [];
  private stopped = false;
  private readonly syncedListeners: Array<() => void> = [];

  constructor(private readonly options: AgentCoreOptions) {
    this.nodeName = options.nodeName;
    this.keys = options.keys ?? keySchema();
    this.log = options.log ?? createLogger({ component: 'agent', node: options.nodeName });
    this.endpointsGauge = options.registry ? endpointsGauge(options.registry) : undefined;
    const cluster = parseV4Cidr(options.clusterCidr ?? DEFAULT_CLUSTER_CIDR);
    if (!cluster) throw new Error(`cluster CIDR ${options.clusterCidr} is not an IPv4 CIDR`);
    this.conflicts = new Conflicts(this.log, options.registry);
    this.nodes = new NodeTable(cluster, this.conflicts, {
      cidrChanged: (cidr) => {
        this.reconcilers?.ipcache.changed(cidr, this.eventRevision);
        this.reconcilers?.tunnel.changed(cidr, this.eventRevision);
        this.reconcilers?.routes?.changed(cidr, this.eventRevision);
        options.onNodesChanged?.();
      },
      nodeChanged: (name) => {
        options.onNodesChanged?.();
        if (!this.startedReconcilers) return;
        const old = this.nodesToDerive.get(name);
        this.nodesToDerive.set(name, old === undefined ? this.eventRevision : Math.min(old, this.eventRevision));
        this.scheduleNotify();
      },
      healthChanged: (ip) => this.reconcilers?.ipcache.changed(`${ip}/32`, this.eventRevision),
    });
    this.pods = new PodTable(this.conflicts, (ip) => this.reconcilers?.ipcache.changed(`${ip}/32`, this.eventRevision));
    this.view = new ClusterView(this.nodeName, this.nodes, this.pods, this.local, this.conflicts, () => options.nodeIp);
    for (const ep of options.localEndpoints ?? []) this.local.set(ep);
    const common = {
      log: this.log,
      registry: options.registry,
      refreshIntervalMs: options.refreshIntervalMs ?? 60_000,
      batchMs: options.batchMs ?? 0,
      ...(options.retryBackoff ? { backoff: options.retryBackoff } : {}),
      revision: () => Math.min(this.podsRevision, this.nodesRevision),
      beforePass: () => this.derive(),
      onPass: () => this.afterPass(),
    };
    const dp = options.datapath;
    this.reconcilers = {
      endpoints: new Reconciler({ ...common, target: endpointsMapTarget(dp), desired: endpointRows(this.view) }),
      ipcache: new Reconciler({ ...common, target: ipcacheMapTarget(dp), desired: ipcacheRows(this.view) }),
      tunnel: new Reconciler({ ...common, target: tunnelMapTarget(dp), desired: tunnelRows(this.view) }),
      routes: options.routes ? new Reconciler({ ...common, target: options.routes, desired: routeRows(this.view) }) : undefined,
    };
    this.all = [this.reconcilers.endpoints, this.reconcilers.ipcache, this.reconcilers.tunnel, ...(this.reconcilers.routes ? [this.reconcilers.routes] : [])] as Array<Reconciler<never>>;
  }

  /** Starts both watches; returns at once (see `synced()`). */
  start(): void {
    // The live node count scales the reconnect backoff (5,000 agents must not come back in lockstep).
    const clusterSize = () => Math.max(1, this.nodes.size || (this.options.clusterSize ?? 1));
    const common = { clusterSize, registry: this.options.registry, log: this.log, pageSize: this.options.listPageSize };
    if (this.options.waitForSync) this.syncMarkers = watchSyncMarkers(this.options.client, this.keys, { log: this.log, registry: this.options.registry, clusterSize });
    const gate = (kind: 'nodes' | 'pods') => (this.syncMarkers ? { completeness: this.syncMarkers.gate(kind) } : {});
    this.watches = [
      watchPrefix<NodeEntry>(this.options.client, this.keys.prefix('nodes'), {
        ...common,
        ...gate('nodes'),
        name: 'nodes',
        decode: (_key, bytes) => decodeNodeEntry(bytes),
        onEvent: (e) => this.onNodeEvent(e),
      }),
      watchPrefix<PodEntry | null>(this.options.client, this.keys.prefix('pods'), {
        ...common,
        ...gate('pods'),
        name: 'pods',
        decode: (_key, bytes) => decodePodEntry(bytes),
        onEvent: (e) => this.onPodEvent(e),
      }),
    ];
  }

  /** Resolves after the first full pass of every reconciler (both lists done and programmed). */
  synced(): Promise<void> {
    if (this.fullDone) return Promise.resolve();
    return new Promise((resolve) => this.syncedListeners.push(resolve));
  }

  get isSynced(): boolean {
    return this.fullDone;
  }

  /** Highest revision of that watch whose changes are all in the targets. */
  programmedRevision(kind: 'pods' | 'nodes'): number {
    return kind === 'pods' ? this.programmedPods : this.programmedNodes;
  }

  /** Resolves once every change of that prefix up to `revision` (e.g. a put's header revision) is in the targets. */
  whenProgrammed(kind: 'pods' | 'nodes', revision: number): Promise<void> {
    if (this.programmedRevision(kind) >= revision) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ kind, revision, resolve }));
  }

  /** Every valid node's IP and the podCIDRs this node owns (the masquerade table's inputs). */
  nodeAddresses(): { nodeIps: string[]; ownCidrs: string[] } {
    const nodeIps = [...this.nodes.values()].map((n) => n.ip);
    const ownCidrs = [...this.nodes.ownedCidrs()].filter(([, node]) => node === this.nodeName).map(([cidr]) => cidr);
    return { nodeIps, ownCidrs };
  }

  /**
   * Rewrites every route to another node's podCIDR now (after the routes target's mode changed) and waits: each
   * row marked changed rather than a full pass, which would report the routes of the old mode as drift.
   */
  resyncRoutes(): Promise<void> {
    const routes = this.reconcilers.routes;
    if (!routes) return Promise.resolve();
    const revision = Math.min(this.podsRevision, this.nodesRevision);
    for (const [cidr] of routeRows(this.view).entries()) routes.changed(cidr, revision);
    return routes.flush();
  }

  /** A reconciler's view of one row (tests, debugging): 'ipcache' keys are CIDRs, 'endpoints' keys IPs. */
  rowStatus(target: 'endpoints' | 'ipcache' | 'tunnel' | 'routes', key: string) {
    return this.reconcilers[target]?.rowStatus(key);
  }

  // ---- local endpoints (from the CNI plugin) -------------------------------------------------------------------

  /** Adds or replaces a local endpoint; programmed in the next pass (`flush()` waits for it). */
  upsertLocal(ep: LocalEndpoint): void {
    const old = this.local.set(ep);
    if (old && old.ip !== ep.ip) this.localChanged(old.ip);
    this.localChanged(ep.ip);
  }

  removeLocal(id: string): LocalEndpoint | undefined {
    const ep = this.local.delete(id);
    if (ep) this.localChanged(ep.ip);
    return ep;
  }

  private localChanged(ip: string): void {
    this.reconcilers.endpoints.changed(ip);
    this.reconcilers.ipcache.changed(`${ip}/32`);
  }

  /** A node as the agent knows it from etcd (its IP, podCIDRs, health IPs): the ones valid, the ones it owns. */
  node(name: string): { name: string; ip: string; cidrs: string[]; validCidrs: string[]; ownedCidrs: string[]; healthIPs: string[] } | undefined {
    const n = this.nodes.get(name);
    if (!n) return undefined;
    return { name: n.name, ip: n.ip, cidrs: [...n.cidrs], validCidrs: this.nodes.validCidrs(name), ownedCidrs: n.cidrs.filter((c) => this.nodes.ownerOf(c) === name), healthIPs: [...n.healthIPs] };
  }

  /**
   * Resolves true once this node's record with a valid podCIDR is known (at start the CNI plugin may call before the
   * operator wrote it), false after `timeoutMs`.
   */
  async whenOwnCidrKnown(timeoutMs: number): Promise<boolean> {
    const end = Date.now() + timeoutMs;
    while (!this.nodes.claimsAny(this.nodeName)) {
      if (this.stopped || Date.now() >= end) return false;
      await new Promise((r) => setTimeout(r, 100));
    }
    return true;
  }

  /** Why `ip` may not be registered as a local endpoint (inside this node's podCIDRs, not another's), or undefined. */
  checkLocalIp(ip: string, id: string): string | undefined {
    if (!this.nodes.claimsAny(this.nodeName)) return `this node has no valid podCIDR (node record ${this.nodes.get(this.nodeName) ? 'has none' : 'not seen yet'})`;
    if (!this.nodes.inClaimedCidr(this.nodeName, ip)) return `IP ${ip} is outside this node's podCIDRs (${this.node(this.nodeName)?.cidrs.join(', ')})`;
    const local = this.local.byIp.get(ip);
    if (local && local.id !== id) return `IP ${ip} is already used by endpoint ${local.id}`;
    const pod = this.pods.ownerOf(ip);
    if (pod && pod.node !== this.nodeName) return `IP ${ip} belongs to a pod on node ${pod.node}`;
    return undefined;
  }

  localEndpoints(): LocalEndpoint[] {
    return [...this.local.byId.values()];
  }

  /** Runs a pass of every reconciler for what is pending now and waits for it. */
  async flush(): Promise<void> {
    if (!this.startedReconcilers) return;
    this.derive();
    await Promise.all(this.all.map((r) => r.flush()));
  }

  /** Runs a full pass (update what differs + prune) of every reconciler now and waits for it. */
  async refresh(): Promise<void> {
    if (!this.startedReconcilers) return;
    await Promise.all(this.all.map((r) => r.fullPass()));
  }

  // ---- events ---------------------------------------------------------------------------------------------------

  private onNodeEvent(e: WatchEvent<NodeEntry>): void {
    if (e.type === 'listDone') {
      this.nodesListed = true;
      this.nodesRevision = Math.max(this.nodesRevision, e.revision);
      this.maybeStart();
      return;
    }
    this.nodesRevision = Math.max(this.nodesRevision, e.modRevision);
    this.eventRevision = e.modRevision;
    const name = this.keys.parse('nodes', e.key)?.[0];
    if (!name) return;
    if (e.type === 'upsert') {
      if (e.value.name !== name) {
        this.repeats.warn(this.log, `node-name:${e.key}`, { key: e.key, name: e.value.name }, 'skipping node record whose name does not match its key');
        return;
      }
      this.nodes.upsert(e.value);
    } else {
      this.nodes.delete(name);
    }
    this.scheduleNotify();
  }

  private onPodEvent(e: WatchEvent<PodEntry | null>): void {
    if (e.type === 'listDone') {
      this.podsListed = true;
      this.podsRevision = Math.max(this.podsRevision, e.revision);
      this.maybeStart();
      return;
    }
    this.podsRevision = Math.max(this.podsRevision, e.modRevision);
    this.eventRevision = e.modRevision;
    const value = e.type === 'upsert' ? e.value : null;
    // Intern the node name: 100,000 pods share a few thousand strings.
    const entry = value ? { ip: value.ip, node: this.nodes.get(value.node)?.name ?? value.node } : null;
    this.pods.set(e.key, entry);
    this.scheduleNotify();
  }

  // ---- programming ----------------------------------------------------------------------------------------------

  private maybeStart(): void {
    if (this.stopped || !this.podsListed || !this.nodesListed || this.startedReconcilers) return;
    this.startedReconcilers = true;
    const started = process.hrtime.bigint();
    void Promise.all(this.all.map((r) => r.start())).then(() => {
      const s = this.all.map((r) => r.status());
      this.log.info({ ms: Math.round(Number(process.hrtime.bigint() - started) / 1e6), rows: s.map((r) => `${r.name}: ${r.rows.done} done, ${r.rows.error} error`).join('; ') }, 'targets reconciled to etcd state');
      this.afterPass();
    });
  }

  /** A node's IP, owned CIDRs or presence changed: its pods' (and health IPs', and local endpoints') rows follow. */
  private derive(): void {
    if (!this.nodesToDerive.size) return;
    const changed = new Map(this.nodesToDerive);
    this.nodesToDerive.clear();
    const ipcache = this.reconcilers.ipcache;
    for (const [ip, owner] of this.pods.entriesByIp()) {
      const rev = changed.get(owner);
      if (rev !== undefined) ipcache.changed(`${ip}/32`, rev);
    }
    for (const [ip, owner] of this.nodes.healthIps()) {
      const rev = changed.get(owner);
      if (rev !== undefined) ipcache.changed(`${ip}/32`, rev);
    }
    for (const [cidr, owner] of this.nodes.ownedCidrs()) {
      const rev = changed.get(owner);
      if (rev === undefined) continue;
      ipcache.changed(cidr, rev);
      this.reconcilers.tunnel.changed(cidr, rev);
      this.reconcilers.routes?.changed(cidr, rev);
    }
    const self = changed.get(this.nodeName);
    if (self !== undefined) {
      for (const ip of this.local.byIp.keys()) {
        ipcache.changed(`${ip}/32`, self);
        this.reconcilers.endpoints.changed(ip, self);
      }
    }
  }

  private scheduleNotify(): void {
    if (!this.startedReconcilers || this.notifyTimer || this.stopped) return;
    this.notifyTimer = setTimeout(() => {
      this.notifyTimer = undefined;
      this.derive();
      this.afterPass();
    }, 0);
  }

  private afterPass(): void {
    if (this.stopped || !this.startedReconcilers) return;
    if (!this.fullDone) {
      if (!this.all.every((r) => r.status().fullPasses > 0)) return;
      this.fullDone = true;
      for (const l of this.syncedListeners.splice(0)) l();
    }
    let low = Infinity;
    for (const r of this.all) low = Math.min(low, r.lowestUndoneRevision());
    for (const rev of this.nodesToDerive.values()) if (rev) low = Math.min(low, rev);
    const below = low === Infinity ? Infinity : low - 1;
    const pods = Math.max(this.programmedPods, Math.min(this.podsRevision, below));
    const nodes = Math.max(this.programmedNodes, Math.min(this.nodesRevision, below));
    const totals = this.writeTotals();
    const full = !this.reported.full;
    if (pods === this.programmedPods && nodes === this.programmedNodes && !full && totals.upserts === this.reported.upserts && totals.deletes === this.reported.deletes) return;
    this.programmedPods = pods;
    this.programmedNodes = nodes;
    const programmed: Programmed = { podsRevision: pods, nodesRevision: nodes, full, upserts: totals.upserts - this.reported.upserts, deletes: totals.deletes - this.reported.deletes };
    this.reported = { upserts: totals.upserts, deletes: totals.deletes, full: true };
    this.endpointsGauge?.set({ scope: 'local' }, this.local.size);
    this.endpointsGauge?.set({ scope: 'cluster' }, this.pods.ipCount);
    for (let i = this.waiters.length - 1; i >= 0; i--) {
      const w = this.waiters[i]!;
      if (this.programmedRevision(w.kind) >= w.revision) {
        this.waiters.splice(i, 1);
        w.resolve();
      }
    }
    this.options.onProgrammed?.(programmed);
  }

  private writeTotals(): { upserts: number; deletes: number } {
    let upserts = 0;
    let deletes = 0;
    for (const r of this.all) {
      const w = r.writes;
      upserts += w.updated;
      deletes += w.deleted;
    }
    return { upserts, deletes };
  }

  status(): AgentCoreStatus {
    const ws = this.watches.map((w) => w.status());
    const totals = this.writeTotals();
    return {
      node: this.nodeName,
      synced: this.fullDone,
      etcd: {
        connected: ws.length > 0 && ws.every((w) => w.connected),
        podsRevision: this.programmedPods,
        nodesRevision: this.programmedNodes,
        retries: ws.reduce((a, w) => a + w.retries, 0),
        decodeErrors: ws.reduce((a, w) => a + w.decodeErrors, 0),
        lastError: ws.find((w) => w.lastError)?.lastError,
        ...(this.syncMarkers ? { waitingForSync: ws.filter((w) => w.waitingForSync).map((w) => w.name) } : {}),
      },
      endpoints: { local: this.local.size, cluster: this.pods.ipCount, nodes: this.nodes.size },
      writes: { ...totals, fullReconciles: this.reconcilers.endpoints.status().fullPasses },
      reconcilers: this.all.map((r) => r.status()),
      conflicts: { counts: this.conflicts.counts(), examples: this.conflicts.list() },
    };
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.notifyTimer);
    await Promise.all(this.watches.map((w) => w.stop()));
    await this.syncMarkers?.stop();
    await Promise.all(this.all.map((r) => r.stop()));
  }
}
