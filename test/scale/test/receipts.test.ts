/**
 * The split at the operator's receipt: with pods that start Pending, a creation is the pod running with an IP, so its
 * receipt is the first MODIFIED after the ADDED (the ADDED came a start delay earlier and would make the API
 * server's share negative and the operator's look a start delay long).
 */
import { describe, expect, it } from 'vitest';
import { parseReceipts } from '../src/harness.ts';

const log = ['100 A ns/p1', '105 A ns/p2', '1100 M ns/p1', '1105 M ns/p2', '1500 M ns/p1', '2000 D ns/p1', '2100 D ns/p1', ''].join('\n');

describe('parseReceipts', () => {
  it('takes the first MODIFIED after the ADDED as a Pending pod\'s creation, and the first DELETED', () => {
    const r = parseReceipts(log, true);
    expect(r.get('A ns/p1')).toBe(1100);
    expect(r.get('A ns/p2')).toBe(1105);
    expect(r.get('D ns/p1')).toBe(2000);
    expect(r.size).toBe(3);
  });

  it('takes the ADDED itself when pods are created running', () => {
    const r = parseReceipts(log, false);
    expect(r.get('A ns/p1')).toBe(100);
    expect(r.get('A ns/p2')).toBe(105);
    expect(r.get('D ns/p1')).toBe(2000);
  });
});
