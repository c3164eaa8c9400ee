import { startEtcd, type EtcdServer } from '@sluice/etcd-runner';
import { agentStatusRecord, createKvClient, keySchema, LeasedKeys, RECORD_VERSION, type AgentStatusRecord, type Etcd3 } from '@sluice/kvstore';
import { createLogger } from '@sluice/log';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StatusPublisher } from '../src/index.ts';

let etcd: EtcdServer;
let client: Etcd3;
beforeAll(async () => {
  etcd = await startEtcd();
  client = createKvClient({ endpoints: [etcd.endpoint] });
});
afterAll(async () => {
  client?.close();
  await etcd?.stop();
});

describe('StatusPublisher', () => {
  it('writes the AgentStatus record only when it changed, on the agent lease', async () => {
    const keys = keySchema('status-test/');
    const leased = new LeasedKeys({ client, ttlSeconds: 5 });
    let status: AgentStatusRecord = {
      v: RECORD_VERSION, node: 'n1', statusUrl: 'http://127.0.0.1:1', version: '0.1.0', routing: 'native',
      hostRouting: { mode: 'BPF', reason: '', status: 'Host Routing: BPF' }, masquerading: 'Disabled', synced: false,
      endpoints: { local: 0, cluster: 0, nodes: 0 },
    };
    const publisher = new StatusPublisher({ leased, keys, node: 'n1', build: () => status, debounceMs: 20, log: createLogger({ component: 'test', level: 'silent' }) });
    publisher.publishNow();
    const version = async () => {
      const kv = (await client.get(keys.agent('n1')).exec()).kvs[0];
      return kv ? { version: Number(kv.version), lease: kv.lease.toString(), value: agentStatusRecord.parse(JSON.parse(kv.value.toString())) } : undefined;
    };
    for (let i = 0; i < 50 && !(await version()); i++) await new Promise((r) => setTimeout(r, 50));
    expect((await version())?.version).toBe(1);
    expect((await version())?.lease).not.toBe('0');
    for (let i = 0; i < 10; i++) {
      publisher.update();
      await new Promise((r) => setTimeout(r, 30));
    }
    expect((await version())?.version).toBe(1);
    status = { ...status, synced: true, endpoints: { local: 2, cluster: 9, nodes: 3 } };
    for (let i = 0; i < 5; i++) publisher.update();
    for (let i = 0; i < 50 && (await version())?.version !== 2; i++) await new Promise((r) => setTimeout(r, 50));
    const now = await version();
    expect(now?.version).toBe(2);
    expect(now?.value).toMatchObject({ synced: true, endpoints: { local: 2, cluster: 9, nodes: 3 } });
    publisher.close();
    await leased.close();
    expect(await version()).toBeUndefined();
  });
});
