/**
 * etcd overloaded: it answers "etcdserver: too many requests" (gRPC RESOURCE_EXHAUSTED) when thousands of agents
 * list at once (the thundering herd of issue 17). No such error may reach a caller: the watch's list and the writer's
 * transactions retry with backoff until etcd answers. The overload is injected into a real client's calls against a
 * real etcd (etcd itself only says it under a load this test cannot make).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GRPCResourceExhastedError } from 'etcd3';
import { startEtcd, type EtcdServer } from '@sluice/etcd-runner';
import { createLogger } from '@sluice/log';
import { KvWriter, createKvClient, isRetryableEtcdError, watchPrefix, type Etcd3, type WatchEvent } from '../src/index.ts';
import { waitFor } from './proxy.ts';

const log = createLogger({ component: 'test', level: 'silent' });

/** The next `times` calls of `method` on the client's KV service fail as an overloaded etcd fails them. */
function overload(client: Etcd3, method: 'range' | 'txn', times: number): { failed: () => number } {
  const kv = client.kv as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
  const original = kv[method]!.bind(client.kv);
  let failed = 0;
  kv[method] = (...args: unknown[]) => {
    if (failed < times) {
      failed++;
      return Promise.reject(new GRPCResourceExhastedError('etcdserver: too many requests'));
    }
    return original(...args);
  };
  return { failed: () => failed };
}

describe('etcd answers "too many requests": retried with backoff, never reaching a caller', () => {
  let etcd: EtcdServer;
  const clients: Etcd3[] = [];
  const client = () => {
    const c = createKvClient({ endpoints: [etcd.endpoint] });
    clients.push(c);
    return c;
  };
  beforeAll(async () => {
    etcd = await startEtcd();
  });
  afterAll(async () => {
    for (const c of clients) c.close();
    await etcd?.stop();
  });

  it('is a retryable error', () => {
    expect(isRetryableEtcdError(new GRPCResourceExhastedError('etcdserver: too many requests'))).toBe(true);
  });

  it('a watch whose list pages are refused lists again after its backoff and delivers every key once', async () => {
    const setup = client();
    for (let i = 0; i < 25; i++) await setup.put(`herd/k${String(i).padStart(2, '0')}`).value(`v${i}`);
    const c = client();
    const refused = overload(c, 'range', 4);
    const events: Array<WatchEvent<string>> = [];
    const watch = watchPrefix<string>(c, 'herd/', {
      log, pageSize: 10, clusterSize: 5000, backoff: { minMs: 5, maxMs: 20 },
      decode: (_k, b) => b.toString(), onEvent: (e) => events.push(e),
    });
    await watch.synced;
    expect(refused.failed()).toBe(4);
    const status = watch.status();
    expect(status.retries).toBeGreaterThanOrEqual(4);
    expect(status.lastError).toMatch(/too many requests/);
    expect(events.filter((e) => e.type === 'upsert').map((e) => e.type === 'upsert' && e.key).sort()).toEqual(Array.from({ length: 25 }, (_, i) => `herd/k${String(i).padStart(2, '0')}`));
    expect(events.filter((e) => e.type === 'listDone')).toHaveLength(1);
    expect(events.filter((e) => e.type === 'delete')).toHaveLength(0);
    // And it watches: a change after the list arrives.
    await setup.put('herd/late').value('x');
    await waitFor(() => events.some((e) => e.type === 'upsert' && e.key === 'herd/late'), 10_000, 'the change after the list');
    await watch.stop();
  });

  it('a list cut short by a refused page resumes at that page at the same revision, not from the start', async () => {
    const setup = client();
    for (let i = 0; i < 25; i++) await setup.put(`resume/k${String(i).padStart(2, '0')}`).value(`v${i}`);
    const c = client();
    const kv = c.kv as unknown as { range: (req: { key: Buffer; revision?: number | string }, ...rest: unknown[]) => Promise<{ header: { revision: string } }> };
    const original = kv.range.bind(c.kv);
    const calls: Array<{ key: string; revision: number }> = [];
    let firstRevision = 0;
    kv.range = async (req, ...rest) => {
      calls.push({ key: req.key.toString(), revision: Number(req.revision ?? 0) });
      // The second page is refused twice (a herd's timeouts), everything else answered.
      if (calls.length === 2 || calls.length === 3) throw new GRPCResourceExhastedError('etcdserver: too many requests');
      const page = await original(req, ...rest);
      if (calls.length === 1) firstRevision = Number(page.header.revision);
      return page;
    };
    const events: Array<WatchEvent<string>> = [];
    const watch = watchPrefix<string>(c, 'resume/', { log, pageSize: 10, backoff: { minMs: 5, maxMs: 20 }, decode: (_k, b) => b.toString(), onEvent: (e) => events.push(e) });
    await watch.synced;
    const listCalls = calls.filter((x) => x.key.startsWith('resume/'));
    // Page 1, page 2 refused twice, page 2, page 3: five calls, the retries at page 2's first key, all pinned.
    expect(listCalls.map((x) => x.key)).toEqual(['resume/', 'resume/k09\u0000', 'resume/k09\u0000', 'resume/k09\u0000', 'resume/k19\u0000']);
    expect(listCalls.slice(1).every((x) => x.revision === firstRevision)).toBe(true);
    expect(events.filter((e) => e.type === 'upsert')).toHaveLength(25);
    expect(new Set(events.flatMap((e) => (e.type === 'upsert' ? [e.key] : []))).size).toBe(25);
    expect(events.filter((e) => e.type === 'listDone')).toHaveLength(1);
    expect(watch.status().retries).toBe(2);
    await watch.stop();
  });

  it('a writer whose transactions are refused retries them until they land; flush resolves', async () => {
    const c = client();
    const writer = new KvWriter({ client: c, log, backoff: { minMs: 5, maxMs: 20 } });
    const refused = overload(c, 'txn', 3);
    for (let i = 0; i < 10; i++) writer.upsert(`herdw/k${i}`, `v${i}`);
    await writer.flush();
    expect(refused.failed()).toBe(3);
    expect(writer.getStats().retries).toBeGreaterThanOrEqual(3);
    expect(Object.keys(await client().getAll().prefix('herdw/').strings())).toHaveLength(10);
    writer.close();
  });
});
