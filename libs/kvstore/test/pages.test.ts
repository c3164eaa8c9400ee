/**
 * Lists sized by bytes: etcd walks the rest of the prefix for every page whatever its limit, so a list asks for few,
 * full pages — and a prefix of large values still gets pages of a few MiB, not thousands of its values at once.
 */
import { describe, expect, it } from 'vitest';
import { createLogger } from '@sluice/log';
import { PageSizer, watchPrefix, type WatchEvent } from '../src/index.ts';
import { realEtcd } from './etcd-fixture.ts';

const log = createLogger({ component: 'test', level: 'silent' });

describe('PageSizer', () => {
  it('asks for the first size, then for as many keys as fill the target at the average size seen', () => {
    const pages = new PageSizer({ firstKeys: 1000, targetBytes: 4 * 1024 * 1024, maxKeys: 20_000 });
    expect(pages.limit).toBe(1000);
    pages.observe(1000, 400_000); // slim pods, ~400 B
    expect(pages.limit).toBe(Math.floor((4 * 1024 * 1024) / 400));
    const slices = new PageSizer({ firstKeys: 1000, targetBytes: 4 * 1024 * 1024 });
    slices.observe(1000, 10_000_000); // EndpointSlices of 100 endpoints, ~10 KB
    expect(slices.limit).toBe(419);
    const tiny = new PageSizer({ maxKeys: 20_000 });
    tiny.observe(1000, 20_000);
    expect(tiny.limit).toBe(20_000);
  });

  it('keeps a fixed size when given a number, and refuses a size below one', () => {
    const fixed = new PageSizer(10);
    fixed.observe(10, 10);
    expect(fixed.limit).toBe(10);
    expect(() => new PageSizer({ firstKeys: 0 })).toThrow(RangeError);
  });
});

describe('a watch lists in pages sized by bytes', () => {
  const server = realEtcd();

  it('delivers every key once, small and large values alike, with the limits the sizer chose', async () => {
    const client = server.client;
    const big = 'x'.repeat(50_000);
    for (let i = 0; i < 300; i++) await client.put(`small/k${String(i).padStart(3, '0')}`).value(`v${i}`);
    for (let i = 0; i < 40; i++) await client.put(`large/k${String(i).padStart(2, '0')}`).value(`${big}${i}`);
    const kv = client.kv as unknown as { range: (req: { limit?: number | string }) => Promise<unknown> };
    const original = kv.range.bind(client.kv);
    const limits: number[] = [];
    kv.range = (req) => {
      if (req.limit) limits.push(Number(req.limit));
      return original(req);
    };
    try {
      for (const [prefix, count] of [['small/', 300], ['large/', 40]] as const) {
        limits.length = 0;
        const events: Array<WatchEvent<string>> = [];
        const watch = watchPrefix<string>(client, prefix, { log, pageSize: { firstKeys: 4, targetBytes: 250_000 }, decode: (_k, b) => b.toString(), onEvent: (e) => events.push(e) });
        await watch.synced;
        await watch.stop();
        const keys = events.filter((e) => e.type === 'upsert').map((e) => e.key);
        expect(new Set(keys).size).toBe(count);
        expect(keys).toHaveLength(count);
        expect(limits[0]).toBe(4);
        if (prefix === 'small/') expect(limits.slice(1)).toEqual([20_000]); // ~11 B a key: the rest in one page
        else expect(limits.slice(1).every((l) => l === 4)).toBe(true); // ~50 KB a key: 5 keys would pass 250 KB
      }
    } finally {
      kv.range = original;
    }
  });
});
