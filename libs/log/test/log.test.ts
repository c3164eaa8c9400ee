import { describe, expect, it } from 'vitest';
import { Writable } from 'node:stream';
import { createLogger, RepeatSuppressor } from '../src/index.ts';

function captureLines(): { stream: Writable; lines: () => Record<string, unknown>[] } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, done) {
      chunks.push(String(chunk));
      done();
    },
  });
  return { stream, lines: () => chunks.join('').trim().split('\n').map((l) => JSON.parse(l)) };
}

describe('createLogger', () => {
  it('writes one JSON line per event with component and node fields', () => {
    const { stream, lines } = captureLines();
    const log = createLogger({ component: 'agent', node: 'node-1', level: 'info', destination: stream });
    log.info({ key: 'a' }, 'first');
    log.debug('hidden by level');
    log.child({ requestId: 'r1' }).warn('second');
    const out = lines();
    expect(out).toHaveLength(2);
    expect(out[0]).toMatchObject({ component: 'agent', node: 'node-1', key: 'a', msg: 'first' });
    expect(out[1]).toMatchObject({ component: 'agent', requestId: 'r1', msg: 'second', level: 40 });
  });
});

describe('RepeatSuppressor', () => {
  it('logs the first occurrence, then one line per quiet window with the repeat count', () => {
    let now = 0;
    const suppressor = new RepeatSuppressor(1000, () => now);
    expect(suppressor.shouldLog('etcd-down')).toBe(0);
    now = 10;
    expect(suppressor.shouldLog('etcd-down')).toBeUndefined();
    expect(suppressor.shouldLog('etcd-down')).toBeUndefined();
    expect(suppressor.shouldLog('other')).toBe(0);
    now = 1010;
    expect(suppressor.shouldLog('etcd-down')).toBe(2);
    suppressor.clear('etcd-down');
    now = 1011;
    expect(suppressor.shouldLog('etcd-down')).toBe(0);
  });
});
