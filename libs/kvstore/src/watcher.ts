import { clusterSizeBackoff, type Backoff } from '@sluice/backoff';
import { RepeatSuppressor, createLogger, type Logger } from '@sluice/log';
import { Counter, Gauge, type Registry } from '@sluice/metrics';
import type { Etcd3, IKeyValue, IWatchResponse, Watcher } from 'etcd3';
import { errorMessage, isCompactedError, isWatchCanceledError } from './errors.ts';
import { PageSizer, type PageSizing } from './pages.ts';
import type { CompletenessGate } from './sync.ts';

/** What a consumer of a prefix receives, in etcd's order. */
export type WatchEvent<T> =
  | { type: 'upsert'; key: string; value: T; modRevision: number }
  | { type: 'delete'; key: string; modRevision: number }
  /** Once, after the first complete list: from here on the consumer holds the full state of the prefix. */
  | { type: 'listDone'; revision: number };

export interface WatchOptions<T> {
  /** Turns a value into a typed record; throws when the value is not valid (it is then logged, counted and skipped). */
  decode: (key: string, bytes: Buffer) => T;
  /** Receives every event. Called synchronously, one event at a time; must not throw. */
  onEvent: (event: WatchEvent<T>) => void;
  /**
   * Number of nodes watching etcd like this one; scales the reconnect backoff so they do not return in lockstep. A
   * function is asked again before each reconnect (the live node count, e.g. the size of the nodes prefix).
   */
  clusterSize?: number | (() => number);
  /**
   * The completeness contract (sync.ts): `listDone` waits until the gate calls the view complete (the operator's
   * sync marker is there and this watch has seen the prefix up to its revision), and after a relist the deletes of
   * keys missing from it wait for the same, so that an empty or incomplete etcd never prunes what the consumer holds.
   */
  completeness?: CompletenessGate;
  /** Reconnect backoff before cluster-size scaling, in ms. Default 200 ms … 1 s (1.7 s … 8.5 s at 5,000 nodes). */
  backoff?: { minMs: number; maxMs: number };
  /**
   * Keys per page of the list: a number is a fixed size; by default pages are sized by bytes (pages.ts: 1,000 keys,
   * then ~4 MiB at the average size seen), since etcd walks the rest of the prefix for every page.
   */
  pageSize?: number | PageSizing;
  /** Label of this watch in metrics and logs (e.g. `pods`); the prefix by default. */
  name?: string;
  log?: Logger;
  /** Where the watch counters go; many watches may share one registry. */
  registry?: Registry;
  /** Injectable randomness for the backoff jitter. */
  random?: () => number;
}

/** A snapshot of a watch, for status pages. */
export interface WatchStatus {
  prefix: string;
  name: string;
  /** The first list is done (listDone was emitted). */
  synced: boolean;
  /** A watch stream is attached to etcd right now. */
  connected: boolean;
  /** The etcd revision up to which the consumer has seen every change. */
  revision: number;
  /** Keys the consumer holds. */
  keys: number;
  /** Reconnects after a lost connection or a failed call. */
  retries: number;
  /** Lists after the first (after compaction). */
  relists: number;
  decodeErrors: number;
  lastError: string | undefined;
  /** Listed, but waiting for the completeness gate (the operator's sync) before listDone or before pruning. */
  waitingForSync: boolean;
  /** Keys missing from the last relist whose deletes wait for the gate. */
  staleKeys: number;
}

export interface PrefixWatch {
  readonly prefix: string;
  /** Resolves after listDone was emitted (rejects if the watch is stopped before). */
  readonly synced: Promise<void>;
  status(): WatchStatus;
  /** Stops watching; no event is delivered after the returned promise resolves. */
  stop(): Promise<void>;
}

interface WatchMetrics {
  events: Counter<'watch' | 'type'>;
  decodeErrors: Counter<'watch'>;
  retries: Counter<'watch'>;
  relists: Counter<'watch'>;
  watches: Gauge<'watch'>;
}

const metricsByRegistry = new WeakMap<Registry, WatchMetrics>();

/** One set of counters per registry, shared by every watch in it (prom-client refuses a name twice per registry). */
function watchMetrics(registry: Registry): WatchMetrics {
  let metrics = metricsByRegistry.get(registry);
  if (!metrics) {
    const registers = [registry];
    metrics = {
      events: new Counter({ name: 'sluice_kv_watch_events_total', help: 'Events delivered to watch consumers', labelNames: ['watch', 'type'], registers }),
      decodeErrors: new Counter({ name: 'sluice_kv_watch_decode_errors_total', help: 'Values skipped because they could not be decoded', labelNames: ['watch'], registers }),
      retries: new Counter({ name: 'sluice_kv_watch_retries_total', help: 'Watch reconnects after a lost connection or failed call', labelNames: ['watch'], registers }),
      relists: new Counter({ name: 'sluice_kv_watch_relists_total', help: 'Relists after etcd compacted past the watch', labelNames: ['watch'], registers }),
      watches: new Gauge({ name: 'sluice_kv_watches', help: 'Prefix watches running', labelNames: ['watch'], registers }),
    };
    metricsByRegistry.set(registry, metrics);
  }
  return metrics;
}

// Shared by every watch of the process: 1,000 simulated agents that meet the same corrupt value log it once.
const undecodable = new RepeatSuppressor(10 * 60_000);
let defaultLog: Logger | undefined;

/** The end of the range of keys that start with `prefix` (etcd's "prefix" range). */
export function prefixRangeEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i]! += 1;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]); // all 0xff: to the end of the keyspace
}

class StoppedError extends Error {
  constructor() {
    super('watch stopped');
  }
}

/** The etcd behind the endpoint is another one (another cluster id) or went back in time (restored from a backup). */
class EtcdReplacedError extends Error {}

/**
 * Lists `prefix` at one pinned revision (paginated), emits the items and one `listDone`, then watches from that
 * revision + 1. On a lost connection it resumes from the last revision it delivered, after a jittered backoff
 * scaled by the cluster size; on compaction it relists and emits only the differences.
 *
 * Why not leave resumption to etcd3: its shared watch stream does reconnect by itself, but it resumes from the
 * revision of the last response header + 1. etcd stamps a catch-up response with its *current* revision, so a second
 * disconnect during catch-up would skip events; and its backoff is not scaled by cluster size. So on `disconnected`
 * each watch detaches its etcd3 watcher and attaches a new one from its own last delivered revision + 1, and drops
 * any event at or below that revision (no duplicates).
 *
 * Memory per watch is a map key → modRevision of what the consumer holds (needed to diff a relist), not the values.
 */
export function watchPrefix<T>(client: Etcd3, prefix: string, options: WatchOptions<T>): PrefixWatch {
  return new PrefixWatcher(client, prefix, options);
}

class PrefixWatcher<T> implements PrefixWatch {
  readonly synced: Promise<void>;
  private resolveSynced!: () => void;
  private rejectSynced!: (err: Error) => void;
  private readonly name: string;
  private readonly key: Buffer;
  private readonly rangeEnd: Buffer;
  private backoff: Backoff;
  private backoffSize: number;
  private readonly log: Logger;
  private readonly metrics: WatchMetrics | undefined;
  private readonly abort = new AbortController();
  /** key → modRevision of the value the consumer holds. */
  private held = new Map<string, number>();
  private revision = 0;
  private isSynced = false;
  private connected = false;
  private retries = 0;
  private relists = 0;
  private decodeErrors = 0;
  private lastError: string | undefined;
  private current: Watcher | undefined;
  private wakeWatch: (() => void) | undefined;
  private readonly done: Promise<void>;
  /** The etcd cluster the held state came from. */
  private clusterId: string | undefined;
  /** Keys the consumer holds that the last relist did not find, not deleted yet because the view is incomplete. */
  private readonly stale = new Set<string>();
  private listed = false;
  /**
   * A list cut short by a failed page: the next attempt resumes at that page, at the same pinned revision, instead of
   * starting over. Under a thundering herd (thousands of agents listing at once) pages time out; a list that starts
   * over after each one may never finish, while one that resumes always progresses.
   */
  private listCursor: { pinned: number; start: Buffer; seen: Set<string>; pages: PageSizer } | undefined;
  private unsubscribeGate: (() => void) | undefined;
  private probeTimer: NodeJS.Timeout | undefined;
  private probing = false;
  /**
   * After etcd was replaced, what the gate said about the old etcd is not evidence about the new one: until the gate
   * changes (the marker watch relisted, or the operator wrote the marker again) the view counts as incomplete.
   */
  private gateDistrusted = false;

  constructor(
    private readonly client: Etcd3,
    readonly prefix: string,
    private readonly options: WatchOptions<T>,
  ) {
    this.name = options.name ?? prefix;
    this.key = Buffer.from(prefix);
    this.rangeEnd = prefixRangeEnd(this.key);
    this.backoffSize = this.currentClusterSize();
    this.backoff = this.makeBackoff(this.backoffSize);
    this.log = options.log ?? (defaultLog ??= createLogger({ component: 'kvstore' }));
    this.metrics = options.registry ? watchMetrics(options.registry) : undefined;
    this.synced = new Promise<void>((resolve, reject) => {
      this.resolveSynced = resolve;
      this.rejectSynced = reject;
    });
    this.synced.catch(() => undefined); // a watch stopped before its list is not an unhandled rejection
    this.metrics?.watches.inc({ watch: this.name });
    this.unsubscribeGate = options.completeness?.onChange(() => {
      this.gateDistrusted = false;
      this.checkComplete();
    });
    this.done = this.run();
  }

  private currentClusterSize(): number {
    const size = typeof this.options.clusterSize === 'function' ? this.options.clusterSize() : this.options.clusterSize;
    return Number.isFinite(size) && size! >= 1 ? Math.floor(size!) : 1;
  }

  private makeBackoff(clusterSize: number): Backoff {
    const base = this.options.backoff ?? { minMs: 200, maxMs: 1_000 };
    return clusterSizeBackoff({ ...base, clusterSize, random: this.options.random });
  }

  /**
   * Emits listDone, and the deletes a relist held back, once the gate calls the view complete. When the marker is
   * there but this watch has not seen its revision yet (a quiet prefix: no event since), a cheap probe checks whether
   * the prefix changed at all since what was delivered, rather than waiting for etcd's next progress notification.
   */
  private checkComplete(): void {
    const gate = this.options.completeness;
    if (!gate || !this.listed || this.stopped) return;
    if (this.gateDistrusted || !gate.isComplete(this.revision)) {
      const required = gate.requiredRevision();
      if (required !== undefined && required > this.revision) this.probeSoon();
      return;
    }
    clearTimeout(this.probeTimer);
    if (this.stale.size > 0) {
      const pruned = this.stale.size;
      for (const key of this.stale) {
        if (this.held.delete(key)) this.emit({ type: 'delete', key, modRevision: this.revision });
      }
      this.stale.clear();
      this.log.info({ prefix: this.prefix, pruned }, `${gate.description} is complete again: deleting what it no longer holds`);
    }
    if (!this.isSynced) this.markSynced();
  }

  private markSynced(): void {
    this.isSynced = true;
    this.emit({ type: 'listDone', revision: this.revision });
    this.resolveSynced();
  }

  private probeSoon(): void {
    if (this.probing || this.probeTimer) return;
    this.probeTimer = setTimeout(() => {
      this.probeTimer = undefined;
      void this.probe();
    }, 200);
    this.probeTimer.unref?.();
  }

  /** Advances the revision to etcd's current one if nothing under the prefix changed since what was delivered. */
  private async probe(): Promise<void> {
    if (this.probing || this.stopped) return;
    this.probing = true;
    try {
      const from = this.revision;
      const changed = await this.client.kv.range({ key: this.key, range_end: this.rangeEnd, count_only: true, min_mod_revision: String(from + 1) });
      const at = Number(changed.header.revision);
      const total = await this.client.kv.range({ key: this.key, range_end: this.rangeEnd, count_only: true, revision: String(at) });
      // No key written since `from` and as many keys as the consumer holds: no put and no delete in (from, at].
      if (Number(changed.count) === 0 && Number(total.count) === this.held.size - this.stale.size && this.revision === from && at > from) {
        this.revision = at;
      }
    } catch {
      // etcd unavailable: the watch's own retries deal with it; try again on the next change
    } finally {
      this.probing = false;
    }
    if (!this.stopped) {
      this.checkComplete();
      const gate = this.options.completeness;
      if (gate && !gate.isComplete(this.revision) && gate.requiredRevision() !== undefined && !this.probeTimer) {
        this.probeTimer = setTimeout(() => {
          this.probeTimer = undefined;
          void this.probe();
        }, 1000);
        this.probeTimer.unref?.();
      }
    }
  }

  status(): WatchStatus {
    return {
      prefix: this.prefix,
      name: this.name,
      synced: this.isSynced,
      connected: this.connected,
      revision: this.revision,
      keys: this.held.size,
      retries: this.retries,
      relists: this.relists,
      decodeErrors: this.decodeErrors,
      lastError: this.lastError,
      waitingForSync: !!this.options.completeness && this.listed && (!this.isSynced || this.stale.size > 0),
      staleKeys: this.stale.size,
    };
  }

  async stop(): Promise<void> {
    if (!this.abort.signal.aborted) {
      this.abort.abort(new StoppedError());
      this.unsubscribeGate?.();
      clearTimeout(this.probeTimer);
      this.wakeWatch?.();
      this.metrics?.watches.dec({ watch: this.name });
    }
    await this.done;
  }

  private get stopped(): boolean {
    return this.abort.signal.aborted;
  }

  private async run(): Promise<void> {
    let mustList = true;
    while (!this.stopped) {
      try {
        if (mustList) {
          await this.list();
          mustList = false;
          this.listed = true;
          if (this.options.completeness) this.checkComplete();
          else if (!this.isSynced) this.markSynced();
        }
        await this.watchFrom(this.revision + 1);
        if (this.stopped) break;
        await this.retryAfter('watch stream disconnected');
      } catch (err) {
        if (this.stopped || err instanceof StoppedError) break;
        if (err instanceof EtcdReplacedError || isWatchCanceledError(err) || isCompactedError(err)) this.listCursor = undefined;
        if (err instanceof EtcdReplacedError) {
          // Revisions of another etcd (or of an older past) mean nothing here: relist and re-deliver every key, and
          // let the completeness gate decide when what is missing may be deleted.
          mustList = true;
          this.relists++;
          this.metrics?.relists.inc({ watch: this.name });
          for (const key of this.held.keys()) this.held.set(key, -1);
          this.revision = 0;
          this.gateDistrusted = true;
          this.log.warn({ prefix: this.prefix, reason: err.message }, 'etcd was replaced or restored: relisting, keeping what is held until the operator has synced again');
          continue;
        }
        if (isWatchCanceledError(err) || isCompactedError(err)) {
          // The revision we would resume from is gone: relist and diff. No backoff for the first relist, since
          // nothing is wrong with the connection; repeated cancels still back off below.
          mustList = true;
          this.relists++;
          this.metrics?.relists.inc({ watch: this.name });
          this.log.info({ prefix: this.prefix, revision: this.revision, reason: errorMessage(err) }, 'watch cancelled by etcd (compaction?): relisting');
          if (this.relists > 1) await this.retryAfter(errorMessage(err));
          continue;
        }
        await this.retryAfter(errorMessage(err));
      }
    }
    this.connected = false;
    if (!this.isSynced) this.rejectSynced(new StoppedError());
  }

  private async retryAfter(reason: string): Promise<void> {
    const size = this.currentClusterSize();
    if (size !== this.backoffSize) {
      this.backoffSize = size;
      this.backoff = this.makeBackoff(size);
    }
    this.retries++;
    this.lastError = reason;
    this.metrics?.retries.inc({ watch: this.name });
    try {
      await this.backoff.wait(this.abort.signal);
    } catch {
      // stopped during the wait
    }
  }

  private emit(event: WatchEvent<T>): void {
    this.metrics?.events.inc({ watch: this.name, type: event.type });
    this.options.onEvent(event);
  }

  /**
   * Decodes a value; logs (once per key and revision in the whole process), counts and returns undefined when it
   * cannot be decoded, so that one bad record never stops the watch.
   */
  private decode(key: string, kv: IKeyValue): { value: T } | undefined {
    try {
      return { value: this.options.decode(key, kv.value) };
    } catch (err) {
      this.decodeErrors++;
      this.metrics?.decodeErrors.inc({ watch: this.name });
      undecodable.warn(this.log, `${key}@${kv.mod_revision}`, { key, modRevision: Number(kv.mod_revision), error: errorMessage(err) }, 'skipping undecodable value');
      return undefined;
    }
  }

  private applyPut(kv: IKeyValue, modRevision: number, fresh: Map<string, number>): void {
    const key = kv.key.toString();
    this.stale.delete(key); // present again
    if (this.held.get(key) === modRevision) {
      fresh.set(key, modRevision); // unchanged since the consumer got it
      return;
    }
    const decoded = this.decode(key, kv);
    if (decoded) {
      fresh.set(key, modRevision);
      this.emit({ type: 'upsert', key, value: decoded.value, modRevision });
    } else {
      // The consumer keeps the last good value it had, if any: an unreadable update must not remove a live record.
      const previous = this.held.get(key);
      if (previous !== undefined) fresh.set(key, previous);
    }
  }

  /** A full list at one pinned revision, diffed against what the consumer holds. */
  private async list(): Promise<void> {
    const cursor = (this.listCursor ??= { pinned: 0, start: this.key, seen: new Set<string>(), pages: new PageSizer(this.options.pageSize) });
    const seen = cursor.seen;
    for (;;) {
      if (this.stopped) throw new StoppedError();
      const page = await this.client.kv.range({ key: cursor.start, range_end: this.rangeEnd, limit: cursor.pages.limit, revision: cursor.pinned });
      if (this.stopped) throw new StoppedError();
      if (cursor.pinned === 0) {
        cursor.pinned = Number(page.header.revision);
        this.clusterId = String(page.header.cluster_id);
      } else if (String(page.header.cluster_id) !== this.clusterId) {
        throw new EtcdReplacedError(`cluster id ${this.clusterId} → ${page.header.cluster_id} during a list`);
      }
      let bytes = 0;
      for (const kv of page.kvs) {
        bytes += kv.key.length + kv.value.length;
        const key = kv.key.toString();
        seen.add(key);
        // `held` doubles as the map being built: an entry is rewritten in place, so a list that fails half-way and
        // resumes (or, after a compaction, starts over) still diffs against exactly what the consumer holds.
        this.applyPut(kv, Number(kv.mod_revision), this.held);
      }
      cursor.pages.observe(page.kvs.length, bytes);
      const last = page.kvs[page.kvs.length - 1];
      if (!page.more || !last) break;
      cursor.start = Buffer.concat([last.key, Buffer.from([0])]);
    }
    this.listCursor = undefined;
    const pinned = cursor.pinned;
    // Without the gate's word that this view is complete, what is missing is kept (stale) instead of deleted.
    const complete = !this.options.completeness || (!this.gateDistrusted && this.options.completeness.isComplete(pinned));
    for (const key of [...this.held.keys()]) {
      if (seen.has(key)) continue;
      if (complete) {
        this.held.delete(key);
        this.stale.delete(key);
        this.emit({ type: 'delete', key, modRevision: pinned });
      } else {
        this.stale.add(key);
      }
    }
    this.revision = pinned;
    this.backoff.reset();
  }

  /** Watches from `startRevision` until the stream is lost (resolves) or etcd cancels the watch (rejects). */
  private watchFrom(startRevision: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const watcher = this.client.watch().prefix(this.prefix).startRevision(String(startRevision)).watcher();
      this.current = watcher;
      let settled = false;
      const finish = (err?: unknown) => {
        if (settled) return;
        settled = true;
        this.connected = false;
        this.wakeWatch = undefined;
        this.current = undefined;
        // Detaching while disconnected only forgets the watcher locally; etcd3 would otherwise resume it by itself.
        watcher.removeAllListeners('data');
        watcher.cancel().catch(() => undefined);
        if (err === undefined) resolve();
        else reject(err);
      };
      this.wakeWatch = () => finish();
      watcher.on('connected', (response?: IWatchResponse) => {
        const header = response?.header;
        if (header && this.clusterId !== undefined) {
          if (String(header.cluster_id) !== this.clusterId) return finish(new EtcdReplacedError(`cluster id ${this.clusterId} → ${header.cluster_id}`));
          if (Number(header.revision) < this.revision) {
            // A member that lags a little answers with an older revision too: only a linearizable read that is
            // still behind what was delivered means that etcd went back in time (a replacement with the same id).
            const seen = this.revision;
            this.client.kv
              .range({ key: this.key, range_end: this.rangeEnd, count_only: true })
              .then((r) => {
                if (Number(r.header.revision) < seen) finish(new EtcdReplacedError(`revision went back from ${seen} to ${r.header.revision}`));
              })
              .catch(() => undefined); // unavailable: the stream's own errors take over
          }
        }
        this.connected = true;
        this.backoff.reset();
      });
      watcher.on('data', (response: IWatchResponse) => {
        if (settled) return;
        if (response.events.length === 0) {
          // A progress notification: every change up to this revision has been sent. A quiet prefix stays fresh, so
          // that a reconnect after a compaction resumes instead of relisting.
          const revision = Number(response.header.revision);
          if (revision > this.revision) this.revision = revision;
          this.checkComplete();
          return;
        }
        // All the events of one transaction share its revision and etcd sends a revision whole in one response, so
        // duplicates (replayed after a reconnect) are the events at or below what was delivered before this response.
        const delivered = this.revision;
        for (const event of response.events) {
          const modRevision = Number(event.kv.mod_revision);
          if (modRevision <= delivered) continue;
          const key = event.kv.key.toString();
          if (event.type === 'Put') {
            this.applyPut(event.kv, modRevision, this.held);
          } else if (this.held.delete(key)) {
            this.stale.delete(key);
            this.emit({ type: 'delete', key, modRevision });
          }
          this.revision = modRevision;
        }
        if (this.options.completeness) this.checkComplete();
      });
      watcher.on('disconnected', () => finish());
      watcher.on('error', (err: Error) => finish(err));
      if (this.stopped) finish();
    });
  }
}
