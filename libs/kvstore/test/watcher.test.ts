import { execFileSync } from 'node:child_process';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEtcd, type EtcdServer } from '@sluice/etcd-runner';
import { createLogger } from '@sluice/log';
import { createRegistry } from '@sluice/metrics';
import { decodeSlim, encodeSlimString, type SlimNode } from '@sluice/slim';
import { KvWriter, createKvClient, keySchema, watchPrefix, type Etcd3, type WatchEvent } from '../src/index.ts';
import { startProxy, waitFor, type CutProxy } from './proxy.ts';

/** A consumer test double: records every event and the state it would hold. */
function recorder<T>() {
  const events: Array<WatchEvent<T>> = [];
  const state = new Map<string, T>();
  return {
    events,
    state,
    onEvent(event: WatchEvent<T>) {
      events.push(event);
      if (event.type === 'upsert') state.set(event.key, event.value);
      else if (event.type === 'delete') state.delete(event.key);
    },
    count(type: WatchEvent<T>['type'], from = 0) {
      return events.slice(from).filter((e) => e.type === type).length;
    },
  };
}

const text = (_key: string, bytes: Buffer) => bytes.toString();

describe('watchPrefix against a real etcd', () => {
  let etcd: EtcdServer;
  let writer: Etcd3;
  const clients: Etcd3[] = [];
  const proxies: CutProxy[] = [];

  beforeAll(async () => {
    etcd = await startEtcd();
    writer = createKvClient({ endpoints: [etcd.endpoint] });
  });
  afterAll(async () => {
    for (const c of clients) c.close();
    writer?.close();
    for (const p of proxies) await p.close();
    await etcd?.stop();
  });

  it('resumes after etcd stops and restarts: every event exactly once, in order', async () => {
    const client = createKvClient({ endpoints: [etcd.endpoint] });
    clients.push(client);
    const prefix = 'resume/';
    for (let i = 0; i < 5; i++) await writer.put(`${prefix}before-${i}`).value(`v${i}`);
    const consumer = recorder<string>();
    const watch = watchPrefix(client, prefix, { decode: text, onEvent: (e) => consumer.onEvent(e), backoff: { minMs: 100, maxMs: 1000 } });
    await watch.synced;
    expect(consumer.count('upsert')).toBe(5);
    expect(consumer.count('listDone')).toBe(1);
    await writer.put(`${prefix}live-0`).value('x');
    await waitFor(() => consumer.state.has(`${prefix}live-0`), 10_000, 'live event');

    // Check, do not assume, what etcd3 1.1.2 does by itself: a bare etcd3 watcher on the same shared stream.
    const bare: string[] = [];
    let bareReconnected = false;
    const bareWatcher = await client.watch().prefix(prefix).create();
    bareWatcher.on('put', (kv) => bare.push(kv.key.toString()));
    bareWatcher.on('error', () => undefined);

    await etcd.pause();
    await waitFor(() => !watch.status().connected, 10_000, 'the watcher to notice the outage');
    bareWatcher.on('connected', () => (bareReconnected = true));
    await etcd.resume();
    // Written through another client after etcd came back; the watcher may still be in its backoff.
    // Ten single puts, then ten keys in one transaction (one revision shared by ten events), then a delete.
    for (let i = 0; i < 10; i++) await writer.put(`${prefix}after-${i}`).value(`w${i}`);
    const batch = new KvWriter({ client: writer, log: createLogger({ component: 'test', level: 'silent' }) });
    for (let i = 10; i < 20; i++) batch.upsert(`${prefix}after-${i}`, `w${i}`);
    await batch.flush();
    batch.close();
    await writer.delete().key(`${prefix}before-0`);
    await waitFor(() => consumer.state.has(`${prefix}after-19`) && !consumer.state.has(`${prefix}before-0`), 30_000, 'events after resume');
    await new Promise((r) => setTimeout(r, 300)); // a duplicate would arrive right behind

    const afterOutage = consumer.events.filter((e) => e.type !== 'listDone' && e.key.includes('after-'));
    expect(afterOutage.map((e) => (e.type === 'listDone' ? '' : e.key))).toEqual(Array.from({ length: 20 }, (_, i) => `${prefix}after-${i}`));
    const revisions = consumer.events.flatMap((e) => (e.type === 'listDone' ? [] : [e.modRevision]));
    expect(revisions.slice(5)).toEqual([...revisions.slice(5)].sort((a, b) => a - b));
    const delivered = consumer.events.flatMap((e) => (e.type === 'listDone' ? [] : [`${e.key}@${e.modRevision}`]));
    expect(new Set(delivered).size).toBe(delivered.length);
    expect(new Set(revisions.slice(5)).size).toBe(revisions.length - 5 - 9); // the transaction's ten events share one
    expect(consumer.count('delete')).toBe(1);
    expect(consumer.count('listDone')).toBe(1);
    expect(watch.status()).toMatchObject({ synced: true, connected: true, relists: 0 });
    expect(watch.status().retries).toBeGreaterThan(0);

    // etcd3 resumed the bare watcher's stream on its own and it saw the writes made after the restart.
    await waitFor(() => bare.includes(`${prefix}after-19`), 30_000, 'the bare etcd3 watcher to resume');
    expect(bareReconnected).toBe(true);
    await bareWatcher.cancel();
    await watch.stop();
  });

  it('relists after compaction while cut off and emits exactly the differences', async () => {
    const proxy = await startProxy(etcd.endpoint);
    proxies.push(proxy);
    const client = createKvClient({ endpoints: [proxy.endpoint] });
    clients.push(client);
    const prefix = 'compact/';
    for (const k of ['a', 'b', 'c', 'd']) await writer.put(`${prefix}${k}`).value(`${k}1`);
    const consumer = recorder<string>();
    const watch = watchPrefix(client, prefix, { decode: text, onEvent: (e) => consumer.onEvent(e), backoff: { minMs: 100, maxMs: 500 } });
    await watch.synced;
    expect(consumer.count('upsert')).toBe(4);
    const mark = consumer.events.length;

    proxy.cut();
    await waitFor(() => !watch.status().connected, 10_000, 'the watcher to be cut off');
    await writer.put(`${prefix}b`).value('b2'); // changed
    await writer.delete().key(`${prefix}c`); // vanished
    await writer.put(`${prefix}e`).value('e1'); // new
    await writer.put(`${prefix}f`).value('f1'); // came and went: no event at all
    await writer.delete().key(`${prefix}f`);
    await writer.put(`${prefix}d`).value('d2'); // changed twice: one upsert with the last value
    await writer.put(`${prefix}d`).value('d3');
    const head = await writer.put('compact-elsewhere').value('x').exec();
    await writer.kv.compact({ revision: head.header.revision, physical: true });
    proxy.restore();

    await waitFor(() => watch.status().relists >= 1 && watch.status().connected, 30_000, 'the relist');
    await writer.put(`${prefix}g`).value('g1'); // and the watch goes on after the relist
    await waitFor(() => consumer.state.has(`${prefix}g`), 10_000, 'an event after the relist');
    const diff = consumer.events.slice(mark);
    const described = diff.map((e) => (e.type === 'listDone' ? 'listDone' : `${e.type} ${e.key}${e.type === 'upsert' ? `=${e.value}` : ''}`));
    expect(described.sort()).toEqual([`delete ${prefix}c`, `upsert ${prefix}b=b2`, `upsert ${prefix}d=d3`, `upsert ${prefix}e=e1`, `upsert ${prefix}g=g1`].sort());
    expect(Object.fromEntries(consumer.state)).toEqual({ [`${prefix}a`]: 'a1', [`${prefix}b`]: 'b2', [`${prefix}d`]: 'd3', [`${prefix}e`]: 'e1', [`${prefix}g`]: 'g1' });
    await watch.stop();
  });

  it('logs, counts and skips a corrupt value written with etcdctl; the watch goes on', async () => {
    const client = createKvClient({ endpoints: [etcd.endpoint] });
    clients.push(client);
    const keys = keySchema('corrupt-test/');
    const lines: string[] = [];
    const log = createLogger({
      component: 'test',
      level: 'info',
      destination: new Writable({
        write(chunk: Buffer, _enc, done) {
          lines.push(chunk.toString());
          done();
        },
      }),
    });
    const registry = createRegistry();
    const node = (name: string): SlimNode => ({
      v: 1,
      name,
      labels: {},
      addresses: [{ type: 'InternalIP', ip: '10.0.0.1' }],
      podCIDRs: ['10.244.0.0/24'],
      ready: 'True',
      healthIPs: [],
    });
    const consumer = recorder<SlimNode>();
    const watch = watchPrefix(client, keys.prefix('nodes'), {
      name: 'nodes',
      decode: (_key, bytes) => decodeSlim('node', bytes),
      onEvent: (e) => consumer.onEvent(e),
      log,
      registry,
    });
    await watch.synced;
    await writer.put(keys.node('n1')).value(encodeSlimString('node', node('n1')));
    execFileSync('etcdctl', ['--endpoints', etcd.endpoint, 'put', keys.node('bad'), '{"not":"a node"'], { env: { ...process.env, ETCDCTL_API: '3' } });
    await writer.put(keys.node('n2')).value(encodeSlimString('node', node('n2')));
    await waitFor(() => consumer.state.has(keys.node('n2')), 10_000, 'the value after the corrupt one');

    expect([...consumer.state.keys()].sort()).toEqual([keys.node('n1'), keys.node('n2')]);
    expect(watch.status().decodeErrors).toBe(1);
    const metrics = await registry.getSingleMetricAsString('sluice_kv_watch_decode_errors_total');
    expect(metrics).toContain('sluice_kv_watch_decode_errors_total{watch="nodes"} 1');
    await new Promise((r) => setTimeout(r, 100)); // pino writes asynchronously
    const logged = lines.filter((l) => l.includes('undecodable'));
    expect(logged).toHaveLength(1);
    expect(logged[0]).toContain(keys.node('bad'));
    await watch.stop();
  });
});
