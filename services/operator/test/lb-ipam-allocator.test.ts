/** LB IPAM's rules as a pure function of pools and Services (the end-to-end behaviour is in lb-ipam.test.ts). */
import { describe, expect, it } from 'vitest';
import { allocate, bigIntToIp, canonicalIp, ipToBigInt, type PoolInput, type ServiceInput } from '../src/lb-ipam/allocator.ts';
import { l2Records, poolInput, serviceInput, trimService } from '../src/lb-ipam/controller.ts';

const pool = (name: string, blocks: PoolInput['blocks'], extra: Partial<PoolInput> = {}): PoolInput => ({ name, created: `2026-01-01T00:00:0${extra.created ?? '0'}Z`, blocks, disabled: false, ...extra, ...(extra.created ? { created: extra.created } : {}) });
let n = 0;
const svc = (name: string, extra: Partial<ServiceInput> = {}): ServiceInput => ({
  namespace: 'default', name, created: `2026-01-02T00:00:${String(n++).padStart(2, '0')}Z`, type: 'LoadBalancer', labels: {}, annotations: {}, ingressIPs: [], ...extra,
});
const ipsOf = (a: ReturnType<typeof allocate>) => Object.fromEntries(a.services.map((s) => [s.name, s.ips]));

describe('LB IPAM allocator', () => {
  it('IPv4 and IPv6 text <-> numbers, canonical forms', () => {
    expect(bigIntToIp('IPv4', ipToBigInt('10.0.0.255')!.value + 1n)).toBe('10.0.1.0');
    expect(canonicalIp('2001:db8:0:0:0:0:0:1')).toBe('2001:db8::1');
    expect(canonicalIp('2001:db8::')).toBe('2001:db8::');
    expect(canonicalIp('::1')).toBe('::1');
    expect(canonicalIp('10.1')).toBeUndefined();
  });

  it('hands out CIDR addresses without the network and broadcast address, and ranges inclusively', () => {
    const a = allocate([pool('a', [{ cidr: '10.0.0.0/30' }, { start: '10.0.1.5', stop: '10.0.1.5' }])], [svc('s1'), svc('s2'), svc('s3'), svc('s4')]);
    expect(ipsOf(a)).toEqual({ s1: ['10.0.0.1'], s2: ['10.0.0.2'], s3: ['10.0.1.5'], s4: [] });
    expect(a.services.find((s) => s.name === 's4')!.condition).toMatchObject({ status: 'False', reason: 'PoolExhausted' });
    expect(a.pools[0]).toMatchObject({ total: 3n, used: 3 });
  });

  it('keeps what the status shows (restart), the oldest Service keeping an address two Services show', () => {
    const older = svc('older', { ingressIPs: ['10.0.0.2'] });
    const younger = svc('younger', { ingressIPs: ['10.0.0.2'] });
    const a = allocate([pool('a', [{ cidr: '10.0.0.0/29' }])], [younger, older]);
    expect(ipsOf(a)).toEqual({ older: ['10.0.0.2'], younger: ['10.0.0.1'] });
  });

  it('between two Services created in the same second, the one LB IPAM satisfied keeps the address, whatever their names', () => {
    const created = '2026-01-03T00:00:00Z';
    const holder = svc('zz-holder', { created, ingressIPs: ['10.0.0.2'], assigned: true });
    const copycat = svc('aa-copycat', { created, ingressIPs: ['10.0.0.2'] });
    const a = allocate([pool('a', [{ cidr: '10.0.0.0/29' }])], [copycat, holder]);
    expect(ipsOf(a)).toEqual({ 'zz-holder': ['10.0.0.2'], 'aa-copycat': ['10.0.0.1'] });
  });

  it('releases an address no selecting pool contains any more, and one of a Service that is no longer ours', () => {
    const a = allocate(
      [pool('a', [{ cidr: '10.0.0.0/29' }], { serviceSelector: { matchLabels: { app: 'x' } } })],
      [svc('relabelled', { ingressIPs: ['10.0.0.1'] }), svc('now-clusterip', { type: 'ClusterIP', ingressIPs: ['10.0.0.3', '203.0.113.1'] })],
    );
    expect(a.services.find((s) => s.name === 'relabelled')).toMatchObject({ ips: [], condition: { reason: 'NoPool' } });
    // Not ours any more: only the pool's address goes, the foreign one stays, no condition is set.
    expect(a.services.find((s) => s.name === 'now-clusterip')).toEqual({ namespace: 'default', name: 'now-clusterip', ips: ['203.0.113.1'] });
  });

  it('a disabled pool keeps what it gave but gives nothing new; a requested address is served before new ones', () => {
    const a = allocate(
      [pool('off', [{ cidr: '10.1.0.0/30' }], { disabled: true }), pool('on', [{ start: '10.2.0.1', stop: '10.2.0.2' }])],
      [svc('kept', { ingressIPs: ['10.1.0.1'] }), svc('new'), svc('wants', { annotations: { 'lbipam.sluice.io/ips': '10.2.0.1' } }), svc('wants-off', { loadBalancerIP: '10.1.0.2' })],
    );
    expect(ipsOf(a)).toEqual({ kept: ['10.1.0.1'], new: ['10.2.0.2'], wants: ['10.2.0.1'], 'wants-off': [] });
    expect(a.services.find((s) => s.name === 'wants-off')!.condition).toMatchObject({ reason: 'RequestedIPNotInPool' });
  });

  it('a pool overlapping an older one is in conflict and hands out nothing; other classes are ignored; one address per family', () => {
    const a = allocate(
      [pool('old', [{ cidr: '10.0.0.0/30' }], { created: '2026-01-01T00:00:00Z' }), pool('new', [{ cidr: '10.0.0.0/24' }, { cidr: '2001:db8::/126' }], { created: '2026-01-01T00:00:05Z' })],
      [svc('v4'), svc('foreign', { loadBalancerClass: 'example.com/lb' }), svc('dual', { ipFamilies: ['IPv6', 'IPv4'] })],
    );
    expect(a.pools.find((p) => p.name === 'new')).toMatchObject({ conflict: 'old' });
    expect(ipsOf(a)).toEqual({ v4: ['10.0.0.1'], dual: ['10.0.0.2'] });
    expect(a.services.find((s) => s.name === 'dual')!.condition).toMatchObject({ reason: 'NoPool', message: expect.stringContaining('IPv6') });
  });

  it('reports bad blocks instead of failing', () => {
    const a = allocate([pool('bad', [{ cidr: '10.0.0.0/33' }, { start: '10.0.0.9', stop: '10.0.0.1' }, { start: '10.0.0.1', stop: '::1' }])], [svc('s')]);
    expect(a.pools[0]!.badBlocks).toHaveLength(3);
    expect(a.services[0]!.condition).toMatchObject({ reason: 'NoPool' });
  });
});

describe('L2 announcement records', () => {
  it('carry the addresses of the Services a policy selects: ingress IPs of our LoadBalancers, externalIPs if asked', async () => {
    const { l2Records } = await import('../src/lb-ipam/controller.ts');
    const service = (name: string, labels: Record<string, string>, spec: Record<string, unknown>, ingress: string[] = []) => ({
      metadata: { namespace: 'default', name, labels }, spec, status: { loadBalancer: { ingress: ingress.map((ip) => ({ ip })) } },
    });
    const services = [
      service('web', { app: 'web' }, { type: 'LoadBalancer', externalIPs: ['192.0.2.50'] }, ['192.0.2.10']),
      service('other-class', { app: 'web' }, { type: 'LoadBalancer', loadBalancerClass: 'example.com/lb' }, ['192.0.2.11']),
      service('db', { app: 'db' }, { type: 'LoadBalancer' }, ['192.0.2.12']),
      service('v6', { app: 'web' }, { type: 'LoadBalancer' }, ['2001:db8:0::1']),
    ];
    const policy = (name: string, spec: Record<string, unknown>) => ({ metadata: { name }, spec });
    const [lb, ext] = l2Records(
      [policy('lb', { serviceSelector: { matchLabels: { app: 'web' } }, loadBalancerIPs: true, interfaces: ['^eth'] }), policy('ext', { externalIPs: true, nodeSelector: { matchExpressions: [{ key: 'edge', operator: 'Exists' }] } })],
      services,
    );
    expect(lb).toEqual({ v: 1, name: 'lb', interfaces: ['^eth'], addresses: [{ ip: '192.0.2.10', service: 'default/web' }, { ip: '2001:db8::1', service: 'default/v6' }] });
    expect(ext).toEqual({ v: 1, name: 'ext', nodeSelector: { matchExpressions: [{ key: 'edge', operator: 'Exists' }] }, interfaces: [], addresses: [{ ip: '192.0.2.50', service: 'default/web' }] });
    // An address named twice (ingress and externalIPs) is announced once.
    const [both] = l2Records([policy('both', { loadBalancerIPs: true, externalIPs: true })], [service('twice', {}, { type: 'LoadBalancer', externalIPs: ['192.0.2.60'] }, ['192.0.2.60'])]);
    expect(both!.addresses).toEqual([{ ip: '192.0.2.60', service: 'default/twice' }]);
  });

  it('keeps of a Service everything its decisions read: trimmed Services allocate and announce as whole ones', () => {
    const whole = (name: string, spec: Record<string, unknown>, status: Record<string, unknown> = {}, annotations: Record<string, string> = {}) => ({
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { namespace: 'default', name, uid: `uid-${name}`, resourceVersion: '7', generation: 3, creationTimestamp: `2026-01-02T00:00:0${name.length % 10}Z`, labels: { app: name, tier: 'web' }, annotations: { 'kubectl.kubernetes.io/last-applied-configuration': '{"big":"blob"}', ...annotations } },
      spec: { clusterIP: '10.96.0.10', clusterIPs: ['10.96.0.10'], selector: { app: name }, ports: [{ port: 80, protocol: 'TCP', targetPort: 8080 }], sessionAffinity: 'None', ...spec },
      status,
    });
    const ingress = (...ips: string[]) => ({ loadBalancer: { ingress: ips.map((ip) => ({ ip, ipMode: 'VIP' })) } });
    const services = [
      whole('kept', { type: 'LoadBalancer', ipFamilies: ['IPv4'] }, { ...ingress('10.0.0.2'), conditions: [{ type: 'sluice.io/lb-ipam-request-satisfied', status: 'True', reason: 'Assigned', message: '' }] }),
      whole('new', { type: 'LoadBalancer' }),
      whole('wants', { type: 'LoadBalancer' }, {}, { 'lbipam.sluice.io/ips': '10.0.0.5' }),
      whole('asks', { type: 'LoadBalancer', loadBalancerIP: '10.0.0.6' }),
      whole('other-class', { type: 'LoadBalancer', loadBalancerClass: 'example.com/lb' }),
      whole('was-lb', { type: 'ClusterIP', externalIPs: ['192.0.2.7'] }, ingress('10.0.0.3', '203.0.113.1')),
      whole('plain', { type: 'ClusterIP' }),
    ];
    const trimmed = services.map(trimService);
    const pools = [poolInput({ metadata: { name: 'a', creationTimestamp: '2026-01-01T00:00:00Z' }, spec: { blocks: [{ cidr: '10.0.0.0/28' }] } })];
    expect(allocate(pools, trimmed.map(serviceInput))).toEqual(allocate(pools, services.map(serviceInput)));
    const policies = [{ metadata: { name: 'all' }, spec: { serviceSelector: { matchLabels: { tier: 'web' } }, loadBalancerIPs: true, externalIPs: true } }];
    expect(l2Records(policies, trimmed)).toEqual(l2Records(policies, services));
    // What no decision reads is gone.
    expect(trimmed[0]).toEqual({
      metadata: { namespace: 'default', name: 'kept', creationTimestamp: services[0]!.metadata.creationTimestamp, generation: 3, labels: { app: 'kept', tier: 'web' } },
      spec: { type: 'LoadBalancer', ipFamilies: ['IPv4'] },
      status: services[0]!.status,
    });
    expect(trimmed[2]!.metadata!.annotations).toEqual({ 'lbipam.sluice.io/ips': '10.0.0.5' });
  });
});
