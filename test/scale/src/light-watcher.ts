/**
 * A lightweight watcher: what one simulated node's agent would receive from etcd (the nodes and pods prefixes), only
 * counted. Like a real agent (and Cilium's, after an outage) it lists each prefix at cold start and again after every
 * lost stream — paginated at one pinned revision, as @sluice/kvstore's watchPrefix lists — and then watches from the
 * list's revision: 5,000 of them are the thundering herd that etcd must survive. The listed values are counted (bytes,
 * keys), never kept, so that the harness's memory stays that of one agent's counters per node. A failed page is
 * retried (the list resumes there, at the same revision) after the same cluster-size-scaled jittered backoff as
 * watchPrefix's; a lost stream the same. `list: 'none'` is the old behaviour: no list, a watch from the given revision resumed from its own.
 */
import { clusterSizeBackoff, type Backoff } from '@sluice/backoff';
import { PageSizer, isRetryableEtcdError, prefixRangeEnd } from '@sluice/kvstore';
import type { Etcd3, IWatchResponse } from 'etcd3';

/** Per-event and per-response protobuf framing, estimated (mvccpb.Event + KeyValue fields; ResponseHeader + ids). */
export const EVENT_OVERHEAD_BYTES = 24;
export const RESPONSE_OVERHEAD_BYTES = 40;

/** What a lightweight watcher lists at cold start and after a lost stream: values (as an agent does), keys only, nothing. */
export type LightList = 'values' | 'keys' | 'none';

export interface LightCounters {
  events: number;
  bytes: number;
  retries: number;
  /** Errors seen (each one retried with backoff), by message. */
  errors: Record<string, number>;
  /** Errors the kvstore's retry policy would not retry, so that they would reach the agent's code: must stay 0. */
  unretried: Record<string, number>;
  lists: number;
  listKeys: number;
  listBytes: number;
}

export const newLightCounters = (): LightCounters => ({ events: 0, bytes: 0, retries: 0, errors: {}, unretried: {}, lists: 0, listKeys: 0, listBytes: 0 });

/**
 * One watcher's way back: at cold start from its start, after a lost stream from the moment the first of its
 * prefixes lost its stream, to the moment every prefix was listed and watching again.
 */
export interface LightEpisode {
  kind: 'cold' | 'reconnect';
  lostAt: number;
  backAt: number;
  /** Retries (failed pages or attaches) during the episode, and those whose error was "too many requests" / ResourceExhausted. */
  retries: number;
  tooMany: number;
  /** Whether this watcher lists (see LightList); those that do not only resume their watch. */
  listed: boolean;
}

export interface LightWatcherOptions {
  client: Etcd3;
  prefixes: string[];
  /** Used with `list: 'none'` only: the revision the watch starts after. */
  startRevision: number;
  clusterSize: number;
  counters: LightCounters;
  list: LightList;
  /** Called when a reconnect attempt starts (after the backoff). */
  onRetry?: () => void;
  /** Called once per way back (cold start, each reconnect). */
  onBack?: (episode: LightEpisode) => void;
}

export const TOO_MANY = /too many requests|resource ?exhausted/i;

export function countResponse(counters: LightCounters, response: IWatchResponse): void {
  counters.bytes += RESPONSE_OVERHEAD_BYTES;
  for (const e of response.events) {
    counters.events++;
    counters.bytes += EVENT_OVERHEAD_BYTES + e.kv.key.length + (e.kv.value?.length ?? 0);
  }
}

const message = (err: unknown) => (err instanceof Error ? err.message : String(err));

class PrefixCounter {
  private revision: number;
  private stopped = false;
  connected = false;
  private readonly backoff: Backoff;
  private readonly key: Buffer;
  private readonly rangeEnd: Buffer;
  private cancel: (() => void) | undefined;
  /** A list cut short by a failed page resumes there at the same revision, as the kvstore's does. */
  private cursor: { pinned: number; start: Buffer; pages: PageSizer } | undefined;

  constructor(
    private readonly prefix: string,
    private readonly options: LightWatcherOptions,
    private readonly owner: { lost(): void; back(): void; retried(err: string): void },
  ) {
    this.revision = options.startRevision;
    this.key = Buffer.from(prefix);
    this.rangeEnd = prefixRangeEnd(this.key);
    this.backoff = clusterSizeBackoff({ minMs: 200, maxMs: 1_000, clusterSize: options.clusterSize });
  }

  start(): void {
    void this.run();
  }

  private record(err: unknown): void {
    // By kind: gRPC puts timings and addresses in its messages, which would make each one unique.
    const text = message(err).replace(/\d+(\.\d+)?s?/g, '…');
    const c = this.options.counters;
    c.errors[text] = (c.errors[text] ?? 0) + 1;
    if (!isRetryableEtcdError(err)) c.unretried[text] = (c.unretried[text] ?? 0) + 1;
    this.owner.retried(text);
  }

  private async wait(): Promise<void> {
    this.options.counters.retries++;
    await this.backoff.wait();
    this.options.onRetry?.();
  }

  /** One paginated list at a pinned revision; values counted and dropped. Returns the revision. */
  private async list(): Promise<number> {
    const c = this.options.counters;
    const keysOnly = this.options.list === 'keys';
    // Pages sized as the kvstore's watchPrefix sizes them (the agent's lists).
    const cursor = (this.cursor ??= { pinned: 0, start: this.key, pages: new PageSizer() });
    for (;;) {
      let page;
      try {
        page = await this.options.client.kv.range({ key: cursor.start, range_end: this.rangeEnd, limit: cursor.pages.limit, revision: String(cursor.pinned), keys_only: keysOnly });
      } catch (err) {
        if (/compacted/i.test(message(err))) this.cursor = undefined;
        throw err;
      }
      if (cursor.pinned === 0) cursor.pinned = Number(page.header.revision);
      c.listBytes += RESPONSE_OVERHEAD_BYTES;
      let bytes = 0;
      for (const kv of page.kvs) bytes += kv.key.length + (kv.value?.length ?? 0);
      c.listKeys += page.kvs.length;
      c.listBytes += EVENT_OVERHEAD_BYTES * page.kvs.length + bytes;
      cursor.pages.observe(page.kvs.length, bytes);
      const last = page.kvs.at(-1);
      if (!page.more || !last) break;
      cursor.start = Buffer.concat([last.key, Buffer.from([0])]);
    }
    this.cursor = undefined;
    c.lists++;
    this.backoff.reset();
    return cursor.pinned;
  }

  private async run(): Promise<void> {
    let mustList = this.options.list !== 'none';
    while (!this.stopped) {
      if (mustList) {
        try {
          this.revision = await this.list();
        } catch (err) {
          if (this.stopped) return;
          this.record(err);
          await this.wait();
          continue;
        }
      }
      const failure = await this.watch();
      if (this.stopped) return;
      this.connected = false;
      this.owner.lost();
      if (failure !== undefined) this.record(failure);
      // The herd: after a lost stream the agent lists again, as Cilium's agents do after an outage.
      mustList = this.options.list !== 'none';
      await this.wait();
    }
  }

  /** Watches from the revision after the last one seen until the stream is lost; resolves with the error, if any. */
  private watch(): Promise<unknown> {
    return new Promise((resolve) => {
      const watcher = this.options.client.watch().prefix(this.prefix).startRevision(String(this.revision + 1)).watcher();
      let done = false;
      const finish = (err?: unknown) => {
        if (done) return;
        done = true;
        this.cancel = undefined;
        watcher.removeAllListeners('data');
        watcher.cancel().catch(() => undefined);
        resolve(err);
      };
      this.cancel = () => finish();
      watcher.on('connected', () => {
        if (done) return;
        this.connected = true;
        this.backoff.reset();
        this.owner.back();
      });
      watcher.on('data', (response: IWatchResponse) => {
        if (done) return;
        countResponse(this.options.counters, response);
        for (const e of response.events) this.revision = Math.max(this.revision, Number(e.kv.mod_revision));
      });
      watcher.on('disconnected', () => finish());
      watcher.on('error', (err: Error) => finish(err));
    });
  }

  stop(): void {
    this.stopped = true;
    this.cancel?.();
  }
}

export class LightWatcher {
  private readonly watches: PrefixCounter[];
  private episode: { kind: LightEpisode['kind']; lostAt: number; retries: number; tooMany: number } | undefined;

  constructor(private readonly options: LightWatcherOptions) {
    const owner = {
      lost: () => {
        this.episode ??= { kind: 'reconnect', lostAt: Date.now(), retries: 0, tooMany: 0 };
      },
      back: () => {
        if (!this.episode || !this.connected) return;
        const e = this.episode;
        this.episode = undefined;
        options.onBack?.({ ...e, backAt: Date.now(), listed: options.list !== 'none' });
      },
      retried: (err: string) => {
        if (!this.episode) return;
        this.episode.retries++;
        if (TOO_MANY.test(err)) this.episode.tooMany++;
      },
    };
    this.watches = options.prefixes.map((p) => new PrefixCounter(p, options, owner));
  }

  start(): this {
    this.episode = { kind: 'cold', lostAt: Date.now(), retries: 0, tooMany: 0 };
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
