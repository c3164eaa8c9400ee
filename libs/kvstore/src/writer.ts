import { createHash } from 'node:crypto';
import { Backoff, RateLimiter } from '@sluice/backoff';
import { RepeatSuppressor, createLogger, type Logger } from '@sluice/log';
import { Counter, Gauge, Histogram, LATENCY_BUCKETS, type Registry } from '@sluice/metrics';
import type { Etcd3, ICompare, IRequestOp } from 'etcd3';
import { errorMessage, isRetryableEtcdError } from './errors.ts';
import { parseSyncedMarker, type SyncStamp } from './keys.ts';
import { prefixRangeEnd } from './watcher.ts';

/** The proof of leadership a write carries: it only applies while this key still has this create revision. */
export interface Fence {
  key: string;
  createRevision: string;
}

/** Decides whether the writer may write now (only the leader writes). LeaderElection implements it. */
export interface WriteGuard {
  /** The current fence, or undefined when this process must not write. */
  fence(): Fence | undefined;
  /** Resolves when fence() becomes defined (at once if it is); rejects if the signal aborts. */
  whenLeader(signal?: AbortSignal): Promise<void>;
}

export interface KvWriterOptions {
  client: Etcd3;
  /** Only the holder of the fence writes; every transaction compares the fence key, so a deposed leader cannot. */
  guard?: WriteGuard;
  /** Operations per transaction; etcd's --max-txn-ops defaults to 128. Lowered by itself if etcd allows fewer. */
  maxTxnOps?: number;
  /**
   * Bytes per transaction, at most: etcd refuses a request over its --max-request-bytes (default 1.5 MiB). Keys and
   * values are counted with a per-operation overhead, and a margin is kept for the request's framing.
   */
  maxRequestBytes?: number;
  /** Transactions in flight at once. Default 4. */
  maxInFlight?: number;
  /** Transactions started per second on average, and in a burst. Default 400/s (≈ 51,000 keys/s), burst 40. */
  qps?: number;
  burst?: number;
  /** Retry backoff of a failed transaction, in ms. Default 50 ms … 5 s. */
  backoff?: { minMs: number; maxMs: number };
  registry?: Registry;
  log?: Logger;
}

/**
 * A queued write. A string value is kept as the caller's string (the operator's mirrors hold that very string as
 * their record, so a queue of 100,000 writes after a new term holds no second copy) and encoded when it is sent.
 */
type Op = { kind: 'put'; value: string | Buffer; bytes: number } | { kind: 'delete' };

interface WriterMetrics {
  rejected: Counter;
  rejectedKeys: Gauge;
  writes: Counter;
  skipped: Counter;
  deletes: Counter;
  retries: Counter;
  fenced: Counter;
  txnOps: Histogram;
  latency: Histogram;
}

export interface WriterStats {
  writes: number;
  skipped: number;
  deletes: number;
  retries: number;
  transactions: number;
  /** Writes refused because leadership was lost (re-queued, not dropped). */
  fenced: number;
  /** Keys waiting to be written, and transactions in flight. */
  pending: number;
  inFlight: number;
  /** Writes etcd refused for good (a value over its request limit, …): dropped, not retried. */
  rejected: number;
  /** The keys whose latest write etcd refused for good, with etcd's reason (cleared when a later write lands). */
  rejectedKeys: Array<{ key: string; reason: string; bytes: number }>;
  /** The operations per transaction in use (lower than configured once etcd refused more). */
  maxTxnOps: number;
}

/** A sync of one prefix in progress (see KvWriter.beginSync). */
export interface PrefixSync {
  readonly prefix: string;
  /** Keys found under the prefix when the sync began. */
  readonly existing: number;
}

function sameFence(a: Fence, b: Fence): boolean {
  return a.key === b.key && a.createRevision === b.createRevision;
}

/**
 * What the writer knows etcd holds at a key: the very string it wrote (the caller's, which the operator's mirror
 * holds anyway, so knowing it costs a reference and recognising a repeat costs a comparison rather than hashing 20 KB
 * per EndpointSlice change), or, for what it only read from etcd or got as bytes, a digest of the bytes.
 */
type Known = string | { readonly digest: string };

/** Known to be unknown: matches no value, so that the next write of the key is sent. */
const UNKNOWN: Known = { digest: '' };

function digest(value: string | Buffer): string {
  return createHash('sha1').update(value).digest('base64');
}

function digestOf(value: string | Buffer): Known {
  return { digest: digest(value) };
}

/** Whether `value` is what `known` says etcd holds (a digest is compared as a digest: a string hashes as its UTF-8). */
function holds(known: Known | undefined, value: string | Buffer): boolean {
  if (known === undefined || known === UNKNOWN) return false;
  if (typeof known === 'string') return typeof value === 'string' ? known === value : Buffer.from(known).equals(value);
  return known.digest === digest(value);
}

function toBuffer(value: string | Uint8Array): Buffer {
  return typeof value === 'string' ? Buffer.from(value) : Buffer.from(value.buffer, value.byteOffset, value.byteLength);
}

class FencedError extends Error {
  constructor() {
    super('leadership lost: the fence key changed');
  }
}

/** etcd refused the transaction for what it is, not for the moment: retrying it unchanged can never succeed. */
class PermanentError extends Error {
  constructor(
    message: string,
    readonly tooManyOps: boolean,
  ) {
    super(message);
  }
}

/** etcd's answers to a request it will never take as it is (limits of size and operations per request). */
function isPermanentEtcdError(err: unknown): boolean {
  return /request is too large|too many operations in txn request|larger than max|message larger than|exceeds maximum/i.test(errorMessage(err));
}

/** What one operation adds to the request: its key and value plus protobuf framing (generous). */
const OP_OVERHEAD_BYTES = 32;
/** Kept free for the request's own framing and the fence compare. */
const REQUEST_MARGIN_BYTES = 16 * 1024;
/** A non-retryable error of unknown kind is tried this often before the transaction is treated as refused for good. */
const UNKNOWN_ERROR_ATTEMPTS = 3;

function opBytes(key: string, op: Op): number {
  return Buffer.byteLength(key) + (op.kind === 'put' ? op.bytes : 0) + OP_OVERHEAD_BYTES;
}

/**
 * Writes keys to etcd for the operator: batched, coalesced, deduplicated, rate-limited, retried, fenced.
 *
 * - `upsert`/`delete` only queue. A key queued twice is written once with its latest value; a value equal (by hash)
 *   to what etcd is known to hold is not written at all, so a resync that changes nothing costs nothing.
 * - A pump takes up to `maxTxnOps` keys per transaction, at most `maxInFlight` transactions at once and `qps` per
 *   second; a key is never in two transactions at once, so writes of one key apply in order.
 * - A failed transaction is retried with jittered backoff until it succeeds ("too many requests", unavailable, …);
 *   no write is ever dropped. A transaction refused by the fence (leadership lost) is re-queued and the writer waits
 *   to lead again, forgetting what it knew of etcd (the next leader term must resync).
 */
export class KvWriter {
  private readonly client: Etcd3;
  private readonly guard: WriteGuard | undefined;
  private maxTxnOps: number;
  private readonly maxRequestBytes: number;
  private readonly maxInFlight: number;
  private readonly limiter: RateLimiter;
  private readonly backoffOptions: { minMs: number; maxMs: number };
  private readonly log: Logger;
  private readonly metrics: WriterMetrics | undefined;
  private readonly repeats = new RepeatSuppressor(30_000);
  /** key → the value etcd holds (or will hold once the transaction in flight lands). */
  private readonly known = new Map<string, Known>();
  /** Prefixes whose whole content is in `known`: a key under them that is not in `known` is absent from etcd. */
  private readonly loadedPrefixes = new Set<string>();
  private readonly syncs = new Map<string, Set<string>>();
  private pending = new Map<string, Op>();
  private readonly inFlightKeys = new Set<string>();
  private inFlight = 0;
  private waitingForLeader = false;
  private lastFence: Fence | undefined;
  private refusedFence: Fence | undefined;
  private pumpScheduled = false;
  private idleWaiters: Array<() => void> = [];
  private readonly abort = new AbortController();
  private readonly stats = { writes: 0, skipped: 0, deletes: 0, retries: 0, transactions: 0, fenced: 0, rejected: 0 };
  /** The highest etcd revision a transaction or load of this writer saw: what a sync marker is stamped with. */
  private revisionSeen = 0;
  /** Memory for transactions' bytes, reused (see takeScratch). */
  private readonly scratch: Buffer[] = [];
  /** key → why etcd refused its latest write (the key may still hold an older value: never "known absent"). */
  private readonly rejected = new Map<string, { reason: string; bytes: number }>();

  constructor(options: KvWriterOptions) {
    this.client = options.client;
    this.guard = options.guard;
    this.maxTxnOps = options.maxTxnOps ?? 128;
    this.maxRequestBytes = options.maxRequestBytes ?? 1.5 * 1024 * 1024;
    this.maxInFlight = options.maxInFlight ?? 4;
    this.limiter = new RateLimiter({ qps: options.qps ?? 400, burst: options.burst ?? 40, maxInFlight: this.maxInFlight });
    this.backoffOptions = options.backoff ?? { minMs: 50, maxMs: 5_000 };
    this.log = options.log ?? createLogger({ component: 'kvstore-writer' });
    this.metrics = options.registry ? writerMetrics(options.registry) : undefined;
  }

  /** Queues a write of `value` at `key`, unless etcd already holds exactly these bytes. */
  upsert(key: string, value: string | Uint8Array): void {
    this.assertOpen();
    for (const [prefix, asserted] of this.syncs) if (key.startsWith(prefix)) asserted.add(key);
    // A string stands for its UTF-8 bytes, which are what is sent (and what a digest of etcd's bytes is compared with).
    const bytes = typeof value === 'string' ? value : toBuffer(value);
    const known = this.known.get(key);
    if (holds(known, bytes)) {
      // From now on a repeat is recognised by comparing strings, not by hashing.
      if (typeof bytes === 'string' && typeof known !== 'string') this.known.set(key, bytes);
      // etcd holds these bytes (or will, once the transaction in flight lands, which is retried until it does);
      // a queued different value, if any, is superseded by this one.
      this.pending.delete(key);
      this.stats.skipped++;
      this.metrics?.skipped.inc();
      this.settleIfIdle();
      return;
    }
    this.pending.set(key, { kind: 'put', value: bytes, bytes: typeof bytes === 'string' ? Buffer.byteLength(bytes) : bytes.length });
    this.schedulePump();
  }

  /** Queues a delete of `key`, unless etcd is known not to hold it. */
  delete(key: string): void {
    this.assertOpen();
    for (const asserted of this.syncs.values()) asserted.delete(key);
    if (this.knownAbsent(key)) {
      this.pending.delete(key);
      this.settleIfIdle();
      return;
    }
    this.pending.set(key, { kind: 'delete' });
    this.schedulePump();
  }

  /**
   * Mark: loads what etcd holds under `prefix` into the writer's knowledge (so that re-asserting an unchanged value
   * writes nothing) and starts recording which keys under it the caller upserts. Call it before upserting the
   * desired state of the prefix, then call `finishSync`. With a guard it first waits to lead; if leadership is lost
   * before `finishSync`, start the sync again once leading (the sweep of a term must use that term's mark).
   */
  async beginSync(prefix: string, options: { marker?: string } = {}): Promise<PrefixSync> {
    this.assertOpen();
    if (this.guard) {
      // The mark belongs to the term that will write: wait to lead, and drop what an earlier term knew.
      await this.guard.whenLeader(this.abort.signal);
      this.checkTerm(this.guard.fence());
    }
    if (options.marker) await this.invalidateMarker(options.marker);
    const existing = await this.load(prefix);
    this.syncs.set(prefix, new Set());
    return { prefix, existing };
  }

  /**
   * Sweep: deletes the keys under `prefix` that were not upserted since `beginSync`, waits until everything queued
   * is written, then writes the synced marker (if given) and waits for it too. The marker value should be stable
   * (see `syncedMarkerValue`) so that a restart that changes nothing writes nothing at all.
   */
  async finishSync(prefix: string, marker?: { key: string; value: string | Uint8Array | ((stamp: SyncStamp) => string) }): Promise<{ deleted: number }> {
    const asserted = this.syncs.get(prefix);
    if (!asserted) throw new Error(`finishSync(${prefix}) without beginSync`);
    this.syncs.delete(prefix);
    let deleted = 0;
    for (const key of [...this.known.keys()]) {
      if (key.startsWith(prefix) && !asserted.has(key) && this.pending.get(key)?.kind !== 'put') {
        this.delete(key);
        deleted++;
      }
    }
    await this.flush();
    if (marker) {
      if (!this.known.has(marker.key)) await this.loadKey(marker.key);
      // The revision covers every write of the sweep (flushed above) and what the load saw.
      const value = typeof marker.value === 'function' ? marker.value({ term: this.term(), revision: this.revisionSeen }) : marker.value;
      this.upsert(marker.key, value);
      await this.flush();
    }
    return { deleted };
  }

  /** This writer's leadership term: the fence's create revision ('0' without a guard). */
  private term(): string {
    return this.lastFence?.createRevision ?? '0';
  }

  /**
   * A new term starts by deleting a sync marker an earlier term wrote: until this term's sweep ends, readers must
   * not take the prefix for complete (a replaced etcd, or a leader that died half-way, leaves it incomplete).
   */
  private async invalidateMarker(key: string): Promise<void> {
    const backoff = new Backoff(this.backoffOptions);
    for (;;) {
      try {
        const kv = (await this.client.kv.range({ key: Buffer.from(key) })).kvs[0];
        if (!kv) return;
        const marker = parseSyncedMarker(kv.value);
        if (marker?.term !== undefined && marker.term === this.term()) return;
        break;
      } catch (err) {
        if (!isRetryableEtcdError(err)) throw err;
        await backoff.wait(this.abort.signal);
      }
    }
    this.known.set(key, UNKNOWN); // makes delete() send it
    this.delete(key);
    await this.flush();
  }

  /** Resolves once every write queued so far (and since) has landed in etcd: the writer is idle. */
  flush(): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  getStats(): WriterStats {
    return {
      ...this.stats,
      pending: this.pending.size,
      inFlight: this.inFlight,
      rejectedKeys: [...this.rejected].map(([key, r]) => ({ key, ...r })),
      maxTxnOps: this.maxTxnOps,
    };
  }

  /** Stops writing; what is still queued is abandoned (call flush first to keep it). */
  close(): void {
    this.abort.abort();
    for (const resolve of this.idleWaiters.splice(0)) resolve();
  }

  private assertOpen(): void {
    if (this.abort.signal.aborted) throw new Error('KvWriter is closed');
  }

  private knownAbsent(key: string): boolean {
    if (this.known.has(key) || this.rejected.has(key)) return false;
    for (const prefix of this.loadedPrefixes) if (key.startsWith(prefix)) return true;
    return false;
  }

  private isIdle(): boolean {
    return this.pending.size === 0 && this.inFlight === 0;
  }

  private settleIfIdle(): void {
    if (this.isIdle()) for (const resolve of this.idleWaiters.splice(0)) resolve();
  }

  /** Learns what etcd holds at one key (outside any loaded prefix), so that rewriting the same bytes is skipped. */
  private async loadKey(key: string): Promise<void> {
    const backoff = new Backoff(this.backoffOptions);
    for (;;) {
      try {
        const response = await this.client.kv.range({ key: Buffer.from(key) });
        const kv = response.kvs[0];
        if (kv && !this.pending.has(key) && !this.inFlightKeys.has(key)) this.known.set(key, digestOf(kv.value));
        return;
      } catch (err) {
        if (!isRetryableEtcdError(err)) throw err;
        await backoff.wait(this.abort.signal);
      }
    }
  }

  /** Reads every key under `prefix` (paginated, at one revision) into `known`. */
  private async load(prefix: string): Promise<number> {
    const key = Buffer.from(prefix);
    const rangeEnd = prefixRangeEnd(key);
    let start = key;
    let revision = 0;
    let count = 0;
    const backoff = new Backoff(this.backoffOptions);
    for (;;) {
      let page;
      try {
        page = await this.client.kv.range({ key: start, range_end: rangeEnd, limit: 1000, revision });
      } catch (err) {
        if (!isRetryableEtcdError(err) && !/compacted/.test(errorMessage(err))) throw err;
        this.repeats.warn(this.log, `load:${prefix}`, { prefix, error: errorMessage(err) }, 'loading prefix failed, retrying');
        if (/compacted/.test(errorMessage(err))) [start, revision] = [key, 0];
        await backoff.wait(this.abort.signal);
        continue;
      }
      if (revision === 0) {
        revision = Number(page.header.revision);
        this.revisionSeen = Math.max(this.revisionSeen, revision);
        // Entries for keys that vanished since we last looked must not survive the reload.
        for (const k of [...this.known.keys()]) if (k.startsWith(prefix)) this.known.delete(k);
      }
      for (const kv of page.kvs) {
        const k = kv.key.toString();
        if (!this.pending.has(k) && !this.inFlightKeys.has(k)) this.known.set(k, digestOf(kv.value));
        count++;
      }
      const last = page.kvs[page.kvs.length - 1];
      if (!page.more || !last) break;
      start = Buffer.concat([last.key, Buffer.from([0])]);
    }
    this.loadedPrefixes.add(prefix);
    return count;
  }

  /**
   * Pumps on the next turn of the event loop rather than at once: a caller that queues a burst synchronously gets it
   * coalesced and cut into full transactions, instead of the first few keys going out alone.
   */
  private schedulePump(): void {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    setImmediate(() => {
      this.pumpScheduled = false;
      this.pump();
    });
  }

  /** Starts as many transactions as the limits allow. */
  private pump(): void {
    if (this.abort.signal.aborted) return;
    if (this.guard && !this.usableFence()) {
      this.waitForLeadership();
      return;
    }
    while (this.inFlight < this.maxInFlight && this.hasWritableKey()) {
      this.inFlight++;
      // The batch is cut when the limiter lets the transaction start, not now, so that updates arriving while it
      // waits for its slot are still coalesced.
      this.limiter
        .run(() => this.runBatch())
        .catch((err: unknown) => this.log.error({ error: errorMessage(err) }, 'writer batch failed unexpectedly'))
        .finally(() => {
          this.inFlight--;
          this.pump();
          this.settleIfIdle();
        });
    }
  }

  private hasWritableKey(): boolean {
    if (this.pending.size === 0) return false;
    if (this.inFlightKeys.size === 0) return true;
    for (const key of this.pending.keys()) if (!this.inFlightKeys.has(key)) return true;
    return false;
  }

  /** The guard's fence, unless etcd already refused it (the guard has not noticed the loss yet). */
  private usableFence(): Fence | undefined {
    const fence = this.guard?.fence();
    if (fence && this.refusedFence && sameFence(fence, this.refusedFence)) return undefined;
    return fence;
  }

  private waitForLeadership(): void {
    if (this.waitingForLeader || !this.guard) return;
    this.waitingForLeader = true;
    const guard = this.guard;
    const wait = async () => {
      await guard.whenLeader(this.abort.signal);
      // A refused fence stays refused: poll until the guard moves to a new term rather than retrying in a hot loop.
      while (!this.usableFence()) {
        this.abort.signal.throwIfAborted();
        await new Promise((r) => setTimeout(r, 250));
        await guard.whenLeader(this.abort.signal);
      }
    };
    wait()
      .then(
        () => {
          this.waitingForLeader = false;
          this.pump();
        },
        () => {
          this.waitingForLeader = false;
        },
      );
  }

  private takeBatch(): Array<[string, Op]> {
    const batch: Array<[string, Op]> = [];
    const budget = Math.max(1, this.maxRequestBytes - REQUEST_MARGIN_BYTES);
    let bytes = 0;
    for (const [key, op] of this.pending) {
      if (batch.length >= this.maxTxnOps) break;
      if (this.inFlightKeys.has(key)) continue;
      const size = opBytes(key, op);
      // One operation alone may exceed the budget: it goes alone, and etcd's answer decides (see writeOrSplit).
      if (batch.length > 0 && bytes + size > budget) break;
      batch.push([key, op]);
      bytes += size;
    }
    for (const [key, op] of batch) {
      this.pending.delete(key);
      this.inFlightKeys.add(key);
      // Optimistic: the transaction is retried until it lands, so etcd will hold this.
      if (op.kind === 'put') this.known.set(key, typeof op.value === 'string' ? op.value : digestOf(op.value));
      else this.known.delete(key);
    }
    return batch;
  }

  private async runBatch(): Promise<void> {
    if (this.abort.signal.aborted) return;
    const fence = this.usableFence();
    if (this.guard && !fence) return; // lost leadership while queued; pump() waits for it again
    this.checkTerm(fence);
    const batch = this.takeBatch();
    if (batch.length === 0) return;
    const compare: ICompare[] = fence
      ? [{ key: Buffer.from(fence.key), target: 'Create', result: 'Equal', create_revision: fence.createRevision }]
      : [];
    const settled = new Set<string>();
    try {
      await this.writeOrSplit(batch, compare, settled);
      if (this.abort.signal.aborted) return;
    } catch (err) {
      if (!(err instanceof FencedError)) throw err;
      if (fence) this.refusedFence = fence;
      this.onFenced(batch.filter(([key]) => !settled.has(key)));
    } finally {
      for (const [key] of batch) this.inFlightKeys.delete(key);
    }
  }

  /**
   * Writes `batch` in one transaction; if etcd refuses it for good (too large, too many operations), writes it as two
   * halves, and so on down to the one key etcd refuses, which is reported and dropped while the others land.
   */
  private async writeOrSplit(batch: Array<[string, Op]>, compare: ICompare[], settled: Set<string>): Promise<void> {
    try {
      await this.send(batch, compare);
    } catch (err) {
      if (!(err instanceof PermanentError) || this.abort.signal.aborted) throw err;
      if (batch.length === 1) {
        this.reject(batch[0]!, err.message);
        settled.add(batch[0]![0]);
        return;
      }
      if (err.tooManyOps && batch.length <= this.maxTxnOps) {
        // etcd runs with a lower --max-txn-ops than ours: use half from now on (down to what it takes).
        this.maxTxnOps = Math.max(1, Math.floor(batch.length / 2));
        this.repeats.warn(this.log, 'max-txn-ops', { maxTxnOps: this.maxTxnOps, error: err.message }, 'etcd allows fewer operations per transaction: lowering ours');
      }
      const half = Math.ceil(batch.length / 2);
      await this.writeOrSplit(batch.slice(0, half), compare, settled);
      await this.writeOrSplit(batch.slice(half), compare, settled);
      return;
    }
    for (const [key] of batch) {
      settled.add(key);
      this.rejected.delete(key);
    }
    this.metrics?.rejectedKeys.set(this.rejected.size);
    this.stats.transactions++;
    this.metrics?.txnOps.observe(batch.length);
    for (const [, op] of batch) {
      if (op.kind === 'put') {
        this.stats.writes++;
        this.metrics?.writes.inc();
      } else {
        this.stats.deletes++;
        this.metrics?.deletes.inc();
      }
    }
  }

  /**
   * One transaction, retried with backoff while etcd is unavailable or overloaded; throws FencedError when the fence
   * no longer holds, PermanentError when etcd will never take it as it is (or an unknown error repeats).
   */
  private async send(batch: Array<[string, Op]>, compare: ICompare[]): Promise<void> {
    let size = 0;
    for (const [key, op] of batch) size += opBytes(key, op);
    const memory = this.takeScratch(size);
    try {
      let at = 0;
      const bytes = (value: string | Buffer): Buffer => {
        const start = at;
        at += typeof value === 'string' ? memory.write(value, at) : value.copy(memory, at);
        return memory.subarray(start, at);
      };
      const success: IRequestOp[] = batch.map(([key, op]) =>
        op.kind === 'put' ? { request_put: { key: bytes(key), value: bytes(op.value) } } : { request_delete_range: { key: bytes(key) } },
      );
      await this.sendOps(batch, compare, success);
    } finally {
      this.returnScratch(memory);
    }
  }

  /**
   * Memory for one transaction's keys and values, reused by later ones: a fresh Buffer per value (20 KB per
   * EndpointSlice) was external memory that V8 reclaims only by full collections, several a second in a calm cluster.
   */
  private takeScratch(size: number): Buffer {
    const at = this.scratch.findIndex((b) => b.length >= size);
    if (at >= 0) return this.scratch.splice(at, 1)[0]!;
    // A power of two from 64 KB, so that transactions of about one size (a burst's, ~0.5 MB of EndpointSlices each)
    // keep fitting the memory taken for the first of them.
    return Buffer.allocUnsafeSlow(Math.max(64 * 1024, 2 ** Math.ceil(Math.log2(size))));
  }

  private returnScratch(memory: Buffer): void {
    // Kept: one per transaction in flight, each up to a full request (~6 MB in all with the defaults). Kept only up to
    // 256 KB, the memory of a burst's 0.5 MB transactions was allocated afresh for each: 15 MB/s at 1,000 pods/s.
    if (memory.length <= 2 * this.maxRequestBytes && this.scratch.length < this.maxInFlight) this.scratch.push(memory);
  }

  private async sendOps(batch: Array<[string, Op]>, compare: ICompare[], success: IRequestOp[]): Promise<void> {
    const backoff = new Backoff({ ...this.backoffOptions });
    let unknownFailures = 0;
    for (;;) {
      const started = performance.now();
      try {
        const response = await this.client.kv.txn({ compare, success, failure: [] });
        this.metrics?.latency.observe((performance.now() - started) / 1000);
        if (!response.succeeded) throw new FencedError();
        this.revisionSeen = Math.max(this.revisionSeen, Number(response.header.revision));
        return;
      } catch (err) {
        if (err instanceof FencedError) throw err;
        if (this.abort.signal.aborted) return;
        const message = errorMessage(err);
        if (isPermanentEtcdError(err)) throw new PermanentError(message, /too many operations/i.test(message));
        if (!isRetryableEtcdError(err) && ++unknownFailures >= UNKNOWN_ERROR_ATTEMPTS) throw new PermanentError(message, false);
        this.stats.retries++;
        this.metrics?.retries.inc();
        if (!isRetryableEtcdError(err)) {
          this.repeats.warn(this.log, `txn:${message}`, { error: message, ops: batch.length }, 'etcd transaction failed with a non-retryable error; retrying');
        } else {
          this.repeats.warn(this.log, 'txn-retry', { error: message, ops: batch.length }, 'etcd transaction failed, retrying with backoff');
        }
        await backoff.wait(this.abort.signal).catch(() => undefined);
        if (this.abort.signal.aborted) return;
      }
    }
  }

  /** etcd refused this one write for good: report it (log once per key and reason, metric, stats) and drop it. */
  private reject([key, op]: [string, Op], reason: string): void {
    const bytes = opBytes(key, op) - OP_OVERHEAD_BYTES;
    const again = this.rejected.get(key)?.reason === reason;
    this.rejected.set(key, { reason, bytes });
    // What etcd holds at the key is unknown now (an older value, or nothing): never skip the next write as a duplicate.
    this.known.delete(key);
    this.stats.rejected++;
    this.metrics?.rejected.inc();
    this.metrics?.rejectedKeys.set(this.rejected.size);
    // Once per key and reason: a resync that asserts the same value again is refused again, silently.
    if (!again) this.log.error({ key, bytes, op: op.kind, reason }, 'etcd refused this write for good; it is dropped (the other writes of its transaction landed)');
  }

  /** Leadership was lost under a transaction: keep its writes (unless superseded) and forget what etcd holds. */
  private onFenced(batch: Array<[string, Op]>): void {
    this.stats.fenced += batch.length;
    this.metrics?.fenced.inc(batch.length);
    this.log.warn({ ops: batch.length }, 'write refused by the leadership fence: not leader any more, pausing writes');
    const requeued = new Map<string, Op>();
    for (const [key, op] of batch) if (!this.pending.has(key)) requeued.set(key, op);
    this.pending = new Map([...requeued, ...this.pending]);
    this.forgetEtcdState();
  }

  /** A new leadership term: another leader may have written meanwhile, so what we knew of etcd is stale. */
  private checkTerm(fence: Fence | undefined): void {
    if (!fence || (this.lastFence && sameFence(fence, this.lastFence))) return;
    if (this.lastFence) this.forgetEtcdState();
    this.lastFence = fence;
  }

  private forgetEtcdState(): void {
    this.known.clear();
    this.loadedPrefixes.clear();
  }
}

const metricsByRegistry = new WeakMap<Registry, WriterMetrics>();

function writerMetrics(registry: Registry): WriterMetrics {
  let metrics = metricsByRegistry.get(registry);
  if (!metrics) {
    const registers = [registry];
    metrics = {
      rejected: new Counter({ name: 'sluice_kv_writes_rejected_total', help: 'Writes etcd refused for good (over its request size or operation limits) and that were dropped', registers }),
      rejectedKeys: new Gauge({ name: 'sluice_kv_rejected_keys', help: 'Keys whose latest write etcd refused for good', registers }),
      writes: new Counter({ name: 'sluice_kv_writes_total', help: 'Keys written to etcd', registers }),
      skipped: new Counter({ name: 'sluice_kv_writes_skipped_total', help: 'Upserts skipped because etcd already held the same bytes', registers }),
      deletes: new Counter({ name: 'sluice_kv_deletes_total', help: 'Keys deleted from etcd', registers }),
      retries: new Counter({ name: 'sluice_kv_write_retries_total', help: 'Transactions retried after an etcd error', registers }),
      fenced: new Counter({ name: 'sluice_kv_writes_fenced_total', help: 'Writes refused because leadership was lost (re-queued)', registers }),
      txnOps: new Histogram({ name: 'sluice_kv_txn_ops', help: 'Operations per etcd transaction', buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256], registers }),
      latency: new Histogram({ name: 'sluice_kv_txn_duration_seconds', help: 'Latency of etcd write transactions', buckets: LATENCY_BUCKETS, registers }),
    };
    metricsByRegistry.set(registry, metrics);
  }
  return metrics;
}
