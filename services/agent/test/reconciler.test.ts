/**
 * The generic reconciler loop over a BPF map target, against the kernel maps and the in-memory backend alike:
 * incremental rows, injected write failures retried until they land (and holding the lowest undone revision),
 * a partial batch, prune, drift repaired by a periodic full pass (the entry deleted behind the loop's back).
 */
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { BPF_DIR, type EndpointValue } from '@sluice/bpf';
import { BpfError, loadDatapath, MapFullError, memoryDatapath, removePins, type Datapath, type RawMap } from '@sluice/datapath';
import { createLogger } from '@sluice/log';
import { createRegistry } from '@sluice/metrics';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Reconciler } from '../src/reconciler.ts';
import { mapTarget } from '../src/reconcilers/bpf-map.ts';
import { Table } from '../src/tables/table.ts';

const log = createLogger({ component: 'test', level: 'silent' });
const pinDirs: string[] = [];
beforeAll(() => {
  execFileSync('make', ['-s', '-C', BPF_DIR]);
});
afterAll(() => {
  for (const d of pinDirs) removePins(d);
});

const backends: Array<[string, () => Datapath]> = [
  ['kernel BPF maps', () => {
    const dir = `/sys/fs/bpf/sluice/sl-rec-${randomBytes(4).toString('hex')}`;
    pinDirs.push(dir);
    return loadDatapath({ pinDir: dir });
  }],
  ['in-memory backend', () => memoryDatapath()],
];

const value = (ifindex: number): EndpointValue => ({ ifindex, flags: 0, mac: '02:00:00:00:00:02', nodeMac: '02:00:00:00:00:03' });

/** Makes the next `n` batch writes of a raw map fail (after writing `partial` entries of the batch). */
function injectWriteFailures(raw: RawMap, n: number, partial = 0): { left: () => number } {
  const original = raw.updateRaw.bind(raw);
  let left = n;
  raw.updateRaw = (keys, values, count) => {
    if (left > 0) {
      left--;
      if (partial > 0) {
        original(keys, values, Math.min(partial, count));
        throw new MapFullError(raw.name, raw.capacity, Math.min(partial, count), count);
      }
      throw new BpfError('bpf_map_update_batch', 12, raw.name); // ENOMEM
    }
    original(keys, values, count);
  };
  return { left: () => left };
}

async function until(what: string, check: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

for (const [name, make] of backends) {
  describe(`reconciler over ${name}`, () => {
    function setup(options: { refreshIntervalMs?: number } = {}) {
      const dp = make();
      const table = new Table<EndpointValue>();
      const registry = createRegistry();
      const reconciler = new Reconciler({
        target: mapTarget({ name: 'endpoints', map: dp.maps.endpoints, key: (ip) => ({ ip }), id: (k) => k.ip }),
        desired: table,
        log,
        registry,
        refreshIntervalMs: options.refreshIntervalMs ?? 0,
        backoff: { minMs: 5, maxMs: 20 },
      });
      table.follow(reconciler);
      return { dp, table, reconciler, registry };
    }

    it('first full pass writes what differs and prunes; then rows are incremental', async () => {
      const { dp, table, reconciler } = setup();
      try {
        dp.maps.endpoints.upsertBatch([[{ ip: '10.0.0.1' }, value(1)], [{ ip: '10.0.0.9' }, value(9)]]);
        table.set('10.0.0.1', value(1));
        table.set('10.0.0.2', value(2));
        await reconciler.start();
        expect(new Map(dp.maps.endpoints.entries().map(([k, v]) => [k.ip, v.ifindex]))).toEqual(new Map([['10.0.0.1', 1], ['10.0.0.2', 2]]));
        table.set('10.0.0.3', value(3), 50);
        expect(reconciler.rowStatus('10.0.0.3')).toEqual({ state: 'pending', revision: 50 });
        expect(reconciler.lowestUndoneRevision()).toBe(50);
        table.delete('10.0.0.1', 51);
        await reconciler.flush();
        expect(dp.maps.endpoints.lookup({ ip: '10.0.0.3' })?.ifindex).toBe(3);
        expect(dp.maps.endpoints.lookup({ ip: '10.0.0.1' })).toBeUndefined();
        expect(reconciler.rowStatus('10.0.0.3')).toEqual({ state: 'done' });
        expect(reconciler.lowestUndoneRevision()).toBe(Infinity);
        expect(reconciler.status().rows).toEqual({ done: 2, pending: 0, error: 0 });
      } finally {
        await reconciler.stop();
        dp.close();
      }
    });

    it('pass listeners are called after every pass, when the row is in the target, until they unsubscribe', async () => {
      const { dp, table, reconciler } = setup();
      try {
        const seen: Array<[pass: number, inMap: boolean, lowest: number]> = [];
        let passes = 0;
        const unsubscribe = reconciler.addPassListener(() => {
          passes++;
          seen.push([passes, dp.maps.endpoints.lookup({ ip: '10.0.2.1' }) !== undefined, reconciler.lowestUndoneRevision()]);
        });
        await reconciler.start();
        expect(passes).toBeGreaterThanOrEqual(1);
        table.set('10.0.2.1', value(21), 80);
        await reconciler.flush();
        // The pass that wrote the row reported it in the map and nothing undone below it.
        expect(seen.at(-1)).toEqual([passes, true, Infinity]);
        unsubscribe();
        const before = passes;
        table.set('10.0.2.2', value(22), 81);
        await reconciler.flush();
        expect(passes).toBe(before);
      } finally {
        await reconciler.stop();
        dp.close();
      }
    });

    it('a failed write is an error row with attempts, retried with backoff until it lands; it holds the revision', async () => {
      const { dp, table, reconciler, registry } = setup();
      try {
        await reconciler.start();
        const fault = injectWriteFailures(dp.maps.endpoints.raw, 3);
        table.set('10.0.1.1', value(11), 70);
        await reconciler.flush();
        const s = reconciler.rowStatus('10.0.1.1');
        expect(s).toMatchObject({ state: 'error', revision: 70, attempts: 1 });
        expect(s?.state === 'error' && s.error).toMatch(/ENOMEM/);
        expect(reconciler.lowestUndoneRevision()).toBe(70);
        expect(dp.maps.endpoints.lookup({ ip: '10.0.1.1' })).toBeUndefined();
        // Another row written meanwhile is not held up by the failing one (the fault is spent by the retries).
        await until('the retries to land the row', () => dp.maps.endpoints.lookup({ ip: '10.0.1.1' }) !== undefined);
        expect(fault.left()).toBe(0);
        await until('the row to be done', () => reconciler.rowStatus('10.0.1.1')?.state === 'done');
        expect(reconciler.lowestUndoneRevision()).toBe(Infinity);
        const ops = await registry.getSingleMetricAsString('sluice_agent_reconciler_operations_total');
        expect(ops).toMatch(/reconciler="endpoints",op="update",result="error"} 3/);
      } finally {
        await reconciler.stop();
        dp.close();
      }
    });

    it('a partial batch keeps the rows that did not land and retries only those', async () => {
      const { dp, table, reconciler } = setup();
      try {
        await reconciler.start();
        injectWriteFailures(dp.maps.endpoints.raw, 1, 2);
        for (let i = 1; i <= 5; i++) table.set(`10.0.2.${i}`, value(i), 100 + i);
        await reconciler.flush();
        expect(reconciler.status().rows).toEqual({ done: 2, pending: 0, error: 3 });
        expect(reconciler.lowestUndoneRevision()).toBe(103);
        await until('every row done', () => reconciler.idle);
        expect(dp.maps.endpoints.count()).toBe(5);
      } finally {
        await reconciler.stop();
        dp.close();
      }
    });

    it('a periodic full pass repairs drift: an entry deleted or changed behind its back, an entry added', async () => {
      const { dp, table, reconciler, registry } = setup({ refreshIntervalMs: 50 });
      try {
        for (let i = 1; i <= 3; i++) table.set(`10.0.3.${i}`, value(i));
        await reconciler.start();
        dp.maps.endpoints.deleteBatch([{ ip: '10.0.3.1' }]);
        dp.maps.endpoints.upsertBatch([[{ ip: '10.0.3.2' }, value(99)], [{ ip: '10.0.3.77' }, value(77)]]);
        await until('drift repaired', () => reconciler.status().driftRepaired === 3);
        expect(new Map(dp.maps.endpoints.entries().map(([k, v]) => [k.ip, v.ifindex]))).toEqual(new Map([['10.0.3.1', 1], ['10.0.3.2', 2], ['10.0.3.3', 3]]));
        expect(await registry.getSingleMetricAsString('sluice_agent_reconciler_drift_repaired_total')).toMatch(/reconciler="endpoints"} 3/);
      } finally {
        await reconciler.stop();
        dp.close();
      }
    });
  });
}
