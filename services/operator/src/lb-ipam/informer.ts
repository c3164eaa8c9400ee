/**
 * A small list/watch cache for LB IPAM's kinds (pools, Services, L2 policies), over the operator's raw list and
 * watch requests (watch.ts). LB IPAM reads whole objects (labels, annotations, status), unlike the mirrors, which
 * keep only slim records; Services are few compared to Pods, so holding them is cheap.
 *
 * A watch that ends is resumed from the last resourceVersion; a 410 (or a watch ERROR) relists. A kind the API server
 * does not serve (404: its CRD is not installed yet) is retried with backoff and logged once, not in a flood.
 */
import type { KubeConfig } from '@kubernetes/client-node';
import { Backoff } from '@sluice/backoff';
import type { Logger } from '@sluice/log';
import { UnchangedEventFilter } from '../unchanged-filter.ts';
import { KubeHttpError, listPage, watchOnce, type KubeObject } from '../watch.ts';

export type Obj = Record<string, unknown> & { metadata?: Record<string, unknown> };

export interface ObjectCacheOptions {
  config: KubeConfig;
  /** The collection's path, e.g. `/api/v1/services`. */
  path: string;
  log: Logger;
  /** Called (synchronously) after every change to the cache, and after each complete list. */
  onChange: () => void;
  /**
   * What of each object to keep (default: all of it). A change that leaves the kept part as it was is no change: no
   * onChange. For Nodes, whose 12 KB status heartbeats change nothing a caller reads.
   */
  trim?: (o: Obj) => Obj;
  /** Recognise heartbeat events without decoding them (the mirrors' UnchangedEventFilter): for Nodes. */
  heartbeats?: boolean;
}

const keyOf = (o: Obj): string => {
  const m = o.metadata ?? {};
  return `${typeof m.namespace === 'string' ? m.namespace : ''}/${typeof m.name === 'string' ? m.name : ''}`;
};

export class ObjectCache {
  private readonly objects = new Map<string, Obj>();
  private readonly abort = new AbortController();
  private loop: Promise<void> | undefined;
  private listed = false;
  private resourceVersion = '';
  private readonly filter: UnchangedEventFilter | undefined;

  constructor(private readonly options: ObjectCacheOptions) {
    this.filter = options.heartbeats ? new UnchangedEventFilter() : undefined;
  }

  get hasSynced(): boolean {
    return this.listed;
  }

  list(): Obj[] {
    return [...this.objects.values()];
  }

  start(): void {
    this.loop ??= this.run();
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await this.loop;
  }

  private async run(): Promise<void> {
    const { log, path } = this.options;
    const backoff = new Backoff({ minMs: 500, maxMs: 15_000 });
    let lastError = '';
    let needList = true;
    while (!this.abort.signal.aborted) {
      try {
        if (needList) await this.relist();
        needList = false;
        const expired = await this.watch();
        if (expired) needList = true;
        backoff.reset();
        lastError = '';
      } catch (err) {
        if (this.abort.signal.aborted) return;
        const message = err instanceof KubeHttpError && err.statusCode === 404 ? `${path} is not served (is its CRD installed?)` : (err as Error).message;
        if (message !== lastError) log.warn({ path, err: message }, 'list/watch failed; retrying with backoff');
        lastError = message;
        if (err instanceof KubeHttpError && err.statusCode === 410) needList = true;
        else if (!this.listed) needList = true;
        await new Promise((resolve) => setTimeout(resolve, backoff.nextDelayMs()));
      }
    }
  }

  private async relist(): Promise<void> {
    const fresh = new Map<string, Obj>();
    let token: string | undefined;
    let resourceVersion = '';
    do {
      const page = await listPage(this.options.config, this.options.path, { limit: 500, continue: token }, this.abort.signal);
      for (const item of page.items) fresh.set(keyOf(item as Obj), this.options.trim ? this.options.trim(item as Obj) : (item as Obj));
      token = page.continueToken;
      resourceVersion = page.resourceVersion;
    } while (token);
    // States the list delivered were never seen as events: the filter's fingerprints may be stale.
    this.filter?.clear();
    this.objects.clear();
    for (const [k, v] of fresh) this.objects.set(k, v);
    this.resourceVersion = resourceVersion;
    this.listed = true;
    this.options.onChange();
  }

  /** One watch request; true when it must relist (the server said its resourceVersion is gone). */
  private async watch(): Promise<boolean> {
    let expired = false;
    await watchOnce(
      this.options.config,
      this.options.path,
      { resourceVersion: this.resourceVersion, allowWatchBookmarks: true, timeoutSeconds: 300 },
      {
        onEvent: (type, object: KubeObject) => {
          const o = object as Obj;
          const rv = o.metadata?.resourceVersion;
          if (type === 'ERROR') {
            expired = true;
            return;
          }
          if (typeof rv === 'string' && rv) this.resourceVersion = rv;
          if (type === 'BOOKMARK') return;
          if (type === 'DELETED') this.objects.delete(keyOf(o));
          else {
            const kept = this.options.trim ? this.options.trim(o) : o;
            const previous = this.objects.get(keyOf(o));
            this.objects.set(keyOf(o), kept);
            if (this.options.trim && previous && JSON.stringify(previous) === JSON.stringify(kept)) return;
          }
          this.options.onChange();
        },
      },
      this.abort.signal,
      { filter: this.filter },
    );
    return expired;
  }
}
