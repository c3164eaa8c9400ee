/**
 * Mirrors one Kubernetes kind into etcd: an informer of its own (list in pages, then watch from the list's
 * resourceVersion) feeds every object through the slim converter, and the sink (the kvstore writer, which skips writes
 * whose bytes did not change) gets an upsert or a delete.
 *
 * It caches no Kubernetes object: what it keeps per object is the canonical bytes of the slim record last handed to
 * the sink (what a new leadership term re-asserts, and how an event that changes nothing is recognised), so 100,000
 * pods cost ~100,000 short strings instead of 100,000 parsed objects.
 *
 * A watch that ends is resumed from the last resourceVersion (no relist); a 410 (the resourceVersion left the API
 * server's window) relists, and the relist deletes what it no longer lists and forgets every fingerprint the
 * unchanged-event filter held, since the list may have delivered states the filter never saw. Any other error is
 * retried with jittered backoff, honouring a 429's Retry-After.
 */
import type { KubeConfig } from '@kubernetes/client-node';
import { Backoff } from '@sluice/backoff';
import { RepeatSuppressor, type Logger } from '@sluice/log';
import { Counter, type Registry } from '@sluice/metrics';
import { SlimError } from '@sluice/slim';
import type { Mirrored } from './resources.ts';
import type { WatchDecoder } from './json-walk.ts';
import { UnchangedEventFilter } from './unchanged-filter.ts';
import { KubeHttpError, listPage, watchOnce, type KubeObject, type WatchEventType } from './watch.ts';

export interface RecordSink {
  upsert(key: string, value: string): void;
  delete(key: string): void;
}

export interface MirrorMetrics {
  events: Counter<'kind' | 'type'>;
  malformed: Counter<'kind'>;
  restarts: Counter<'kind'>;
  relists: Counter<'kind'>;
  unchanged: Counter<'kind'>;
  undecoded: Counter<'kind'>;
}

export function mirrorMetrics(registry: Registry): MirrorMetrics {
  return {
    events: new Counter({ name: 'sluice_operator_kube_events_total', help: 'Kubernetes objects received, by kind and type (ADDED, MODIFIED, DELETED from watches; LISTED from lists)', labelNames: ['kind', 'type'], registers: [registry] }),
    malformed: new Counter({ name: 'sluice_operator_malformed_objects_total', help: 'Objects skipped because they could not be slimmed', labelNames: ['kind'], registers: [registry] }),
    restarts: new Counter({ name: 'sluice_operator_informer_restarts_total', help: 'List or watch requests that failed and were retried with backoff', labelNames: ['kind'], registers: [registry] }),
    relists: new Counter({ name: 'sluice_operator_relists_total', help: 'Full lists of a kind from the API server (the first one included)', labelNames: ['kind'], registers: [registry] }),
    unchanged: new Counter({ name: 'sluice_operator_unchanged_events_total', help: 'Events whose slim record did not change (no etcd write)', labelNames: ['kind'], registers: [registry] }),
    undecoded: new Counter({ name: 'sluice_operator_undecoded_events_total', help: 'Unchanged events recognised without decoding them (heartbeats); also counted as unchanged', labelNames: ['kind'], registers: [registry] }),
  };
}

export interface MirrorOptions {
  config: KubeConfig;
  resource: Mirrored;
  sink: RecordSink;
  log: Logger;
  metrics: MirrorMetrics;
  /** Objects per list page at most (pages of large objects are cut to about 512 KB). */
  pageSize?: number;
  backoff?: Backoff;
  /** Called after a record of this kind changed, appeared or went (synchronously; callers batch). */
  onApplied?: () => void;
  /** Called as each watch event arrives, before it is applied (a measurement hook: where latency splits). */
  onReceived?: (type: 'ADDED' | 'MODIFIED' | 'DELETED', object: KubeObject) => void;
}

type Precomputed = { value: string } | { error: unknown };

/** A 410: the resourceVersion or continue token is too old for the API server. */
function isGone(err: unknown): boolean {
  return err instanceof KubeHttpError && err.statusCode === 410;
}

/**
 * About how many bytes a list page should hold. A page is parsed whole and its objects live until it has been
 * applied, so a page of 500 Nodes (12 KB each, 6 MB of JSON, ~30 MB once parsed) made the operator's memory peak
 * during the initial sync. The page size follows the size of the kind's objects instead: the first page is small,
 * and later ones hold about this many bytes (never more objects than the configured page size).
 */
const LIST_PAGE_BYTES = 512 * 1024;
const FIRST_PAGE_OBJECTS = 50;

/** How long a watch is asked to last; spread so that the kinds do not all reconnect at once (client-go does so too). */
const watchTimeoutSeconds = () => 300 + Math.floor(Math.random() * 300);

export class KindMirror {
  /**
   * Key → the validated canonical bytes last handed to the writer. An event whose bytes are the same (a heartbeat)
   * stops here, before validation; a key leaving the datapath (a pod turning Succeeded) is deleted once.
   */
  private readonly lastValue = new Map<string, string>();
  private readonly filter: UnchangedEventFilter | undefined;
  private readonly decoder: WatchDecoder | undefined;
  private readonly suppressor = new RepeatSuppressor(60_000);
  private readonly backoff: Backoff;
  private readonly controller = new AbortController();
  private running: Promise<void> | undefined;
  private version = '';
  private stopped = false;
  private syncedResolve!: () => void;
  /** Resolves once the first full list has gone through the sink. */
  readonly synced: Promise<void>;
  private isSynced = false;

  constructor(private readonly options: MirrorOptions) {
    this.backoff = options.backoff ?? new Backoff({ minMs: 500, maxMs: 30_000 });
    this.filter = options.resource.heartbeats ? new UnchangedEventFilter() : undefined;
    this.decoder = options.resource.decoder?.();
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
    return this.version;
  }

  /** Records this kind has in etcd (or would have, between terms). */
  get records(): number {
    return this.lastValue.size;
  }

  /** Objects whose unchanged events the filter would recognise (nothing deleted may stay there). */
  get fingerprinted(): number {
    return this.filter?.size ?? 0;
  }

  start(): void {
    this.running ??= this.run();
  }

  /** Every record this kind should have in etcd now (key → canonical bytes), for a new term to re-assert. */
  desired(): IterableIterator<[string, string]> {
    return this.lastValue.entries();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.controller.abort();
    await this.running;
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      try {
        if (!this.version) {
          this.version = await this.relist();
          if (!this.isSynced && !this.stopped) {
            this.isSynced = true;
            this.syncedResolve();
            this.options.onApplied?.();
          }
        }
        const started = Date.now();
        const outcome = await this.watch();
        if (outcome === 'expired') this.version = '';
        // A watch that the server ends at once, again and again, is retried with backoff rather than in a tight loop.
        else if (outcome === 'empty' && Date.now() - started < 1000) await this.sleep(this.backoff.nextDelayMs());
      } catch (err) {
        if (this.stopped) break;
        if (isGone(err)) {
          this.version = '';
          continue;
        }
        const delay = this.onError(err);
        await this.sleep(delay);
      }
    }
  }

  /** Lists every page and applies it; returns the list's resourceVersion. */
  private async relist(): Promise<string> {
    const { resource, config, metrics, sink } = this.options;
    metrics.relists.inc({ kind: resource.kubeKind });
    this.filter?.clear();
    this.decoder?.clear();
    let seen = new Set<string>();
    let token: string | undefined;
    let version = '';
    const maxObjects = this.options.pageSize ?? 500;
    let limit = Math.min(maxObjects, FIRST_PAGE_OBJECTS);
    for (;;) {
      let page;
      try {
        page = await listPage(config, resource.path, { limit, continue: token }, this.controller.signal);
      } catch (err) {
        // The continue token expired mid-list: start over from a fresh snapshot.
        if (token !== undefined && isGone(err)) {
          token = undefined;
          version = '';
          seen = new Set();
          continue;
        }
        throw err;
      }
      // The first page pins the snapshot; the continue token keeps the following pages on it.
      version ||= page.resourceVersion;
      for (const item of page.items) {
        const key = this.apply('LISTED', item);
        if (key !== undefined) seen.add(key);
      }
      this.backoff.reset();
      if (page.items.length > 0) limit = Math.max(1, Math.min(maxObjects, Math.floor((LIST_PAGE_BYTES * page.items.length) / page.bytes)));
      token = page.continueToken;
      if (token === undefined) break;
      // One page per event-loop turn: a 100,000-pod list must not hold the loop for seconds.
      await new Promise((resolve) => setImmediate(resolve));
      if (this.stopped) return '';
    }
    for (const key of [...this.lastValue.keys()]) {
      if (seen.has(key)) continue;
      this.lastValue.delete(key);
      sink.delete(key);
    }
    this.options.onApplied?.();
    return version;
  }

  /** One watch request; 'expired' when the server said 410, 'empty' when it ended without delivering anything. */
  private async watch(): Promise<'expired' | 'ended' | 'empty'> {
    const { resource, config } = this.options;
    const local = new AbortController();
    const onStop = () => local.abort();
    this.controller.signal.addEventListener('abort', onStop, { once: true });
    let failure: { code?: unknown; message?: unknown } | undefined;
    let delivered = 0;
    try {
      await watchOnce(
        config,
        resource.path,
        { resourceVersion: this.version, allowWatchBookmarks: true, timeoutSeconds: watchTimeoutSeconds() },
        {
          onEvent: (type, object, record) => {
            delivered++;
            if (type === 'ERROR') {
              failure = object as { code?: unknown; message?: unknown };
              local.abort();
              return;
            }
            this.onEvent(type, object, record);
          },
          onUnchanged: () => this.onUnchanged(),
          onMalformed: (reason) => {
            this.options.metrics.malformed.inc({ kind: resource.kubeKind });
            this.suppressor.warn(this.options.log, `${resource.kubeKind}/watch/${reason}`, { reason }, 'skipping a malformed watch event');
          },
        },
        local.signal,
        { filter: this.filter, decoder: this.decoder },
      );
    } finally {
      this.controller.signal.removeEventListener('abort', onStop);
    }
    if (failure) {
      if (failure.code === 410) return 'expired';
      throw new KubeHttpError(typeof failure.code === 'number' ? failure.code : 500, {}, `watch ${resource.path}: ${String(failure.message ?? 'error event')}`);
    }
    return delivered ? 'ended' : 'empty';
  }

  private onEvent(type: Exclude<WatchEventType, 'ERROR'>, object: KubeObject, record?: Precomputed): void {
    if (type !== 'BOOKMARK') this.options.onReceived?.(type, object);
    if (type === 'ADDED' || type === 'MODIFIED') this.apply(type, object, record);
    else if (type === 'DELETED') this.remove(object);
    const version = object.metadata?.resourceVersion;
    if (typeof version === 'string' && version) this.version = version;
  }

  private onUnchanged(): void {
    const { resource, metrics } = this.options;
    const kind = resource.kubeKind;
    metrics.events.inc({ kind, type: 'MODIFIED' });
    metrics.unchanged.inc({ kind });
    metrics.undecoded.inc({ kind });
    this.backoff.reset();
  }

  /**
   * Applies an object's current state; returns its key (undefined for an object without a name). `precomputed` is
   * the validated canonical record a selective decoder already made, or the reason it could not.
   */
  private apply(type: 'ADDED' | 'MODIFIED' | 'LISTED', obj: KubeObject, precomputed?: Precomputed): string | undefined {
    const { resource, sink, metrics } = this.options;
    metrics.events.inc({ kind: resource.kubeKind, type });
    this.backoff.reset();
    const key = resource.key(obj);
    if (key === undefined) {
      this.skipMalformed(obj, new Error('the object has no name'));
      return undefined;
    }
    if (precomputed) {
      if ('error' in precomputed) this.skipMalformed(obj, precomputed.error);
      else if (this.lastValue.get(key) === precomputed.value) metrics.unchanged.inc({ kind: resource.kubeKind });
      else {
        this.lastValue.set(key, precomputed.value);
        sink.upsert(key, precomputed.value);
        this.options.onApplied?.();
      }
      return key;
    }
    let record;
    try {
      record = resource.build(obj);
    } catch (err) {
      this.skipMalformed(obj, err);
      return key;
    }
    if (record === undefined) {
      if (this.lastValue.delete(key)) {
        sink.delete(key);
        this.options.onApplied?.();
      }
      return key;
    }
    // Built in schema order, so these are the canonical bytes that a validated record would encode to.
    const value = JSON.stringify(record);
    if (this.lastValue.get(key) === value) {
      metrics.unchanged.inc({ kind: resource.kubeKind });
      return key;
    }
    try {
      resource.validate(record);
    } catch (err) {
      this.skipMalformed(obj, err);
      return key;
    }
    this.lastValue.set(key, value);
    sink.upsert(key, value);
    this.options.onApplied?.();
    return key;
  }

  private remove(obj: KubeObject): void {
    const { resource, sink, metrics } = this.options;
    metrics.events.inc({ kind: resource.kubeKind, type: 'DELETED' });
    const key = resource.key(obj);
    if (key === undefined) return;
    // Deleting a key that is not in etcd is skipped by the writer, so a delete is always safe to send.
    const had = this.lastValue.delete(key);
    sink.delete(key);
    if (had) this.options.onApplied?.();
  }

  private skipMalformed(obj: KubeObject, err: unknown): void {
    const { resource, log, metrics } = this.options;
    metrics.malformed.inc({ kind: resource.kubeKind });
    const { name, namespace } = obj.metadata ?? {};
    const id = `${typeof namespace === 'string' && namespace ? `${namespace}/` : ''}${typeof name === 'string' && name ? name : '(unnamed)'}`;
    const reason = err instanceof SlimError ? err.message : String((err as Error)?.message ?? err);
    this.suppressor.warn(log, `${resource.kubeKind}/${id}/${reason}`, { object: id, reason }, 'skipping malformed object');
  }

  /** Counts and logs (once a minute per kind) a failed request; returns how long to wait before the next. */
  private onError(err: unknown): number {
    const { resource, log, metrics } = this.options;
    metrics.restarts.inc({ kind: resource.kubeKind });
    const code = err instanceof KubeHttpError ? err.statusCode : (err as { code?: unknown }).code;
    const retryAfterMs = retryAfter(err);
    const delay = Math.max(this.backoff.nextDelayMs(), retryAfterMs ?? 0);
    this.suppressor.warn(log, `informer-error/${resource.kubeKind}`, { code, err: (err as Error)?.message, retryInMs: Math.round(delay) }, 'list or watch failed; retrying with backoff');
    return delay;
  }

  /** Waits, or less when the mirror stops meanwhile. */
  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.controller.signal.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.controller.signal.addEventListener('abort', done, { once: true });
    });
  }
}

/** A 429's Retry-After, in ms, when the API server sent one. */
function retryAfter(err: unknown): number | undefined {
  if (!(err instanceof KubeHttpError)) return undefined;
  const value = err.headers['retry-after'];
  const seconds = value === undefined ? NaN : Number(Array.isArray(value) ? value[0] : value);
  return Number.isFinite(seconds) && seconds >= 0 ? seconds * 1000 : undefined;
}
