import PQueue from 'p-queue';
import { setTimeout as sleep } from 'node:timers/promises';

/** A small deterministic generator (mulberry32) in [0, 1): reproducible jitter for tests and simulations. */
export function seededRandom(seed: number): () => number {
  let state = seed | 0;
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface BackoffOptions {
  /** Smallest delay, in ms. */
  minMs: number;
  /** Largest delay, in ms. */
  maxMs: number;
  /** Growth per attempt (2 doubles the ceiling each time). */
  factor?: number;
  /** Source of randomness in [0, 1); injectable so that tests and simulations are reproducible. */
  random?: () => number;
}

/**
 * Exponential backoff with jitter: attempt k waits a delay drawn uniformly from [min, min·factor^k] (capped at max).
 * Full jitter spreads the retries of thousands of clients that lost the same server at the same moment, so that
 * they do not come back in lockstep; keeping `min` as the floor stops the tight loops of pure full jitter.
 */
export class Backoff {
  private attempt = 0;
  private readonly factor: number;
  private readonly random: () => number;

  constructor(private readonly options: BackoffOptions) {
    if (!(options.minMs > 0) || !(options.maxMs >= options.minMs)) {
      throw new RangeError(`backoff needs 0 < minMs <= maxMs, got minMs=${options.minMs} maxMs=${options.maxMs}`);
    }
    this.factor = options.factor ?? 2;
    if (!(this.factor >= 1)) throw new RangeError(`backoff factor must be >= 1, got ${this.factor}`);
    this.random = options.random ?? Math.random;
  }

  /** The ceiling of the next delay, before jitter. */
  ceilingMs(attempt = this.attempt): number {
    return Math.min(this.options.maxMs, this.options.minMs * this.factor ** attempt);
  }

  /** The delay to wait before the next retry; each call counts one more failed attempt. */
  nextDelayMs(): number {
    const ceiling = this.ceilingMs();
    this.attempt++;
    return this.options.minMs + this.random() * (ceiling - this.options.minMs);
  }

  get attempts(): number {
    return this.attempt;
  }

  /** Call after a success, so that the next failure starts again from the smallest delay. */
  reset(): void {
    this.attempt = 0;
  }

  /** Waits the next delay; rejects with the signal's reason if it aborts first. */
  async wait(signal?: AbortSignal): Promise<number> {
    const delay = this.nextDelayMs();
    await sleep(delay, undefined, { signal });
    return delay;
  }
}

/**
 * Scales a base interval with the size of the cluster, as base·ln(1+n): a 5,000-node cluster retries about 8.5 times
 * more slowly than a single node, so that a shared server that comes back is not hit by every client at once.
 */
export function clusterSizeInterval(baseMs: number, clusterSize: number): number {
  if (!(baseMs >= 0) || !(clusterSize >= 0)) throw new RangeError('baseMs and clusterSize must be >= 0');
  return baseMs * Math.max(1, Math.log1p(clusterSize));
}

/**
 * A backoff whose smallest and largest delays both grow with the cluster size (see clusterSizeInterval). The floor
 * keeps a large fleet from returning in lockstep; scaling the ceiling too (rather than a fixed 30 s) bounds how long
 * the fleet takes to come back after an outage to about maxMs·ln(1+n), while the return rate stays near
 * n / (maxMs·ln(1+n)): at 5,000 nodes and 1 s, every client is back within 8.5 s, about 600 per second.
 */
export function clusterSizeBackoff(options: BackoffOptions & { clusterSize: number }): Backoff {
  const minMs = clusterSizeInterval(options.minMs, options.clusterSize);
  const maxMs = clusterSizeInterval(options.maxMs, options.clusterSize);
  return new Backoff({ ...options, minMs, maxMs: Math.max(maxMs, minMs) });
}

export interface RetryOptions {
  backoff: Backoff;
  /** Whether an error is worth another try; others are thrown at once. */
  retryable: (err: unknown) => boolean;
  /** Called before each wait, e.g. to count retries or log once. */
  onRetry?: (err: unknown, attempt: number, delayMs: number) => void;
  /** Gives up after this many retries; unbounded by default, for writes that must never be dropped. */
  maxRetries?: number;
  signal?: AbortSignal;
}

/** Runs `operation` until it succeeds, waiting with backoff between retryable failures. */
export async function retry<T>(operation: () => Promise<T>, options: RetryOptions): Promise<T> {
  for (;;) {
    try {
      const result = await operation();
      options.backoff.reset();
      return result;
    } catch (err) {
      options.signal?.throwIfAborted();
      if (!options.retryable(err)) throw err;
      if (options.maxRetries !== undefined && options.backoff.attempts >= options.maxRetries) throw err;
      const delay = options.backoff.nextDelayMs();
      options.onRetry?.(err, options.backoff.attempts, delay);
      await sleep(delay, undefined, { signal: options.signal });
    }
  }
}

export interface RateLimitOptions {
  /** Average operations started per second. */
  qps: number;
  /** Operations that may start at once after a quiet spell. */
  burst: number;
  /** Operations running at the same time. */
  maxInFlight: number;
}

/** Bounds the rate and the concurrency of calls to a shared server (QPS with a burst, and a cap on requests in flight). */
export class RateLimiter {
  private readonly queue: PQueue;

  constructor(options: RateLimitOptions) {
    for (const [name, value] of Object.entries(options)) {
      if (!(Number.isFinite(value) && value > 0)) throw new RangeError(`rate limit ${name} must be > 0, got ${value}`);
    }
    const burst = Math.max(1, Math.floor(options.burst));
    this.queue = new PQueue({
      concurrency: Math.max(1, Math.floor(options.maxInFlight)),
      intervalCap: burst,
      interval: Math.max(1, Math.round((burst / options.qps) * 1000)),
    });
  }

  run<T>(operation: () => Promise<T>): Promise<T> {
    return this.queue.add(operation, { throwOnTimeout: true });
  }

  get pending(): number {
    return this.queue.size + this.queue.pending;
  }

  onIdle(): Promise<void> {
    return this.queue.onIdle();
  }
}
