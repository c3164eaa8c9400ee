/**
 * The skeleton of the operator's controllers beside its mirrors (LB IPAM, per-node configuration): every instance
 * follows its objects and only the leader acts. A change schedules a pass (changes within `batchMs` are coalesced,
 * and one arriving during a pass makes another follow it); a failed pass is retried with backoff and logged once
 * per distinct error. Each leadership term gets a fenced KvWriter of its own, closed at once when the lease is lost,
 * and `syncRecords` keeps a prefix of etcd equal to the records the controller wants: the first call of a term marks
 * the prefix and sweeps whatever a previous leader left there, later calls delete only what went.
 */
import type { KubeConfig } from '@kubernetes/client-node';
import { Backoff } from '@sluice/backoff';
import { KvWriter, type Etcd3, type KeySchema, type LeaderElection } from '@sluice/kvstore';
import type { Logger } from '@sluice/log';
import type { Registry } from '@sluice/metrics';

/** What such a controller is given by the operator. */
export interface ControllerOptions {
  kube: KubeConfig;
  etcd: Etcd3;
  keys: KeySchema;
  election: LeaderElection;
  log: Logger;
  registry?: Registry;
  /** Coalescing window of changes before a pass, ms. Default 50. */
  batchMs?: number;
}

export interface LeaderGatedOptions extends Omit<ControllerOptions, 'kube' | 'keys'> {
  /** What the controller is called in logs ("LB IPAM pass failed; retrying with backoff"). */
  name: string;
  /** The writer's log subsystem. */
  writerSubsystem: string;
  /** One pass; it decides itself whether there is anything to do (not leading, caches not synced). */
  pass: () => Promise<void>;
}

export class LeaderGatedLoop {
  private readonly backoff = new Backoff({ minMs: 500, maxMs: 30_000 });
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = false;
  private lastError = '';
  private writer: KvWriter | undefined;
  /** Whether this term's writer has marked and swept the prefix (`syncRecords`), and what it wrote there last. */
  private synced = false;
  private written = new Set<string>();
  private unsubscribe: (() => void) | undefined;

  constructor(private readonly options: LeaderGatedOptions) {}

  get isLeader(): boolean {
    return this.options.election.isLeader;
  }

  start(): void {
    this.unsubscribe = this.options.election.onChange((leading) => {
      if (!leading) this.endTerm();
      this.schedule();
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.unsubscribe?.();
    clearTimeout(this.timer);
    this.endTerm();
    await this.running;
  }

  /** Runs a pass after the coalescing window (or `delayMs`), or after the pass in progress. */
  schedule(delayMs = this.options.batchMs ?? 50): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.running = this.options
        .pass()
        .then(() => {
          this.backoff.reset();
          this.lastError = '';
          return undefined;
        })
        .catch((err: unknown) => {
          const message = (err as Error).message;
          if (message !== this.lastError) this.options.log.warn({ err: message }, `${this.options.name} pass failed; retrying with backoff`);
          this.lastError = message;
          this.again = true;
          return this.backoff.nextDelayMs();
        })
        .then((retryMs) => {
          this.running = undefined;
          if (this.again) {
            this.again = false;
            this.schedule(retryMs);
          }
        });
    }, delayMs);
  }

  /**
   * Makes the records under `prefix` exactly `records` (etcd key → value): unchanged values are not rewritten (the
   * writer skips them), and the first call of a term sweeps the keys nobody asked for. Resolves once written.
   */
  async syncRecords(prefix: string, records: ReadonlyMap<string, string>): Promise<void> {
    const { etcd, election, log, registry, writerSubsystem } = this.options;
    if (!this.writer) {
      this.writer = new KvWriter({ client: etcd, guard: election, registry, log: log.child({ subsystem: writerSubsystem }) });
      this.synced = false;
    }
    const writer = this.writer;
    if (!this.synced) {
      await writer.beginSync(prefix);
      for (const [key, value] of records) writer.upsert(key, value);
      await writer.finishSync(prefix);
      this.synced = true;
    } else {
      for (const [key, value] of records) writer.upsert(key, value);
      for (const key of this.written) if (!records.has(key)) writer.delete(key);
      await writer.flush();
    }
    this.written = new Set(records.keys());
  }

  /** The term's writes end: a new term starts with a new writer and a new sweep. */
  private endTerm(): void {
    this.writer?.close();
    this.writer = undefined;
    this.synced = false;
  }
}
