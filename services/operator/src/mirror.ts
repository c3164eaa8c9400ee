/**
 * Mirrors one Kubernetes kind into etcd: a client-node informer feeds every event through the slim converter, and
 * the sink (the kvstore writer, which skips writes whose bytes did not change) gets an upsert or a delete.
 *
 * client-node 1.4's ListWatch relists by itself after a 410, but any other error stops it for good; the mirror
 * restarts it with jittered backoff (honouring a 429's Retry-After) and resumes from the last resourceVersion when it
 * has one, so a dropped watch costs no relist.
 */
import { ListWatch, type KubeConfig, type KubernetesObject } from '@kubernetes/client-node';
import { Backoff } from '@sluice/backoff';
import { RepeatSuppressor, type Logger } from '@sluice/log';
import { Counter, type Registry } from '@sluice/metrics';
import { SlimError } from '@sluice/slim';
import { listAllPages, type Mirrored } from './resources.ts';
import { FilteringWatch } from './watch.ts';

export interface RecordSink {
  upsert(key: string, value: string): void;
  delete(key: string): void;
}

export interface MirrorMetrics {
  events: Counter<'kind' | 'type'>;
  malformed: Counter<'kind'>;
  restarts: Counter<'kind'>;
  unchanged: Counter<'kind'>;
  undecoded: Counter<'kind'>;
}

export function mirrorMetrics(registry: Registry): MirrorMetrics {
  return {
    events: new Counter({ name: 'sluice_operator_kube_events_total', help: 'Kubernetes events received, by kind and type', labelNames: ['kind', 'type'], registers: [registry] }),
    malformed: new Counter({ name: 'sluice_operator_malformed_objects_total', help: 'Objects skipped because they could not be slimmed', labelNames: ['kind'], registers: [registry] }),
    restarts: new Counter({ name: 'sluice_operator_informer_restarts_total', help: 'Informer restarts after an error', labelNames: ['kind'], registers: [registry] }),
    unchanged: new Counter({ name: 'sluice_operator_unchanged_events_total', help: 'Events whose slim record did not change (no etcd write)', labelNames: ['kind'], registers: [registry] }),
    undecoded: new Counter({ name: 'sluice_operator_undecoded_events_total', help: 'Unchanged events recognised without decoding them (heartbeats); also counted as unchanged', labelNames: ['kind'], registers: [registry] }),
  };
}

export interface MirrorOptions {
  config: KubeConfig;
  resource: Mirrored<KubernetesObject>;
  sink: RecordSink;
  log: Logger;
  metrics: MirrorMetrics;
  pageSize?: number;
  backoff?: Backoff;
}

export class KindMirror {
  private informer: ListWatch<KubernetesObject> | undefined;
  /**
   * Key → the validated canonical bytes last handed to the writer. An event whose bytes are the same (a heartbeat)
   * stops here, before validation and hashing; a key leaving the datapath (a pod turning Succeeded) is deleted once.
   */
  private readonly lastValue = new Map<string, string>();
  private readonly suppressor = new RepeatSuppressor(60_000);
  private readonly backoff: Backoff;
  private restartTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private syncedResolve!: () => void;
  /** Resolves once the first full list has gone through the sink. */
  readonly synced: Promise<void>;
  private isSynced = false;

  constructor(private readonly options: MirrorOptions) {
    this.backoff = options.backoff ?? new Backoff({ minMs: 500, maxMs: 30_000 });
    this.synced = new Promise((resolve) => (this.syncedResolve = resolve));
  }

  get kind(): string {
    return this.options.resource.kind;
  }

  get hasSynced(): boolean {
    return this.isSynced;
  }

  /** The Kubernetes resourceVersion up to which this kind has gone through the sink ('' before the first list). */
  get resourceVersion(): string {
    return this.informer?.latestResourceVersion() ?? '';
  }

  start(): void {
    const { resource, config, metrics } = this.options;
    const listFn = async () => {
      const list = await listAllPages(resource, this.options.pageSize ?? 500);
      for (const item of list.items) resource.trim(item);
      // ListWatch hands the items to the add/update handlers synchronously right after this promise settles; by the
      // time an immediate runs, the whole list has gone through the sink.
      if (!this.isSynced) {
        setImmediate(() => {
          this.isSynced = true;
          this.syncedResolve();
        });
      }
      return list;
    };
    const watch = new FilteringWatch(config, {
      transform: (object) => resource.trim(object as KubernetesObject),
      onUnchanged: () => {
        const kind = resource.kubeKind;
        metrics.events.inc({ kind, type: 'MODIFIED' });
        metrics.unchanged.inc({ kind });
        metrics.undecoded.inc({ kind });
        this.backoff.reset();
      },
      onMalformed: (reason) => {
        metrics.malformed.inc({ kind: resource.kubeKind });
        this.suppressor.warn(this.options.log, `${resource.kubeKind}/watch/${reason}`, { reason }, 'skipping a malformed watch event');
      },
    });
    const informer = new ListWatch<KubernetesObject>(resource.path, watch, listFn, false);
    informer.on('add', (obj) => this.apply('ADDED', obj));
    informer.on('update', (obj) => this.apply('MODIFIED', obj));
    informer.on('delete', (obj) => this.remove(obj));
    informer.on('error', (err) => this.onError(err));
    this.informer = informer;
    void informer.start();
  }

  /** Every record this kind should have in etcd now (key → canonical bytes), for a new term to re-assert. */
  desired(): IterableIterator<[string, string]> {
    return this.lastValue.entries();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.restartTimer);
    await this.informer?.stop();
  }

  private apply(type: 'ADDED' | 'MODIFIED', obj: KubernetesObject): void {
    const { resource, sink, metrics } = this.options;
    metrics.events.inc({ kind: resource.kubeKind, type });
    this.backoff.reset();
    const key = resource.key(obj);
    const record = resource.build(obj);
    if (record === undefined) {
      if (this.lastValue.delete(key)) sink.delete(key);
      return;
    }
    // Built in schema order, so these are the canonical bytes that a validated record would encode to.
    const value = JSON.stringify(record);
    if (this.lastValue.get(key) === value) {
      metrics.unchanged.inc({ kind: resource.kubeKind });
      return;
    }
    try {
      resource.validate(record);
    } catch (err) {
      this.skipMalformed(obj, err);
      return;
    }
    this.lastValue.set(key, value);
    sink.upsert(key, value);
  }

  private remove(obj: KubernetesObject): void {
    const { resource, sink, metrics } = this.options;
    metrics.events.inc({ kind: resource.kubeKind, type: 'DELETED' });
    const key = resource.key(obj);
    this.lastValue.delete(key);
    // Deleting a key that is not in etcd is skipped by the writer, so a delete is always safe to send.
    sink.delete(key);
  }

  private skipMalformed(obj: KubernetesObject, err: unknown): void {
    const { resource, log, metrics } = this.options;
    metrics.malformed.inc({ kind: resource.kubeKind });
    const id = `${obj.metadata?.namespace ? `${obj.metadata.namespace}/` : ''}${obj.metadata?.name ?? '(unnamed)'}`;
    const reason = err instanceof SlimError ? err.message : String(err);
    this.suppressor.warn(log, `${resource.kubeKind}/${id}/${reason}`, { object: id, reason }, 'skipping malformed object');
  }

  private onError(err: unknown): void {
    if (this.stopped) return;
    const { resource, log, metrics } = this.options;
    metrics.restarts.inc({ kind: resource.kubeKind });
    const code = (err as { code?: number; statusCode?: number }).code ?? (err as { statusCode?: number }).statusCode;
    const retryAfterMs = retryAfter(err);
    const delay = Math.max(this.backoff.nextDelayMs(), retryAfterMs ?? 0);
    this.suppressor.warn(log, `informer-error/${resource.kubeKind}`, { code, err: (err as Error)?.message, retryInMs: Math.round(delay) }, 'informer stopped; restarting with backoff');
    this.restartTimer = setTimeout(() => {
      if (!this.stopped) void this.informer?.start();
    }, delay);
  }
}

/** A 429's Retry-After, in ms, when the API server sent one. */
function retryAfter(err: unknown): number | undefined {
  const headers = (err as { headers?: Record<string, string> }).headers;
  const value = headers?.['retry-after'] ?? headers?.['Retry-After'];
  const seconds = value === undefined ? NaN : Number(value);
  return Number.isFinite(seconds) && seconds >= 0 ? seconds * 1000 : undefined;
}
