import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEtcd, type EtcdServer } from '@sluice/etcd-runner';
import { createLogger } from '@sluice/log';
import { startProxy, waitFor, type CutProxy } from './proxy.ts';
import { createKvClient, watchPrefix, type Etcd3 } from '../src/index.ts';

const log = createLogger({ component: 'test', level: 'silent' });

describe('watch progress notifications', () => {
  let etcd: EtcdServer;
  let proxy: CutProxy;
  const clients: Etcd3[] = [];
  beforeAll(async () => {
    etcd = await startEtcd({ watchProgressNotifyIntervalMs: 300 });
    proxy = await startProxy(etcd.endpoint);
  });
  afterAll(async () => {
    for (const c of clients) c.close();
    await proxy?.close();
    await etcd?.stop();
  });

  it('keep a quiet prefix\'s revision fresh, so that a reconnect after a compaction resumes instead of relisting', async () => {
    const direct = createKvClient({ endpoints: [etcd.endpoint] });
    const watchClient = createKvClient({ endpoints: [proxy.endpoint], callTimeoutMs: 2000 });
    clients.push(direct, watchClient);
    await direct.put('quiet/only').value('1');
    const events: string[] = [];
    const watch = watchPrefix<string>(watchClient, 'quiet/', { log, backoff: { minMs: 50, maxMs: 200 }, decode: (_k, b) => b.toString(), onEvent: (e) => events.push(e.type) });
    await watch.synced;
    const listedAt = watch.status().revision;

    // Everything else in etcd moves on; nothing under quiet/ changes.
    for (let i = 0; i < 50; i++) await direct.put(`busy/${i}`).value(String(i));
    const now = Number((await direct.get('busy/49').exec()).header.revision);
    await waitFor(() => watch.status().revision >= now, 10_000, 'a progress notification to carry the current revision');
    expect(listedAt).toBeLessThan(now);

    // The watch loses its connection while etcd compacts past where it was listed.
    proxy.cut();
    await direct.kv.compact({ revision: String(now) });
    proxy.restore();
    await waitFor(() => watch.status().retries > 0 && watch.status().connected, 20_000, 'the watch to reconnect');
    await direct.put('quiet/second').value('2');
    await waitFor(() => events.filter((t) => t === 'upsert').length === 2, 10_000, 'the new event');
    expect(watch.status().relists).toBe(0);
    expect(events).toEqual(['upsert', 'listDone', 'upsert']);
    await watch.stop();
  });
});
