/**
 * Server-side rate limiting (429 with Retry-After, as managed API servers answer) and fault injection (500s for the
 * next N requests or a fraction of them), for client tests.
 */
import type { ApiError } from './status.ts';
import { ApiError as Err } from './status.ts';

export type Verb = 'get' | 'list' | 'watch' | 'create' | 'update' | 'patch' | 'delete' | 'deletecollection' | 'discovery';

export interface FailureOptions {
  /** HTTP code to answer (default 500). */
  code?: number;
  /** Only these verbs fail (default: all). */
  verbs?: Verb[];
  /** Only these resources (plural names) fail (default: all). */
  resources?: string[];
}

export interface RateLimitOptions {
  qps: number;
  burst: number;
  /** Retry-After seconds sent with 429 (default 1). */
  retryAfterSeconds?: number;
  verbs?: Verb[];
}

export class Faults {
  private failCount = 0;
  private failOptions: FailureOptions = {};
  private rate = 0;
  private rateOptions: FailureOptions = {};
  private limiter?: { options: RateLimitOptions; tokens: number; last: number };
  readonly counters = { injectedFailures: 0, rateLimited: 0 };

  constructor(private readonly random: () => number = Math.random) {}

  /** The next n matching requests fail. */
  failNext(n: number, options: FailureOptions = {}): void {
    this.failCount = n;
    this.failOptions = options;
  }

  /** Each matching request fails with this probability (0 turns it off). */
  setFailureRate(fraction: number, options: FailureOptions = {}): void {
    this.rate = fraction;
    this.rateOptions = options;
  }

  /** A token bucket over all matching requests; undefined turns it off. */
  setRateLimit(options: RateLimitOptions | undefined): void {
    this.limiter = options ? { options, tokens: options.burst, last: Date.now() } : undefined;
  }

  reset(): void {
    this.failCount = 0;
    this.rate = 0;
    this.limiter = undefined;
  }

  private static applies(o: FailureOptions, verb: Verb, resource: string | undefined): boolean {
    if (o.verbs && !o.verbs.includes(verb)) return false;
    if (o.resources && (!resource || !o.resources.includes(resource))) return false;
    return true;
  }

  /** The error to answer this request with, if any. */
  check(verb: Verb, resource: string | undefined): ApiError | undefined {
    if (this.limiter && (!this.limiter.options.verbs || this.limiter.options.verbs.includes(verb))) {
      const l = this.limiter;
      const now = Date.now();
      l.tokens = Math.min(l.options.burst, l.tokens + ((now - l.last) / 1000) * l.options.qps);
      l.last = now;
      if (l.tokens < 1) {
        this.counters.rateLimited++;
        const retry = l.options.retryAfterSeconds ?? 1;
        return new Err(429, 'TooManyRequests', 'too many requests, please try again later', { retryAfterSeconds: retry });
      }
      l.tokens -= 1;
    }
    if (this.failCount > 0 && Faults.applies(this.failOptions, verb, resource)) {
      this.failCount--;
      return this.injected(this.failOptions.code ?? 500);
    }
    if (this.rate > 0 && Faults.applies(this.rateOptions, verb, resource) && this.random() < this.rate) {
      return this.injected(this.rateOptions.code ?? 500);
    }
    return undefined;
  }

  private injected(code: number): ApiError {
    this.counters.injectedFailures++;
    if (code === 429) return new Err(429, 'TooManyRequests', 'injected: too many requests', { retryAfterSeconds: 1 });
    return new Err(code, 'InternalError', `Internal error occurred: injected failure (kube-sim fault injection)`);
  }
}
