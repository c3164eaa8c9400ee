import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { growingPercent, keepHeapHeadroom } from '../src/heap-headroom.ts';

const MiB = 2 ** 20;

describe('heap headroom', () => {
  it('turns a fixed headroom into the growing percent of the heap kept', () => {
    expect(growingPercent(64 * MiB, 32 * MiB)).toBe(50);
    expect(growingPercent(256 * MiB, 32 * MiB)).toBe(13);
    // A tiny heap may at most double; a huge one keeps V8's smallest sensible step.
    expect(growingPercent(4 * MiB, 32 * MiB)).toBe(100);
    expect(growingPercent(4096 * MiB, 32 * MiB)).toBe(5);
    expect(growingPercent(0, 32 * MiB)).toBe(100);
  });

  it('sets the percent at once and again after each full collection whose heap asks for another', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const applied: number[] = [];
    let live = 64 * MiB;
    const headroom = keepHeapHeadroom(32 * MiB, (percent) => applied.push(percent), () => live);
    try {
      expect(applied).toEqual([50]);
      live = 128 * MiB;
      gc();
      await expect.poll(() => applied, { timeout: 5_000 }).toEqual([50, 25]);
      expect(headroom.percent).toBe(25);
      // The same heap after the next collection: nothing to change.
      gc();
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(applied).toEqual([50, 25]);
    } finally {
      headroom.stop();
    }
    live = 32 * MiB;
    gc();
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(applied).toEqual([50, 25]);
  });
});
