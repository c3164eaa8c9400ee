/**
 * The generic reconciler loop: makes one target (a BPF map, the kernel routes we own, ...) hold what a desired-state
 * table says, row by row, and keeps saying so when someone changes the target behind our back.
 *
 * Contract (stable: the services reconciler and later targets build on it):
 * - A table is a `DesiredRows<V>`: `get(key)` gives a row's desired value (undefined: the row must not exist in the
 *   target), `entries()` every desired row, `size` their count. Keys are strings chosen by the table (an IP, a CIDR,
 *   "vip:port/proto"). Tables need not store rows: a derived table may compute `get` from other tables.
 * - Whoever changes a table calls `reconciler.changed(key, revision)`; the revision is the etcd revision the change
 *   came from (0 for local changes that have none). Nothing else tells the loop about changes.
 * - A target is a `ReconcileTarget<V>` with three operations: `update` writes rows, `delete` removes rows (absent is
 *   fine), `prune` compares the whole target with the table: it removes what is there but not desired and returns
 *   the desired keys that are missing or differ (the loop updates those). Update and delete take a batch so a map
 *   target can use one syscall; they return the rows that did NOT land (a partial batch), throwing means none did.
 *
 * What the loop guarantees:
 * - Per-row status: a changed row is pending until its write lands (done), or in error with its attempt count and
 *   last error. Only rows that are not done are remembered, so 100,000 done rows cost nothing here.
 * - Errors are retried with jittered exponential backoff (libs/backoff), each row on its own schedule: a failing
 *   row never holds up the others. A row that enters error and one that recovers are logged once per pass, batched.
 * - Incremental: a pass writes only changed rows (and the rows whose retry is due), coalesced over `batchMs`.
 * - Full passes: `start()` runs one (after the initial lists: update what differs + prune), then every
 *   `refreshIntervalMs`; what a periodic pass has to write or remove is drift (someone deleted a map entry or a
 *   route), counted in sluice_agent_reconciler_drift_repaired_total{reconciler} and logged in one line.
 * - `lowestUndoneRevision()`: the lowest revision among rows not done; everything below it is in the target, which is
 *   what "programmed up to revision R" means.
 * Passes run one at a time; a change that arrives during a pass is picked up by the next one.
 */
import { Backoff } from '@sluice/backoff';
import type { Logger } from '@sluice/log';
import { Counter, Gauge, Histogram, LATENCY_BUCKETS, type Registry } from '@sluice/metrics';

export type Awaitable<T> = T | Promise<T>;

export interface DesiredRows<V> {
  /** The desired value of one row; undefined: the row must not be in the target. */
  get(key: string): V | undefined;
  /** Every desired row. */
  entries(): Iterable<readonly [string, V]>;
  readonly size: number;
}

export interface RowFailure {
  key: string;
  error: Error;
}

export interface PruneResult {
  /** Desired keys whose target state is missing or different: the loop updates them. */
  outOfDate: string[];
  /** Keys removed from the target because they are not desired. */
  pruned: string[];
  /** Keys that should have been removed but could not be. */
  failures: RowFailure[];
}

export interface ReconcileTarget<V> {
  readonly name: string;
  /** Writes rows (one or more); returns the rows that did not land. Throwing means none of them landed. */
  update(rows: ReadonlyArray<readonly [string, V]>): Awaitable<RowFailure[]>;
  /** Removes rows (one or more; absent rows are fine); returns the rows that could not be removed. */
  delete(keys: readonly string[]): Awaitable<RowFailure[]>;
  /** Compares the whole target with `desired`: removes what is not desired, reports what is missing or differs. */
  prune(desired: DesiredRows<V>): Awaitable<PruneResult>;
}

export type RowStatus =
  | { state: 'done' }
  | { state: 'pending'; revision: number }
  | { state: 'error'; revision: number; attempts: number; error: string };

export interface ReconcilerStatus {
  name: string;
  rows: { done: number; pending: number; error: number };
  /** A few rows in error, for `sluice status`. */
  errors: Array<{ key: string; attempts: number; error: string }>;
  fullPasses: number;
  driftRepaired: number;
  lastFullPassAt?: string;
}

export interface ReconcilerOptions<V> {
  target: ReconcileTarget<V>;
  desired: DesiredRows<V>;
  log: Logger;
  registry?: Registry;
  /** Periodic full pass (drift repair), ms; 0: only the one at start. Default 60 s. */
  refreshIntervalMs?: number;
  /** Coalescing window of incremental changes, ms (0: the next macrotask). */
  batchMs?: number;
  /** Retry backoff per row. Default 200 ms … 30 s. */
  backoff?: { minMs: number; maxMs: number; random?: () => number };
  /** Rows per target call. Default 4096. */
  batchSize?: number;
  /** Revision to blame for rows that fail in a full pass (the table's current revision). */
  revision?: () => number;
  /** Before every pass: bring derived tables up to date (so a full pass does not see a half-applied change as drift). */
  beforePass?: () => void;
  /** After every pass (status, programmed revision). */
  onPass?: () => void;
}

interface ReconcilerMetrics {
  operations: Counter<'reconciler' | 'op' | 'result'>;
  duration: Histogram<'reconciler' | 'kind'>;
  rows: Gauge<'reconciler' | 'state'>;
  drift: Counter<'reconciler'>;
}

const metricsByRegistry = new WeakMap<Registry, ReconcilerMetrics>();
function reconcilerMetrics(registry: Registry): ReconcilerMetrics {
  let m = metricsByRegistry.get(registry);
  if (!m) {
    const registers = [registry];
    m = {
      operations: new Counter({ name: 'sluice_agent_reconciler_operations_total', help: 'Rows written (update), removed (delete, prune) by each reconciler, by result', labelNames: ['reconciler', 'op', 'result'], registers }),
      duration: new Histogram({ name: 'sluice_agent_reconciler_duration_seconds', help: 'Duration of one reconciler pass', labelNames: ['reconciler', 'kind'], buckets: LATENCY_BUCKETS, registers }),
      rows: new Gauge({ name: 'sluice_agent_reconciler_rows', help: 'Rows per reconciler and state (done, pending, error)', labelNames: ['reconciler', 'state'], registers }),
      drift: new Counter({ name: 'sluice_agent_reconciler_drift_repaired_total', help: 'Target rows changed outside Sluice and repaired by a periodic full pass', labelNames: ['reconciler'], registers }),
    };
    metricsByRegistry.set(registry, m);
  }
  return m;
}

interface ErrorRow {
  revision: number;
  backoff: Backoff;
  error: string;
  /** ms timestamp of the next retry (0: the next pass). */
  due: number;
}

const ERRORS_IN_STATUS = 5;

/** The older of two revisions, where 0 means "no revision". */
function minRevision(a: number, b: number): number {
  if (!a) return b;
  if (!b) return a;
  return Math.min(a, b);
}

export class Reconciler<V> {
  readonly name: string;
  private readonly pending = new Map<string, number>();
  private readonly inflight = new Map<string, number>();
  private readonly errors = new Map<string, ErrorRow>();
  private readonly metrics: ReconcilerMetrics | undefined;
  private started = false;
  private stopped = false;
  private fullRequested = false;
  private running: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private retryAt = Infinity;
  private refreshTimer: NodeJS.Timeout | undefined;
  private fullPasses = 0;
  private driftRepaired = 0;
  private lastFullPassAt: Date | undefined;
  private fullBackoff: Backoff | undefined;
  private readonly totals = { updated: 0, deleted: 0 };
  private readonly passListeners = new Set<() => void>();

  constructor(private readonly options: ReconcilerOptions<V>) {
    this.name = options.target.name;
    this.metrics = options.registry ? reconcilerMetrics(options.registry) : undefined;
  }

  /** A row of the table changed (or may have): reconcile it. Before start() this is a no-op (the first full pass covers it). */
  changed(key: string, revision = 0): void {
    if (!this.started || this.stopped) return;
    const err = this.inflight.has(key) ? undefined : this.errors.get(key);
    if (err) {
      // A new desired value deserves an attempt now; the row keeps its attempt count and its oldest revision.
      err.revision = minRevision(err.revision, revision);
      err.due = 0;
    } else {
      // (A row of the running pass is marked again: the pass settles it, this mark is the next pass's.)
      const old = this.pending.get(key);
      this.pending.set(key, old === undefined ? revision : minRevision(old, revision));
    }
    this.schedule();
  }

  /** Runs the first full pass and starts the periodic ones. Resolves once the first pass is over. */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    const every = this.options.refreshIntervalMs ?? 60_000;
    if (every > 0) {
      this.refreshTimer = setInterval(() => void this.fullPass(), every);
      this.refreshTimer.unref();
    }
    await this.fullPass();
  }

  get isStarted(): boolean {
    return this.started;
  }

  /** Runs a full pass (update what differs, prune what is not desired) and waits for it. */
  fullPass(): Promise<void> {
    if (!this.started || this.stopped) return Promise.resolve();
    this.fullRequested = true;
    return this.kick();
  }

  /** Runs a pass now for whatever is pending (and due) and waits for it. */
  flush(): Promise<void> {
    if (!this.started || this.stopped) return Promise.resolve();
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    return this.kick();
  }

  rowStatus(key: string): RowStatus | undefined {
    const err = this.errors.get(key);
    if (err) return { state: 'error', revision: err.revision, attempts: err.backoff.attempts, error: err.error };
    const rev = this.pending.get(key) ?? this.inflight.get(key);
    if (rev !== undefined) return { state: 'pending', revision: rev };
    return this.options.desired.get(key) === undefined ? undefined : { state: 'done' };
  }

  /** The lowest revision of a row that is not done (Infinity when every row is). Rows of revision 0 do not count. */
  lowestUndoneRevision(): number {
    let low = Infinity;
    for (const rev of this.pending.values()) if (rev && rev < low) low = rev;
    for (const rev of this.inflight.values()) if (rev && rev < low) low = rev;
    for (const e of this.errors.values()) if (e.revision && e.revision < low) low = e.revision;
    return low;
  }

  /** Rows written and removed (delete and prune) so far. */
  get writes(): { updated: number; deleted: number } {
    return { ...this.totals };
  }

  /** True when no row is pending or in error. */
  get idle(): boolean {
    return this.pending.size === 0 && this.inflight.size === 0 && this.errors.size === 0;
  }

  status(): ReconcilerStatus {
    const pending = this.pendingCount();
    const error = this.errors.size;
    return {
      name: this.name,
      rows: { done: Math.max(0, this.options.desired.size - pending - error), pending, error },
      errors: [...this.errors].slice(0, ERRORS_IN_STATUS).map(([key, e]) => ({ key, attempts: e.backoff.attempts, error: e.error })),
      fullPasses: this.fullPasses,
      driftRepaired: this.driftRepaired,
      ...(this.lastFullPassAt ? { lastFullPassAt: this.lastFullPassAt.toISOString() } : {}),
    };
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.retryTimer);
    clearInterval(this.refreshTimer);
    await this.running?.catch(() => undefined);
  }

  // ---- the loop ----------------------------------------------------------------------------------------------------

  private pendingCount(): number {
    let n = this.pending.size;
    for (const k of this.inflight.keys()) if (!this.pending.has(k) && !this.errors.has(k)) n++;
    return n;
  }

  private schedule(): void {
    if (this.stopped || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.kick();
    }, this.options.batchMs ?? 0);
  }

  private scheduleRetry(): void {
    let next = Infinity;
    for (const e of this.errors.values()) if (e.due < next) next = e.due;
    if (next === Infinity || this.stopped) return;
    if (this.retryTimer && next >= this.retryAt) return;
    clearTimeout(this.retryTimer);
    this.retryAt = next;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.retryAt = Infinity;
      void this.kick();
    }, Math.max(0, next - Date.now() + 1));
    this.retryTimer.unref();
  }

  /** One pass at a time; a pass asked for while one runs runs after it (with whatever is pending by then). */
  private kick(): Promise<void> {
    const next = (this.running ?? Promise.resolve()).then(() => this.pass());
    const tracked = next.catch((err: unknown) => {
      this.options.log.error({ reconciler: this.name, error: (err as Error).message }, 'reconciler pass failed');
    });
    this.running = tracked;
    return tracked;
  }

  private async pass(): Promise<void> {
    if (this.stopped) return;
    this.options.beforePass?.();
    const full = this.fullRequested;
    this.fullRequested = false;
    const started = process.hrtime.bigint();
    const now = Date.now();
    // Rows of this pass: everything pending, and the errors whose retry is due.
    const rows = new Map<string, number>(this.pending);
    this.pending.clear();
    for (const [key, e] of this.errors) if (full || e.due <= now) rows.set(key, e.revision);
    if (!full && rows.size === 0) {
      this.scheduleRetry(); // a timer that fired a little early
      return;
    }
    for (const [k, r] of rows) this.inflight.set(k, r);
    const failed = new Map<string, Error>();
    let drift: string[] = [];
    try {
      if (full) {
        let result: PruneResult;
        try {
          result = await this.options.target.prune(this.options.desired);
          this.fullBackoff?.reset();
        } catch (err) {
          // The target could not even be read: keep the rows, retry the whole pass with backoff.
          for (const [k, r] of rows) if (!this.errors.has(k)) this.pending.set(k, minRevision(this.pending.get(k) ?? r, r));
          rows.clear(); // nothing was attempted: the rows keep their state
          this.fullBackoff ??= this.newBackoff();
          const delay = this.fullBackoff.nextDelayMs();
          this.options.log.error({ reconciler: this.name, error: (err as Error).message, retryInMs: Math.round(delay) }, 'full reconcile pass failed; retrying');
          setTimeout(() => void this.fullPass(), delay).unref();
          this.countOp('prune', 'error', 1);
          return;
        }
        const periodic = this.fullPasses > 0;
        for (const key of result.outOfDate) {
          if (periodic && !rows.has(key)) drift.push(key);
          if (!rows.has(key)) rows.set(key, this.options.revision?.() ?? 0);
          this.inflight.set(key, rows.get(key)!);
        }
        for (const key of result.pruned) if (periodic && !rows.has(key)) drift.push(key);
        this.countOp('prune', 'ok', result.pruned.length);
        this.totals.deleted += result.pruned.length;
        this.countOp('prune', 'error', result.failures.length);
        for (const f of result.failures) {
          failed.set(f.key, f.error);
          if (!rows.has(f.key)) rows.set(f.key, this.options.revision?.() ?? 0);
        }
      }
      const updates: Array<readonly [string, V]> = [];
      const deletes: string[] = [];
      for (const key of rows.keys()) {
        if (failed.has(key)) continue;
        const value = this.options.desired.get(key);
        if (value === undefined) deletes.push(key);
        else updates.push([key, value]);
      }
      const size = this.options.batchSize ?? 4096;
      for (let i = 0; i < deletes.length; i += size) await this.apply('delete', deletes.slice(i, i + size), failed);
      for (let i = 0; i < updates.length; i += size) await this.apply('update', updates.slice(i, i + size), failed);
    } finally {
      this.settle(rows, failed, now);
      this.inflight.clear();
    }
    if (full) {
      if (drift.length) {
        drift = [...new Set(drift)];
        this.driftRepaired += drift.length;
        this.metrics?.drift.inc({ reconciler: this.name }, drift.length);
        this.options.log.warn({ reconciler: this.name, rows: drift.length, keys: drift.slice(0, 5) }, 'repaired drift: rows changed in the target outside Sluice were rewritten or removed');
      }
      this.fullPasses++;
      this.lastFullPassAt = new Date();
    }
    this.metrics?.duration.observe({ reconciler: this.name, kind: full ? 'full' : 'incremental' }, Number(process.hrtime.bigint() - started) / 1e9);
    this.updateGauges();
    this.options.onPass?.();
    for (const listener of this.passListeners) listener();
  }

  /**
   * Called after every pass, as the `onPass` option is, for an observer that did not build the reconciler (the scale
   * harness learns when a service change is programmed: lowestUndoneRevision() moved past it). Returns the unsubscribe.
   */
  addPassListener(listener: () => void): () => void {
    this.passListeners.add(listener);
    return () => this.passListeners.delete(listener);
  }

  private async apply(op: 'update' | 'delete', batch: ReadonlyArray<readonly [string, V]> | readonly string[], failed: Map<string, Error>): Promise<void> {
    let failures: RowFailure[];
    try {
      failures = op === 'update'
        ? await this.options.target.update(batch as ReadonlyArray<readonly [string, V]>)
        : await this.options.target.delete(batch as readonly string[]);
    } catch (err) {
      const error = err instanceof Error ? err : new Error(String(err));
      failures = (batch as ReadonlyArray<readonly [string, V] | string>).map((row) => ({ key: typeof row === 'string' ? row : row[0], error }));
    }
    for (const f of failures) failed.set(f.key, f.error);
    if (op === 'update') this.totals.updated += batch.length - failures.length;
    else this.totals.deleted += batch.length - failures.length;
    this.countOp(op, 'ok', batch.length - failures.length);
    this.countOp(op, 'error', failures.length);
  }

  /** Rows of a pass: failures become (or stay) errors with backoff; the rest are done. */
  private settle(rows: Map<string, number>, failed: Map<string, Error>, now: number): void {
    const entered: string[] = [];
    const recovered: string[] = [];
    let firstError: string | undefined;
    for (const [key, revision] of rows) {
      const error = failed.get(key);
      const existing = this.errors.get(key);
      const remarked = this.pending.get(key);
      if (error) {
        const row = existing ?? { revision, backoff: this.newBackoff(), error: '', due: 0 };
        if (!existing) entered.push(key);
        firstError ??= `${key}: ${error.message}`;
        row.error = error.message;
        row.revision = minRevision(row.revision, revision);
        row.due = now + row.backoff.nextDelayMs();
        if (remarked !== undefined) {
          // Changed again during the pass: one row in error, retried at once with the newer value.
          row.revision = minRevision(row.revision, remarked);
          row.due = 0;
          this.pending.delete(key);
        }
        this.errors.set(key, row);
      } else if (existing) {
        this.errors.delete(key);
        recovered.push(key);
      }
    }
    if (entered.length) {
      this.options.log.error({ reconciler: this.name, rows: entered.length, keys: entered.slice(0, 5), error: firstError }, 'rows failed to reach the target; retrying with backoff');
    }
    if (recovered.length) this.options.log.info({ reconciler: this.name, rows: recovered.length, keys: recovered.slice(0, 5) }, 'rows in error reached the target');
    if (this.errors.size) this.scheduleRetry();
    if (this.pending.size) this.schedule();
  }

  private newBackoff(): Backoff {
    const b = this.options.backoff;
    return new Backoff({ minMs: b?.minMs ?? 200, maxMs: b?.maxMs ?? 30_000, ...(b?.random ? { random: b.random } : {}) });
  }

  private countOp(op: string, result: 'ok' | 'error', n: number): void {
    if (n > 0) this.metrics?.operations.inc({ reconciler: this.name, op, result }, n);
  }

  private updateGauges(): void {
    if (!this.metrics) return;
    const s = this.status().rows;
    this.metrics.rows.set({ reconciler: this.name, state: 'done' }, s.done);
    this.metrics.rows.set({ reconciler: this.name, state: 'pending' }, s.pending);
    this.metrics.rows.set({ reconciler: this.name, state: 'error' }, s.error);
  }
}
