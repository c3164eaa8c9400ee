import { describe, expect, it } from 'vitest';
import { fanout, peerOf, peersForRound, probePlan, roundRing, successors } from '../src/index.ts';

const names = (n: number) => Array.from({ length: n }, (_, i) => `node-${String(i).padStart(5, '0')}`);

describe('probe plan', () => {
  it('keeps the fanout logarithmic and below n', () => {
    expect(fanout(1)).toBe(0);
    expect(fanout(2)).toBe(1);
    expect(fanout(3)).toBe(2);
    expect(fanout(1024)).toBe(10);
    expect(fanout(5000)).toBe(13);
    for (const n of [2, 3, 5, 17, 100, 5000, 20000]) {
      expect(fanout(n)).toBeLessThanOrEqual(Math.max(1, Math.ceil(Math.log2(n))));
      expect(fanout(n)).toBeLessThanOrEqual(n - 1);
    }
  });

  it('meets the goals at 5,000 nodes: ≤ 15 probes/s per node and detection within 10 s', () => {
    const plan = probePlan(5000);
    expect(plan.probesPerSecond).toBeLessThanOrEqual(15);
    expect(plan.detectionMs).toBeLessThanOrEqual(10_000);
    expect(plan.quorum).toBe(3);
  });

  it('caps the quorum at the fanout in small clusters', () => {
    expect(probePlan(2).quorum).toBe(1);
    expect(probePlan(3).quorum).toBe(2);
    expect(probePlan(10).quorum).toBe(3);
  });
});

describe('peer selection', () => {
  it('gives every node exactly k distinct peers and k distinct probers per round, never itself', () => {
    const all = names(257);
    const k = fanout(all.length);
    for (const round of [0, 1, 99]) {
      const ring = roundRing(all, round);
      const inDegree = new Map<string, Set<string>>();
      for (const self of all) {
        const peers = successors(ring, self, k);
        expect(peers).toHaveLength(k);
        expect(new Set(peers).size).toBe(k);
        expect(peers).not.toContain(self);
        for (const p of peers) (inDegree.get(p) ?? inDegree.set(p, new Set()).get(p)!).add(self);
      }
      for (const self of all) expect(inDegree.get(self)?.size).toBe(k);
    }
  });

  it('is the same on every node that knows the same names', () => {
    const all = names(50);
    expect(peersForRound(all, 'node-00007', 12345)).toEqual(peersForRound([...all], 'node-00007', 12345));
  });

  it('rotates so that every pair is covered over time', () => {
    const all = names(40);
    const covered = new Set<string>();
    let rounds = 0;
    while (covered.size < all.length * (all.length - 1) && rounds < 2000) {
      for (const self of all) for (const peer of peersForRound(all, self, rounds)) covered.add(`${self}>${peer}`);
      rounds++;
    }
    expect(covered.size).toBe(all.length * (all.length - 1));
    // The first round alone covers only k of the n−1 peers of each node.
    expect(rounds).toBeGreaterThan(1);
  });
});

describe('peerOf', () => {
  const node = {
    v: 1 as const,
    name: 'node-a',
    labels: {},
    addresses: [{ type: 'InternalIP' as const, ip: 'fd00::1' }, { type: 'InternalIP' as const, ip: '10.0.0.1' }],
    podCIDRs: [],
    ready: 'True' as const,
    healthIPs: ['10.200.0.9'],
  };
  it('takes the IPv4 InternalIP, the ports from the health record and the endpoint IP from either', () => {
    expect(peerOf(node)).toEqual({ name: 'node-a', hostIP: '10.0.0.1', endpointIP: '10.200.0.9' });
    expect(peerOf(node, { v: 1, node: 'node-a', nodeIP: '10.0.0.1', agentPort: 4240, healthIP: '10.200.0.10', healthPort: 4241 })).toEqual({
      name: 'node-a',
      hostIP: '10.0.0.1',
      agentPort: 4240,
      endpointIP: '10.200.0.10',
      endpointPort: 4241,
    });
    expect(peerOf({ ...node, addresses: [] })).toBeUndefined();
    // A node record without addresses yet: the health record's node IP.
    expect(peerOf({ ...node, addresses: [] }, { v: 1, node: 'node-a', nodeIP: '10.0.0.7' })).toEqual({ name: 'node-a', hostIP: '10.0.0.7', endpointIP: '10.200.0.9' });
  });
});
