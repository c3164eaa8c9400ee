/**
 * The operator: while it leads, it mirrors the four kinds into etcd through one writer per leadership term; while it
 * does not, it writes nothing. Each term starts with a mark-and-sweep of etcd against the desired state, so objects
 * deleted while no operator ran (or during a handover) are removed, and a term that finds nothing changed writes
 * nothing at all.
 *
 * The informers start with the process, whether it leads or not, and outlive terms: a standby follows Kubernetes
 * without writing (a warm standby), so a failover replays what the standby already holds instead of relisting
 * 100,000 pods; likewise a leader that loses its lease (etcd restarted, a partition) keeps following Kubernetes and
 * writes again within seconds of etcd's return.
 */
import { hostname } from 'node:os';
import type { KubeConfig } from '@kubernetes/client-node';
import { Backoff } from '@sluice/backoff';
import { KvWriter, LeaderElection, RESOURCE_KINDS, syncedMarkerValue, type Etcd3, type KeySchema } from '@sluice/kvstore';
import type { Logger } from '@sluice/log';
import { Gauge, type Registry } from '@sluice/metrics';
import { LbIpamController } from './lb-ipam/controller.ts';
import { NodeConfigController } from './node-config/controller.ts';
import { KindMirror, mirrorMetrics, type MirrorMetrics, type RecordSink } from './mirror.ts';
import { mirroredResources } from './resources.ts';

export interface OperatorOptions {
  kube: KubeConfig;
  etcd: Etcd3;
  keys: KeySchema;
  registry: Registry;
  log: Logger;
  identity?: string;
  leaseTtlSeconds?: number;
  pageSize?: number;
  /**
   * Called as each watch event arrives (Kubernetes kind, event type, namespace, name), before it is applied: lets a
   * harness split a change's latency at the operator's receipt.
   */
  onReceived?: (kind: string, type: 'ADDED' | 'MODIFIED' | 'DELETED', namespace: string, name: string) => void;
  /** Writer limits; the defaults suit a local etcd. */
  writer?: { qps?: number; burst?: number; maxInFlight?: number; maxTxnOps?: number; maxRequestBytes?: number };
}

export interface OperatorStatus {
  identity: string;
  leading: boolean;
  synced: boolean;
  term: number;
  kinds: Record<string, { synced: boolean; resourceVersion: string; records: number; fingerprinted: number }>;
  writes: ReturnType<KvWriter['getStats']> | undefined;
}

/** The mirrors' way into etcd: the current term's writer, or nowhere between terms (the mirrors keep the state). */
class TermSink implements RecordSink {
  writer: KvWriter | undefined;

  upsert(key: string, value: string): void {
    this.writer?.upsert(key, value);
  }

  delete(key: string): void {
    this.writer?.delete(key);
  }
}

export class Operator {
  readonly identity: string;
  private readonly election: LeaderElection;
  private readonly metrics: MirrorMetrics;
  private readonly syncedGauge: Gauge;
  private readonly leadingSince: Gauge;
  private term = 0;
  private writer: KvWriter | undefined;
  private mirrors: KindMirror[] = [];
  private readonly sink = new TermSink();
  private synced = false;
  private stopping = false;
  private transition: Promise<void> = Promise.resolve();
  /** LB IPAM and the L2 announcement records (lb-ipam/): follows its kinds always, writes only while leading. */
  private lbIpam: LbIpamController | undefined;
  /** SluiceNodeConfigs → each node's effective configuration in etcd (node-config/): writes only while leading. */
  private nodeConfig: NodeConfigController | undefined;
  /** Called when a node record changes (the node configuration follows node labels). */
  private readonly nodeListeners: Array<() => void> = [];

  constructor(private readonly options: OperatorOptions) {
    this.identity = options.identity ?? `operator-${hostname()}-${process.pid}`;
    this.metrics = mirrorMetrics(options.registry);
    this.leadingSince = new Gauge({ name: 'sluice_operator_term_start_time_seconds', help: 'Unix time at which the current leadership term began (0 while standing by)', registers: [options.registry] });
    this.syncedGauge = new Gauge({ name: 'sluice_operator_synced', help: '1 once the current term has mirrored every kind into etcd', registers: [options.registry] });
    this.election = new LeaderElection({
      client: options.etcd,
      prefix: options.keys.operatorElection(),
      identity: this.identity,
      ttlSeconds: options.leaseTtlSeconds ?? 15,
      registry: options.registry,
      log: options.log.child({ subsystem: 'election' }),
    });
  }

  start(): void {
    const { keys, log } = this.options;
    this.mirrors = mirroredResources(keys).map(
      (resource) =>
        new KindMirror({
          config: this.options.kube,
          resource,
          sink: this.sink,
          log: log.child({ subsystem: 'mirror', kind: resource.kubeKind }),
          metrics: this.metrics,
          pageSize: this.options.pageSize,
          backoff: new Backoff({ minMs: 500, maxMs: 30_000 }),
          onReceived: this.options.onReceived && ((type, object) => {
            const { namespace, name } = object.metadata ?? {};
            this.options.onReceived!(resource.kubeKind, type, typeof namespace === 'string' ? namespace : '', typeof name === 'string' ? name : '');
          }),
          onApplied: resource.kind === 'nodes' ? () => this.nodeListeners.forEach((listener) => listener()) : undefined,
        }),
    );
    const nodes = this.mirrors.find((m) => m.kind === 'nodes')!;
    for (const mirror of this.mirrors) mirror.start();
    this.lbIpam = new LbIpamController({ kube: this.options.kube, etcd: this.options.etcd, keys, election: this.election, log: log.child({ subsystem: 'lb-ipam' }), registry: this.options.registry });
    this.lbIpam.start();
    this.nodeConfig = new NodeConfigController({
      kube: this.options.kube, etcd: this.options.etcd, keys, election: this.election, log: log.child({ subsystem: 'node-config' }), registry: this.options.registry,
      // The Node mirror's slim records carry names and labels: no second Node watch paying for every heartbeat again.
      nodes: (onChange) => {
        this.nodeListeners.push(onChange);
        return {
          get hasSynced() {
            return nodes.hasSynced;
          },
          list: () => [...nodes.desired()].map(([, value]) => {
            const node = JSON.parse(value) as { name: string; labels: Record<string, string> };
            return { metadata: { name: node.name, labels: node.labels } };
          }),
          start: () => undefined,
          stop: async () => undefined,
        };
      },
    });
    this.nodeConfig.start();
    this.election.onChange((leading) => {
      // A lost lease stops this term's writes at once, not behind the transition queue: a term still starting (its
      // load of etcd retrying against an etcd that times out) would otherwise hold the step-down, and every later
      // term, for as long as etcd stays slow. Closing the writer ends that start, which then fails and is logged.
      if (!leading) this.stopWriting();
      // Terms run one after another: a step-down waits for the previous term to have started fully, and vice versa.
      this.transition = this.transition.then(() => (leading ? this.lead() : this.follow())).catch((err: unknown) => {
        this.options.log.error({ err: (err as Error).message }, 'leadership transition failed');
      });
    });
    this.election.start();
  }

  get isLeader(): boolean {
    return this.election.isLeader;
  }

  get isSynced(): boolean {
    return this.synced;
  }

  status(): OperatorStatus {
    return {
      identity: this.identity,
      leading: this.election.isLeader,
      synced: this.synced,
      term: this.term,
      kinds: Object.fromEntries(this.mirrors.map((m) => [m.kind, { synced: m.hasSynced, resourceVersion: m.resourceVersion, records: m.records, fingerprinted: m.fingerprinted }])),
      writes: this.writer?.getStats(),
    };
  }

  /** Resolves when this instance leads and has finished the initial sync of its term. */
  async waitUntilSynced(signal?: AbortSignal): Promise<void> {
    while (!this.synced) {
      signal?.throwIfAborted();
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  /** Whether every kind's informer has listed once (a warm standby is ready to take over). */
  get informersSynced(): boolean {
    return this.mirrors.length > 0 && this.mirrors.every((m) => m.hasSynced);
  }

  /**
   * Stops writing, stops the informers and resigns. Each step that needs etcd or the API server waits at most
   * `graceMs` in all; whatever is still pending then is abandoned and logged, so that a dead etcd or a writer stuck
   * on a transaction etcd keeps refusing cannot hold the process.
   */
  async stop(graceMs = 10_000): Promise<void> {
    this.stopping = true;
    const deadline = Date.now() + graceMs;
    const { log } = this.options;
    /** Waits for `work` until `by` (the grace period's end by default); false, logged, when it gave up. */
    const within = async (what: string, work: Promise<unknown>, by = deadline): Promise<boolean> => {
      let timer: NodeJS.Timeout | undefined;
      const expired = new Promise<'expired'>((resolve) => (timer = setTimeout(() => resolve('expired'), Math.max(0, by - Date.now()))));
      const outcome = await Promise.race([work.then(() => 'done' as const, () => 'done' as const), expired]);
      clearTimeout(timer);
      if (outcome === 'expired') log.warn({ step: what }, 'shutdown: abandoned a step that did not finish within the grace period');
      return outcome === 'done';
    };
    // No new events; then what is queued is written while half the grace period lasts (a clean handover), and the
    // rest is left to the next leader, which re-asserts every record anyway.
    const mirrors = this.mirrors;
    this.mirrors = [];
    await within('stopping the informers', Promise.all(mirrors.map((m) => m.stop())), Date.now() + graceMs / 4);
    await within('stopping LB IPAM', this.lbIpam?.stop() ?? Promise.resolve(), Date.now() + graceMs / 4);
    await within('stopping node config', this.nodeConfig?.stop() ?? Promise.resolve(), Date.now() + graceMs / 4);
    const writer = this.writer;
    if (writer && !(await within('writing what was queued', writer.flush(), Date.now() + graceMs / 2))) {
      const { pending, inFlight } = writer.getStats();
      log.warn({ pendingWrites: pending, transactionsInFlight: inFlight }, 'shutdown: abandoning etcd writes not yet made (the next leader re-asserts them)');
    }
    await this.follow();
    await within('the leadership transition in progress', this.transition);
    await within('resigning leadership (the lease expires by itself)', this.election.resign());
  }

  private async lead(): Promise<void> {
    if (this.stopping || !this.election.isLeader) return;
    const term = ++this.term;
    const { keys, log } = this.options;
    this.leadingSince.set(Date.now() / 1000);
    log.info({ term, informersSynced: this.informersSynced }, 'leading: syncing etcd with Kubernetes');
    const writer = new KvWriter({
      client: this.options.etcd,
      guard: this.election,
      registry: this.options.registry,
      log: log.child({ subsystem: 'writer' }),
      // Transactions are cut by operations and by bytes (--max-txn-ops, --max-request-bytes): a full EndpointSlice
      // record is ~22 KB, so 128 of them would pass etcd's 1.5 MiB request limit.
      ...this.options.writer,
    });
    this.writer = writer;
    // Every prefix is marked before the first upsert of the term: an upsert before its prefix's mark would not count
    // as asserted, and the sweep would delete its key.
    const loadStart = Date.now();
    let inEtcd = 0;
    // The mark of a new term deletes the previous term's sync markers: readers hold off pruning until this sweep ends.
    for (const kind of RESOURCE_KINDS) inEtcd += (await writer.beginSync(keys.prefix(kind), { marker: keys.synced(kind) })).existing;
    if (term !== this.term) return;
    log.info({ term, keys: inEtcd, ms: Date.now() - loadStart }, 'loaded what etcd holds');

    // Events go to this term's writer from now on. The replay walks the mirrors' live maps a slice per event-loop turn
    // (100,000 records in one turn stall the loop for a second): an event between two slices updates or deletes its
    // key there, so the replay meets the newer value or none, and a key it already passed is written again after it.
    this.sink.writer = writer;
    let replayed = 0;
    for (const mirror of this.mirrors) {
      for (const [key, value] of mirror.desired()) {
        writer.upsert(key, value);
        if (++replayed % 2_000 === 0) {
          await new Promise((resolve) => setImmediate(resolve));
          if (term !== this.term) return;
        }
      }
    }
    log.info({ term, replayed }, 'replayed the state the informers hold');
    await Promise.all(this.mirrors.map((m) => m.synced));
    if (term !== this.term) return;

    let deleted = 0;
    for (const kind of RESOURCE_KINDS) {
      deleted += (await writer.finishSync(keys.prefix(kind), { key: keys.synced(kind), value: (stamp) => syncedMarkerValue(kind, stamp) })).deleted;
    }
    if (term !== this.term) return;
    // The heartbeat lives on the leader's lease: it vanishes by itself when this operator dies or loses its lease.
    const leaseId = this.election.leaseId();
    if (leaseId) {
      await this.options.etcd
        .put(keys.operatorHeartbeat())
        .value(JSON.stringify({ identity: this.identity, leaderSince: new Date().toISOString(), term }))
        .lease(leaseId)
        .exec()
        .catch((err: unknown) => log.warn({ err: (err as Error).message }, 'could not write the operator heartbeat'));
    }
    this.synced = true;
    this.syncedGauge.set(1);
    log.info({ term, ...writer.getStats(), sweptStaleKeys: deleted }, 'synced: etcd mirrors Kubernetes');
  }

  private async follow(): Promise<void> {
    this.stopWriting();
  }

  /** Ends the current term's writes (the mirrors keep following Kubernetes). */
  private stopWriting(): void {
    this.term++;
    this.synced = false;
    this.syncedGauge.set(0);
    this.leadingSince.set(0);
    this.sink.writer = undefined;
    this.writer?.close();
    this.writer = undefined;
  }
}
