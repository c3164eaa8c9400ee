import { Backoff } from '@sluice/backoff';
import { RepeatSuppressor, createLogger, type Logger } from '@sluice/log';
import type { Etcd3, Lease } from 'etcd3';
import { errorMessage } from './errors.ts';

export interface LeasedKeysOptions {
  client: Etcd3;
  /** Lease TTL in seconds; the keys vanish this long after the process dies. Default 15. */
  ttlSeconds?: number;
  /** Backoff between failed attempts, in ms. Default 500 ms … 10 s. */
  backoff?: { minMs: number; maxMs: number };
  log?: Logger;
}

/**
 * Keys that live as long as this process does (operator heartbeat, agent status and health registration): they sit
 * on one lease of ours, so they vanish TTL seconds after the process dies or is cut off. When etcd3 reports the lease
 * lost (it expired while we were cut off), a new lease is granted and every current key is put again on it.
 */
export class LeasedKeys {
  private readonly ttl: number;
  private readonly log: Logger;
  private readonly repeats = new RepeatSuppressor(30_000);
  private readonly values = new Map<string, Buffer>();
  private lease: Lease | undefined;
  private leaseReady: Promise<string> | undefined;
  private closed = false;
  private repairing: Promise<void> | undefined;

  constructor(private readonly options: LeasedKeysOptions) {
    this.ttl = options.ttlSeconds ?? 15;
    this.log = options.log ?? createLogger({ component: 'kvstore-leased' });
  }

  /** Puts `key` on our lease (and keeps it there across lease losses) until `delete` or `close`. */
  async put(key: string, value: string | Uint8Array): Promise<void> {
    if (this.closed) throw new Error('LeasedKeys is closed');
    const bytes = Buffer.from(value);
    this.values.set(key, bytes);
    await this.withRetry(async () => {
      const id = await this.currentLease();
      await this.options.client.kv.put({ key: Buffer.from(key), value: bytes, lease: id });
    });
  }

  async delete(key: string): Promise<void> {
    this.values.delete(key);
    await this.withRetry(() => this.options.client.kv.deleteRange({ key: Buffer.from(key) }).then(() => undefined));
  }

  /** Revokes the lease, which deletes every key on it at once. */
  async close(): Promise<void> {
    this.closed = true;
    const lease = this.lease;
    this.lease = undefined;
    await lease?.revoke().catch(() => undefined);
  }

  private currentLease(): Promise<string> {
    if (!this.leaseReady) {
      const lease = this.options.client.lease(this.ttl, { autoKeepAlive: true });
      this.lease = lease;
      const ready = lease.grant();
      this.leaseReady = ready;
      ready.catch(() => {
        if (this.leaseReady === ready) this.leaseReady = undefined;
      });
      lease.on('lost', (err: Error) => {
        if (this.lease !== lease || this.closed) return;
        this.log.warn({ error: err.message, keys: this.values.size }, 'lease lost; putting keys again on a new lease');
        this.lease = undefined;
        this.leaseReady = undefined;
        this.repairing ??= this.reputAll().finally(() => (this.repairing = undefined));
      });
    }
    return this.leaseReady;
  }

  private async reputAll(): Promise<void> {
    await this.withRetry(async () => {
      const id = await this.currentLease();
      for (const [key, value] of this.values) {
        await this.options.client.kv.put({ key: Buffer.from(key), value, lease: id });
      }
    });
  }

  private async withRetry(operation: () => Promise<void>): Promise<void> {
    const backoff = new Backoff(this.options.backoff ?? { minMs: 500, maxMs: 10_000 });
    for (;;) {
      if (this.closed) return;
      try {
        return await operation();
      } catch (err) {
        this.repeats.warn(this.log, 'leased', { error: errorMessage(err) }, 'leased key write failed, retrying');
        await backoff.wait();
      }
    }
  }
}
