/**
 * The services table (Service + EndpointSlice records → the load-balancer row of this node) and its reconciler over
 * the in-memory maps: which frontends a service gets, how named ports and traffic policies pick backends, and that
 * changes, deletions and drift reach the maps.
 */
import { SVC_F_AFFINITY, SVC_F_DROP, SVC_F_EXTERNAL, SVC_F_NODE_ADDR } from '@sluice/bpf';
import { memoryDatapath } from '@sluice/datapath';
import { createLogger } from '@sluice/log';
import { SCHEMA_VERSION, type SlimEndpointSlice, type SlimService } from '@sluice/slim';
import { describe, expect, it } from 'vitest';
import { Reconciler } from '../src/reconciler.ts';
import { collectConntrack, recordAddresses, servicesTarget } from '../src/reconcilers/services.ts';
import { buildLbService, ServicesTable } from '../src/tables/services.ts';
import { LbProgrammer } from '@sluice/datapath';

const log = createLogger({ component: 'test', level: 'silent' });

function service(over: Partial<SlimService> = {}): SlimService {
  return {
    v: SCHEMA_VERSION,
    namespace: 'default',
    name: 'web',
    type: 'ClusterIP',
    clusterIPs: ['10.96.0.10'],
    externalIPs: [],
    loadBalancerIPs: [],
    ports: [{ name: 'http', port: 80, targetPort: 'web', nodePort: 0, protocol: 'TCP' }],
    sessionAffinity: 'None',
    externalTrafficPolicy: 'Cluster',
    internalTrafficPolicy: 'Cluster',
    ...over,
  };
}

type Ep = SlimEndpointSlice['endpoints'][number];
const ep = (ip: string, nodeName: string, over: Partial<Ep> = {}): Ep => ({ addresses: [ip], ready: true, serving: true, terminating: false, nodeName, ...over });

function slice(endpoints: Ep[], ports = [{ name: 'http', port: 8080, protocol: 'TCP' as const }], name = 'web-abc'): SlimEndpointSlice {
  return { v: SCHEMA_VERSION, namespace: 'default', name, service: 'web', addressType: 'IPv4', endpoints, ports };
}

describe('buildLbService', () => {
  it('ClusterIP with a named targetPort: backends on the slice port of the same name', () => {
    const row = buildLbService(service(), [slice([ep('10.1.1.2', 'n1'), ep('10.1.2.2', 'n2')])], 'n1')!;
    expect(row.frontends).toEqual([{ vip: '10.96.0.10', port: 80, proto: 'tcp', external: false, set: 'default/web:http/TCP:all' }]);
    expect(row.sets[0]!.backends.map((b) => `${b.ip}:${b.port}:${b.local}`)).toEqual(['10.1.1.2:8080:true', '10.1.2.2:8080:false']);
    // A slice without the port name contributes nothing to that port.
    expect(buildLbService(service(), [slice([ep('10.1.1.2', 'n1')], [{ name: 'other', port: 9, protocol: 'TCP' }])], 'n1')!.sets[0]!.backends).toEqual([]);
  });

  it('headless and ExternalName services have no row; SCTP ports are skipped', () => {
    expect(buildLbService(service({ clusterIPs: [] }), [], 'n1')).toBeUndefined();
    expect(buildLbService(service({ type: 'ExternalName', clusterIPs: [] }), [], 'n1')).toBeUndefined();
    expect(buildLbService(service({ ports: [{ name: 's', port: 9, targetPort: 9, nodePort: 0, protocol: 'SCTP' }] }), [], 'n1')).toBeUndefined();
  });

  it('NodePort, externalIPs and externalTrafficPolicy Local: external frontends balance over local backends only', () => {
    const svc = service({ type: 'NodePort', externalIPs: ['192.0.2.10'], externalTrafficPolicy: 'Local', ports: [{ name: 'http', port: 80, targetPort: 8080, nodePort: 30080, protocol: 'TCP' }] });
    const row = buildLbService(svc, [slice([ep('10.1.1.2', 'n1'), ep('10.1.2.2', 'n2')])], 'n2')!;
    expect(row.frontends.map((f) => `${f.vip}:${f.port}:${f.external}:${f.set.split(':').pop()}`)).toEqual(['10.96.0.10:80:false:internal', '192.0.2.10:80:true:external', '0.0.0.0:30080:true:external']);
    const external = row.sets.find((s) => s.name.endsWith(':external'))!;
    expect(external.backends.map((b) => b.ip)).toEqual(['10.1.2.2']);
    // A node without a local backend: the external frontends drop instead of rejecting.
    const elsewhere = buildLbService(svc, [slice([ep('10.1.1.2', 'n1')])], 'n2')!;
    expect(elsewhere.sets.find((s) => s.name.endsWith(':external'))).toMatchObject({ backends: [], dropWhenEmpty: true });
  });

  it('sessionAffinity ClientIP carries its timeout (the API default when absent)', () => {
    expect(buildLbService(service({ sessionAffinity: 'ClientIP' }), [], 'n1')!.sets[0]!.affinityTimeout).toBe(10_800);
    expect(buildLbService(service({ sessionAffinity: 'ClientIP', sessionAffinityTimeoutSeconds: 30 }), [], 'n1')!.sets[0]!.affinityTimeout).toBe(30);
  });
});

/** A services table and its reconciler over in-memory maps, refreshed by hand (no timers). */
function servicesOnMemory() {
  const dp = memoryDatapath();
  const table = new ServicesTable('n1');
  const programmer = new LbProgrammer(dp);
  programmer.seed();
  const reconciler = new Reconciler({ target: servicesTarget(programmer), desired: table, log, refreshIntervalMs: 0, batchMs: 0 });
  table.follow(reconciler);
  return { dp, table, reconciler };
}

describe('services reconciler (in-memory maps)', () => {
  it('programs rows, follows slice changes and deletions, and repairs drift in a full pass', async () => {
    const { dp, table, reconciler } = servicesOnMemory();
    table.upsertService(service({ sessionAffinity: 'ClientIP', type: 'NodePort', ports: [{ name: 'http', port: 80, targetPort: 'web', nodePort: 30080, protocol: 'TCP' }] }), 5);
    table.upsertSlice(slice([ep('10.1.1.2', 'n1'), ep('10.1.2.2', 'n2', { ready: false, serving: true, terminating: true })]), 6);
    await reconciler.start();
    const frontends = new Map(dp.maps.services.entries().map(([k, v]) => [`${k.vip}:${k.port}`, v]));
    expect(frontends.get('10.96.0.10:80')).toMatchObject({ count: 1, flags: SVC_F_AFFINITY });
    expect(frontends.get('0.0.0.0:30080')).toMatchObject({ count: 1, flags: SVC_F_AFFINITY | SVC_F_EXTERNAL });
    // The terminating backend keeps its entry (its flows), the table has only the ready one.
    expect(dp.maps.backends.count()).toBe(2);
    const [[, maglev]] = dp.maps.maglev.entries() as [[number, Uint32Array]];
    expect(new Set(maglev)).toEqual(new Set([dp.maps.backends.entries().find(([, v]) => v.ip === '10.1.1.2')![0].id]));

    table.upsertSlice(slice([]), 7);
    await reconciler.flush();
    expect(dp.maps.services.entries().every(([, v]) => v.count === 0)).toBe(true);
    expect(dp.maps.backends.count()).toBe(0);

    table.upsertSlice(slice([ep('10.1.1.3', 'n1')]), 8);
    await reconciler.flush();
    dp.maps.services.deleteBatch(dp.maps.services.entries().map(([k]) => k));
    await reconciler.fullPass();
    expect(reconciler.status().driftRepaired).toBeGreaterThan(0);
    expect(dp.maps.services.count()).toBe(2);

    table.deleteService('default/web', 9);
    await reconciler.flush();
    expect(dp.maps.services.count() + dp.maps.maglev.count() + dp.maps.backends.count()).toBe(0);
    await reconciler.stop();
  });

  it('sessionAffinity: each set\'s active backends are its affinity matches, following slice changes; a full pass repairs a deleted match and removes a stale one', async () => {
    const { dp, table, reconciler } = servicesOnMemory();
    table.upsertService(service({ sessionAffinity: 'ClientIP' }), 5);
    table.upsertSlice(slice([ep('10.1.1.2', 'n1'), ep('10.1.2.2', 'n2'), ep('10.1.3.2', 'n3', { ready: false, serving: true, terminating: true })]), 6);
    await reconciler.start();
    const setId = dp.maps.services.entries()[0]![1].id;
    const matched = () => {
      const ips = new Map(dp.maps.backends.entries().map(([k, v]) => [k.id, v.ip]));
      return dp.maps.affinityMatch.entries().map(([k]) => `${k.serviceId} ${ips.get(k.backendId)}`).sort();
    };
    expect(matched()).toEqual([`${setId} 10.1.1.2`, `${setId} 10.1.2.2`]);
    // One turns terminating, one goes, the terminating one is ready again.
    table.upsertSlice(slice([ep('10.1.1.2', 'n1', { ready: false, serving: true, terminating: true }), ep('10.1.3.2', 'n3')]), 7);
    await reconciler.flush();
    expect(matched()).toEqual([`${setId} 10.1.3.2`]);
    // Drift: the match deleted and a stale one written behind the agent's back; the full pass puts it right.
    const repaired = reconciler.status().driftRepaired;
    dp.maps.affinityMatch.deleteBatch(dp.maps.affinityMatch.entries().map(([k]) => k));
    dp.maps.affinityMatch.upsertBatch([[{ serviceId: setId + 100, backendId: 1 }, {}]]);
    await reconciler.fullPass();
    expect(reconciler.status().driftRepaired).toBeGreaterThan(repaired);
    expect(matched()).toEqual([`${setId} 10.1.3.2`]);
    // sessionAffinity None: no matches.
    table.upsertService(service(), 8);
    await reconciler.flush();
    expect(dp.maps.affinityMatch.count()).toBe(0);
    await reconciler.stop();
  });

  it('NodePort on every node address: a frontend per address, marked as the node\'s; an address change rewrites only NodePort rows', async () => {
    const { dp, table, reconciler } = servicesOnMemory();
    const np = service({ name: 'np', type: 'NodePort', clusterIPs: ['10.96.0.11'], ports: [{ name: 'http', port: 80, targetPort: 'web', nodePort: 30080, protocol: 'TCP' }] });
    table.upsertService(np, 5);
    table.upsertService(service(), 5);
    table.upsertSlice({ ...slice([ep('10.1.1.2', 'n1')]), name: 'np-abc', service: 'np' }, 6);
    table.upsertSlice(slice([ep('10.1.1.2', 'n1')]), 6);
    // From the node record (InternalIP, ExternalIP; IPv6 ignored) and the uplink; duplicates, loopback and 0.0.0.0 dropped.
    const record = recordAddresses({ addresses: [{ type: 'InternalIP', ip: '192.168.0.5' }, { type: 'ExternalIP', ip: '198.51.100.7' }, { type: 'InternalIP', ip: 'fd00::5' }] });
    expect(record).toEqual(['192.168.0.5', '198.51.100.7']);
    expect(table.setNodeAddresses([...record, '192.168.0.5', '192.168.1.9', '127.0.0.1', '0.0.0.0'])).toBe(true);
    await reconciler.start();
    const flagsOf = () => new Map(dp.maps.services.entries().map(([k, v]) => [`${k.vip}:${k.port}`, v.flags]));
    expect(flagsOf()).toEqual(
      new Map([
        ['10.96.0.10:80', 0],
        ['10.96.0.11:80', 0],
        ['0.0.0.0:30080', SVC_F_EXTERNAL],
        ['192.168.0.5:30080', SVC_F_EXTERNAL | SVC_F_NODE_ADDR],
        ['192.168.1.9:30080', SVC_F_EXTERNAL | SVC_F_NODE_ADDR],
        ['198.51.100.7:30080', SVC_F_EXTERNAL | SVC_F_NODE_ADDR],
      ]),
    );
    // Every node-address frontend shares the NodePort's backend set.
    const ids = new Set(dp.maps.services.entries().filter(([k]) => k.port === 30080).map(([, v]) => v.id));
    expect(ids.size).toBe(1);
    // The same addresses in another order: nothing changes. One gone: its frontend goes, the ClusterIP-only row is not touched.
    expect(table.setNodeAddresses(['198.51.100.7', '192.168.1.9', '192.168.0.5'])).toBe(false);
    const writes = reconciler.writes.updated;
    expect(table.setNodeAddresses(['192.168.0.5', '198.51.100.7'])).toBe(true);
    await reconciler.flush();
    expect(reconciler.writes.updated - writes).toBe(1);
    expect([...flagsOf().keys()].filter((k) => k.endsWith(':30080')).sort()).toEqual(['0.0.0.0:30080', '192.168.0.5:30080', '198.51.100.7:30080']);
    await reconciler.stop();
  });

  it('frontend writes that fail (test fault injection) are retried with backoff until they land', async () => {
    const dp = memoryDatapath();
    const table = new ServicesTable('n1');
    const programmer = new LbProgrammer(dp);
    programmer.seed();
    programmer.injectFrontendWriteFailures(2);
    const reconciler = new Reconciler({ target: servicesTarget(programmer), desired: table, log, refreshIntervalMs: 0, batchMs: 0, backoff: { minMs: 5, maxMs: 20 } });
    table.follow(reconciler);
    await reconciler.start();
    table.upsertService(service(), 5);
    table.upsertSlice(slice([ep('10.1.1.2', 'n2')]), 6);
    await reconciler.flush();
    expect(reconciler.rowStatus('default/web')).toMatchObject({ state: 'error', attempts: 1 });
    expect(reconciler.status().errors[0]!.error).toContain('injected test fault');
    expect(dp.maps.services.count()).toBe(0);
    const deadline = Date.now() + 5_000;
    while (!reconciler.idle && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    expect(reconciler.rowStatus('default/web')).toEqual({ state: 'done' });
    expect(dp.maps.services.entries()).toEqual([[{ vip: '10.96.0.10', port: 80, proto: 'tcp' }, expect.objectContaining({ count: 1 })]]);
    expect(reconciler.lowestUndoneRevision()).toBe(Infinity);
    await reconciler.stop();
  });

  it('an internalTrafficPolicy Local service without a local endpoint drops on this node', async () => {
    const dp = memoryDatapath();
    const table = new ServicesTable('n1');
    const programmer = new LbProgrammer(dp);
    const reconciler = new Reconciler({ target: servicesTarget(programmer), desired: table, log, refreshIntervalMs: 0, batchMs: 0 });
    table.follow(reconciler);
    table.upsertService(service({ internalTrafficPolicy: 'Local' }));
    table.upsertSlice(slice([ep('10.1.2.2', 'n2')]));
    await reconciler.start();
    expect(dp.maps.services.entries()[0]![1]).toMatchObject({ count: 0, flags: SVC_F_DROP });
    await reconciler.stop();
  });

  it('conntrack garbage collection removes expired forward entries and their reverse NAT', () => {
    const dp = memoryDatapath();
    dp.maps.backends.upsertBatch([[{ id: 1 }, { ip: '10.1.1.2', port: 8080, flags: 0 }]]);
    const tuple = (port: number) => ({ clientIp: '10.1.1.9', clientPort: port, peerIp: '10.96.0.10', peerPort: 80, proto: 'tcp' as const });
    dp.maps.lbFwd.upsertBatch([
      [tuple(1000), { backendId: 1, expires: 100, serviceId: 1, natPort: 1000, flags: 0 }],
      [tuple(1001), { backendId: 1, expires: 300, serviceId: 1, natPort: 1001, flags: 0 }],
    ]);
    dp.maps.lbCt.upsertBatch([[{ clientIp: '10.1.1.9', clientPort: 1000, peerIp: '10.1.1.2', peerPort: 8080, proto: 'tcp' }, { vip: '10.96.0.10', vport: 80, clientIp: '0.0.0.0', clientPort: 0 }]]);
    expect(collectConntrack(dp, 200)).toBe(1);
    expect(dp.maps.lbFwd.entries().map(([k]) => k.clientPort)).toEqual([1001]);
    expect(dp.maps.lbCt.count()).toBe(0);
  });
});
