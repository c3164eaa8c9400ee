import { describe, expect, it } from 'vitest';
import { seededRandom } from '@sluice/backoff';
import { LineSplitter } from '../src/watch.ts';

describe('LineSplitter', () => {
  it('gives every line whole however the stream is cut, and refuses one longer than the limit', () => {
    const random = seededRandom(21);
    const lines = Array.from({ length: 300 }, (_, i) => `{"n":${i},"pad":"${'x'.repeat(Math.floor(random() * 30_000))}"}`);
    const stream = Buffer.from(lines.join('\n') + '\n');
    const seen: string[] = [];
    // The handler copies (a line is only valid during the call): what a later line reuses must not change it.
    const splitter = new LineSplitter(64 * 1024, (line) => seen.push(line.toString('utf8')));
    for (let at = 0; at < stream.length; ) {
      const size = 1 + Math.floor(random() * 20_000);
      expect(splitter.push(stream.subarray(at, at + size))).toBe(true);
      at += size;
    }
    expect(seen).toEqual(lines);

    const small = new LineSplitter(1000, () => undefined);
    expect(small.push(Buffer.from('x'.repeat(600)))).toBe(true);
    expect(small.push(Buffer.from('y'.repeat(600)))).toBe(false);
  });
});
