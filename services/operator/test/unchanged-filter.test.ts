import type { V1Node } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { heartbeat, realisticNode } from '@sluice/kube-objects';
import { UnchangedEventFilter } from '../src/unchanged-filter.ts';

const T0 = new Date('2026-03-01T00:00:00Z');

function node(labels: Record<string, string> = {}, rv = 100): V1Node {
  const n = realisticNode({ name: 'node-00042', internalIP: '10.0.0.42', podCIDR: '10.244.42.0/24', labels, now: T0 });
  n.metadata!.resourceVersion = String(rv);
  return n;
}

function tick(n: V1Node, seconds: number, rv: number): V1Node {
  const next = heartbeat(n, new Date(T0.getTime() + seconds * 1000));
  return { ...next, metadata: { ...next.metadata, resourceVersion: String(rv) } };
}

/** One watch event as an API server frames it, decoded as the watch decodes it for the filter. */
const line = (type: string, object: object) => Buffer.from(JSON.stringify({ type, object })).toString('latin1');

/** What the watch does: classify, and remember what it had to decode. */
function feed(filter: UnchangedEventFilter, type: string, object: V1Node) {
  const verdict = filter.classify(line(type, object));
  if (!verdict.unchanged) {
    if (type === 'DELETED') filter.forget(object);
    else filter.remember(JSON.parse(JSON.stringify(object)), verdict.fingerprint);
  }
  return verdict;
}

describe('UnchangedEventFilter', () => {
  it('recognises heartbeats of a known node and hands out their resourceVersion', () => {
    const filter = new UnchangedEventFilter();
    const added = node();
    expect(feed(filter, 'ADDED', added).unchanged).toBe(false);
    for (let i = 1; i <= 5; i++) expect(feed(filter, 'MODIFIED', tick(added, i * 10, 100 + i))).toEqual({ unchanged: true, resourceVersion: String(100 + i) });
    expect(filter.size).toBe(1);
  });

  it('decodes a change a slim record could see: a label, an address, a condition status', () => {
    const filter = new UnchangedEventFilter();
    const base = node();
    feed(filter, 'ADDED', base);
    const relabelled = tick(node({ 'sluice.io/zone': 'b' }), 10, 101);
    expect(feed(filter, 'MODIFIED', relabelled).unchanged).toBe(false);
    // The relabelled state is now the known one: its heartbeats are unchanged, the old state's are not.
    expect(feed(filter, 'MODIFIED', tick(relabelled, 20, 102)).unchanged).toBe(true);
    const moved = tick(relabelled, 30, 103);
    moved.status!.addresses = [{ type: 'InternalIP', address: '10.0.0.99' }];
    expect(feed(filter, 'MODIFIED', moved).unchanged).toBe(false);
    const notReady = tick(moved, 40, 104);
    notReady.status!.conditions = notReady.status!.conditions!.map((c) => (c.type === 'Ready' ? { ...c, status: 'False' } : c));
    expect(feed(filter, 'MODIFIED', notReady).unchanged).toBe(false);
  });

  it('never trusts an object with a label named like a volatile field, so its value changes are decoded', () => {
    const filter = new UnchangedEventFilter();
    const tricky = node({ time: 'a', lastHeartbeatTime: 'b' });
    feed(filter, 'ADDED', tricky);
    expect(filter.size).toBe(0);
    const relabelled = tick(node({ time: 'changed', lastHeartbeatTime: 'b' }), 10, 101);
    expect(feed(filter, 'MODIFIED', relabelled).unchanged).toBe(false);
    expect(feed(filter, 'MODIFIED', tick(relabelled, 20, 102)).unchanged).toBe(false);
  });

  it('forgets a deleted node: the same state added again is decoded', () => {
    const filter = new UnchangedEventFilter();
    const n = node();
    feed(filter, 'ADDED', n);
    expect(feed(filter, 'DELETED', tick(n, 10, 101)).unchanged).toBe(false);
    expect(filter.size).toBe(0);
    expect(feed(filter, 'MODIFIED', tick(n, 20, 102)).unchanged).toBe(false);
  });

  it('stays out of events it cannot fingerprint: bookmarks, other field orders, several resourceVersions', () => {
    const filter = new UnchangedEventFilter();
    const n = node();
    feed(filter, 'ADDED', n);
    expect(filter.classify(line('BOOKMARK', { metadata: { resourceVersion: '200' } }))).toEqual({ unchanged: false, fingerprint: undefined });
    const reordered = Buffer.from(JSON.stringify({ object: tick(n, 10, 101), type: 'MODIFIED' })).toString('latin1');
    expect(filter.classify(reordered)).toEqual({ unchanged: false, fingerprint: undefined });
    const withRef = { ...tick(n, 10, 101), spec: { configSource: { configMap: { name: 'c', namespace: 'kube-system', resourceVersion: '7' } } } };
    expect(filter.classify(line('MODIFIED', withRef))).toEqual({ unchanged: false, fingerprint: undefined });
  });
});
