import { describe, expect, it } from 'vitest';
import { createLogger } from '@sluice/log';
import { createRegistry } from '@sluice/metrics';
import { waitFor } from './proxy.ts';
import { KvWriter, type Fence, type WriteGuard, keySchema, prefixRangeEnd, syncedMarkerValue, type Etcd3 } from '../src/index.ts';
import { realEtcd } from './etcd-fixture.ts';

async function countUnder(client: Etcd3, prefix: string): Promise<number> {
  const key = Buffer.from(prefix);
  const response = await client.kv.range({ key, range_end: prefixRangeEnd(key), count_only: true });
  return Number(response.count);
}

describe('KvWriter against a real etcd', () => {
  const env = realEtcd();
  const log = createLogger({ component: 'test', level: 'silent' });

  it('lands 20,000 upserts from one burst, through an etcd outage, with no error reaching the caller', async () => {
    const { client, etcd } = env;
    const registry = createRegistry();
    const writer = new KvWriter({ client, registry, log }); // the operator's defaults
    const prefix = 'burst/';
    for (let i = 0; i < 20_000; i++) writer.upsert(`${prefix}${String(i).padStart(5, '0')}`, `value-${i}`);
    // Take etcd away in the middle of the burst: transactions fail (unavailable) and must be retried, not dropped.
    await waitFor(() => writer.getStats().transactions >= 20, 30_000, 'the burst to start landing');
    await etcd.pause();
    await new Promise((r) => setTimeout(r, 300));
    await etcd.resume();
    await writer.flush();

    expect(await countUnder(client, prefix)).toBe(20_000);
    const stats = writer.getStats();
    expect(stats).toMatchObject({ writes: 20_000, pending: 0, inFlight: 0, fenced: 0 });
    expect(stats.retries).toBeGreaterThan(0);
    expect(stats.transactions).toBeGreaterThanOrEqual(Math.ceil(20_000 / 128));
    expect(await registry.getSingleMetricAsString('sluice_kv_writes_total')).toContain('sluice_kv_writes_total 20000');
    expect(await registry.getSingleMetricAsString('sluice_kv_txn_ops')).toContain('sluice_kv_txn_ops_bucket{le="128"}');
    expect(await client.get(`${prefix}12345`).string()).toBe('value-12345');
    writer.close();
  });

  it('coalesces, skips unchanged bytes, and after a restart that changes nothing writes nothing; sweeps the rest', async () => {
    const { client } = env;
    const keys = keySchema('sweep-test/');
    const prefix = keys.prefix('pods');
    const first = new KvWriter({ client, log });
    await first.beginSync(prefix);
    for (let i = 0; i < 300; i++) first.upsert(keys.pod('ns', `p${i}`), `v0-${i}`);
    for (let i = 0; i < 300; i++) first.upsert(keys.pod('ns', `p${i}`), `v1-${i}`); // latest wins while queued
    await first.finishSync(prefix, { key: keys.synced('pods'), value: syncedMarkerValue('pods') });
    expect(first.getStats().writes).toBe(301); // 300 pods + the marker, each once
    expect(await client.get(keys.pod('ns', 'p7')).string()).toBe('v1-7');
    first.upsert(keys.pod('ns', 'p7'), 'v1-7');
    await first.flush();
    expect(first.getStats()).toMatchObject({ writes: 301, skipped: 1 });
    first.close();

    // An operator restart that finds nothing changed: not one write, not one delete.
    const revisionBefore = Number((await client.get('anything').exec()).header.revision);
    const second = new KvWriter({ client, log });
    expect((await second.beginSync(prefix)).existing).toBe(300);
    for (let i = 0; i < 300; i++) second.upsert(keys.pod('ns', `p${i}`), `v1-${i}`);
    await second.finishSync(prefix, { key: keys.synced('pods'), value: syncedMarkerValue('pods') });
    expect(second.getStats()).toMatchObject({ writes: 0, deletes: 0, skipped: 301 });
    expect(Number((await client.get('anything').exec()).header.revision)).toBe(revisionBefore);
    second.close();

    // A restart after 100 pods went away and one changed: exactly those writes.
    const third = new KvWriter({ client, log });
    await third.beginSync(prefix);
    for (let i = 0; i < 200; i++) third.upsert(keys.pod('ns', `p${i}`), i === 5 ? 'changed' : `v1-${i}`);
    const { deleted } = await third.finishSync(prefix, { key: keys.synced('pods'), value: syncedMarkerValue('pods') });
    expect(deleted).toBe(100);
    expect(third.getStats()).toMatchObject({ writes: 1, deletes: 100 });
    expect(await countUnder(client, prefix)).toBe(200);
    expect(await client.get(keys.pod('ns', 'p5')).string()).toBe('changed');
    third.close();
  });

  it('recognises bytes etcd holds, whether they come as a string or as bytes, written by it or read from etcd', async () => {
    const { client } = env;
    const prefix = 'same-bytes/';
    const values = { ascii: 'plain', utf8: 'nöde "ü" ✓', empty: '' };
    const first = new KvWriter({ client, log });
    await first.beginSync(prefix);
    for (const [k, v] of Object.entries(values)) first.upsert(`${prefix}${k}`, v);
    await first.finishSync(prefix);
    for (const [k, v] of Object.entries(values)) {
      first.upsert(`${prefix}${k}`, v);
      first.upsert(`${prefix}${k}`, Buffer.from(v));
    }
    // A value with the same length but other bytes is not taken for the one etcd holds.
    first.upsert(`${prefix}utf8`, 'nöde "u" ✓');
    await first.flush();
    expect(first.getStats()).toMatchObject({ writes: 4, skipped: 6 });
    first.close();

    // A new writer knows the values only as read from etcd; then as what it compared them with.
    const second = new KvWriter({ client, log });
    await second.beginSync(prefix);
    second.upsert(`${prefix}ascii`, Buffer.from('plain'));
    second.upsert(`${prefix}utf8`, 'nöde "u" ✓');
    second.upsert(`${prefix}empty`, '');
    second.upsert(`${prefix}empty`, '');
    second.upsert(`${prefix}utf8`, 'nöde "ü" ✓');
    await second.finishSync(prefix);
    expect(second.getStats()).toMatchObject({ writes: 1, skipped: 4, deletes: 0 });
    expect(await client.get(`${prefix}utf8`).string()).toBe('nöde "ü" ✓');
    second.close();
  });

  it('refuses to write under a fence etcd does not hold, keeps the writes, and writes them under a valid one', async () => {
    const { client } = env;
    // A guard the test controls (the election implements the same interface against etcd).
    let fence: Fence | undefined = { key: 'fence-test/leader/1', createRevision: '1' }; // no such key: a deposed leader
    const guard: WriteGuard = { fence: () => fence, whenLeader: async () => undefined };
    const writer = new KvWriter({ client, guard, log });
    writer.upsert('fence-test/data/x', 'from-deposed');
    await waitFor(() => writer.getStats().fenced > 0, 10_000, 'the fenced refusal');
    await new Promise((r) => setTimeout(r, 300));
    expect(await client.get('fence-test/data/x').string()).toBeNull();
    expect(writer.getStats()).toMatchObject({ writes: 0, fenced: 1, pending: 1 }); // refused once, not retried in a loop

    const put = await client.put('fence-test/leader/2').value('me').exec();
    fence = { key: 'fence-test/leader/2', createRevision: put.header.revision };
    await writer.flush();
    expect(await client.get('fence-test/data/x').string()).toBe('from-deposed');
    expect(writer.getStats()).toMatchObject({ writes: 1, fenced: 1, pending: 0 });
    writer.close();
  });
});
