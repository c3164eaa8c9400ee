/**
 * `sluice service list` and `sluice bpf lb list`: rows from Service + EndpointSlice records as the node's agent
 * reads them (ids from its maps), rendered like cilium-dbg service list; the raw maps view.
 */
import { keySchema } from '@sluice/kvstore';
import { LbProgrammer, memoryDatapath } from '@sluice/datapath';
import { encodeSlimString, SCHEMA_VERSION, type SlimEndpointSlice, type SlimService } from '@sluice/slim';
import { describe, expect, it } from 'vitest';
import { buildLbService } from '@sluice/agent';
import type { ClusterReader } from '../src/cluster.ts';
import { listServices, readLbMaps, renderLbMaps, renderServices } from '../src/services.ts';

const keys = keySchema('sluice/');
const svc: SlimService = {
  v: SCHEMA_VERSION, namespace: 'default', name: 'web', type: 'NodePort', clusterIPs: ['10.96.0.10'], externalIPs: [], loadBalancerIPs: [],
  ports: [{ name: 'http', port: 80, targetPort: 'http', nodePort: 30080, protocol: 'TCP' }],
  sessionAffinity: 'None', externalTrafficPolicy: 'Cluster', internalTrafficPolicy: 'Cluster',
};
const slice: SlimEndpointSlice = {
  v: SCHEMA_VERSION, namespace: 'default', name: 'web-x', service: 'web', addressType: 'IPv4',
  endpoints: [
    { addresses: ['10.1.1.2'], ready: true, serving: true, terminating: false, nodeName: 'n1' },
    { addresses: ['10.1.2.2'], ready: false, serving: true, terminating: true, nodeName: 'n2' },
  ],
  ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
};

function fakeReader(records: Record<string, string>): ClusterReader {
  const client = {
    getAll: () => ({
      prefix: (p: string) => ({
        buffers: async () => Object.fromEntries(Object.entries(records).filter(([k]) => k.startsWith(p)).map(([k, v]) => [k, Buffer.from(v)])),
      }),
    }),
  };
  return { client, keys, endpoints: [], config: { endpoints: [] }, close: () => undefined } as unknown as ClusterReader;
}

describe('sluice service list', () => {
  it('lists every frontend with its id from the node maps and each backend active or terminating', async () => {
    const dp = memoryDatapath();
    const lb = new LbProgrammer(dp);
    lb.apply('default/web', buildLbService(svc, [slice], 'n1')!);
    const reader = fakeReader({
      [keys.service('default', 'web')]: encodeSlimString('service', svc),
      [keys.endpointSlice('default', 'web-x')]: encodeSlimString('endpointSlice', slice),
      [keys.service('default', 'bad')]: '{"v":1}',
    });
    const rows = await listServices(reader, 'n1', dp);
    expect(rows.errors).toHaveLength(1);
    expect(rows.items.map((r) => [r.frontend, r.type, r.backends.map((b) => b.state)])).toEqual([
      ['0.0.0.0:30080/TCP', 'NodePort', ['active', 'terminating']],
      ['10.96.0.10:80/TCP', 'ClusterIP', ['active', 'terminating']],
    ]);
    expect(new Set(rows.items.map((r) => r.id))).toEqual(new Set([String(dp.maps.services.entries()[0]![1].id)]));
    const text = renderServices(rows.items);
    expect(text.split('\n')[0]).toMatch(/^ID\s+Frontend\s+Service Type\s+Backend$/);
    expect(text).toContain('1 => 10.1.1.2:8080/TCP (active)');
    expect(text).toContain('2 => 10.1.2.2:8080/TCP (terminating)');
    // Without the node's maps the ids are unknown, the rest is the same.
    expect((await listServices(reader, 'n1', undefined)).items.every((r) => r.id === '-')).toBe(true);
  });

  it('bpf lb list shows frontends, backends with flags and the Maglev slot counts', () => {
    const dp = memoryDatapath();
    new LbProgrammer(dp).apply('default/web', buildLbService(svc, [slice], 'n1')!);
    const view = readLbMaps(dp);
    expect(view.frontends.map((f) => [f.frontend, f.count, f.flags])).toEqual([
      ['0.0.0.0:30080/TCP', 1, ['external']],
      ['10.96.0.10:80/TCP', 1, []],
    ]);
    expect(view.backends.map((b) => [b.address, b.flags])).toEqual([
      ['10.1.1.2:8080', ['local']],
      ['10.1.2.2:8080', ['terminating']],
    ]);
    expect(Object.values(view.maglev[0]!.slots)).toEqual([1009]);
    expect(renderLbMaps(view)).toContain('Connection tracking: 0 flows, session affinity: 0 clients by address, 0 by network namespace (socket LB)');
    // A socket LB entry (the datapath writes them: a host process's connect()) is counted apart from the per-packet ones.
    dp.maps.affinitySock.upsertBatch([[{ netnsCookie: 4097n, serviceId: view.frontends[0]!.id }, { backendId: 1, lastUsed: 1 }]]);
    expect(renderLbMaps(readLbMaps(dp))).toContain('session affinity: 0 clients by address, 1 by network namespace (socket LB)');
  });
});

describe('sluice status: KubeProxyReplacement', () => {
  it('True with what the load balancer does, per agent reporting; Warning while one is not synced', async () => {
    const { kubeProxyReplacementSection } = await import('../src/status.ts');
    const local = (synced: boolean) => ({ etcd: { connected: true, retries: 0, decodeErrors: 0 }, kubeProxyReplacement: { enabled: true, synced, services: 3, programmed: 3 } });
    const ok = kubeProxyReplacementSection(new Map([['n1', local(true)], ['n2', local(true)]]), 2);
    expect(ok.state).toBe('Ok');
    expect(ok.summary).toMatch(/^True {3}\[ClusterIP, NodePort.*\], 3 services, 2\/2 agents reporting$/);
    expect(kubeProxyReplacementSection(new Map([['n1', local(false)]]), 2)).toMatchObject({ state: 'Warning', summary: expect.stringContaining('not synced yet on n1') });
    expect(kubeProxyReplacementSection(new Map(), 2).state).toBe('Disabled');
  });

  it('--verbose shows XDP Acceleration: Native|Generic|Disabled, per node when the agents differ', async () => {
    const { kubeProxyReplacementSection } = await import('../src/status.ts');
    const local = (xdpAcceleration?: 'Native' | 'Generic' | 'Disabled') => ({ etcd: { connected: true, retries: 0, decodeErrors: 0 }, kubeProxyReplacement: { enabled: true, synced: true, services: 3, programmed: 3, ...(xdpAcceleration ? { xdpAcceleration } : {}) } });
    expect(kubeProxyReplacementSection(new Map([['n1', local('Native')], ['n2', local('Native')]]), 2).data?.['XDP Acceleration']).toBe('Native');
    expect(kubeProxyReplacementSection(new Map([['n1', local('Generic')], ['n2', local()]]), 2).data?.['XDP Acceleration']).toBe('Generic on n1; Disabled on n2');
  });
});
