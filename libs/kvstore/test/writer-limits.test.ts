import { describe, expect, it } from 'vitest';
import { createLogger } from '@sluice/log';
import { createRegistry } from '@sluice/metrics';
import { KvWriter, keySchema, prefixRangeEnd, syncedMarkerValue, type Etcd3 } from '../src/index.ts';
import { realEtcd } from './etcd-fixture.ts';

const log = createLogger({ component: 'test', level: 'silent' });
const keys = keySchema('limits/');

async function countUnder(client: Etcd3, prefix: string): Promise<number> {
  const key = Buffer.from(prefix);
  return Number((await client.kv.range({ key, range_end: prefixRangeEnd(key), count_only: true })).count);
}

/** A slim EndpointSlice of `n` endpoints, shaped as the operator writes it (~220 bytes per endpoint). */
function endpointSlice(name: string, n: number): string {
  const endpoints = Array.from({ length: n }, (_, i) => ({
    addresses: [`10.${(i >> 8) & 255}.${i & 255}.${(name.length * 7) % 255}`],
    conditions: { ready: true, serving: true, terminating: false },
    nodeName: `node-${String(i).padStart(4, '0')}.example.internal`,
    targetRef: { kind: 'Pod', namespace: 'default', name: `${name}-pod-${String(i).padStart(5, '0')}`, uid: `0b5f${String(i).padStart(4, '0')}-7a3c-4c1e-9d2f-5e6a7b8c9d0e` },
    zone: 'zone-a',
  }));
  return JSON.stringify({ name, namespace: 'default', service: name, addressType: 'IPv4', ports: [{ name: 'http', port: 8080, protocol: 'TCP' }], endpoints });
}

describe('KvWriter within etcd\'s request limits', () => {
  const env = realEtcd();

  it('an initial sync of 300 EndpointSlices of 100 endpoints each lands whole (far over 1.5 MiB per 128 operations)', async () => {
    const { client } = env;
    const value = endpointSlice('probe', 100);
    expect(value.length * 128).toBeGreaterThan(1.5 * 1024 * 1024); // what one transaction of 128 would carry
    const registry = createRegistry();
    const writer = new KvWriter({ client, registry, log }); // defaults: 128 operations, 1.5 MiB
    const prefix = keys.prefix('endpointslices');
    await writer.beginSync(prefix);
    for (let i = 0; i < 300; i++) writer.upsert(keys.endpointSlice('default', `svc-${i}`), endpointSlice(`svc-${i}`, 100));
    await writer.finishSync(prefix, { key: keys.synced('endpointslices'), value: syncedMarkerValue('endpointslices') });
    expect(await countUnder(client, prefix)).toBe(300);
    expect(await client.get(keys.synced('endpointslices')).string()).toBe(syncedMarkerValue('endpointslices'));
    expect(writer.getStats()).toMatchObject({ writes: 301, rejected: 0, rejectedKeys: [] });
    expect(await client.get(keys.endpointSlice('default', 'svc-299')).string()).toBe(endpointSlice('svc-299', 100));
    writer.close();
  });

  it('one value etcd refuses is isolated and reported; every other write of its transactions lands; flush does not wait on it', async () => {
    const { client } = env;
    const registry = createRegistry();
    const writer = new KvWriter({ client, registry, log });
    const prefix = keys.prefix('pods');
    for (let i = 0; i < 100; i++) writer.upsert(keys.pod('big', `p${i}`), `v${i}`);
    const huge = 'x'.repeat(1_800_000); // over etcd's 1.5 MiB request limit, under gRPC's 2 MiB message limit
    writer.upsert(keys.pod('big', 'p50x'), huge);
    for (let i = 100; i < 200; i++) writer.upsert(keys.pod('big', `p${i}`), `v${i}`);
    await writer.flush();
    expect(await countUnder(client, prefix)).toBe(200);
    expect(await client.get(keys.pod('big', 'p50x')).string()).toBeNull();
    const stats = writer.getStats();
    expect(stats).toMatchObject({ writes: 200, rejected: 1, pending: 0 });
    expect(stats.rejectedKeys).toEqual([{ key: keys.pod('big', 'p50x'), reason: expect.stringMatching(/too large/), bytes: expect.any(Number) }]);
    const metrics = await registry.metrics();
    expect(metrics).toMatch(/^sluice_kv_writes_rejected_total 1$/m);
    expect(metrics).toMatch(/^sluice_kv_rejected_keys 1$/m);

    // A later write of that key that etcd takes clears the report.
    writer.upsert(keys.pod('big', 'p50x'), 'small now');
    await writer.flush();
    expect(await client.get(keys.pod('big', 'p50x')).string()).toBe('small now');
    expect(writer.getStats().rejectedKeys).toEqual([]);
    expect(await registry.metrics()).toMatch(/^sluice_kv_rejected_keys 0$/m);
    writer.close();
  });
});

describe('KvWriter against an etcd started with --max-txn-ops 16', () => {
  const env = realEtcd({ maxTxnOps: 16 });

  it('learns the lower limit and lands every write', async () => {
    const { client } = env;
    const writer = new KvWriter({ client, log }); // 128 operations per transaction configured
    for (let i = 0; i < 1000; i++) writer.upsert(`ops/${String(i).padStart(4, '0')}`, `v${i}`);
    await writer.flush();
    expect(await countUnder(client, 'ops/')).toBe(1000);
    const stats = writer.getStats();
    expect(stats).toMatchObject({ writes: 1000, rejected: 0 });
    expect(stats.maxTxnOps).toBeLessThanOrEqual(16);
    writer.close();
  });
});
