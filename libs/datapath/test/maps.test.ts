/**
 * Map operations on real kernel maps and on the in-memory backend (same tests, same expectations): batches,
 * lookups, dumps, pinned maps surviving a "restart", minimal reconcile diffs, full maps; the kernel reading exactly
 * what the codecs wrote (BPF_PROG_TEST_RUN); errno errors; the host-routing probe.
 */
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BPF_DIR, COUNTERS, IPCACHE_F_LOCAL, MAGLEV_M, type EndpointValue } from '@sluice/bpf';
import { createRegistry } from '@sluice/metrics';
import {
  BpfError,
  BpfRawMap,
  MapFullError,
  TC_ACT_OK,
  TC_ACT_REDIRECT,
  TC_ACT_SHOT,
  decideHostRouting,
  ipv4Frame,
  loadDatapath,
  mapMetrics,
  memoryDatapath,
  sharedMemoryValues,
  openPinnedMaps,
  planReconcile,
  probeKernel,
  reconcile,
  removePins,
  reconcileIpcache,
  testRun,
  upsertIpcache,
  type Datapath,
} from '../src/index.ts';

const pinDirs: string[] = [];
function pinDir(): string {
  const dir = `/sys/fs/bpf/sluice/sl-test-${randomBytes(4).toString('hex')}`;
  pinDirs.push(dir);
  return dir;
}
beforeAll(() => {
  execFileSync('make', ['-s', '-C', BPF_DIR]); // a no-op when the object is current
});
afterAll(() => {
  for (const dir of pinDirs) removePins(dir);
});

function ep(i: number, ifindex = 7): readonly [{ ip: string }, EndpointValue] {
  return [{ ip: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}` }, { ifindex, flags: 0, mac: '02:00:00:00:00:02', nodeMac: '02:00:00:00:00:03' }] as const;
}
const eps = (from: number, to: number, ifindex = 7) => Array.from({ length: to - from }, (_, k) => ep(from + k, ifindex));

const backends: Array<[string, (o?: { maxEntries?: { endpoints?: number; ipcache?: number } }) => Datapath]> = [
  ['kernel BPF maps', (o = {}) => loadDatapath({ pinDir: pinDir(), registry: createRegistry(), ...(o.maxEntries ? { maxEntries: o.maxEntries } : {}) })],
  ['in-memory backend', (o = {}) => memoryDatapath({ registry: createRegistry(), ...(o.maxEntries ? { capacities: o.maxEntries } : {}) })],
];

for (const [name, make] of backends) {
  describe(`map operations: ${name}`, () => {
    it('batch upsert, lookup, dump and batch delete (missing keys are fine)', () => {
      const dp = make();
      try {
        dp.maps.endpoints.upsertBatch(eps(0, 5000));
        expect(dp.maps.endpoints.count()).toBe(5000);
        expect(dp.maps.endpoints.lookup({ ip: '10.0.1.2' })).toEqual(ep(258)[1]);
        expect(dp.maps.endpoints.lookup({ ip: '10.9.9.9' })).toBeUndefined();
        dp.maps.endpoints.deleteBatch([...eps(0, 1000).map(([k]) => k), { ip: '10.9.9.9' }, ...eps(1000, 2000).map(([k]) => k)]);
        const left = dp.maps.endpoints.entries();
        expect(left).toHaveLength(3000);
        expect(new Set(left.map(([k]) => k.ip))).toEqual(new Set(eps(2000, 5000).map(([k]) => k.ip)));

        dp.maps.ipcache.upsertBatch([
          [{ cidr: '10.1.0.0/16' }, { nodeIp: '192.168.0.2', flags: 0 }],
          [{ cidr: '10.1.2.3/32' }, { nodeIp: '192.168.0.3', flags: IPCACHE_F_LOCAL }],
        ]);
        expect(dp.maps.ipcache.lookup({ cidr: '10.1.0.0/16' })).toEqual({ nodeIp: '192.168.0.2', flags: 0 });
        expect(dp.maps.ipcache.entries().map(([k]) => k.cidr).sort()).toEqual(['10.1.0.0/16', '10.1.2.3/32']);
        // Lookups in a trie match the longest covering prefix, in the kernel and in memory alike.
        expect(dp.maps.ipcache.lookup({ cidr: '10.1.9.9/32' })).toEqual({ nodeIp: '192.168.0.2', flags: 0 });
        expect(dp.maps.ipcache.lookup({ cidr: '10.1.2.3/32' })).toEqual({ nodeIp: '192.168.0.3', flags: IPCACHE_F_LOCAL });
        expect(dp.maps.ipcache.lookup({ cidr: '10.2.0.0/32' })).toBeUndefined();
        dp.maps.ipcache.deleteBatch([{ cidr: '10.1.0.0/16' }]);
        expect(dp.maps.ipcache.count()).toBe(1);

        // The ipcache facade: /32s to the hash, prefixes to the trie, reconciled together.
        const results = reconcileIpcache(dp, [
          [{ cidr: '10.7.0.1/32' }, { nodeIp: '192.168.0.7', flags: 0 }],
          [{ cidr: '10.7.0.2' }, { nodeIp: '192.168.0.7', flags: 0 }],
          [{ cidr: '10.7.0.0/24' }, { nodeIp: '192.168.0.7', flags: 0 }],
        ]);
        expect(results.map((r) => [r.map, r.updated, r.deleted])).toEqual([
          ['sl_ipcache_host', 2, 0],
          ['sl_ipcache', 1, 1],
        ]);
        expect(dp.maps.ipcacheHost.entries().map(([k]) => k.ip).sort()).toEqual(['10.7.0.1', '10.7.0.2']);
      } finally {
        dp.close();
      }
    });

    it('reconcile writes only what differs and deletes only what is extra; a second pass writes nothing', () => {
      const dp = make();
      try {
        dp.maps.endpoints.upsertBatch(eps(0, 1000));
        // 850 unchanged, 50 with a new value, 100 gone, 150 new.
        const desired = [...eps(0, 850), ...eps(850, 900, 99), ...eps(1000, 1150)];
        const plan = planReconcile(dp.maps.endpoints, desired);
        expect({ updates: plan.updates.count, deletes: plan.deletes.count, unchanged: plan.unchanged }).toEqual({ updates: 200, deletes: 100, unchanged: 850 });
        expect(reconcile(dp.maps.endpoints, desired)).toEqual({ map: 'sl_endpoints', updated: 200, deleted: 100, unchanged: 850 });
        expect(dp.maps.endpoints.lookup(ep(860)[0])?.ifindex).toBe(99);
        expect(dp.maps.endpoints.lookup(ep(950)[0])).toBeUndefined();
        expect(reconcile(dp.maps.endpoints, desired)).toEqual({ map: 'sl_endpoints', updated: 0, deleted: 0, unchanged: 1050 });
        expect(dp.maps.endpoints.count()).toBe(1050);
        // LPM keys compare by prefix: 10.2.3.4/16 is the same key as 10.2.0.0/16.
        dp.maps.ipcache.upsertBatch([[{ cidr: '10.2.0.0/16' }, { nodeIp: '192.168.0.9', flags: 0 }]]);
        expect(reconcile(dp.maps.ipcache, [[{ cidr: '10.2.3.4/16' }, { nodeIp: '192.168.0.9', flags: 0 }]])).toMatchObject({ updated: 0, deleted: 0, unchanged: 1 });
      } finally {
        dp.close();
      }
    });

    it('a full map is a MapFullError and a metric, never a crash; what fits is written', async () => {
      const registry = createRegistry();
      const dp = name.startsWith('kernel')
        ? loadDatapath({ pinDir: pinDir(), registry, maxEntries: { endpoints: 16, ipcache: 16 } })
        : memoryDatapath({ registry, capacities: { endpoints: 16, ipcache: 16 } });
      try {
        const result = reconcile(dp.maps.endpoints, eps(0, 20), mapMetrics(registry));
        expect(result.error).toBeInstanceOf(MapFullError);
        expect(result.error?.code).toBe('E2BIG');
        expect(result.error?.message).toMatch(/sl_endpoints is full \(capacity 16\)/);
        expect(result.updated).toBe(16);
        expect(dp.maps.endpoints.count()).toBe(16);
        const lpm = reconcile(dp.maps.ipcache, Array.from({ length: 20 }, (_, i) => [{ cidr: `10.${i}.0.0/16` }, { nodeIp: '1.1.1.1', flags: 0 }] as const));
        expect(lpm.error?.code).toBe('ENOSPC');
        expect(() => dp.maps.endpoints.upsertBatch(eps(100, 101))).toThrow(MapFullError);
        const full = await registry.getSingleMetric('sluice_bpf_map_full_total')!.get();
        const byMap = Object.fromEntries(full.values.map((v) => [v.labels.map, v.value]));
        expect(byMap).toEqual({ sl_endpoints: 2, sl_ipcache: 1 });
        const durations = await registry.getSingleMetric('sluice_bpf_map_operation_duration_seconds')!.get();
        expect(durations.values.some((v) => v.labels.operation === 'update_batch' && ((v as { metricName?: string }).metricName ?? '').endsWith('_count') && v.value > 0)).toBe(true);
        // Deleting makes room again.
        expect(reconcile(dp.maps.endpoints, eps(4, 20)).error).toBeUndefined();
        expect(dp.maps.endpoints.count()).toBe(16);
      } finally {
        dp.close();
      }
    });
  });
}

describe('in-memory backend: large values shared by content', () => {
  it('keeps one copy of a Maglev table every agent of the process holds, and drops it once no map holds it', () => {
    const table = (first: number) => Uint32Array.from({ length: MAGLEV_M }, (_, i) => first + (i % 3));
    const base = sharedMemoryValues();
    const a = memoryDatapath();
    const b = memoryDatapath();
    try {
      a.maps.maglev.upsertBatch([[1, table(1)], [2, table(7)]]);
      b.maps.maglev.upsertBatch([[1, table(1)]]);
      // Two distinct tables, whatever the number of maps holding them.
      expect(sharedMemoryValues() - base).toBe(2);
      expect(Array.from(b.maps.maglev.lookup(1)!)).toEqual(Array.from(table(1)));
      // Rewriting a key with another table moves it to that table's copy; what each map reads stays its own.
      b.maps.maglev.upsertBatch([[1, table(7)]]);
      expect(sharedMemoryValues() - base).toBe(2);
      expect(Array.from(a.maps.maglev.lookup(1)!)).toEqual(Array.from(table(1)));
      expect(Array.from(b.maps.maglev.lookup(1)!)).toEqual(Array.from(table(7)));
      a.maps.maglev.deleteBatch([1]);
      expect(sharedMemoryValues() - base).toBe(1);
      expect(a.maps.maglev.lookup(1)).toBeUndefined();
      a.close();
      // b still holds table(7).
      expect(sharedMemoryValues() - base).toBe(1);
      expect(Array.from(b.maps.maglev.lookup(1)!)).toEqual(Array.from(table(7)));
    } finally {
      a.close();
      b.close();
    }
    expect(sharedMemoryValues()).toBe(base);
  });
});

describe('pinned maps', () => {
  it('survive a restart: reloading the object reuses them with their contents (no flush)', () => {
    const dir = pinDir();
    const first = loadDatapath({ pinDir: dir });
    expect(first.reusedMaps).toBe(false);
    first.maps.endpoints.upsertBatch(eps(0, 300));
    first.setConfig({ bpfHostRouting: true, tunnel: true, nodeIp: '192.168.0.1', uplinkIfindex: 2, tunnelIfindex: 3, vni: 5, uplinkMac: '02:00:00:00:00:09' });
    first.close();

    const again = loadDatapath({ pinDir: dir });
    try {
      expect(again.reusedMaps).toBe(true);
      expect(again.maps.endpoints.count()).toBe(300);
      expect(again.getConfig()).toMatchObject({ tunnel: true, nodeIp: '192.168.0.1', vni: 5 });
      const reader = openPinnedMaps(dir);
      expect(reader.maps.endpoints.lookup(ep(5)[0])).toEqual(ep(5)[1]);
      reader.close();
    } finally {
      again.close();
    }
  });

  it('a pinned map with an old layout is refused, or replaced when asked, keeping the compatible ones', () => {
    const dir = pinDir();
    const old = loadDatapath({ pinDir: dir, maxEntries: { tunnel: 128 } });
    old.maps.endpoints.upsertBatch(eps(0, 10));
    old.close();
    expect(() => loadDatapath({ pinDir: dir })).toThrow(/sl_tunnel: maxEntries 128 -> 16384.*onIncompatible/);
    const upgraded = loadDatapath({ pinDir: dir, onIncompatible: 'replace' });
    try {
      expect(upgraded.replacedMaps).toEqual(['sl_tunnel: maxEntries 128 -> 16384']);
      expect(upgraded.maps.tunnel.capacity).toBe(16384);
      expect(upgraded.maps.endpoints.count()).toBe(10);
    } finally {
      upgraded.close();
    }
  });

  it('errors carry the errno name', () => {
    let err: unknown;
    try {
      BpfRawMap.openPinned('/sys/fs/bpf/sluice/sl-does-not-exist/sl_endpoints');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(BpfError);
    expect((err as BpfError).code).toBe('ENOENT');
    expect((err as BpfError).message).toMatch(/^bpf_obj_get: ENOENT/);
  });
});

describe('the kernel reads what the codecs write (BPF_PROG_TEST_RUN)', () => {
  it('from_container follows sl_config, sl_endpoints and sl_ipcache exactly as encoded', () => {
    const dp = loadDatapath({ pinDir: pinDir() });
    try {
      const fd = dp.programs.from_container!;
      // The sender must be an endpoint on the device the packet came in on (BPF_PROG_TEST_RUN's is lo, ifindex 1).
      dp.maps.endpoints.upsertBatch([[{ ip: '10.0.0.1' }, { ifindex: 1, flags: 0, mac: '02:aa:bb:cc:dd:01', nodeMac: '02:11:22:33:44:01' }]]);
      const before = dp.readCounters();
      // No config yet: legacy, the kernel stack would forward.
      expect(testRun(fd, ipv4Frame('10.0.0.1', '10.0.0.2')).retval).toBe(TC_ACT_OK);
      // Any other source address is spoofed: dropped and counted, in either host-routing mode.
      expect(testRun(fd, ipv4Frame('10.0.0.9', '10.0.0.2')).retval).toBe(TC_ACT_SHOT);
      expect(dp.readCounters().dropSpoofed.packets - before.dropSpoofed.packets).toBe(1n);
      dp.setConfig({ bpfHostRouting: true, tunnel: false, nodeIp: '192.168.0.1', uplinkIfindex: 2, tunnelIfindex: 0, vni: 0, uplinkMac: '02:00:00:00:00:01' });
      dp.maps.endpoints.upsertBatch([[{ ip: '10.0.0.2' }, { ifindex: 9, flags: 0, mac: '02:aa:bb:cc:dd:ee', nodeMac: '02:11:22:33:44:55' }]]);
      const local = testRun(fd, ipv4Frame('10.0.0.1', '10.0.0.2'));
      expect(local.retval).toBe(TC_ACT_REDIRECT);
      expect(local.dataOut.subarray(0, 12).toString('hex')).toBe('02aabbccddee' + '021122334455');
      // A remote pod covered by a podCIDR entry: redirect_neigh to the uplink.
      dp.maps.ipcache.upsertBatch([[{ cidr: '10.5.0.0/24' }, { nodeIp: '192.168.0.5', flags: 0 }]]);
      expect(testRun(fd, ipv4Frame('10.0.0.1', '10.5.0.77')).retval).toBe(TC_ACT_REDIRECT);
      // Outside the prefix, or owned by this node: to the stack.
      expect(testRun(fd, ipv4Frame('10.0.0.1', '10.5.1.77')).retval).toBe(TC_ACT_OK);
      dp.maps.ipcache.upsertBatch([[{ cidr: '10.5.0.0/24' }, { nodeIp: '192.168.0.5', flags: IPCACHE_F_LOCAL }]]);
      expect(testRun(fd, ipv4Frame('10.0.0.1', '10.5.0.77')).retval).toBe(TC_ACT_OK);
      const after = dp.readCounters();
      // A /32 through the ipcache facade lands in the hash half, which the program consults first.
      upsertIpcache(dp, [[{ cidr: '10.5.0.78/32' }, { nodeIp: '192.168.0.6', flags: 0 }]]);
      expect(dp.maps.ipcacheHost.lookup({ ip: '10.5.0.78' })).toEqual({ nodeIp: '192.168.0.6', flags: 0 });
      // (Looking a /32 up in the trie gives the longest covering prefix: the /24 above.)
      expect(dp.maps.ipcache.lookup({ cidr: '10.5.0.78/32' })).toEqual({ nodeIp: '192.168.0.5', flags: IPCACHE_F_LOCAL });
      expect(testRun(fd, ipv4Frame('10.0.0.1', '10.5.0.78')).retval).toBe(TC_ACT_REDIRECT);
      expect(after.legacy.packets - before.legacy.packets).toBe(1n);
      expect(after.fromContainerLocal.packets - before.fromContainerLocal.packets).toBe(1n);
      expect(dp.readCounters().fromContainerNeigh.packets - before.fromContainerNeigh.packets).toBe(2n);
      expect(after.fromContainerPass.packets - before.fromContainerPass.packets).toBe(2n);
      expect(after.fromContainer.bytes - before.fromContainer.bytes).toBe(6n * BigInt(ipv4Frame('1.1.1.1', '1.1.1.1').length));
      expect(COUNTERS.fromContainer).toBe(0);
    } finally {
      dp.close();
    }
  });
});

describe('host routing decision', () => {
  it('this kernel has bpf_redirect_peer and bpf_redirect_neigh: Host Routing: BPF', async () => {
    const features = await probeKernel();
    expect(features).toMatchObject({ redirectPeer: true, redirectNeigh: true });
    expect(decideHostRouting(features)).toEqual({ mode: 'BPF', reason: '', status: 'Host Routing: BPF' });
    expect(decideHostRouting(features, 'legacy').status).toBe('Host Routing: Legacy (BPF host routing disabled by configuration)');
  });

  it('falls back to legacy with the reason when a helper is missing', () => {
    const d = decideHostRouting({ kernel: '5.4.0', redirectPeer: false, redirectNeigh: true, errors: {} }, 'bpf');
    expect(d.mode).toBe('Legacy');
    expect(d.status).toMatch(/^Host Routing: Legacy \(BPF host routing requires .*missing bpf_redirect_peer on kernel 5\.4\.0; falling back to legacy host routing\)$/);
  });
});
