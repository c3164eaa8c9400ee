import { describe, expect, it } from 'vitest';
import { Backoff, clusterSizeBackoff, clusterSizeInterval, RateLimiter, retry, seededRandom as seeded } from '../src/index.ts';


describe('Backoff', () => {
  it('grows the ceiling exponentially up to the maximum and keeps every delay in [min, ceiling]', () => {
    const backoff = new Backoff({ minMs: 100, maxMs: 5000, factor: 2, random: seeded(1) });
    const ceilings = [100, 200, 400, 800, 1600, 3200, 5000, 5000];
    for (const ceiling of ceilings) {
      expect(backoff.ceilingMs()).toBe(ceiling);
      const delay = backoff.nextDelayMs();
      expect(delay).toBeGreaterThanOrEqual(100);
      expect(delay).toBeLessThanOrEqual(ceiling);
    }
  });

  it('uses the extremes of the random source as the bounds', () => {
    expect(new Backoff({ minMs: 50, maxMs: 1000, random: () => 0 }).nextDelayMs()).toBe(50);
    const top = new Backoff({ minMs: 50, maxMs: 1000, random: () => 0.999999 });
    top.nextDelayMs();
    top.nextDelayMs();
    expect(top.nextDelayMs()).toBeCloseTo(200, 2);
  });

  it('spreads delays uniformly over [min, ceiling]', () => {
    const random = seeded(42);
    const samples: number[] = [];
    for (let i = 0; i < 20_000; i++) {
      const backoff = new Backoff({ minMs: 100, maxMs: 10_000, random });
      backoff.nextDelayMs();
      backoff.nextDelayMs();
      backoff.nextDelayMs();
      samples.push(backoff.nextDelayMs()); // attempt 3: uniform in [100, 800]
    }
    const mean = samples.reduce((a, b) => a + b, 0) / samples.length;
    expect(mean).toBeGreaterThan(440);
    expect(mean).toBeLessThan(460);
    const quarters = [0, 0, 0, 0];
    for (const s of samples) quarters[Math.min(3, Math.floor(((s - 100) / 700) * 4))]!++;
    for (const q of quarters) expect(q / samples.length).toBeCloseTo(0.25, 1);
  });

  it('starts again from the minimum after reset', () => {
    const backoff = new Backoff({ minMs: 10, maxMs: 1000, random: () => 1 });
    backoff.nextDelayMs();
    backoff.nextDelayMs();
    expect(backoff.ceilingMs()).toBe(40);
    backoff.reset();
    expect(backoff.attempts).toBe(0);
    expect(backoff.ceilingMs()).toBe(10);
  });

  it('rejects nonsensical bounds', () => {
    expect(() => new Backoff({ minMs: 0, maxMs: 10 })).toThrow(/minMs/);
    expect(() => new Backoff({ minMs: 20, maxMs: 10 })).toThrow(/maxMs/);
    expect(() => new Backoff({ minMs: 1, maxMs: 10, factor: 0.5 })).toThrow(/factor/);
  });
});

describe('clusterSizeInterval', () => {
  it('scales the base by ln(1+n), never below the base', () => {
    expect(clusterSizeInterval(1000, 0)).toBe(1000);
    expect(clusterSizeInterval(1000, 1)).toBe(1000);
    expect(clusterSizeInterval(1000, 5000)).toBeCloseTo(1000 * Math.log(5001), 6);
    expect(clusterSizeInterval(1000, 5000) / clusterSizeInterval(1000, 10)).toBeCloseTo(Math.log(5001) / Math.log(11), 6);
  });

  it('raises the floor of a backoff for large clusters', () => {
    const backoff = clusterSizeBackoff({ minMs: 100, maxMs: 200, clusterSize: 5000, random: () => 0 });
    expect(backoff.nextDelayMs()).toBeCloseTo(100 * Math.log(5001), 6);
  });

  it('raises the ceiling the same way, so that a large fleet is back within maxMs·ln(1+n) of an outage', () => {
    const backoff = clusterSizeBackoff({ minMs: 100, maxMs: 1000, clusterSize: 5000, random: () => 1 });
    const delays = Array.from({ length: 12 }, () => backoff.nextDelayMs());
    expect(Math.max(...delays)).toBeCloseTo(1000 * Math.log(5001), 6);
    expect(delays.at(-1)).toBeCloseTo(1000 * Math.log(5001), 6);
  });
});

describe('retry', () => {
  it('retries retryable errors with backoff and returns the eventual result', async () => {
    let calls = 0;
    const retried: number[] = [];
    const result = await retry(
      async () => {
        if (++calls < 4) throw new Error('etcdserver: too many requests');
        return 'ok';
      },
      {
        backoff: new Backoff({ minMs: 1, maxMs: 2 }),
        retryable: (err) => /too many requests/.test(String(err)),
        onRetry: (_err, attempt) => retried.push(attempt),
      },
    );
    expect(result).toBe('ok');
    expect(calls).toBe(4);
    expect(retried).toEqual([1, 2, 3]);
  });

  it('throws a non-retryable error at once, and a retryable one after maxRetries', async () => {
    let calls = 0;
    await expect(
      retry(async () => { calls++; throw new Error('permission denied'); }, { backoff: new Backoff({ minMs: 1, maxMs: 1 }), retryable: () => false }),
    ).rejects.toThrow('permission denied');
    expect(calls).toBe(1);
    calls = 0;
    await expect(
      retry(async () => { calls++; throw new Error('unavailable'); }, { backoff: new Backoff({ minMs: 1, maxMs: 1 }), retryable: () => true, maxRetries: 2 }),
    ).rejects.toThrow('unavailable');
    expect(calls).toBe(3);
  });
});

describe('RateLimiter', () => {
  it('never runs more than maxInFlight operations at once and runs them all', async () => {
    const limiter = new RateLimiter({ qps: 100_000, burst: 1000, maxInFlight: 3 });
    let running = 0;
    let peak = 0;
    const results = await Promise.all(
      Array.from({ length: 30 }, (_, i) =>
        limiter.run(async () => {
          running++;
          peak = Math.max(peak, running);
          await new Promise((r) => setImmediate(r));
          running--;
          return i;
        }),
      ),
    );
    expect(results).toEqual(Array.from({ length: 30 }, (_, i) => i));
    expect(peak).toBe(3);
  });

  it('rejects a zero or negative limit', () => {
    expect(() => new RateLimiter({ qps: 0, burst: 1, maxInFlight: 1 })).toThrow(/qps/);
    expect(() => new RateLimiter({ qps: 1, burst: 1, maxInFlight: -1 })).toThrow(/maxInFlight/);
  });
});
