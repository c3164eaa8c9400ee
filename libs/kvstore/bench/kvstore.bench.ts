/**
 * kvstore benchmark: batched writer throughput vs single puts, and watch delivery to 1, 100 and 1,000 watchers of one
 * prefix sharing one client, against a local etcd 3.4 (data on tmpfs); and on a 3-member cluster, how long writes stop
 * when the leader is SIGKILLed during churn (the fault tests assert that nothing is lost, not how fast).
 */
import { startEtcd, startEtcdCluster } from '@sluice/etcd-runner';
import { createLogger } from '@sluice/log';
import type { Figure } from '../../../bench/run.ts';
import { KvWriter, createKvClient, watchPrefix, type PrefixWatch } from '../src/index.ts';
import { processUsage } from '@sluice/process';

const log = createLogger({ component: 'bench', level: 'warn' });
const value = (i: number) => JSON.stringify({ v: 1, name: `pod-${i}`, namespace: 'default', ips: [`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`], node: `node-${i % 5000}`, labels: { app: `app-${i % 100}` } });

async function timed(run: () => Promise<void>): Promise<number> {
  const started = performance.now();
  await run();
  return (performance.now() - started) / 1000;
}

export default async function bench(): Promise<Figure[]> {
  const figures: Figure[] = [];
  const etcd = await startEtcd();
  const writeClient = createKvClient({ endpoints: [etcd.endpoint] });
  const watchClient = createKvClient({ endpoints: [etcd.endpoint] });
  try {
    // Single puts, 64 in flight (more only adds "too many requests" and latency).
    const singles = 5_000;
    let next = 0;
    const singleSeconds = await timed(async () => {
      await Promise.all(
        Array.from({ length: 64 }, async () => {
          while (next < singles) {
            const i = next++;
            await writeClient.kv.put({ key: Buffer.from(`bench/single/${i}`), value: Buffer.from(value(i)) });
          }
        }),
      );
    });
    figures.push({ metric: 'single puts (64 in flight)', value: Math.round(singles / singleSeconds), unit: 'keys/s' });

    // The writer with the operator's defaults (128-op transactions, 4 in flight, 400 txn/s).
    const batched = 100_000;
    const writer = new KvWriter({ client: writeClient, log });
    const batchedSeconds = await timed(async () => {
      for (let i = 0; i < batched; i++) writer.upsert(`bench/batched/${i}`, value(i));
      await writer.flush();
    });
    figures.push({ metric: 'KvWriter batched upserts (defaults)', value: Math.round(batched / batchedSeconds), unit: 'keys/s' });
    figures.push({ metric: 'KvWriter transactions', value: writer.getStats().transactions, unit: 'txns' });

    // The same without the QPS bound and with more in flight: what etcd itself can take.
    const open = new KvWriter({ client: writeClient, log, maxInFlight: 8, qps: 100_000, burst: 1_000 });
    const openSeconds = await timed(async () => {
      for (let i = 0; i < batched; i++) open.upsert(`bench/open/${i}`, value(i));
      await open.flush();
    });
    figures.push({ metric: 'KvWriter batched upserts (8 in flight, no QPS cap)', value: Math.round(batched / openSeconds), unit: 'keys/s' });
    open.close();

    // Unchanged resync: everything skipped, nothing sent.
    const resync = new KvWriter({ client: writeClient, log });
    const resyncSeconds = await timed(async () => {
      await resync.beginSync('bench/batched/');
      for (let i = 0; i < batched; i++) resync.upsert(`bench/batched/${i}`, value(i));
      await resync.finishSync('bench/batched/');
    });
    figures.push({ metric: 'unchanged resync of 100,000 keys (load + skip)', value: Math.round(resyncSeconds * 1000), unit: 'ms' });
    figures.push({ metric: 'unchanged resync writes', value: resync.getStats().writes, unit: 'writes' });
    resync.close();

    // Watch delivery: N watchers on one prefix, all on one client; time from the first write until every watcher
    // has received every event.
    for (const [watchers, keys] of [[1, 20_000], [100, 2_000], [1_000, 500]] as const) {
      const prefix = `bench/watch-${watchers}/`;
      let delivered = 0;
      const target = watchers * keys;
      let allDone: () => void = () => undefined;
      const done = new Promise<void>((resolve) => (allDone = resolve));
      const handles: PrefixWatch[] = [];
      const gc = (globalThis as { gc?: () => void }).gc;
      gc?.();
      const heapBefore = process.memoryUsage().heapUsed;
      const attachSeconds = await timed(async () => {
        for (let w = 0; w < watchers; w++) {
          handles.push(
            watchPrefix(watchClient, prefix, {
              decode: (_key, bytes) => bytes.length,
              onEvent: (event) => {
                if (event.type === 'upsert' && ++delivered === target) allDone();
              },
              log,
            }),
          );
        }
        await Promise.all(handles.map((h) => h.synced));
      });
      // Give the watch streams time to attach (etcd3 attaches watchers one at a time) before writing.
      await new Promise((r) => setTimeout(r, 200 + watchers * 2));
      const deliverSeconds = await timed(async () => {
        for (let i = 0; i < keys; i++) writer.upsert(`${prefix}${i}`, value(i));
        await done;
      });
      figures.push({ metric: `watch ${watchers} watcher(s): list + attach`, value: Math.round(attachSeconds * 1000), unit: 'ms' });
      figures.push({ metric: `watch ${watchers} watcher(s): ${keys} keys delivered to all`, value: Math.round(deliverSeconds * 1000), unit: 'ms' });
      figures.push({ metric: `watch ${watchers} watcher(s): deliveries`, value: Math.round(target / deliverSeconds), unit: 'events/s' });
      if (watchers === 1_000) {
        gc?.();
        const perWatcher = (process.memoryUsage().heapUsed - heapBefore) / watchers;
        figures.push({ metric: `watch heap per watcher holding ${keys} keys${gc ? '' : ' (no --expose-gc: rough)'}`, value: Math.round(perWatcher / 1024), unit: 'KiB' });
      }
      await Promise.all(handles.map((h) => h.stop()));
    }
    writer.close();
  } finally {
    writeClient.close();
    watchClient.close();
    await etcd.stop();
  }
  figures.push(...(await herd()));
  figures.push(...(await leaderKill()));
  return figures;
}

/** CPU seconds a process has used so far. */
const cpuSecondsOf = (pid: number | undefined): number => (pid ? (processUsage(pid)?.cpuSeconds ?? Number.NaN) : 0);

/**
 * The thundering herd's raw cost: N agents list a 100,000-pod prefix of ~400 B values at once (each its own client,
 * pages sized as watchPrefix sizes them), with nothing else running. What it takes from etcd and from the listing
 * side per MiB says how long a herd of 5,000 must take on a given machine, whatever the backoff does.
 */
export async function herd(): Promise<Figure[]> {
  const pods = 100_000;
  const etcd = await startEtcd();
  const setup = createKvClient({ endpoints: [etcd.endpoint] });
  const figures: Figure[] = [];
  try {
    const writer = new KvWriter({ client: setup, log, maxInFlight: 8, qps: 100_000, burst: 1_000 });
    const podValue = (i: number) => `${value(i).slice(0, -1)},"uid":"${'0123456789abcdef'.repeat(2)}-${i}","hostIP":"172.20.${(i >> 8) & 255}.${i & 255}","ready":true,"terminating":false,"ports":[{"name":"http","port":8080,"protocol":"TCP"}],"owner":"ReplicaSet/app-${i % 100}-5d8f9c7b6"}`;
    let bytes = 0;
    for (let i = 0; i < pods; i++) {
      const v = podValue(i);
      bytes += v.length + `bench/herd/pods/default/pod-${i}`.length;
      writer.upsert(`bench/herd/pods/default/pod-${i}`, v);
    }
    await writer.flush();
    writer.close();
    const mib = bytes / 1024 / 1024;
    figures.push({ metric: `herd: one list of ${pods.toLocaleString('en-US')} pods (keys + values)`, value: Math.round(mib * 10) / 10, unit: 'MiB' });
    for (const listers of [1, 10, 50]) {
      const clients = Array.from({ length: listers }, () => createKvClient({ endpoints: [etcd.endpoint], callTimeoutMs: 120_000 }));
      const etcdBefore = cpuSecondsOf(etcd.pid);
      const selfBefore = process.cpuUsage();
      const seconds = await timed(async () => {
        await Promise.all(clients.map(async (c) => {
          const watch = watchPrefix(c, 'bench/herd/pods/', { decode: (_key, b) => b.length, onEvent: () => undefined, log });
          await watch.synced;
          await watch.stop();
        }));
      });
      const self = process.cpuUsage(selfBefore);
      const etcdCpu = cpuSecondsOf(etcd.pid) - etcdBefore;
      const total = mib * listers;
      for (const c of clients) c.close();
      figures.push(
        { metric: `herd: ${listers} lister(s) at once, all listed`, value: Math.round(seconds * 1000), unit: 'ms' },
        { metric: `herd: ${listers} lister(s), MiB listed per second`, value: Math.round((total / seconds) * 10) / 10, unit: 'MiB/s' },
        { metric: `herd: ${listers} lister(s), etcd CPU per MiB listed`, value: Math.round((etcdCpu / total) * 1e4) / 10, unit: 'ms' },
        { metric: `herd: ${listers} lister(s), listing side CPU per MiB (one Node process)`, value: Math.round(((self.user + self.system) / 1e6 / total) * 1e4) / 10, unit: 'ms' },
      );
    }
  } finally {
    setup.close();
    await etcd.stop();
  }
  return figures;
}

/** A writer churning 500 keys on a 3-member cluster; the leader is SIGKILLed: time to a new leader, then to the next landed transaction. */
export async function leaderKill(): Promise<Figure[]> {
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  const cluster = await startEtcdCluster({ members: 3 });
  const client = createKvClient({ endpoints: cluster.endpoints, callTimeoutMs: 3000, dialTimeoutMs: 1000 });
  try {
    const writer = new KvWriter({ client, log, backoff: { minMs: 50, maxMs: 500 } });
    let stop = false;
    const churn = (async () => {
      for (let i = 0; !stop; i++) {
        writer.upsert(`bench/churn/${i % 500}`, value(i));
        await sleep(2);
      }
    })();
    await sleep(1000);
    const leader = await cluster.leader();
    const killedAt = performance.now();
    await leader.kill();
    await cluster.leader(15_000);
    const electedAt = performance.now();
    const landed = writer.getStats().transactions;
    while (writer.getStats().transactions === landed) await sleep(5);
    const resumedAt = performance.now();
    stop = true;
    await churn;
    await writer.flush();
    writer.close();
    return [
      { metric: '3-member cluster, leader SIGKILLed: a new leader after', value: Math.round(electedAt - killedAt), unit: 'ms' },
      { metric: '3-member cluster, leader SIGKILLed: writes land again after the new leader', value: Math.round(resumedAt - electedAt), unit: 'ms' },
    ];
  } finally {
    client.close();
    await cluster.stop();
  }
}
