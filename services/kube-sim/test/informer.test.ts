import { CoreV1Api, ListWatch, makeInformer, Watch, type V1Node, type V1Pod, ApiException } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { KubeSim } from '../src/index.ts';
import { kubeConfig, readWatch, startSmall, waitFor } from './helpers.ts';

let sim: KubeSim;

beforeAll(async () => {
  sim = await startSmall({ nodes: 4, podsPerNode: 5, windowEvents: 50, bookmarkIntervalMs: 200 });
});
afterAll(async () => {
  await sim.close();
});

describe('@kubernetes/client-node against kube-sim', () => {
  it('an informer lists, then follows adds, updates and deletes', async () => {
    const kc = kubeConfig(sim);
    const api = kc.makeApiClient(CoreV1Api);
    const informer = makeInformer<V1Pod>(kc, '/api/v1/pods', () => api.listPodForAllNamespaces());
    const added: string[] = [];
    const updated: string[] = [];
    const deleted: string[] = [];
    informer.on('add', (p) => added.push(p.metadata!.name!));
    informer.on('update', (p) => updated.push(p.metadata!.name!));
    informer.on('delete', (p) => deleted.push(p.metadata!.name!));
    const errors: unknown[] = [];
    informer.on('error', (e) => errors.push(e));
    await informer.start();
    try {
      expect(added).toHaveLength(20);
      const pod = sim.cluster.createPod({ nodeName: 'node-00001' });
      sim.cluster.setPodPhase(pod.namespace, pod.name, 'Failed');
      sim.cluster.deletePod(pod.namespace, pod.name);
      await waitFor(() => deleted.includes(pod.name));
      expect(added).toContain(pod.name);
      expect(updated).toContain(pod.name);
      expect(informer.list()).toHaveLength(20);
      expect(errors).toEqual([]);
    } finally {
      await informer.stop();
    }
  });

  it('resumes a watch from a resourceVersion and gets exactly the missed events', async () => {
    const rv = sim.store.resourceVersion;
    const a = sim.cluster.createPod({ nodeName: 'node-00002' });
    sim.cluster.labelNode('node-00002', { resumed: 'true' });
    const b = sim.cluster.createPod({ nodeName: 'node-00003' });
    const events = await readWatch(`${sim.url}/api/v1/pods?watch=true&resourceVersion=${rv}`, (e) => e.length >= 2);
    expect(events.map((e) => [e.type, e.object.metadata.name])).toEqual([['ADDED', a.name], ['ADDED', b.name]]);
    expect(Number(events[1]!.object.metadata.resourceVersion)).toBeGreaterThan(Number(events[0]!.object.metadata.resourceVersion));
  });

  it('sends BOOKMARK events to watchers that allow them', async () => {
    const kc = kubeConfig(sim);
    const seen: { type: string; rv: string }[] = [];
    const controller = await new Watch(kc).watch('/api/v1/nodes', { allowWatchBookmarks: true, resourceVersion: String(sim.store.resourceVersion) },
      (type, obj: V1Node) => seen.push({ type, rv: obj.metadata?.resourceVersion ?? '' }), () => undefined);
    try {
      await waitFor(() => seen.some((e) => e.type === 'BOOKMARK'));
      const bookmark = seen.find((e) => e.type === 'BOOKMARK')!;
      expect(Number(bookmark.rv)).toBeGreaterThan(0);
    } finally {
      controller.abort();
    }
  });

  it('answers a watch from a resourceVersion older than the window with a 410 ERROR event, and the informer relists', async () => {
    const old = sim.store.resourceVersion;
    for (let i = 0; i < 60; i++) sim.cluster.labelNode('node-00004', { round: String(i) });
    const events = await readWatch(`${sim.url}/api/v1/nodes?watch=true&resourceVersion=${old}`, () => false);
    expect(events).toHaveLength(1);
    expect(events[0]!.type).toBe('ERROR');
    expect(events[0]!.object).toMatchObject({ kind: 'Status', code: 410, reason: 'Expired' });

    // ListWatch handles 410 by relisting: start it from a stale resourceVersion by closing its watch after a burst.
    const kc = kubeConfig(sim);
    const api = kc.makeApiClient(CoreV1Api);
    let lists = 0;
    const lw = new ListWatch<V1Node>('/api/v1/nodes', new Watch(kc), async () => {
      lists++;
      return api.listNode();
    }, false);
    const errors: unknown[] = [];
    lw.on('error', (e) => errors.push(e));
    await lw.start();
    try {
      await waitFor(() => sim.stats().watchers.some((w) => w.resource === 'nodes'));
      expect(lists).toBe(1);
      // Let its resourceVersion fall out of the window while its watch is cut.
      sim.store.closeAllWatches();
      for (let i = 0; i < 60; i++) sim.cluster.labelNode('node-00003', { round: String(i) });
      await waitFor(() => lists >= 2, 15_000);
      await waitFor(() => lw.get('node-00003')?.metadata?.labels?.round === '59');
      expect(errors).toEqual([]);
    } finally {
      await lw.stop();
    }
  });

  it('answers an update with a stale resourceVersion with 409 Conflict', async () => {
    const api = kubeConfig(sim).makeApiClient(CoreV1Api);
    const node = await api.readNode({ name: 'node-00001' });
    node.metadata!.labels = { ...node.metadata!.labels, first: 'yes' };
    const updated = await api.replaceNode({ name: 'node-00001', body: node });
    expect(Number(updated.metadata!.resourceVersion)).toBeGreaterThan(Number(node.metadata!.resourceVersion));
    node.metadata!.labels = { ...node.metadata!.labels, second: 'yes' };
    const err = await api.replaceNode({ name: 'node-00001', body: node }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiException);
    expect((err as ApiException<string>).code).toBe(409);
    expect(JSON.parse((err as ApiException<string>).body)).toMatchObject({ kind: 'Status', reason: 'Conflict', code: 409 });
  });

  it('paginates with limit/continue consistently while objects change', async () => {
    const api = kubeConfig(sim).makeApiClient(CoreV1Api);
    const before = new Set(sim.store.objectsIn('pods').map((p) => p.key));
    const first = await api.listPodForAllNamespaces({ limit: 7 });
    expect(first.items).toHaveLength(7);
    expect(first.metadata?._continue).toBeTruthy();
    const rv = first.metadata!.resourceVersion;
    // Change the set between pages: the rest of the list must still be the snapshot at the first page's resourceVersion.
    const added = sim.cluster.createPod({ nodeName: 'node-00001' });
    const victim = [...before].sort().at(-1)!.split('/');
    sim.cluster.deletePod(victim[0]!, victim[1]!);
    const names = first.items.map((p) => `${p.metadata!.namespace}/${p.metadata!.name}`);
    let token = first.metadata!._continue;
    while (token) {
      const page = await api.listPodForAllNamespaces({ limit: 7, _continue: token });
      expect(page.metadata!.resourceVersion).toBe(rv);
      names.push(...page.items.map((p) => `${p.metadata!.namespace}/${p.metadata!.name}`));
      token = page.metadata!._continue;
    }
    expect(new Set(names)).toEqual(before);
    expect(names).toEqual([...names].sort());
    expect(names).not.toContain(added.key);
    const bad = await fetch(`${sim.url}/api/v1/pods?limit=5&continue=garbage`);
    expect(bad.status).toBe(400);
  });

  it('filters lists and watches by label and field selectors (spec.nodeName)', async () => {
    const api = kubeConfig(sim).makeApiClient(CoreV1Api);
    const onNode = await api.listPodForAllNamespaces({ fieldSelector: 'spec.nodeName=node-00004' });
    expect(onNode.items.length).toBe(sim.store.podsOnNode('node-00004').length);
    expect(onNode.items.every((p) => p.spec!.nodeName === 'node-00004')).toBe(true);
    const app = onNode.items[0]!.metadata!.labels!.app!;
    const byLabel = await api.listNamespacedPod({ namespace: onNode.items[0]!.metadata!.namespace!, labelSelector: `app in (${app}),app!=nothing` });
    expect(byLabel.items.length).toBeGreaterThan(0);
    expect(byLabel.items.every((p) => p.metadata!.labels!.app === app)).toBe(true);
    const byName = await api.listNode({ fieldSelector: 'metadata.name=node-00002' });
    expect(byName.items.map((n) => n.metadata!.name)).toEqual(['node-00002']);

    // A watch on one node's pods: a pod that moves off the selection is DELETED for that watcher.
    const rv = sim.store.resourceVersion;
    const pod = sim.cluster.createPod({ nodeName: 'node-00004' });
    sim.store.mutate('pods', pod.namespace, pod.name, (o) => {
      (o.spec as { nodeName: string }).nodeName = 'node-00001';
    });
    const events = await readWatch(`${sim.url}/api/v1/pods?watch=1&resourceVersion=${rv}&fieldSelector=spec.nodeName%3Dnode-00004`, (e) => e.length >= 2);
    expect(events.map((e) => e.type)).toEqual(['ADDED', 'DELETED']);
  });

  it('sendInitialEvents streams the state then an initial-events-end bookmark; timeoutSeconds ends the watch', async () => {
    const events = await readWatch(`${sim.url}/api/v1/nodes?watch=1&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&timeoutSeconds=1`, () => false);
    const names = events.filter((e) => e.type === 'ADDED').map((e) => e.object.metadata.name);
    expect(names).toEqual(['node-00001', 'node-00002', 'node-00003', 'node-00004']);
    const end = events.find((e) => e.type === 'BOOKMARK' && e.object.metadata.annotations?.['k8s.io/initial-events-end'] === 'true');
    expect(end).toBeDefined();
    expect(sim.store.closedWatchers.some((w) => w.resource === 'nodes' && w.closeReason === 'timeoutSeconds elapsed')).toBe(true);
  });

  it('an informer whose list fails with a 500 reports the error and stops (the caller restarts it)', async () => {
    const kc = kubeConfig(sim);
    const api = kc.makeApiClient(CoreV1Api);
    const informer = makeInformer<V1Node>(kc, '/api/v1/nodes', () => api.listNode());
    const errors: unknown[] = [];
    informer.on('error', (e) => errors.push(e));
    sim.faults.failNext(1, { verbs: ['list'], resources: ['nodes'] });
    await informer.start();
    try {
      await waitFor(() => errors.length > 0);
      expect((errors[0] as ApiException<string>).code).toBe(500);
      await informer.start();
      await waitFor(() => informer.list().length === 4);
    } finally {
      await informer.stop();
      sim.faults.reset();
    }
  });
});
