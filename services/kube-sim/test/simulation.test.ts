import { seededRandom } from '@sluice/backoff';
import type { V1Node } from '@kubernetes/client-node';
import { heartbeat } from '@sluice/kube-objects';
import { describe, expect, it } from 'vitest';
import { HeartbeatGenerator, Simulation, Store, parseCIDR, intToIpv4 } from '../src/index.ts';

describe('heartbeat generator', () => {
  it('beats each node once per interval ± jitter, driven by an injected clock', () => {
    const beats = new Map<string, number[]>();
    const gen = new HeartbeatGenerator({ intervalMs: 10_000, jitter: 0.1, random: seededRandom(7) }, (name, now) => {
      beats.set(name, [...(beats.get(name) ?? []), now]);
      return true;
    });
    for (let i = 0; i < 500; i++) gen.add(`node-${i}`, 0);
    let total = 0;
    for (let now = 0; now <= 100_000; now += 50) total += gen.tick(now);
    // 500 nodes at one beat per ~10 s over 100 s: about 5,000 beats, i.e. 50 per second.
    expect(total).toBeGreaterThan(4_500);
    expect(total).toBeLessThan(5_600);
    for (const times of beats.values()) {
      for (let i = 1; i < times.length; i++) {
        const gap = times[i]! - times[i - 1]!;
        expect(gap).toBeGreaterThanOrEqual(9_000 - 50);
        expect(gap).toBeLessThanOrEqual(11_000 + 50);
      }
    }
    // Spread over the interval, not in lockstep: the first second holds about a tenth of the first beats.
    const firsts = [...beats.values()].map((t) => t[0]!);
    const early = firsts.filter((t) => t < 1_000).length;
    expect(early).toBeGreaterThan(20);
    expect(early).toBeLessThan(90);
  });

  it('keeps the rate after a late tick and stops beating removed nodes', () => {
    let count = 0;
    const gen = new HeartbeatGenerator({ intervalMs: 1_000, jitter: 0, random: () => 0.5 }, () => {
      count++;
      return true;
    });
    gen.add('a', 0);
    gen.add('b', 0);
    gen.tick(10_250); // one very late tick: catches up only one interval, not ten.
    expect(count).toBeLessThanOrEqual(4);
    count = 0;
    for (let now = 10_300; now <= 20_250; now += 100) gen.tick(now);
    expect(count).toBeGreaterThanOrEqual(18);
    expect(count).toBeLessThanOrEqual(22);
    gen.remove('a');
    count = 0;
    for (let now = 20_300; now <= 30_250; now += 100) gen.tick(now);
    expect(count).toBeGreaterThanOrEqual(9);
    expect(count).toBeLessThanOrEqual(11);
  });

  it('bumps the node resourceVersion and heartbeat times through the store', () => {
    const store = new Store();
    const sim = new Simulation(store, { nodes: 2, podsPerNode: 0, services: 0, heartbeatIntervalMs: 1_000 });
    sim.populate(new Date(0));
    const before = store.get('nodes', '', 'node-00001')!;
    sim.heartbeats.tick(5_000);
    const after = store.getParsed('nodes', '', 'node-00001')!;
    expect(Number(after.metadata!.resourceVersion)).toBeGreaterThan(before.rv);
    const ready = (after.status as { conditions: { type: string; lastHeartbeatTime: string }[] }).conditions.find((c) => c.type === 'Ready')!;
    expect(Date.parse(ready.lastHeartbeatTime)).toBeGreaterThan(0);
    sim.stop();
  });
});

describe('heartbeat writes', () => {
  const expected = (previous: string, now: number, rv: number) => {
    const node = heartbeat(JSON.parse(previous) as V1Node, new Date(now));
    node.metadata!.resourceVersion = String(rv);
    return JSON.stringify(node);
  };

  it('write exactly what heartbeat() and a stringify of the whole Node would, beat after beat and after other writes', () => {
    const store = new Store();
    const sim = new Simulation(store, { nodes: 1, podsPerNode: 0, services: 0, heartbeatIntervalMs: 1_000, heartbeatJitter: 0 });
    sim.populate(new Date(0));
    const events: string[] = [];
    store.onChange((r, e) => {
      if (r.plural === 'nodes') events.push(e.type);
    });
    let previous = store.get('nodes', '', 'node-00001')!.json;
    const check = (now: number) => {
      sim.heartbeats.tick(now);
      const stored = store.get('nodes', '', 'node-00001')!;
      expect(stored.json).toBe(expected(previous, now, stored.rv));
      previous = stored.json;
    };
    // rv 9 → 10 → … → 100+: resourceVersions of other lengths move every later byte.
    for (let now = 1_000; now <= 20_000; now += 1_000) check(now);
    for (let i = 0; i < 100; i++) store.create('namespaces', { metadata: { name: `pad-${i}` } });
    check(21_000);
    // Another writer between two beats: a label (and with it the bytes' layout), a new condition, a new managed field.
    sim.labelNode('node-00001', { 'example.com/team': 'a-much-longer-label-value-than-before' });
    previous = store.get('nodes', '', 'node-00001')!.json;
    check(22_000);
    check(23_000);
    sim.setNodeCondition('node-00001', 'NetworkUnavailable', 'False', 'RouteCreated', 'routes are in place');
    previous = store.get('nodes', '', 'node-00001')!.json;
    check(24_000);
    check(25_000);
    store.patch('nodes', '', 'node-00001', 'merge', { metadata: { managedFields: [{ manager: 'kubectl', operation: 'Update', time: '2026-01-01T00:00:00Z' }] } });
    previous = store.get('nodes', '', 'node-00001')!.json;
    check(26_000);
    check(27_000);
    expect(events.every((t) => t === 'MODIFIED')).toBe(true);
    expect(store.get('nodes', '', 'node-00001')!.labels['example.com/team']).toBe('a-much-longer-label-value-than-before');
    sim.stop();
  });

  it('spread a backlog of due beats over ticks when given a time budget', () => {
    let count = 0;
    const gen = new HeartbeatGenerator({ intervalMs: 10_000, jitter: 0, random: () => 0.5 }, () => {
      const until = performance.now() + 0.2;
      while (performance.now() < until);
      count++;
      return true;
    });
    for (let i = 0; i < 200; i++) gen.add(`node-${i}`, 0);
    // Every node is due (a bulk load that took longer than an interval): a 2 ms budget takes a few of them per tick.
    const first = gen.tick(60_000, 2);
    expect(first).toBeGreaterThan(0);
    expect(first).toBeLessThan(200);
    let ticks = 1;
    while (count < 200 && ticks < 1_000) {
      gen.tick(60_000, 2);
      ticks++;
    }
    expect(count).toBe(200);
    expect(ticks).toBeGreaterThan(1);
    // Caught up: nothing is due twice.
    expect(gen.tick(60_000)).toBe(0);
  });
});

describe('simulated cluster', () => {
  it('carves podCIDRs from the cluster CIDR and gives pods IPs from their node podCIDR, deterministically', () => {
    const build = () => {
      const store = new Store();
      const sim = new Simulation(store, { nodes: 5, podsPerNode: 6, services: 3, namespaces: 2, clusterCIDR: '10.200.0.0/16', nodeCIDRMaskSize: 26, seed: 42 });
      sim.populate(new Date('2026-01-01T00:00:00Z'));
      return { store, sim };
    };
    const { store, sim } = build();
    const cidrs = new Set<string>();
    for (const n of store.objectsIn('nodes')) {
      const node = JSON.parse(n.json) as { spec: { podCIDR: string }; status: { addresses: { type: string; address: string }[] } };
      expect(node.spec.podCIDR).toMatch(/^10\.200\.\d+\.\d+\/26$/);
      cidrs.add(node.spec.podCIDR);
      expect(n.json.length).toBeGreaterThan(10_000);
      expect(n.json.length).toBeLessThan(20_000);
      const { base } = parseCIDR(node.spec.podCIDR);
      for (const p of store.podsOnNode(n.name)) {
        const ip = (JSON.parse(p.json) as { status: { podIP: string } }).status.podIP;
        const n32 = ip.split('.').reduce((a, x) => a * 256 + Number(x), 0);
        expect(n32 - base).toBeGreaterThan(1);
        expect(n32 - base).toBeLessThan(63);
      }
    }
    expect(cidrs.size).toBe(5);
    expect(store.count('pods')).toBe(30);
    const again = build();
    expect(again.store.objectsIn('pods').map((p) => p.key).sort()).toEqual(store.objectsIn('pods').map((p) => p.key).sort());
    expect(intToIpv4(parseCIDR('10.200.0.77/16').base)).toBe('10.200.0.0');
    sim.stop();
    again.sim.stop();
  });

  it('keeps EndpointSlices consistent with pods under churn', () => {
    const store = new Store();
    const sim = new Simulation(store, { nodes: 6, podsPerNode: 40, services: 2, namespaces: 1, emptyNodes: 2, seed: 3 });
    sim.populate();
    for (let i = 0; i < 400; i++) sim.churnOnce();
    const p = store.objectsIn('pods')[0]!;
    sim.setPodPhase(p.namespace, p.name, 'Failed');
    for (const svc of ['svc-0', 'svc-1']) {
      const expected = store.objectsIn('pods', 'ns-0')
        .map((o) => JSON.parse(o.json) as { metadata: { labels: { app: string } }; status: { podIP?: string; phase: string } })
        .filter((o) => o.metadata.labels.app === svc && o.status.podIP && o.status.phase === 'Running')
        .map((o) => o.status.podIP!).sort();
      const slices = store.objectsIn('endpointslices', 'ns-0').map((s) => JSON.parse(s.json) as {
        metadata: { labels: Record<string, string> }; endpoints: { addresses: string[] }[];
      }).filter((s) => s.metadata.labels['kubernetes.io/service-name'] === svc);
      expect(slices.every((s) => s.endpoints.length <= 100)).toBe(true);
      expect(slices.flatMap((s) => s.endpoints.flatMap((e) => e.addresses)).sort()).toEqual(expected);
      expect(expected.length).toBeGreaterThan(100);
    }
    // Empty nodes carry no pods until something binds to them.
    expect(store.podsOnNode('node-00007')).toHaveLength(0);
    sim.stop();
  });

  it('rewrites a slice from its template with the very bytes a full re-encoding gives', () => {
    const store = new Store();
    const sim = new Simulation(store, { nodes: 4, podsPerNode: 50, services: 2, namespaces: 1, seed: 9 });
    sim.populate();
    type Slice = { metadata: Record<string, unknown>; endpoints: unknown[]; ports: unknown };
    type Pod = { metadata: { name: string }; spec: { nodeName: string }; status: { podIP: string } };
    let checked = 0;
    const off = store.onChange((r, e) => {
      if (r.plural !== 'endpointslices' || e.type !== 'MODIFIED' || !e.previous) return;
      const text = e.object.json;
      const next = JSON.parse(text) as Slice;
      // What the slow way writes: the version before, resourceVersion and endpoints replaced, stringified whole.
      const previous = JSON.parse(e.previous.json) as Slice;
      previous.metadata = { ...previous.metadata, resourceVersion: String(e.rv) };
      previous.endpoints = next.endpoints;
      expect(text).toBe(JSON.stringify(previous));
      // And each endpoint is its pod as it is now.
      for (const ep of next.endpoints as { addresses: string[]; nodeName: string; targetRef: { name: string } }[]) {
        const pod = JSON.parse(store.get('pods', 'ns-0', ep.targetRef.name)!.json) as Pod;
        expect([ep.addresses, ep.nodeName]).toEqual([[pod.status.podIP], pod.spec.nodeName]);
      }
      checked++;
    });
    for (let i = 0; i < 300; i++) sim.churnOnce();
    for (const p of store.objectsIn('pods').slice(0, 20)) sim.flipReadiness(p.namespace, p.name);
    off();
    // Nearly every rewrite took the template; the first write of each slice learnt it.
    const { templated, reencoded } = sim.endpoints.counters;
    expect(checked).toBe(templated + reencoded);
    expect(templated).toBeGreaterThan(250);
    expect(reencoded).toBeLessThanOrEqual(store.count('endpointslices') + 2);
    sim.stop();
  });

  it('flips a running pod\'s readiness: its endpoint turns not ready and back, and a pod without an IP is left alone', async () => {
    const store = new Store();
    const sim = new Simulation(store, { nodes: 2, podsPerNode: 3, services: 1, namespaces: 1, seed: 5 });
    sim.populate();
    const ready = (ip: string) => store.objectsIn('endpointslices', 'ns-0')
      .flatMap((s) => (JSON.parse(s.json) as { endpoints: { addresses: string[]; conditions: { ready?: boolean } }[] }).endpoints)
      .find((e) => e.addresses.includes(ip))?.conditions.ready;
    const pod = store.objectsIn('pods', 'ns-0')[0]!;
    const ip = pod.fields['status.podIP']!;
    expect(ready(ip)).toBe(true);
    expect(sim.flipReadiness(pod.namespace, pod.name)).toBeDefined();
    expect(ready(ip)).toBe(false);
    sim.flipReadiness(pod.namespace, pod.name);
    expect(ready(ip)).toBe(true);
    const pending = sim.createPod({ nodeName: 'node-00001', phase: 'Pending' });
    const rv = pending.rv;
    expect(sim.flipReadiness(pending.namespace, pending.name)).toBeUndefined();
    expect(store.get('pods', pending.namespace, pending.name)!.rv).toBe(rv);
    // At 50 flips a second, a fifth of a second makes several EndpointSlice changes.
    const before = store.objectsIn('endpointslices', 'ns-0').map((s) => s.rv).join();
    sim.startReadinessFlips(50, 20);
    await new Promise((resolve) => setTimeout(resolve, 200));
    sim.stopReadinessFlips();
    expect(store.objectsIn('endpointslices', 'ns-0').map((s) => s.rv).join()).not.toBe(before);
    sim.stop();
  });

  it('keeps a watch window bounded and answers 410 for resourceVersions that left it', () => {
    const store = new Store({ windowEvents: 10 });
    const sim = new Simulation(store, { nodes: 1, podsPerNode: 0, services: 0 });
    sim.populate();
    const start = store.resourceVersion;
    for (let i = 0; i < 30; i++) sim.labelNode('node-00001', { i: String(i) });
    expect(store.windowStats().nodes!.events).toBe(10);
    const chunks: string[] = [];
    const sink = { write: (b: Buffer) => chunks.push(b.toString()), backlog: () => 0, end: () => undefined };
    const w = store.watch('nodes', { resourceVersion: String(start) }, sink);
    expect(w.closed).toBe(true);
    expect(JSON.parse(chunks[0]!)).toMatchObject({ type: 'ERROR', object: { code: 410 } });
    chunks.length = 0;
    store.watch('nodes', { resourceVersion: String(store.resourceVersion - 5) }, sink);
    expect(chunks).toHaveLength(5);
    sim.stop();
  });

  it('closes a watcher that falls too far behind instead of buffering without bound', () => {
    const store = new Store({ maxWatcherBacklogBytes: 100_000 });
    const sim = new Simulation(store, { nodes: 3, podsPerNode: 0, services: 0 });
    sim.populate();
    let buffered = 0;
    let ended = false;
    const slow = store.watch('nodes', { resourceVersion: String(store.resourceVersion) }, {
      write: (b) => (buffered += b.length), backlog: () => buffered, end: () => (ended = true),
    });
    for (let i = 0; i < 30; i++) sim.labelNode('node-00001', { i: String(i) });
    expect(slow.closed).toBe(true);
    expect(ended).toBe(true);
    expect(buffered).toBeLessThan(100_000 + 20_000);
    expect(store.counters.droppedWatchers).toBe(1);
    sim.stop();
  });

  it('creates, updates and deletes EndpointSlices as services and pod labels change', () => {
    const store = new Store();
    const sim = new Simulation(store, { nodes: 2, podsPerNode: 0, services: 0, namespaces: 1 });
    sim.populate();
    const a = sim.createPod({ namespace: 'default', nodeName: 'node-00001', labels: { app: 'web' } });
    sim.createPod({ namespace: 'default', nodeName: 'node-00002', labels: { app: 'web' } });
    sim.createPod({ namespace: 'default', nodeName: 'node-00002', labels: { app: 'db' } });
    const svc = sim.createService({ namespace: 'default', name: 'web', selector: { app: 'web' } });
    expect((JSON.parse(svc.json) as { spec: { clusterIP: string } }).spec.clusterIP).toMatch(/^10\.(9[6-9]|1[01]\d)\./);
    const ips = () => store.objectsIn('endpointslices', 'default')
      .flatMap((s) => (JSON.parse(s.json) as { endpoints: { addresses: string[] }[] }).endpoints.flatMap((e) => e.addresses)).sort();
    expect(ips()).toHaveLength(2);
    expect(sim.endpoints.endpointsOf('default', 'web')).toHaveLength(2);
    store.mutate('pods', 'default', a.name, (o) => {
      o.metadata!.labels = { app: 'other' };
    });
    expect(ips()).toHaveLength(1);
    store.delete('services', 'default', 'web');
    expect(store.objectsIn('endpointslices', 'default')).toHaveLength(0);
    sim.stop();
  });
});
