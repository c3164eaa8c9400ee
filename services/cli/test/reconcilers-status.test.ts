import { describe, expect, it } from 'vitest';
import { reconcilersSection } from '../src/status.ts';

const local = (rows: Array<[string, number, number, number, number?]>, conflicts: Record<string, number> = {}) => ({
  etcd: { connected: true, retries: 0, decodeErrors: 0 },
  reconcilers: rows.map(([name, done, pending, error, drift]) => ({ name, rows: { done, pending, error }, driftRepaired: drift ?? 0 })),
  conflicts: { counts: conflicts },
});

describe('sluice status: Reconcilers', () => {
  it('sums rows per target over the agents that answered, and warns on rows in error or refused records', () => {
    const ok = reconcilersSection(new Map([
      ['n1', local([['ipcache-map', 10, 0, 0, 1], ['routes', 2, 0, 0]])],
      ['n2', local([['ipcache-map', 10, 1, 0], ['routes', 2, 0, 0]])],
    ]), 3);
    expect(ok.state).toBe('Ok');
    expect(ok.summary).toBe('2 targets on 2/3 agents: 24 rows done, 1 pending, 0 in error; drift repaired 1; records refused 0');
    const bad = reconcilersSection(new Map([['n1', local([['routes', 1, 0, 2]], { pod_cidr_overlap: 1 })]]), 1);
    expect(bad.state).toBe('Warning');
    expect(bad.summary).toBe('1 targets on 1/1 agents: 1 rows done, 0 pending, 2 in error [routes 2 (n1)]; drift repaired 0; records refused 1');
    expect(reconcilersSection(new Map(), 2).state).toBe('Disabled');
  });
});
