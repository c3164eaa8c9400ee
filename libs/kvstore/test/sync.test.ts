import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEtcd, type EtcdServer } from '@sluice/etcd-runner';
import { createLogger } from '@sluice/log';
import { realEtcd } from './etcd-fixture.ts';
import { startProxy, waitFor, type CutProxy } from './proxy.ts';
import {
  KvWriter,
  createKvClient,
  keySchema,
  parseSyncedMarker,
  syncedMarkerValue,
  watchPrefix,
  watchSyncMarkers,
  type Etcd3,
  type Fence,
  type WriteGuard,
} from '../src/index.ts';

const quiet = createLogger({ component: 'test', level: 'silent' });

/** A log that keeps its lines, to check what a reader says while it waits. */
function recordingLog() {
  const lines: Array<{ msg: string }> = [];
  const log = createLogger({ component: 'test', level: 'info', destination: { write: (line: string) => void lines.push(JSON.parse(line)) } });
  return { log, lines };
}

/** The operator's side, as services/operator does it: mark, assert the desired state, sweep, stamped marker. */
async function operatorSync(client: Etcd3, keys: ReturnType<typeof keySchema>, pods: Map<string, string>, guard?: WriteGuard) {
  const writer = new KvWriter({ client, guard, log: quiet });
  const prefix = keys.prefix('pods');
  await writer.beginSync(prefix, { marker: keys.synced('pods') });
  for (const [name, value] of pods) writer.upsert(keys.pod('default', name), value);
  await writer.finishSync(prefix, { key: keys.synced('pods'), value: (stamp) => syncedMarkerValue('pods', stamp) });
  writer.close();
}

describe('sync markers: term and revision, invalidated by a new term', () => {
  const env = realEtcd();

  it('a term writes its marker after its sweep; the next term deletes it first and writes its own at the end', async () => {
    const { client } = env;
    const keys = keySchema('terms/');
    const term = async (n: number): Promise<{ guard: WriteGuard; fence: Fence }> => {
      const put = await client.put(`terms/leader/${n}`).value('me').exec();
      const fence = { key: `terms/leader/${n}`, createRevision: put.header.revision };
      return { fence, guard: { fence: () => fence, whenLeader: async () => undefined } };
    };
    const pods = new Map(Array.from({ length: 10 }, (_, i) => [`p${i}`, `v${i}`] as const));
    const first = await term(1);
    await operatorSync(client, keys, pods, first.guard);
    const written = parseSyncedMarker((await client.get(keys.synced('pods')).buffer())!)!;
    expect(written).toMatchObject({ kind: 'pods', term: first.fence.createRevision });
    const lastPod = await client.get(keys.pod('default', 'p9')).exec();
    expect(written.revision).toBeGreaterThanOrEqual(Number(lastPod.kvs[0]!.mod_revision));

    const markers = watchSyncMarkers(client, keys, { log: quiet });
    await markers.listed;
    expect(markers.isSynced('pods')).toBe(true);

    // A new term: the marker goes at its mark and comes back, with the new term, at the end of its sweep.
    const second = await term(2);
    const writer = new KvWriter({ client, guard: second.guard, log: quiet });
    await writer.beginSync(keys.prefix('pods'), { marker: keys.synced('pods') });
    expect(await client.get(keys.synced('pods')).string()).toBeNull();
    await waitFor(() => !markers.isSynced('pods'), 10_000, 'readers to see the marker gone');
    for (const [name, value] of pods) writer.upsert(keys.pod('default', name), value);
    await writer.finishSync(keys.prefix('pods'), { key: keys.synced('pods'), value: (stamp) => syncedMarkerValue('pods', stamp) });
    expect((await markers.waitForSync('pods')).term).toBe(second.fence.createRevision);
    expect(writer.getStats()).toMatchObject({ writes: 1, deletes: 1 }); // the marker only: the pods did not change
    writer.close();
    await markers.stop();
  });
});

describe('disaster recovery: etcd replaced by an empty one under a running reader', () => {
  let etcdA: EtcdServer | undefined;
  let etcdB: EtcdServer | undefined;
  let proxy: CutProxy;
  const clients: Etcd3[] = [];
  beforeAll(async () => {
    etcdA = await startEtcd();
    proxy = await startProxy(etcdA.endpoint);
  });
  afterAll(async () => {
    for (const c of clients) c.close();
    await proxy?.close();
    await etcdA?.stop();
    await etcdB?.stop();
  });

  it('waits for the operator\'s sync, does not prune an empty etcd, and after the re-sync changes only what changed', async () => {
    const keys = keySchema('dr/');
    const { log, lines } = recordingLog();
    // The reader (an agent, the health service) reaches etcd through a name that will point at the replacement.
    const reader = createKvClient({ endpoints: [proxy.endpoint], callTimeoutMs: 2000 });
    clients.push(reader);
    const held = new Map<string, string>();
    const changes: string[] = [];
    const deletes: string[] = [];
    let listDone = 0;
    const markers = watchSyncMarkers(reader, keys, { log });
    const watch = watchPrefix<string>(reader, keys.prefix('pods'), {
      name: 'pods',
      log,
      backoff: { minMs: 50, maxMs: 200 },
      completeness: markers.gate('pods'),
      decode: (_key, bytes) => bytes.toString(),
      onEvent: (event) => {
        if (event.type === 'listDone') listDone++;
        else if (event.type === 'upsert') {
          if (held.get(event.key) !== event.value) changes.push(event.key);
          held.set(event.key, event.value);
        } else {
          deletes.push(event.key);
          held.delete(event.key);
        }
      },
    });

    // Before the operator's first sync: listed (nothing), but not called complete.
    await markers.listed;
    await waitFor(() => watch.status().waitingForSync, 10_000, 'the watch to wait for the sync');
    expect(listDone).toBe(0);
    expect(lines.some((l) => /waiting for the operator's sync of pods/.test(l.msg))).toBe(true);

    const writerA = createKvClient({ endpoints: [etcdA!.endpoint] });
    clients.push(writerA);
    const desired = new Map<string, string>(Array.from({ length: 50 }, (_, i) => [`p${i}`, `{"ip":"10.0.0.${i}"}`]));
    await operatorSync(writerA, keys, desired);
    await watch.synced;
    expect(listDone).toBe(1);
    expect(held.size).toBe(50);
    changes.length = 0;

    // Disaster: etcd A is lost; B, empty, takes its place behind the same address.
    etcdB = await startEtcd();
    proxy.cut();
    proxy.retarget(etcdB.endpoint);
    await etcdA!.stop();
    etcdA = undefined;
    proxy.restore();
    await waitFor(() => watch.status().staleKeys === 50, 20_000, 'the reader to relist the empty etcd');
    // Nothing pruned: the reader holds everything and says it is waiting for the operator.
    expect(deletes).toEqual([]);
    expect(held.size).toBe(50);
    expect(watch.status()).toMatchObject({ waitingForSync: true, synced: true });
    await waitFor(() => markers.waiting().includes('pods'), 20_000, 'the marker watch to relist the empty etcd too');
    await waitFor(() => lines.filter((l) => /waiting for the operator's sync of pods/.test(l.msg)).length === 2, 10_000, 'the reader to say it waits again');
    expect(deletes).toEqual([]);

    // The operator re-syncs B: one pod is gone meanwhile, one changed.
    const writerB = createKvClient({ endpoints: [etcdB.endpoint] });
    clients.push(writerB);
    desired.delete('p7');
    desired.set('p3', '{"ip":"10.0.1.3"}');
    await operatorSync(writerB, keys, desired);
    await waitFor(() => !watch.status().waitingForSync, 20_000, 'the reader to accept the re-sync');
    expect(deletes).toEqual([keys.pod('default', 'p7')]);
    expect(changes).toEqual([keys.pod('default', 'p3')]);
    expect(held.size).toBe(49);
    expect(listDone).toBe(1);
    await watch.stop();
    await markers.stop();
  });
});
