/**
 * The agent's core: etcd (nodes, pods) + the node's local endpoints → the node's BPF maps (and, through a RouteSync,
 * the kernel routes to other nodes' podCIDRs). No processes, sockets or namespaces here, so the scale harness can run
 * dozens of these in one process against memoryDatapath().
 *
 * Memory: at 100,000 pods the caches are what matters. Per pod we keep only what we program: its key → {ip, node}
 * (node is the interned name string of the node record) and ip → key. Whole records are never kept.
 *
 * Programming: nothing is written before BOTH watches delivered listDone; the first write is a full reconcile
 * (smallest diff against what the maps hold — after a restart that is usually nothing; maps are never flushed).
 * After that, events only mark keys dirty and a flush per tick (batchMs) writes just those keys in batches.
 * While etcd is unreachable the watchers retry and nothing is written: the datapath stays as it is.
 */
import { IPCACHE_F_LOCAL, type EndpointKey, type EndpointValue, type IpcacheValue, type LpmKey, type TunnelValue } from '@sluice/bpf';
import { deleteIpcache, reconcile, reconcileIpcache, upsertIpcache, type Datapath, type ReconcileResult } from '@sluice/datapath';
import { keySchema, watchPrefix, type Etcd3, type KeySchema, type PrefixWatch, type WatchEvent } from '@sluice/kvstore';
import { createLogger, RepeatSuppressor, type Logger } from '@sluice/log';
import { Counter, Gauge, Histogram, LATENCY_BUCKETS, type Registry } from '@sluice/metrics';
import { decodeSlim, podPhase, SCHEMA_VERSION } from '@sluice/slim';
import { z } from 'zod';
import ipaddr from 'ipaddr.js';

/** A pod on this node, as the CNI plugin reported it (only the node knows ifindexes and MACs). */
export interface LocalEndpoint {
  /** The CNI container id. */
  id: string;
  ip: string;
  /** Host-side veth, in the node's namespace. */
  hostIfname: string;
  hostIfindex: number;
  hostMac: string;
  /** The pod's eth0 MAC. */
  mac: string;
  podNamespace?: string;
  podName?: string;
}

/** Installs the kernel routes to other nodes' podCIDRs (like Cilium's autoDirectNodeRoutes / tunnel routes). */
export interface RouteSync {
  /** The complete desired set, remote podCIDR → node IP; the implementation diffs against what it installed. */
  sync(desired: ReadonlyMap<string, string>): Promise<void>;
}

export interface Programmed {
  /** Highest etcd revision of the pods / nodes watch whose change is now in the maps. */
  podsRevision: number;
  nodesRevision: number;
  /** True for the first (full) reconcile after both lists. */
  full: boolean;
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
  clusterSize?: number;
  registry?: Registry;
  log?: Logger;
  /** Local endpoints known at start (persisted by the agent across restarts). */
  localEndpoints?: Iterable<LocalEndpoint>;
  routes?: RouteSync;
  /** Called after every flush that reached the maps. */
  onProgrammed?: (programmed: Programmed) => void;
  /** Coalescing window for deltas, ms (0: the next macrotask). */
  batchMs?: number;
  /**
   * Keys per page of the initial lists. Default 10,000: etcd 3.4 counts the rest of the range for every page, so
   * small pages make a 100,000-pod list quadratic (1,000 → 4.7 s, 10,000 → 1.6 s); a page is ~4 MB.
   */
  listPageSize?: number;
}

interface NodeEntry {
  name: string;
  ip: string;
  cidrs: string[];
  healthIPs: string[];
}
interface PodEntry {
  ip: string;
  /** The node record's name string (shared). */
  node: string;
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
  deleting: z.boolean(),
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
  // isEndpoint's rule (@sluice/slim), on the fields read here.
  if (pod.phase !== 'Running' || pod.podIPs.length === 0 || pod.hostNetwork || pod.deleting) return null;
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

interface CoreMetrics {
  flushes: Counter<'kind'>;
  writes: Counter<'map' | 'op'>;
  flushDuration: Histogram<'kind'>;
  endpoints: Gauge<'scope'>;
}

const metricsByRegistry = new WeakMap<Registry, CoreMetrics>();
function coreMetrics(registry: Registry): CoreMetrics {
  let m = metricsByRegistry.get(registry);
  if (!m) {
    const registers = [registry];
    m = {
      flushes: new Counter({ name: 'sluice_agent_flushes_total', help: 'Map programming passes (full reconcile or delta)', labelNames: ['kind'], registers }),
      writes: new Counter({ name: 'sluice_agent_map_writes_total', help: 'Entries written or deleted by the agent', labelNames: ['map', 'op'], registers }),
      flushDuration: new Histogram({ name: 'sluice_agent_flush_duration_seconds', help: 'Time to program one batch of changes', labelNames: ['kind'], buckets: LATENCY_BUCKETS, registers }),
      endpoints: new Gauge({ name: 'sluice_agent_endpoints', help: 'Endpoints known to the agent', labelNames: ['scope'], registers }),
    };
    metricsByRegistry.set(registry, m);
  }
  return m;
}

export interface AgentCoreStatus {
  node: string;
  synced: boolean;
  etcd: { connected: boolean; podsRevision: number; nodesRevision: number; retries: number; decodeErrors: number; lastError: string | undefined };
  endpoints: { local: number; cluster: number; nodes: number };
  /** Cumulative map writes by the agent (updates+deletes), for "reconciled, not flushed" checks. */
  writes: { upserts: number; deletes: number; fullReconciles: number };
  lastFullReconcile?: ReconcileResult[];
}

export class AgentCore {
  readonly nodeName: string;
  private readonly keys: KeySchema;
  private readonly log: Logger;
  private readonly repeats = new RepeatSuppressor(60_000);
  private readonly metrics: CoreMetrics | undefined;
  private readonly nodes = new Map<string, NodeEntry>();
  private readonly pods = new Map<string, PodEntry>();
  private readonly byIp = new Map<string, string>();
  private readonly healthOwner = new Map<string, string>();
  private readonly cidrOwner = new Map<string, string>();
  private readonly local = new Map<string, LocalEndpoint>();
  private readonly localByIp = new Map<string, LocalEndpoint>();
  private dirtyIps = new Set<string>();
  private dirtyCidrs = new Set<string>();
  private dirtyLocal = new Set<string>();
  private dirtyNodeIps = new Set<string>();
  private podsListed = false;
  private nodesListed = false;
  private fullDone = false;
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;
  private podsRevision = 0;
  private nodesRevision = 0;
  private programmedPods = 0;
  private programmedNodes = 0;
  private routesDirty = false;
  private routeChain: Promise<void> = Promise.resolve();
  private readonly waiters: Array<{ kind: 'pods' | 'nodes'; revision: number; resolve: () => void }> = [];
  private watches: PrefixWatch[] = [];
  private stopped = false;
  private readonly totals = { upserts: 0, deletes: 0, fullReconciles: 0 };
  private lastFull: ReconcileResult[] | undefined;
  private readonly syncedListeners: Array<() => void> = [];

  constructor(private readonly options: AgentCoreOptions) {
    this.nodeName = options.nodeName;
    this.keys = options.keys ?? keySchema();
    this.log = options.log ?? createLogger({ component: 'agent', node: options.nodeName });
    this.metrics = options.registry ? coreMetrics(options.registry) : undefined;
    for (const ep of options.localEndpoints ?? []) this.setLocal(ep);
  }

  /** Starts both watches; resolves once they are running (not once synced: see `synced()`). */
  start(): void {
    const common = { clusterSize: this.options.clusterSize, registry: this.options.registry, log: this.log, pageSize: this.options.listPageSize ?? 10_000 };
    this.watches = [
      watchPrefix<NodeEntry>(this.options.client, this.keys.prefix('nodes'), {
        ...common,
        name: 'nodes',
        decode: (_key, bytes) => decodeNodeEntry(bytes),
        onEvent: (e) => this.onNodeEvent(e),
      }),
      watchPrefix<PodEntry | null>(this.options.client, this.keys.prefix('pods'), {
        ...common,
        name: 'pods',
        decode: (_key, bytes) => decodePodEntry(bytes),
        onEvent: (e) => this.onPodEvent(e),
      }),
    ];
  }

  /** Resolves after the first full reconcile (both lists done and programmed). */
  synced(): Promise<void> {
    if (this.fullDone) return Promise.resolve();
    return new Promise((resolve) => this.syncedListeners.push(resolve));
  }

  get isSynced(): boolean {
    return this.fullDone;
  }

  /** Highest revision of that watch whose change is in the maps. */
  programmedRevision(kind: 'pods' | 'nodes'): number {
    return kind === 'pods' ? this.programmedPods : this.programmedNodes;
  }

  /** Resolves once every change of that prefix up to `revision` (e.g. a put's header revision) is in the maps. */
  whenProgrammed(kind: 'pods' | 'nodes', revision: number): Promise<void> {
    if (this.programmedRevision(kind) >= revision) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ kind, revision, resolve }));
  }

  // ---- local endpoints (from the CNI plugin) -------------------------------------------------------------------

  /** Adds or replaces a local endpoint; programmed in the next flush (at once if synced). */
  upsertLocal(ep: LocalEndpoint): void {
    const old = this.local.get(ep.id);
    if (old && old.ip !== ep.ip) this.removeLocal(ep.id);
    this.setLocal(ep);
    this.dirtyLocal.add(ep.ip);
    this.dirtyIps.add(ep.ip);
    this.schedule();
  }

  removeLocal(id: string): LocalEndpoint | undefined {
    const ep = this.local.get(id);
    if (!ep) return undefined;
    this.local.delete(id);
    if (this.localByIp.get(ep.ip) === ep) this.localByIp.delete(ep.ip);
    this.dirtyLocal.add(ep.ip);
    this.dirtyIps.add(ep.ip);
    this.schedule();
    return ep;
  }

  /** A node as the agent knows it from etcd (its IP, podCIDRs, health IPs). */
  node(name: string): { name: string; ip: string; cidrs: string[]; healthIPs: string[] } | undefined {
    const n = this.nodes.get(name);
    return n ? { ...n, cidrs: [...n.cidrs], healthIPs: [...n.healthIPs] } : undefined;
  }

  localEndpoints(): LocalEndpoint[] {
    return [...this.local.values()];
  }

  private setLocal(ep: LocalEndpoint): void {
    this.local.set(ep.id, ep);
    this.localByIp.set(ep.ip, ep);
  }

  /** Flushes pending changes now (if synced) and waits for it. */
  async flush(): Promise<void> {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    await this.runFlush();
  }

  // ---- events ---------------------------------------------------------------------------------------------------

  private onNodeEvent(e: WatchEvent<NodeEntry>): void {
    if (e.type === 'listDone') {
      this.nodesListed = true;
      this.nodesRevision = Math.max(this.nodesRevision, e.revision);
      this.schedule();
      return;
    }
    this.nodesRevision = Math.max(this.nodesRevision, e.modRevision);
    const name = this.keys.parse('nodes', e.key)?.[0];
    if (!name) return;
    const old = this.nodes.get(name);
    const next = e.type === 'upsert' ? e.value : undefined;
    if (next && next.name !== name) {
      this.repeats.warn(this.log, `node-name:${e.key}`, { key: e.key, name: next.name }, 'skipping node record whose name does not match its key');
      return;
    }
    if (old) {
      for (const c of old.cidrs) if (this.cidrOwner.get(c) === name) (this.cidrOwner.delete(c), this.dirtyCidrs.add(c));
      for (const h of old.healthIPs) if (this.healthOwner.get(h) === name) (this.healthOwner.delete(h), this.dirtyIps.add(h));
    }
    if (next) {
      this.nodes.set(name, next);
      for (const c of next.cidrs) (this.cidrOwner.set(c, name), this.dirtyCidrs.add(c));
      for (const h of next.healthIPs) (this.healthOwner.set(h, name), this.dirtyIps.add(h));
    } else {
      this.nodes.delete(name);
    }
    if (old?.ip !== next?.ip) this.dirtyNodeIps.add(name);
    if (old?.cidrs.join() !== next?.cidrs.join() || old?.ip !== next?.ip) this.routesDirty = true;
    this.schedule();
  }

  private onPodEvent(e: WatchEvent<PodEntry | null>): void {
    if (e.type === 'listDone') {
      this.podsListed = true;
      this.podsRevision = Math.max(this.podsRevision, e.revision);
      this.schedule();
      return;
    }
    this.podsRevision = Math.max(this.podsRevision, e.modRevision);
    const old = this.pods.get(e.key);
    const value = e.type === 'upsert' ? e.value : null;
    if (old) {
      if (value && value.ip === old.ip && value.node === old.node) return;
      this.pods.delete(e.key);
      if (this.byIp.get(old.ip) === e.key) {
        this.byIp.delete(old.ip);
        // Another pod may still claim the IP (a stale record during IP reuse): it takes over.
        this.dirtyIps.add(old.ip);
      }
    }
    if (value) {
      // Intern the node name: 100,000 pods share a few thousand strings.
      const node = this.nodes.get(value.node)?.name ?? value.node;
      this.pods.set(e.key, { ip: value.ip, node });
      this.byIp.set(value.ip, e.key);
      this.dirtyIps.add(value.ip);
    }
    this.schedule();
  }

  // ---- programming ----------------------------------------------------------------------------------------------

  private schedule(): void {
    if (this.stopped || !this.podsListed || !this.nodesListed || this.timer) return;
    const run = () => {
      this.timer = undefined;
      void this.runFlush();
    };
    this.timer = this.options.batchMs ? setTimeout(run, this.options.batchMs) : setTimeout(run, 0);
  }

  private runFlush(): Promise<void> {
    if (!this.podsListed || !this.nodesListed || this.stopped) return Promise.resolve();
    // One flush at a time; a flush requested while one runs is chained after it.
    const prev = this.flushing ?? Promise.resolve();
    const next = prev.then(() => this.flushOnce()).catch((err: unknown) => {
      this.log.error({ error: (err as Error).message }, 'programming the BPF maps failed; will retry on the next change');
      setTimeout(() => this.schedule(), 1000).unref();
    });
    this.flushing = next;
    return next;
  }

  private selfIp(): string | undefined {
    return this.nodes.get(this.nodeName)?.ip ?? this.options.nodeIp;
  }

  /** The ipcache value for a /32, by precedence: local endpoint, pod, health endpoint. */
  private desiredHost(ip: string): IpcacheValue | undefined {
    const self = this.selfIp();
    if (this.localByIp.has(ip)) return self ? { nodeIp: self, flags: IPCACHE_F_LOCAL } : undefined;
    const key = this.byIp.get(ip);
    const owner = key !== undefined ? this.pods.get(key)?.node : this.healthOwner.get(ip);
    if (owner === undefined) return undefined;
    const nodeIp = owner === this.nodeName ? self : this.nodes.get(owner)?.ip;
    if (!nodeIp) return undefined;
    return { nodeIp, flags: owner === this.nodeName ? IPCACHE_F_LOCAL : 0 };
  }

  private desiredCidr(cidr: string): { ipcache?: IpcacheValue; tunnel?: TunnelValue } {
    const owner = this.cidrOwner.get(cidr);
    const node = owner === undefined ? undefined : this.nodes.get(owner);
    if (!node) return {};
    const isSelf = owner === this.nodeName;
    return { ipcache: { nodeIp: node.ip, flags: isSelf ? IPCACHE_F_LOCAL : 0 }, tunnel: isSelf ? undefined : { nodeIp: node.ip, vni: 0 } };
  }

  private endpointValue(ep: LocalEndpoint): EndpointValue {
    return { ifindex: ep.hostIfindex, flags: 0, mac: ep.mac, nodeMac: ep.hostMac };
  }

  private async flushOnce(): Promise<void> {
    const started = process.hrtime.bigint();
    const full = !this.fullDone;
    const podsRevision = this.podsRevision;
    const nodesRevision = this.nodesRevision;
    const maps = this.options.datapath.maps;
    let upserts = 0;
    let deletes = 0;
    if (full) {
      const hosts: Array<[LpmKey, IpcacheValue]> = [];
      const seen = new Set<string>();
      const addHost = (ip: string) => {
        if (seen.has(ip)) return;
        seen.add(ip);
        const v = this.desiredHost(ip);
        if (v) hosts.push([{ cidr: `${ip}/32` }, v]);
      };
      for (const ip of this.localByIp.keys()) addHost(ip);
      for (const ip of this.byIp.keys()) addHost(ip);
      for (const ip of this.healthOwner.keys()) addHost(ip);
      const prefixes: Array<[LpmKey, IpcacheValue]> = [];
      const tunnels: Array<[LpmKey, TunnelValue]> = [];
      for (const cidr of this.cidrOwner.keys()) {
        const d = this.desiredCidr(cidr);
        if (d.ipcache) prefixes.push([{ cidr }, d.ipcache]);
        if (d.tunnel) tunnels.push([{ cidr }, d.tunnel]);
      }
      const eps: Array<[EndpointKey, EndpointValue]> = [...this.local.values()].map((ep) => [{ ip: ep.ip }, this.endpointValue(ep)]);
      const results = [
        reconcile(maps.endpoints, eps),
        ...reconcileIpcache({ maps }, [...hosts, ...prefixes]),
        reconcile(maps.tunnel, tunnels),
      ];
      for (const r of results) {
        upserts += r.updated;
        deletes += r.deleted;
        this.metrics?.writes.inc({ map: r.map, op: 'update' }, r.updated);
        this.metrics?.writes.inc({ map: r.map, op: 'delete' }, r.deleted);
        if (r.error) this.log.error({ map: r.map, error: r.error.message }, 'BPF map full: the datapath is partially programmed');
      }
      this.lastFull = results;
      this.totals.fullReconciles++;
      this.dirtyIps.clear();
      this.dirtyCidrs.clear();
      this.dirtyLocal.clear();
      this.dirtyNodeIps.clear();
      this.routesDirty = true;
      this.log.info({ results: results.map((r) => `${r.map}: +${r.updated} -${r.deleted} =${r.unchanged}`).join(', ') }, 'maps reconciled to etcd state');
    } else {
      if (this.dirtyNodeIps.size) {
        // A node's IP changed (or a node appeared/vanished): its pods' ipcache values change with it.
        const changed = this.dirtyNodeIps;
        this.dirtyNodeIps = new Set();
        for (const pod of this.pods.values()) if (changed.has(pod.node)) this.dirtyIps.add(pod.ip);
        if (changed.has(this.nodeName)) for (const ip of this.localByIp.keys()) this.dirtyIps.add(ip);
        for (const [cidr, owner] of this.cidrOwner) if (changed.has(owner)) this.dirtyCidrs.add(cidr);
        for (const [ip, owner] of this.healthOwner) if (changed.has(owner)) this.dirtyIps.add(ip);
      }
      const ips = this.dirtyIps;
      const cidrs = this.dirtyCidrs;
      const localIps = this.dirtyLocal;
      this.dirtyIps = new Set();
      this.dirtyCidrs = new Set();
      this.dirtyLocal = new Set();
      const epUp: Array<[EndpointKey, EndpointValue]> = [];
      const epDel: EndpointKey[] = [];
      for (const ip of localIps) {
        const ep = this.localByIp.get(ip);
        if (ep) epUp.push([{ ip }, this.endpointValue(ep)]);
        else epDel.push({ ip });
      }
      const ipUp: Array<[LpmKey, IpcacheValue]> = [];
      const ipDel: LpmKey[] = [];
      for (const ip of ips) {
        const v = this.desiredHost(ip);
        if (v) ipUp.push([{ cidr: `${ip}/32` }, v]);
        else ipDel.push({ cidr: `${ip}/32` });
      }
      const tunUp: Array<[LpmKey, TunnelValue]> = [];
      const tunDel: LpmKey[] = [];
      for (const cidr of cidrs) {
        const d = this.desiredCidr(cidr);
        if (d.ipcache) ipUp.push([{ cidr }, d.ipcache]);
        else ipDel.push({ cidr });
        if (d.tunnel) tunUp.push([{ cidr }, d.tunnel]);
        else tunDel.push({ cidr });
      }
      // Deletes first: room for the new entries in a nearly full map.
      maps.endpoints.deleteBatch(epDel);
      deleteIpcache({ maps }, ipDel);
      maps.tunnel.deleteBatch(tunDel);
      this.writeSafely('sl_endpoints', () => maps.endpoints.upsertBatch(epUp));
      this.writeSafely('sl_ipcache', () => upsertIpcache({ maps }, ipUp));
      this.writeSafely('sl_tunnel', () => maps.tunnel.upsertBatch(tunUp));
      upserts = epUp.length + ipUp.length + tunUp.length;
      deletes = epDel.length + ipDel.length + tunDel.length;
      this.metrics?.writes.inc({ map: 'sl_endpoints', op: 'update' }, epUp.length);
      this.metrics?.writes.inc({ map: 'sl_endpoints', op: 'delete' }, epDel.length);
      this.metrics?.writes.inc({ map: 'sl_ipcache', op: 'update' }, ipUp.length);
      this.metrics?.writes.inc({ map: 'sl_ipcache', op: 'delete' }, ipDel.length);
      this.metrics?.writes.inc({ map: 'sl_tunnel', op: 'update' }, tunUp.length);
      this.metrics?.writes.inc({ map: 'sl_tunnel', op: 'delete' }, tunDel.length);
    }
    this.totals.upserts += upserts;
    this.totals.deletes += deletes;
    this.metrics?.flushes.inc({ kind: full ? 'full' : 'delta' });
    this.metrics?.flushDuration.observe({ kind: full ? 'full' : 'delta' }, Number(process.hrtime.bigint() - started) / 1e9);
    this.metrics?.endpoints.set({ scope: 'local' }, this.local.size);
    this.metrics?.endpoints.set({ scope: 'cluster' }, this.byIp.size);
    this.programmedPods = Math.max(this.programmedPods, podsRevision);
    this.programmedNodes = Math.max(this.programmedNodes, nodesRevision);
    if (this.routesDirty && this.options.routes) {
      this.routesDirty = false;
      const desired = this.desiredRoutes();
      const routes = this.options.routes;
      this.routeChain = this.routeChain.then(() => routes.sync(desired)).catch((err: unknown) => {
        this.log.error({ error: (err as Error).message }, 'installing routes to other nodes failed; retrying');
        this.routesDirty = true;
        setTimeout(() => this.schedule(), 1000).unref();
      });
      await this.routeChain;
    }
    if (full) {
      this.fullDone = true;
      for (const l of this.syncedListeners.splice(0)) l();
    }
    for (let i = this.waiters.length - 1; i >= 0; i--) {
      const w = this.waiters[i]!;
      if (this.programmedRevision(w.kind) >= w.revision) {
        this.waiters.splice(i, 1);
        w.resolve();
      }
    }
    this.options.onProgrammed?.({ podsRevision: this.programmedPods, nodesRevision: this.programmedNodes, full, upserts, deletes });
  }

  private writeSafely(map: string, write: () => void): void {
    try {
      write();
    } catch (err) {
      if ((err as { name?: string }).name !== 'MapFullError') throw err;
      this.log.error({ map, error: (err as Error).message }, 'BPF map full: the datapath is partially programmed');
    }
  }

  private desiredRoutes(): Map<string, string> {
    const out = new Map<string, string>();
    for (const [cidr, owner] of this.cidrOwner) {
      if (owner === this.nodeName) continue;
      const ip = this.nodes.get(owner)?.ip;
      if (ip) out.set(cidr, ip);
    }
    return out;
  }

  status(): AgentCoreStatus {
    const ws = this.watches.map((w) => w.status());
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
      },
      endpoints: { local: this.local.size, cluster: this.byIp.size, nodes: this.nodes.size },
      writes: { ...this.totals },
      ...(this.lastFull ? { lastFullReconcile: this.lastFull } : {}),
    };
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await Promise.all(this.watches.map((w) => w.stop()));
    await this.flushing?.catch(() => undefined);
    await this.routeChain;
  }
}
