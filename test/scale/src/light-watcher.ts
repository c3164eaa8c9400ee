/**
 * A lightweight watcher: what one simulated node's agent would receive from etcd (the nodes and pods prefixes), only
 * counted. It does not list (the full agents prove listing); it watches from a given revision, and on a lost stream
 * it detaches and comes back from its own last revision after the same cluster-size-scaled jittered backoff as
 * @sluice/kvstore's watchPrefix, so that thousands of them exercise etcd's restart the way agents would.
 */
import { clusterSizeBackoff, type Backoff } from '@sluice/backoff';
import type { Etcd3, IWatchResponse, Watcher } from 'etcd3';

/** Per-event and per-response protobuf framing, estimated (mvccpb.Event + KeyValue fields; ResponseHeader + ids). */
export const EVENT_OVERHEAD_BYTES = 24;
export const RESPONSE_OVERHEAD_BYTES = 40;

export interface LightCounters {
  events: number;
  bytes: number;
  retries: number;
  errors: Record<string, number>;
}

export interface LightWatcherOptions {
  client: Etcd3;
  prefixes: string[];
  startRevision: number;
  clusterSize: number;
  counters: LightCounters;
  /** Called when a reconnect attempt starts (after the backoff). */
  onRetry?: () => void;
  /** Sees every event (used by the revision tracker). */
  onEvent?: (type: 'Put' | 'Delete', key: Buffer, modRevision: number) => void;
}

export function countResponse(counters: LightCounters, response: IWatchResponse): void {
  counters.bytes += RESPONSE_OVERHEAD_BYTES;
  for (const e of response.events) {
    counters.events++;
    counters.bytes += EVENT_OVERHEAD_BYTES + e.kv.key.length + (e.kv.value?.length ?? 0);
  }
}

class PrefixCounter {
  private revision: number;
  private current: Watcher | undefined;
  private stopped = false;
  connected = false;
  private readonly backoff: Backoff;

  constructor(private readonly prefix: string, private readonly options: LightWatcherOptions) {
    this.revision = options.startRevision;
    this.backoff = clusterSizeBackoff({ minMs: 200, maxMs: 1_000, clusterSize: options.clusterSize });
  }

  start(): void {
    this.attach();
  }

  private attach(): void {
    if (this.stopped) return;
    const watcher = this.options.client.watch().prefix(this.prefix).startRevision(String(this.revision + 1)).watcher();
    this.current = watcher;
    let done = false;
    const detach = (reason?: string) => {
      if (done) return;
      done = true;
      this.connected = false;
      watcher.removeAllListeners('data');
      watcher.cancel().catch(() => undefined);
      if (reason) this.options.counters.errors[reason] = (this.options.counters.errors[reason] ?? 0) + 1;
      if (this.stopped) return;
      this.options.counters.retries++;
      void this.backoff.wait().then(() => {
        this.options.onRetry?.();
        this.attach();
      });
    };
    watcher.on('connected', () => {
      this.connected = true;
      this.backoff.reset();
    });
    watcher.on('data', (response: IWatchResponse) => {
      if (done) return;
      countResponse(this.options.counters, response);
      for (const e of response.events) {
        const rev = Number(e.kv.mod_revision);
        if (rev <= this.revision) continue;
        this.options.onEvent?.(e.type, e.kv.key, rev);
        this.revision = rev;
      }
    });
    watcher.on('disconnected', () => detach());
    watcher.on('error', (err: Error) => {
      // A cancelled watch (compaction) only matters to counting: come back from the current revision.
      if (/cancel|compacted/i.test(err.message)) this.revision = Math.max(this.revision, 0);
      detach(err.message);
    });
  }

  stop(): void {
    this.stopped = true;
    this.current?.removeAllListeners('data');
    void this.current?.cancel().catch(() => undefined);
  }
}

export class LightWatcher {
  private readonly watches: PrefixCounter[];
  constructor(options: LightWatcherOptions) {
    this.watches = options.prefixes.map((p) => new PrefixCounter(p, options));
  }
  start(): this {
    for (const w of this.watches) w.start();
    return this;
  }
  get connected(): boolean {
    return this.watches.every((w) => w.connected);
  }
  stop(): void {
    for (const w of this.watches) w.stop();
  }
}
