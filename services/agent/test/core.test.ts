import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { BPF_DIR, IPCACHE_F_LOCAL } from '@sluice/bpf';
import { BpfError, loadDatapath, lookupIpcache, memoryDatapath, removePins, type Datapath } from '@sluice/datapath';
import { startEtcd } from '@sluice/etcd-runner';
import { createKvClient, keySchema, type Etcd3 } from '@sluice/kvstore';
import { createLogger } from '@sluice/log';
import { createRegistry } from '@sluice/metrics';
import { encodeSlimString, SCHEMA_VERSION, type SlimNode, type SlimPod } from '@sluice/slim';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentCore, type LocalEndpoint, type ReconcileTarget, type RouteRow } from '../src/index.ts';

const keys = keySchema(`agent-core-${process.pid}/`);

function node(name: string, ip: string, cidr: string, healthIPs: string[] = []): SlimNode {
  return { v: SCHEMA_VERSION, name, labels: {}, addresses: [{ type: 'InternalIP', ip }], podCIDRs: [cidr], ready: 'True', healthIPs };
}
function pod(name: string, nodeName: string, ip: string, phase: SlimPod['phase'] = 'Running'): SlimPod {
  return { v: SCHEMA_VERSION, namespace: 'default', name, uid: name, nodeName, hostIP: '', podIPs: ip ? [ip] : [], hostNetwork: false, phase, labels: {}, deleting: false, ports: [] };
}

/** Routes in memory: cidr → node IP. */
export class MemoryRoutes implements ReconcileTarget<RouteRow> {
  readonly name = 'routes';
  current = new Map<string, string>();
  update(rows: ReadonlyArray<readonly [string, RouteRow]>) {
    for (const [cidr, row] of rows) this.current.set(cidr, row.nodeIp);
    return [];
  }
  delete(keys: readonly string[]) {
    for (const k of keys) this.current.delete(k);
    return [];
  }
  prune(desired: { get(k: string): RouteRow | undefined; entries(): Iterable<readonly [string, RouteRow]> }) {
    const pruned = [...this.current.keys()].filter((k) => !desired.get(k));
    for (const k of pruned) this.current.delete(k);
    const outOfDate = [...desired.entries()].filter(([k, v]) => this.current.get(k) !== v.nodeIp).map(([k]) => k);
    return { outOfDate, pruned, failures: [] };
  }
}

let etcd: Awaited<ReturnType<typeof startEtcd>>;
let client: Etcd3;

beforeAll(async () => {
  etcd = await startEtcd();
  client = createKvClient({ endpoints: [etcd.endpoint] });
  await client.put(keys.node('n1')).value(encodeSlimString('node', node('n1', '192.168.9.1', '10.9.1.0/24', ['10.9.1.250'])));
  await client.put(keys.node('n2')).value(encodeSlimString('node', node('n2', '192.168.9.2', '10.9.2.0/24')));
  await client.put(keys.pod('default', 'a')).value(encodeSlimString('pod', pod('a', 'n1', '10.9.1.10')));
  await client.put(keys.pod('default', 'b')).value(encodeSlimString('pod', pod('b', 'n2', '10.9.2.10')));
  await client.put(keys.pod('default', 'pending')).value(encodeSlimString('pod', pod('pending', 'n2', '', 'Pending')));
});

afterAll(async () => {
  client?.close();
  await etcd?.stop();
});

const localA: LocalEndpoint = { id: 'c-a', ip: '10.9.1.10', hostIfname: 'lxca', hostIfindex: 7, hostMac: '02:00:00:00:00:01', mac: '02:00:00:00:00:02' };

describe('AgentCore', () => {
  let dp: Datapath;
  const routes = new MemoryRoutes();

  it('programs nothing before both lists, then everything in one reconcile', async () => {
    dp = memoryDatapath();
    const core = new AgentCore({ nodeName: 'n1', client, datapath: dp, keys, clusterCidr: '10.9.0.0/16', localEndpoints: [localA], routes });
    expect(dp.maps.ipcacheHost.count()).toBe(0);
    core.start();
    await core.synced();
    expect(dp.maps.endpoints.lookup({ ip: '10.9.1.10' })).toEqual({ ifindex: 7, flags: 0, mac: '02:00:00:00:00:02', nodeMac: '02:00:00:00:00:01' });
    expect(lookupIpcache(dp, { cidr: '10.9.1.10/32' })).toEqual({ nodeIp: '192.168.9.1', flags: IPCACHE_F_LOCAL });
    expect(lookupIpcache(dp, { cidr: '10.9.2.10/32' })).toEqual({ nodeIp: '192.168.9.2', flags: 0 });
    expect(lookupIpcache(dp, { cidr: '10.9.1.250/32' })).toEqual({ nodeIp: '192.168.9.1', flags: IPCACHE_F_LOCAL });
    expect(lookupIpcache(dp, { cidr: '10.9.2.0/24' })).toEqual({ nodeIp: '192.168.9.2', flags: 0 });
    expect(dp.maps.tunnel.entries().map(([k, v]) => [k.cidr, v.nodeIp])).toEqual([['10.9.2.0/24', '192.168.9.2']]);
    expect([...routes.current]).toEqual([['10.9.2.0/24', '192.168.9.2']]);
    expect(dp.maps.ipcacheHost.count()).toBe(3); // the Pending pod has no entry
    await core.stop();
  });

  it('restarts over the same maps without writing anything (reconcile, not flush)', async () => {
    const core = new AgentCore({ nodeName: 'n1', client, datapath: dp, keys, clusterCidr: '10.9.0.0/16', localEndpoints: [localA], routes });
    core.start();
    await core.synced();
    const s = core.status();
    expect(s.writes).toEqual({ upserts: 0, deletes: 0, fullReconciles: 1 });
    expect(s.endpoints).toEqual({ local: 1, cluster: 2, nodes: 2 });
    await core.stop();
  });

  it('applies deltas: new pod, pod deleted, node added, local endpoint added and removed', async () => {
    const programmed: number[] = [];
    const core = new AgentCore({ nodeName: 'n1', client, datapath: dp, keys, clusterCidr: '10.9.0.0/16', localEndpoints: [localA], routes, onProgrammed: (p) => programmed.push(p.podsRevision) });
    core.start();
    await core.synced();
    const put = await client.put(keys.pod('default', 'c')).value(encodeSlimString('pod', pod('c', 'n2', '10.9.2.11')));
    await core.whenProgrammed('pods', Number(put.header.revision));
    expect(lookupIpcache(dp, { cidr: '10.9.2.11/32' })).toEqual({ nodeIp: '192.168.9.2', flags: 0 });
    expect(programmed.at(-1)).toBeGreaterThanOrEqual(Number(put.header.revision));

    const del = await client.delete().key(keys.pod('default', 'b'));
    await core.whenProgrammed('pods', Number(del.header.revision));
    expect(lookupIpcache(dp, { cidr: '10.9.2.10/32' })).toBeUndefined();

    // A pod of a node we do not know yet is programmed once its node arrives.
    const p3 = await client.put(keys.pod('default', 'd')).value(encodeSlimString('pod', pod('d', 'n3', '10.9.3.10')));
    await core.whenProgrammed('pods', Number(p3.header.revision));
    expect(lookupIpcache(dp, { cidr: '10.9.3.10/32' })).toBeUndefined();
    const n3 = await client.put(keys.node('n3')).value(encodeSlimString('node', node('n3', '192.168.9.3', '10.9.3.0/24')));
    await core.whenProgrammed('nodes', Number(n3.header.revision));
    expect(lookupIpcache(dp, { cidr: '10.9.3.10/32' })).toEqual({ nodeIp: '192.168.9.3', flags: 0 });
    expect(dp.maps.tunnel.lookup({ cidr: '10.9.3.0/24' })).toEqual({ nodeIp: '192.168.9.3', vni: 0 });
    expect(routes.current.get('10.9.3.0/24')).toBe('192.168.9.3');

    core.upsertLocal({ id: 'c-e', ip: '10.9.1.11', hostIfname: 'lxce', hostIfindex: 9, hostMac: '02:00:00:00:01:01', mac: '02:00:00:00:01:02' });
    await core.flush();
    expect(dp.maps.endpoints.lookup({ ip: '10.9.1.11' })?.ifindex).toBe(9);
    expect(lookupIpcache(dp, { cidr: '10.9.1.11/32' })).toEqual({ nodeIp: '192.168.9.1', flags: IPCACHE_F_LOCAL });
    core.removeLocal('c-e');
    await core.flush();
    expect(dp.maps.endpoints.lookup({ ip: '10.9.1.11' })).toBeUndefined();
    expect(lookupIpcache(dp, { cidr: '10.9.1.11/32' })).toBeUndefined();

    const gone = await client.delete().key(keys.node('n3'));
    await core.whenProgrammed('nodes', Number(gone.header.revision));
    expect(dp.maps.tunnel.lookup({ cidr: '10.9.3.0/24' })).toBeUndefined();
    expect(lookupIpcache(dp, { cidr: '10.9.3.10/32' })).toBeUndefined();
    expect(routes.current.has('10.9.3.0/24')).toBe(false);
    await client.delete().key(keys.pod('default', 'd'));
    await core.stop();
  });

  it('skips bad records (invalid IP, invalid CIDR, unknown schema version) and programs nothing from them', async () => {
    const core = new AgentCore({ nodeName: 'n1', client, datapath: dp, keys, clusterCidr: '10.9.0.0/16', localEndpoints: [localA], routes });
    core.start();
    await core.synced();
    const before = { hosts: dp.maps.ipcacheHost.entries(), prefixes: dp.maps.ipcache.entries(), tunnel: dp.maps.tunnel.entries() };
    await client.put(keys.pod('default', 'bad-ip')).value(JSON.stringify({ ...pod('bad-ip', 'n2', '10.9.2.12'), podIPs: ['10.9.2.300'] }));
    await client.put(keys.pod('default', 'bad-version')).value(JSON.stringify({ ...pod('bad-version', 'n2', '10.9.2.13'), v: 99 }));
    await client.put(keys.node('bad-cidr')).value(JSON.stringify({ ...node('bad-cidr', '192.168.9.9', '10.9.9.0/24'), podCIDRs: ['10.9.9.1/33'] }));
    const last = await client.put(keys.node('bad-ip')).value(JSON.stringify(node('bad-ip', '192.168.9.300', '10.9.8.0/24')));
    // A good write after the bad ones: once it is programmed, the bad ones were seen (and skipped).
    const good = await client.put(keys.pod('default', 'good')).value(encodeSlimString('pod', pod('good', 'n2', '10.9.2.14')));
    await core.whenProgrammed('pods', Number(good.header.revision));
    const goodNode = await client.put(keys.node('good')).value(encodeSlimString('node', node('good', '192.168.9.7', '10.9.7.0/24')));
    await core.whenProgrammed('nodes', Number(goodNode.header.revision));
    expect(Number(goodNode.header.revision)).toBeGreaterThan(Number(last.header.revision));
    expect(core.status().etcd.decodeErrors).toBe(4);
    expect(dp.maps.ipcacheHost.entries().filter(([k]) => k.ip !== '10.9.2.14')).toEqual(before.hosts);
    expect(dp.maps.ipcache.entries().filter(([k]) => k.cidr !== '10.9.7.0/24')).toEqual(before.prefixes);
    expect(dp.maps.tunnel.entries().filter(([k]) => k.cidr !== '10.9.7.0/24')).toEqual(before.tunnel);
    for (const k of ['bad-ip', 'bad-version', 'good']) await client.delete().key(keys.pod('default', k));
    for (const k of ['bad-cidr', 'bad-ip', 'good']) await client.delete().key(keys.node(k));
    await core.stop();
  });

  it('keeps the datapath as it is while etcd is unreachable, and resyncs after', async () => {
    const core = new AgentCore({ nodeName: 'n1', client, datapath: dp, keys, clusterCidr: '10.9.0.0/16', localEndpoints: [localA], routes, clusterSize: 1 });
    core.start();
    await core.synced();
    const before = dp.maps.ipcacheHost.entries();
    await etcd.pause();
    await new Promise((r) => setTimeout(r, 1500));
    expect(dp.maps.ipcacheHost.entries()).toEqual(before);
    await etcd.resume();
    const writer = createKvClient({ endpoints: [etcd.endpoint] });
    const put = await writer.put(keys.pod('default', 'after')).value(encodeSlimString('pod', pod('after', 'n2', '10.9.2.20')));
    await core.whenProgrammed('pods', Number(put.header.revision));
    expect(lookupIpcache(dp, { cidr: '10.9.2.20/32' })).toEqual({ nodeIp: '192.168.9.2', flags: 0 });
    writer.close();
    await core.stop();
  });
});

describe('AgentCore tables and reconcilers', () => {
  const k = keySchema(`agent-core-tables-${process.pid}/`);
  const silent = createLogger({ component: 'test', level: 'silent' });

  async function until(what: string, check: () => boolean, ms = 15_000): Promise<void> {
    const end = Date.now() + ms;
    while (!check()) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  it('an IP claimed by two pod records: the first key owns it; deleting either claim leaves the other programmed', async () => {
    const dp = memoryDatapath();
    const registry = createRegistry();
    await client.put(k.node('n1')).value(encodeSlimString('node', node('n1', '192.168.9.1', '10.9.1.0/24')));
    await client.put(k.node('n2')).value(encodeSlimString('node', node('n2', '192.168.9.2', '10.9.2.0/24')));
    await client.put(k.node('n3')).value(encodeSlimString('node', node('n3', '192.168.9.3', '10.9.3.0/24')));
    await client.put(k.pod('default', 'b-old')).value(encodeSlimString('pod', pod('b-old', 'n2', '10.9.2.50')));
    const core = new AgentCore({ nodeName: 'n1', client, datapath: dp, keys: k, clusterCidr: '10.9.0.0/16', registry, log: silent });
    core.start();
    await core.synced();
    try {
      expect(lookupIpcache(dp, { cidr: '10.9.2.50/32' })).toEqual({ nodeIp: '192.168.9.2', flags: 0 });
      // A second record for the same IP whose key sorts first takes it, whatever the order of arrival...
      let put = await client.put(k.pod('default', 'a-new')).value(encodeSlimString('pod', pod('a-new', 'n2', '10.9.2.50')));
      await core.whenProgrammed('pods', Number(put.header.revision));
      expect(core.status().conflicts.counts).toEqual({ pod_ip_claimed_twice: 1 });
      // ...and deleting the owner restores the other claim's entry instead of deleting it.
      const del = await client.delete().key(k.pod('default', 'a-new'));
      await core.whenProgrammed('pods', Number(del.header.revision));
      expect(lookupIpcache(dp, { cidr: '10.9.2.50/32' })).toEqual({ nodeIp: '192.168.9.2', flags: 0 });
      expect(core.status().conflicts.counts).toEqual({});
      // The same with the other order: the later claim (a key sorting later) goes, the owner stays.
      put = await client.put(k.pod('default', 'c-later')).value(encodeSlimString('pod', pod('c-later', 'n3', '10.9.2.50')));
      await core.whenProgrammed('pods', Number(put.header.revision));
      expect(lookupIpcache(dp, { cidr: '10.9.2.50/32' })).toEqual({ nodeIp: '192.168.9.2', flags: 0 });
      const del2 = await client.delete().key(k.pod('default', 'b-old'));
      await core.whenProgrammed('pods', Number(del2.header.revision));
      // c-later claims an IP outside its node's podCIDR: refused, reported, not programmed.
      expect(lookupIpcache(dp, { cidr: '10.9.2.50/32' })).toBeUndefined();
      expect(core.status().conflicts.counts).toEqual({ pod_ip_outside_node_cidr: 1 });
      expect(await registry.getSingleMetricAsString('sluice_agent_conflicts_total')).toMatch(/reason="pod_ip_claimed_twice"} 2/) // a-new, then c-later;
    } finally {
      await core.stop();
      await client.delete().prefix(k.prefix('pods'));
      await client.delete().prefix(k.prefix('nodes'));
    }
  });

  it('podCIDRs: outside the cluster CIDR, the default route, a silly prefix or overlapping another node\'s are refused and reported', async () => {
    const dp = memoryDatapath();
    const routes = new MemoryRoutes();
    const registry = createRegistry();
    await client.put(k.node('n1')).value(encodeSlimString('node', node('n1', '192.168.9.1', '10.9.1.0/24')));
    await client.put(k.node('n2')).value(encodeSlimString('node', node('n2', '192.168.9.2', '10.9.2.0/24')));
    const core = new AgentCore({ nodeName: 'n1', client, datapath: dp, keys: k, clusterCidr: '10.9.0.0/16', registry, log: silent, routes });
    core.start();
    await core.synced();
    try {
      const bad = [
        ['evil-default', '192.168.9.20', '0.0.0.0/0'],
        ['evil-outside', '192.168.9.21', '10.10.0.0/24'],
        ['evil-tiny', '192.168.9.22', '10.9.7.0/31'],
        ['z-overlap', '192.168.9.23', '10.9.2.0/25'],
        ['z-inside', '10.9.5.1', '10.9.5.0/24'],
      ];
      let rev = 0;
      for (const [name, ip, cidr] of bad) rev = Number((await client.put(k.node(name!)).value(encodeSlimString('node', node(name!, ip!, cidr!)))).header.revision);
      await core.whenProgrammed('nodes', rev);
      expect([...routes.current]).toEqual([['10.9.2.0/24', '192.168.9.2']]);
      expect(dp.maps.tunnel.entries().map(([key]) => key.cidr)).toEqual(['10.9.2.0/24']);
      expect(dp.maps.ipcache.entries().map(([key]) => key.cidr).sort()).toEqual(['10.9.1.0/24', '10.9.2.0/24']);
      expect(core.status().conflicts.counts).toEqual({ pod_cidr_outside_cluster: 1, pod_cidr_prefix_length: 2, pod_cidr_overlap: 1, node_ip_in_cluster_cidr: 1 });
      // The overlap is decided by name, not by arrival: a node sorting before n2 takes the CIDR from it.
      const a = await client.put(k.node('a-first')).value(encodeSlimString('node', node('a-first', '192.168.9.30', '10.9.2.0/26')));
      await core.whenProgrammed('nodes', Number(a.header.revision));
      expect([...routes.current]).toEqual([['10.9.2.0/26', '192.168.9.30']]);
      const gone = await client.delete().key(k.node('a-first'));
      await core.whenProgrammed('nodes', Number(gone.header.revision));
      expect([...routes.current]).toEqual([['10.9.2.0/24', '192.168.9.2']]);
      expect(await registry.getSingleMetricAsString('sluice_agent_active_conflicts')).toMatch(/reason="pod_cidr_overlap"} 1/);

      // A stale record (sorting first) holds this node's own podCIDR: other nodes' routes follow the rule, but this
      // node still takes registrations in the CIDR its own record claims, and owns it again once the stale one goes.
      const stale = await client.put(k.node('a-stale')).value(encodeSlimString('node', node('a-stale', '192.168.9.40', '10.9.1.0/24')));
      await core.whenProgrammed('nodes', Number(stale.header.revision));
      expect(lookupIpcache(dp, { cidr: '10.9.1.0/24' })).toEqual({ nodeIp: '192.168.9.40', flags: 0 });
      expect(core.checkLocalIp('10.9.1.20', 'c-x')).toBeUndefined();
      expect(core.checkLocalIp('10.9.2.20', 'c-x')).toMatch(/outside this node's podCIDRs/);
      core.upsertLocal({ id: 'c-x', ip: '10.9.1.20', hostIfname: 'lxcx', hostIfindex: 12, hostMac: '02:00:00:00:02:01', mac: '02:00:00:00:02:02' });
      await core.flush();
      expect(dp.maps.endpoints.lookup({ ip: '10.9.1.20' })?.ifindex).toBe(12);
      const staleGone = await client.delete().key(k.node('a-stale'));
      await core.whenProgrammed('nodes', Number(staleGone.header.revision));
      expect(lookupIpcache(dp, { cidr: '10.9.1.0/24' })).toEqual({ nodeIp: '192.168.9.1', flags: IPCACHE_F_LOCAL });
    } finally {
      await core.stop();
      await client.delete().prefix(k.prefix('nodes'));
    }
  });

  it('on kernel maps: a write failure injected in the datapath is retried until it lands and holds the programmed revision; an entry deleted with bpftool is repaired', async () => {
    execFileSync('make', ['-s', '-C', BPF_DIR]);
    const pinDir = `/sys/fs/bpf/sluice/sl-core-${randomBytes(4).toString('hex')}`;
    const dp = loadDatapath({ pinDir });
    const registry = createRegistry();
    await client.put(k.node('n1')).value(encodeSlimString('node', node('n1', '192.168.9.1', '10.9.1.0/24')));
    await client.put(k.node('n2')).value(encodeSlimString('node', node('n2', '192.168.9.2', '10.9.2.0/24')));
    const core = new AgentCore({ nodeName: 'n1', client, datapath: dp, keys: k, clusterCidr: '10.9.0.0/16', registry, log: silent, refreshIntervalMs: 300, retryBackoff: { minMs: 50, maxMs: 200 } });
    core.start();
    await core.synced();
    try {
      const raw = dp.maps.ipcacheHost.raw;
      const original = raw.updateRaw.bind(raw);
      let failures = 3;
      raw.updateRaw = (keysBuf, values, count) => {
        if (failures > 0) {
          failures--;
          throw new BpfError('bpf_map_update_batch', 12, raw.name);
        }
        original(keysBuf, values, count);
      };
      const put = await client.put(k.pod('default', 'p1')).value(encodeSlimString('pod', pod('p1', 'n2', '10.9.2.60')));
      const revision = Number(put.header.revision);
      await until('the write to fail', () => core.rowStatus('ipcache', '10.9.2.60/32')?.state === 'error');
      expect(core.programmedRevision('pods')).toBeLessThan(revision);
      await core.whenProgrammed('pods', revision);
      expect(failures).toBe(0);
      expect(lookupIpcache(dp, { cidr: '10.9.2.60/32' })).toEqual({ nodeIp: '192.168.9.2', flags: 0 });

      // bpftool deletes the entry behind the agent's back: the next refresh puts it back.
      execFileSync('bpftool', ['map', 'delete', 'pinned', `${pinDir}/sl_ipcache_host`, 'key', '10', '9', '2', '60']);
      expect(lookupIpcache(dp, { cidr: '10.9.2.60/32' })).toBeUndefined();
      await until('the entry to come back', () => lookupIpcache(dp, { cidr: '10.9.2.60/32' }) !== undefined);
      await until('the drift to be counted', () => (core.status().reconcilers.find((r) => r.name === 'ipcache-map')?.driftRepaired ?? 0) >= 1);
      expect(await registry.getSingleMetricAsString('sluice_agent_reconciler_drift_repaired_total')).toMatch(/reconciler="ipcache-map"} [1-9]/);
    } finally {
      await core.stop();
      dp.close();
      removePins(pinDir);
      await client.delete().prefix(k.prefix('pods'));
      await client.delete().prefix(k.prefix('nodes'));
    }
  });
});
