/**
 * The operator: while it leads, it mirrors the four kinds into etcd through one writer per leadership term; while it
 * does not, it writes nothing. Each term starts with a mark-and-sweep of etcd against the desired state, so objects
 * deleted while no operator ran (or during a handover) are removed, and a term that finds nothing changed writes
 * nothing at all.
 *
 * The informers start with the first term (a standby watches nothing) and then outlive terms: a leader that loses
 * its lease (etcd restarted, a partition) keeps following Kubernetes, and when it leads again it replays what it
 * holds instead of relisting 100,000 pods, so it writes again within seconds of etcd's return.
 */
import { hostname } from 'node:os';
import type { KubeConfig } from '@kubernetes/client-node';
import { Backoff } from '@sluice/backoff';
import { KvWriter, LeaderElection, RESOURCE_KINDS, syncedMarkerValue, type Etcd3, type KeySchema } from '@sluice/kvstore';
import type { Logger } from '@sluice/log';
import { Gauge, type Registry } from '@sluice/metrics';
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
  /** Writer limits; the defaults suit a local etcd. */
  writer?: { qps?: number; burst?: number; maxInFlight?: number };
}

export interface OperatorStatus {
  identity: string;
  leading: boolean;
  synced: boolean;
  term: number;
  kinds: Record<string, { synced: boolean; resourceVersion: string }>;
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
  private term = 0;
  private writer: KvWriter | undefined;
  private mirrors: KindMirror[] = [];
  private readonly sink = new TermSink();
  private synced = false;
  private stopping = false;
  private transition: Promise<void> = Promise.resolve();

  constructor(private readonly options: OperatorOptions) {
    this.identity = options.identity ?? `operator-${hostname()}-${process.pid}`;
    this.metrics = mirrorMetrics(options.registry);
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
    this.election.onChange((leading) => {
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
      kinds: Object.fromEntries(this.mirrors.map((m) => [m.kind, { synced: m.hasSynced, resourceVersion: m.resourceVersion }])),
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

  async stop(): Promise<void> {
    this.stopping = true;
    await this.transition;
    await this.follow();
    const mirrors = this.mirrors;
    this.mirrors = [];
    await Promise.all(mirrors.map((m) => m.stop()));
    await this.election.resign();
  }

  private async lead(): Promise<void> {
    if (this.stopping || !this.election.isLeader) return;
    const term = ++this.term;
    const { keys, log } = this.options;
    log.info({ term }, 'leading: syncing etcd with Kubernetes');
    const writer = new KvWriter({
      client: this.options.etcd,
      guard: this.election,
      registry: this.options.registry,
      log: log.child({ subsystem: 'writer' }),
      ...this.options.writer,
    });
    this.writer = writer;
    // Every prefix is marked before the first upsert of the term: an upsert before its prefix's mark would not count
    // as asserted, and the sweep would delete its key.
    const loadStart = Date.now();
    let inEtcd = 0;
    for (const kind of RESOURCE_KINDS) inEtcd += (await writer.beginSync(keys.prefix(kind))).existing;
    if (term !== this.term) return;
    log.info({ term, keys: inEtcd, ms: Date.now() - loadStart }, 'loaded what etcd holds');

    // Synchronously: no event can slip in between the switch to this term's writer and the replay.
    this.sink.writer = writer;
    let replayed = 0;
    for (const mirror of this.mirrors) {
      for (const [key, value] of mirror.desired()) {
        writer.upsert(key, value);
        replayed++;
      }
    }
    if (this.mirrors.length === 0) {
      this.mirrors = mirroredResources(this.options.kube, keys).map(
        (resource) =>
          new KindMirror({
            config: this.options.kube,
            resource,
            sink: this.sink,
            log: log.child({ subsystem: 'mirror', kind: resource.kubeKind }),
            metrics: this.metrics,
            pageSize: this.options.pageSize,
            backoff: new Backoff({ minMs: 500, maxMs: 30_000 }),
          }),
      );
      for (const mirror of this.mirrors) mirror.start();
    } else {
      log.info({ term, replayed }, 'replaying the state the informers kept since the last term');
    }
    await Promise.all(this.mirrors.map((m) => m.synced));
    if (term !== this.term) return;

    let deleted = 0;
    for (const kind of RESOURCE_KINDS) {
      deleted += (await writer.finishSync(keys.prefix(kind), { key: keys.synced(kind), value: syncedMarkerValue(kind) })).deleted;
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
    this.term++;
    this.synced = false;
    this.syncedGauge.set(0);
    this.sink.writer = undefined;
    this.writer?.close();
    this.writer = undefined;
  }
}
