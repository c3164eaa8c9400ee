import { Backoff } from '@sluice/backoff';
import { RepeatSuppressor, createLogger, type Logger } from '@sluice/log';
import { Gauge, type Registry } from '@sluice/metrics';
import type { Etcd3, Lease } from 'etcd3';
import { errorMessage } from './errors.ts';
import { watchPrefix, type PrefixWatch } from './watcher.ts';
import type { Fence, WriteGuard } from './writer.ts';

export interface LeaderElectionOptions {
  client: Etcd3;
  /** The election key prefix, `keys.operatorElection()`; each candidate puts `<prefix>/<lease id>`. */
  prefix: string;
  /** Who this candidate is (e.g. `operator-<host>-<pid>`), stored as the value of its key. */
  identity: string;
  /** Lease TTL in seconds. Keep-alives go every TTL/3 (≥ 5 s at the default 15 s, etcd's client default). */
  ttlSeconds?: number;
  /** Backoff between failed campaign attempts, in ms. Default 500 ms … 10 s. */
  backoff?: { minMs: number; maxMs: number };
  log?: Logger;
  registry?: Registry;
}

/** Fraction of the TTL after the last acknowledged keep-alive at which a leader steps down on its own. */
const STEP_DOWN_FRACTION = 0.85;

/**
 * Leader election on an etcd lease, the etcd concurrency recipe: each candidate puts `<prefix>/<lease id>` on its own
 * lease; the key with the lowest create revision leads; the others wait for the deletion of the key just before
 * theirs. etcd3's Election class implements the same, but over etcd3's watch (which can skip events on reconnect)
 * and under a fixed `election/` sub-prefix that does not fit the key schema, so we keep our own.
 *
 * Leadership ends at once (the writer stops) when:
 * - etcd3 reports the lease `lost`, or the candidate's key is deleted;
 * - no keep-alive was acknowledged for 0.85 × TTL: the lease may still be alive in etcd, but this process can no
 *   longer prove it, and etcd3 only reports `lost` after 2 × TTL. Stepping down just before the TTL runs out keeps
 *   two leaders from acting at once; every write also carries a fence (see KvWriter), so even a leader replaced
 *   without knowing it has its writes refused. The margin is small on purpose: at 0.6 × TTL, keep-alives answered
 *   late by a busy etcd (thousands of watchers catching up after a restart) ended terms for nothing.
 * After that it campaigns again with a new lease; a term that never led does not reset the campaign backoff, and its
 * end is logged once per window, not once per attempt.
 */
export class LeaderElection implements WriteGuard {
  private readonly ttl: number;
  private readonly log: Logger;
  private readonly repeats = new RepeatSuppressor(30_000);
  private readonly abort = new AbortController();
  private currentFence: Fence | undefined;
  private currentLease: Lease | undefined;
  private currentLeaseId: string | undefined;
  private waiters: Array<() => void> = [];
  private readonly listeners = new Set<(leading: boolean) => void>();
  private loop: Promise<void> | undefined;
  private readonly gauge: Gauge | undefined;

  constructor(private readonly options: LeaderElectionOptions) {
    this.ttl = options.ttlSeconds ?? 15;
    if (!(this.ttl >= 2)) throw new RangeError(`lease TTL must be >= 2 s, got ${this.ttl}`);
    this.log = options.log ?? createLogger({ component: 'kvstore-election' });
    const existing = options.registry?.getSingleMetric('sluice_kv_leader');
    this.gauge = options.registry
      ? existing instanceof Gauge
        ? existing
        : new Gauge({ name: 'sluice_kv_leader', help: '1 while this process leads', registers: [options.registry] })
      : undefined;
  }

  /** Starts campaigning (idempotent). */
  start(): this {
    this.loop ??= this.campaignLoop();
    return this;
  }

  get isLeader(): boolean {
    return this.currentFence !== undefined;
  }

  fence(): Fence | undefined {
    return this.currentFence;
  }

  /** The lease this candidate holds (while it has one); keys put on it vanish when leadership is lost. */
  leaseId(): string | undefined {
    return this.currentLeaseId;
  }

  whenLeader(signal?: AbortSignal): Promise<void> {
    if (this.currentFence) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const onAbort = () => reject(signal?.reason ?? new Error('aborted'));
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      });
    });
  }

  /** Called with true when this process becomes leader and false when it stops leading. Returns an unsubscriber. */
  onChange(listener: (leading: boolean) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Stops campaigning and gives up leadership now (revokes the lease, so the next candidate takes over at once). */
  async resign(): Promise<void> {
    if (!this.abort.signal.aborted) this.abort.abort(new Error('resigned'));
    this.setLeader(undefined);
    const lease = this.currentLease;
    if (lease) await lease.revoke().catch(() => undefined);
    await this.loop;
  }

  private setLeader(fence: Fence | undefined): void {
    const was = this.isLeader;
    this.currentFence = fence;
    this.gauge?.set(fence ? 1 : 0);
    if (fence) for (const resolve of this.waiters.splice(0)) resolve();
    if (was !== this.isLeader) {
      this.log.info({ identity: this.options.identity, leading: this.isLeader, key: fence?.key }, this.isLeader ? 'became leader' : 'stopped leading');
      for (const listener of this.listeners) listener(this.isLeader);
    }
  }

  private async campaignLoop(): Promise<void> {
    const backoff = new Backoff(this.options.backoff ?? { minMs: 500, maxMs: 10_000 });
    while (!this.abort.signal.aborted) {
      try {
        if (await this.campaignOnce()) backoff.reset();
      } catch (err) {
        if (this.abort.signal.aborted) break;
        this.repeats.warn(this.log, 'campaign', { error: errorMessage(err) }, 'campaign failed, retrying');
      }
      this.setLeader(undefined);
      if (this.abort.signal.aborted) break;
      await backoff.wait(this.abort.signal).catch(() => undefined);
    }
  }

  /** One term: a new lease, a key on it, wait for our turn, lead until the lease is lost. True if it led. */
  private async campaignOnce(): Promise<boolean> {
    const { client, prefix, identity } = this.options;
    const lease = client.lease(this.ttl, { autoKeepAlive: true });
    this.currentLease = lease;
    let lastAck = Date.now();
    const ended = new AbortController();
    const end = (reason: string) => {
      if (ended.signal.aborted) return;
      ended.abort(new Error(reason));
      // At once, not when the pending etcd call of this term gives up: the writer must stop now.
      this.setLeader(undefined);
    };
    lease.on('lost', (err: Error) => end(`lease lost: ${err.message}`));
    lease.on('keepaliveSucceeded', () => (lastAck = Date.now()));
    const stopOnResign = () => end('resigned');
    this.abort.signal.addEventListener('abort', stopOnResign, { once: true });
    let led = false;
    let lastTick = Date.now();
    const deadline = setInterval(() => {
      const now = Date.now();
      const stalled = now - lastTick > 1000;
      lastTick = now;
      // Timers run before I/O callbacks: right after this process was stalled (a huge list to parse), an ack that
      // already arrived has not been read yet. Judge on the next tick; writes stay safe meanwhile, they are fenced.
      if (stalled) return;
      if (now - lastAck > STEP_DOWN_FRACTION * this.ttl * 1000) end('no keep-alive acknowledged in time');
    }, 250);
    try {
      const id = await lease.grant();
      lastAck = Date.now();
      this.currentLeaseId = id;
      const key = `${prefix}/${id}`;
      const keyBuf = Buffer.from(key);
      const result = await client.kv.txn({
        compare: [{ key: keyBuf, target: 'Create', result: 'Equal', create_revision: 0 }],
        success: [{ request_put: { key: keyBuf, value: Buffer.from(identity), lease: id } }],
        failure: [{ request_range: { key: keyBuf } }],
      });
      const createRevision = result.succeeded
        ? result.header.revision
        : result.responses[0]?.response_range.kvs[0]?.create_revision;
      if (!createRevision) throw new Error('election key vanished right after it was created');
      await this.waitForTurn(Number(createRevision), ended.signal);
      ended.signal.throwIfAborted();
      this.setLeader({ key, createRevision });
      led = true;
      // Lead until the lease ends or our key is deleted behind our back.
      await this.waitForDelete(key, Number(createRevision), ended.signal);
      end('election key deleted');
    } catch (err) {
      if (!ended.signal.aborted) throw err;
    } finally {
      clearInterval(deadline);
      this.abort.signal.removeEventListener('abort', stopOnResign);
      this.setLeader(undefined);
      this.currentLeaseId = undefined;
      this.currentLease = undefined;
      if (ended.signal.aborted && !this.abort.signal.aborted) {
        const fields = { identity, reason: errorMessage(ended.signal.reason) };
        if (led) this.log.warn(fields, 'leadership term ended; campaigning again with a new lease');
        else this.repeats.warn(this.log, 'campaign', fields, 'campaign ended before leading; retrying with a new lease');
      }
      // Frees our key at once, so that the next term (ours or another candidate's) does not wait for the lease to
      // expire behind it. etcd may be down right now (that is often why the term ended): keep trying until it
      // answers, for at most a TTL, after which the lease has expired anyway.
      void this.revokeUntilGone(lease);
    }
    return led;
  }

  private async revokeUntilGone(lease: Lease): Promise<void> {
    const giveUpAt = Date.now() + this.ttl * 1000;
    const backoff = new Backoff({ minMs: 200, maxMs: 2_000 });
    while (Date.now() < giveUpAt) {
      try {
        await lease.revoke();
        return;
      } catch {
        await backoff.wait().catch(() => undefined);
      }
    }
  }

  /** Waits until no candidate key older than ours is left. */
  private async waitForTurn(ourRevision: number, signal: AbortSignal): Promise<void> {
    const start = Buffer.from(`${this.options.prefix}/`);
    const rangeEnd = Buffer.from(`${this.options.prefix}0`); // '0' follows '/': the end of the prefix range
    for (;;) {
      signal.throwIfAborted();
      const older = await this.options.client.kv.range({
        key: start,
        range_end: rangeEnd,
        max_create_revision: ourRevision - 1,
        sort_order: 'Descend',
        sort_target: 'Create',
        limit: 1,
      });
      const predecessor = older.kvs[0];
      if (!predecessor) return;
      await this.waitForDelete(predecessor.key.toString(), Number(older.header.revision), signal);
    }
  }

  /**
   * Resolves when `key` is deleted after `revision`, or when the watch is interrupted (the caller re-checks), or
   * rejects when `signal` aborts.
   */
  private async waitForDelete(key: string, revision: number, signal: AbortSignal): Promise<void> {
    for (;;) {
      signal.throwIfAborted();
      const outcome = await new Promise<'deleted' | 'interrupted'>((resolve, reject) => {
        const watcher = this.options.client.watch().key(key).startRevision(String(revision + 1)).watcher();
        const finish = (result: 'deleted' | 'interrupted' | Error) => {
          signal.removeEventListener('abort', onAbort);
          watcher.removeAllListeners();
          watcher.on('error', () => undefined);
          watcher.cancel().catch(() => undefined);
          if (result instanceof Error) reject(result);
          else resolve(result);
        };
        const onAbort = () => finish(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
        signal.addEventListener('abort', onAbort, { once: true });
        watcher.on('delete', () => finish('deleted'));
        watcher.on('disconnected', () => finish('interrupted'));
        watcher.on('error', () => finish('interrupted'));
      });
      if (outcome === 'deleted') return;
      // Interrupted: check whether the key still exists before watching again.
      signal.throwIfAborted();
      await new Promise((r) => setTimeout(r, 200));
      const current = await this.options.client.kv.range({ key: Buffer.from(key) });
      if (current.kvs.length === 0) return;
      revision = Number(current.header.revision);
    }
  }
}

/**
 * Follows who leads an election (for status pages and other candidates): calls `onChange` with the identity of the
 * leader, or undefined when there is none. Candidate keys are created once and never rewritten, so their modRevision
 * is their create revision and the lowest one leads.
 */
export function observeLeader(
  client: Etcd3,
  prefix: string,
  onChange: (identity: string | undefined) => void,
  options: { log?: Logger; registry?: Registry } = {},
): PrefixWatch {
  const candidates = new Map<string, { identity: string; revision: number }>();
  let last: string | undefined | null = null;
  const report = () => {
    let best: { identity: string; revision: number } | undefined;
    for (const candidate of candidates.values()) if (!best || candidate.revision < best.revision) best = candidate;
    const identity = best?.identity;
    if (identity !== last) {
      last = identity;
      onChange(identity);
    }
  };
  let synced = false;
  return watchPrefix(client, `${prefix}/`, {
    name: 'election',
    decode: (_key, bytes) => bytes.toString(),
    log: options.log,
    registry: options.registry,
    onEvent: (event) => {
      if (event.type === 'upsert') candidates.set(event.key, { identity: event.value, revision: event.modRevision });
      else if (event.type === 'delete') candidates.delete(event.key);
      else synced = true;
      if (synced) report();
    },
  });
}
