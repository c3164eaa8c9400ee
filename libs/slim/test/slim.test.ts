import { describe, expect, it } from 'vitest';
import type { V1Node } from '@kubernetes/client-node';
import { heartbeat, realisticEndpointSlice, realisticNode, realisticPod, realisticService } from '@sluice/kube-objects';
import {
  buildSlimEndpoint,
  buildSlimEndpointSlice,
  endpointSortKey,
  joinSlimEndpointSlice,
  validateSlimEndpoint,
  buildSlimNode,
  buildSlimPod,
  buildSlimService,
  validateSlim,
  decodeSlim,
  encodeSlim,
  encodeSlimString,
  HEALTH_IPS_ANNOTATION,
  isEndpoint,
  slimEndpointSlice,
  slimNode,
  slimPod,
  slimService,
  SlimError,
} from '../src/index.ts';

const baseNode = () =>
  realisticNode({ name: 'node-7', internalIP: '10.0.0.7', podCIDR: '10.244.7.0/24', podCIDRv6: 'fd00:10:244:7::/64', annotations: { [HEALTH_IPS_ANNOTATION]: '10.244.7.2' } });
const bytesOf = (node: V1Node) => Buffer.from(encodeSlim('node', slimNode(node))).toString();

describe('slimNode', () => {
  it('keeps only what the datapath needs', () => {
    expect(slimNode(baseNode())).toEqual({
      v: 1,
      name: 'node-7',
      labels: expect.objectContaining({ 'kubernetes.io/hostname': 'node-7' }),
      addresses: [{ type: 'InternalIP', ip: '10.0.0.7' }],
      podCIDRs: ['10.244.7.0/24', 'fd00:10:244:7::/64'],
      ready: 'True',
      healthIPs: ['10.244.7.2'],
    });
  });

  it('gives byte-identical encodings across heartbeat-only changes', () => {
    const node = baseNode();
    let beaten = heartbeat(node, new Date('2026-01-01T00:05:00Z'));
    beaten = { ...beaten, metadata: { ...beaten.metadata, resourceVersion: '987654' } };
    beaten.status = { ...beaten.status, images: beaten.status!.images!.slice(3) };
    expect(bytesOf(beaten)).toBe(bytesOf(node));
  });

  it('gives the same bytes whatever the order of fields, labels and lists', () => {
    const node = baseNode();
    const shuffled: V1Node = JSON.parse(JSON.stringify(node), (_key, value) =>
      value && typeof value === 'object' && !Array.isArray(value) ? Object.fromEntries(Object.entries(value).reverse()) : value,
    );
    shuffled.status!.addresses = [...node.status!.addresses!].reverse();
    shuffled.spec!.podCIDRs = [...node.spec!.podCIDRs!].reverse();
    shuffled.status!.conditions = [...node.status!.conditions!].reverse();
    expect(bytesOf(shuffled)).toBe(bytesOf(node));
  });

  it('changes its bytes when a label, an address, a podCIDR or Ready changes', () => {
    const reference = bytesOf(baseNode());
    const relabeled = baseNode();
    relabeled.metadata!.labels!.role = 'edge';
    const readdressed = baseNode();
    readdressed.status!.addresses![0]!.address = '10.0.0.70';
    const recidred = baseNode();
    recidred.spec!.podCIDRs = ['10.244.70.0/24'];
    recidred.spec!.podCIDR = '10.244.70.0/24';
    const notReady = baseNode();
    notReady.status!.conditions!.find((c) => c.type === 'Ready')!.status = 'False';
    for (const changed of [relabeled, readdressed, recidred, notReady]) expect(bytesOf(changed)).not.toBe(reference);
  });

  it('rejects a bad address or CIDR and names the field', () => {
    const badIp = baseNode();
    badIp.status!.addresses![0]!.address = '10.0.0.300';
    expect(() => slimNode(badIp)).toThrow(SlimError);
    expect(() => slimNode(badIp)).toThrow(/field addresses\.0\.ip is not a valid IP/);
    const badCidr = baseNode();
    badCidr.spec!.podCIDRs = ['10.244.7.1/24'];
    badCidr.spec!.podCIDR = undefined;
    expect(() => slimNode(badCidr)).toThrow(/field podCIDRs\.0 is not a valid CIDR/);
  });

  it('is a small fraction of the full object', () => {
    const node = baseNode();
    const ratio = encodeSlim('node', slimNode(node)).length / JSON.stringify(node).length;
    expect(ratio).toBeLessThan(0.05);
  });
});

describe('slimPod and the endpoint rules', () => {
  const running = () => realisticPod({ namespace: 'shop', name: 'cart-7d9-x2', nodeName: 'node-1', hostIP: '10.0.0.1', podIP: '10.244.1.9' });

  it('slims a running pod and counts it as an endpoint', () => {
    const pod = slimPod(running());
    expect(pod).toMatchObject({ namespace: 'shop', name: 'cart-7d9-x2', nodeName: 'node-1', hostIP: '10.0.0.1', podIPs: ['10.244.1.9'], phase: 'Running', deleting: false, hostNetwork: false });
    expect(pod.ports).toEqual([{ name: 'http', port: 80, protocol: 'TCP' }]);
    expect(isEndpoint(pod)).toBe(true);
  });

  it('does not count Succeeded, Failed, Unknown, Pending-without-IP or hostNetwork pods', () => {
    const succeeded = running();
    succeeded.status!.phase = 'Succeeded';
    const failed = running();
    failed.status!.phase = 'Failed';
    const unknown = running();
    unknown.status!.phase = 'Unknown';
    const pending = realisticPod({ namespace: 'shop', name: 'p', nodeName: 'node-1' });
    const hostNet = running();
    hostNet.spec!.hostNetwork = true;
    const released = running();
    released.metadata!.deletionTimestamp = new Date();
    released.status!.podIP = undefined;
    released.status!.podIPs = undefined;
    for (const pod of [succeeded, failed, unknown, pending, hostNet, released]) expect(isEndpoint(slimPod(pod))).toBe(false);
  });

  it('keeps a terminating pod as an endpoint while it holds its IP, marked terminating', () => {
    const deleting = running();
    deleting.metadata!.deletionTimestamp = new Date('2026-01-01T00:01:00Z');
    const slim = slimPod(deleting);
    expect(isEndpoint(slim)).toBe(true);
    expect(slim).toMatchObject({ deleting: true, terminating: true });
    // Once the kubelet has stopped it, the IP is released: no longer an endpoint.
    deleting.status!.phase = 'Succeeded';
    expect(isEndpoint(slimPod(deleting))).toBe(false);
  });

  it('counts a Pending pod whose sandbox has an IP (init containers run on the network)', () => {
    const starting = realisticPod({ namespace: 'shop', name: 'init-1', nodeName: 'node-1', hostIP: '10.0.0.1', podIP: '10.244.1.20', phase: 'Pending' });
    expect(isEndpoint(slimPod(starting))).toBe(true);
  });

  it('keeps the primary family first in podIPs', () => {
    const v6first = realisticPod({ namespace: 'shop', name: 'v6', nodeName: 'node-1', hostIP: '10.0.0.1', podIP: 'fd00:10:244:1::9', podIPv6: '10.244.1.9' });
    expect(slimPod(v6first).podIPs).toEqual(['fd00:10:244:1::9', '10.244.1.9']);
    const v4first = realisticPod({ namespace: 'shop', name: 'v4', nodeName: 'node-1', hostIP: '10.0.0.1', podIP: '10.244.1.9', podIPv6: 'fd00:10:244:1::9' });
    expect(slimPod(v4first).podIPs).toEqual(['10.244.1.9', 'fd00:10:244:1::9']);
  });

  it('ignores status churn that the datapath does not read', () => {
    const a = running();
    const b = running();
    b.status!.containerStatuses![0]!.restartCount = 4;
    b.metadata!.resourceVersion = '77';
    expect(encodeSlimString('pod', slimPod(b))).toBe(encodeSlimString('pod', slimPod(a)));
  });
});

describe('slimService and slimEndpointSlice', () => {
  it('slims a service and drops a headless "None" cluster IP', () => {
    const svc = realisticService({ namespace: 'shop', name: 'cart', clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80, targetPort: 'http' }] });
    expect(slimService(svc)).toEqual({
      v: 1, namespace: 'shop', name: 'cart', type: 'ClusterIP', clusterIPs: ['10.96.0.10'], externalIPs: [], loadBalancerIPs: [],
      ports: [{ name: 'http', port: 80, targetPort: 'http', nodePort: 0, protocol: 'TCP' }],
      sessionAffinity: 'None', externalTrafficPolicy: 'Cluster', internalTrafficPolicy: 'Cluster', ipFamilies: ['IPv4'],
    });
    const headless = realisticService({ namespace: 'shop', name: 'db', clusterIP: 'None' });
    expect(slimService(headless).clusterIPs).toEqual([]);
  });

  it('slims an endpoint slice with sorted endpoints and the API defaults for conditions', () => {
    const slice = realisticEndpointSlice({
      namespace: 'shop', service: 'cart', name: 'cart-abcde',
      endpoints: [{ ip: '10.244.2.3', nodeName: 'node-2' }, { ip: '10.244.1.3', nodeName: 'node-1', ready: false }],
    });
    slice.endpoints[0]!.conditions = {};
    const slim = slimEndpointSlice(slice);
    expect(slim.service).toBe('cart');
    expect(slim.endpoints).toEqual([
      { addresses: ['10.244.1.3'], ready: false, serving: false, terminating: false, nodeName: 'node-1' },
      { addresses: ['10.244.2.3'], ready: true, serving: true, terminating: false, nodeName: 'node-2' },
    ]);
  });
});

describe('the fields users\' Services and EndpointSlices need', () => {
  const loadBalancer = () => {
    const svc = realisticService({ namespace: 'shop', name: 'front', clusterIP: 'fd00:96::10', type: 'LoadBalancer', ports: [{ name: 'https', port: 443, targetPort: 8443, nodePort: 31443 }] });
    svc.spec = {
      ...svc.spec,
      clusterIPs: ['fd00:96::10', '10.96.0.10'],
      ipFamilies: ['IPv6', 'IPv4'],
      ipFamilyPolicy: 'RequireDualStack',
      externalTrafficPolicy: 'Local',
      healthCheckNodePort: 32100,
      loadBalancerSourceRanges: ['192.0.2.0/24', '10.0.0.5/8'],
      loadBalancerClass: 'sluice.io/lb',
      sessionAffinity: 'ClientIP',
      sessionAffinityConfig: { clientIP: { timeoutSeconds: 600 } },
    };
    svc.status = { loadBalancer: { ingress: [{ ip: '203.0.113.9', ipMode: 'Proxy' }, { hostname: 'front.example.com' }, { ip: '198.51.100.4', ipMode: 'VIP' }] } };
    return svc;
  };

  it('writes a dual-stack LoadBalancer exactly as this literal record (primary family first, every field)', () => {
    expect(encodeSlimString('service', slimService(loadBalancer()))).toBe(
      '{"v":1,"namespace":"shop","name":"front","type":"LoadBalancer","clusterIPs":["fd00:96::10","10.96.0.10"],"externalIPs":[],' +
        '"loadBalancerIPs":["198.51.100.4","203.0.113.9"],"ports":[{"name":"https","port":443,"targetPort":8443,"nodePort":31443,"protocol":"TCP"}],' +
        '"sessionAffinity":"ClientIP","externalTrafficPolicy":"Local","internalTrafficPolicy":"Cluster","ipFamilies":["IPv6","IPv4"],' +
        '"loadBalancerIngress":[{"ip":"203.0.113.9","ipMode":"Proxy"},{"hostname":"front.example.com"},{"ip":"198.51.100.4","ipMode":"VIP"}],' +
        '"healthCheckNodePort":32100,"loadBalancerSourceRanges":["10.0.0.0/8","192.0.2.0/24"],"sessionAffinityTimeoutSeconds":600,"loadBalancerClass":"sluice.io/lb"}',
    );
  });

  it('fills in the API\'s default ClientIP timeout, and rejects a bad source range naming the field', () => {
    const svc = loadBalancer();
    svc.spec!.sessionAffinityConfig = undefined;
    expect(slimService(svc).sessionAffinityTimeoutSeconds).toBe(10_800);
    svc.spec!.loadBalancerSourceRanges = ['10.0.0.0/8', 'not-a-cidr'];
    expect(() => slimService(svc)).toThrow(/field loadBalancerSourceRanges\.1 is not a valid CIDR/);
  });

  it('keeps a record without the new fields byte-identical to the first schema\'s', () => {
    const svc = realisticService({ namespace: 'a', name: 'plain', clusterIP: '10.96.0.3' });
    delete svc.spec!.ipFamilies;
    expect(encodeSlimString('service', slimService(svc))).toBe(
      '{"v":1,"namespace":"a","name":"plain","type":"ClusterIP","clusterIPs":["10.96.0.3"],"externalIPs":[],"loadBalancerIPs":[],' +
        '"ports":[{"name":"http","port":80,"targetPort":80,"nodePort":0,"protocol":"TCP"}],"sessionAffinity":"None","externalTrafficPolicy":"Cluster","internalTrafficPolicy":"Cluster"}',
    );
    // And a record written before the new fields existed still decodes.
    expect(decodeSlim('service', encodeSlimString('service', slimService(svc))).name).toBe('plain');
  });

  it('writes an endpoint slice with zone, hints and targetRef exactly as this literal record', () => {
    const slice = realisticEndpointSlice({ namespace: 'shop', service: 'front', name: 'front-x1', endpoints: [{ ip: '10.244.2.3', nodeName: 'node-2', podName: 'front-b' }, { ip: '10.244.1.3', nodeName: 'node-1', podName: 'front-a' }] });
    slice.endpoints[0]!.zone = 'eu-west-1b';
    slice.endpoints[0]!.hints = { forZones: [{ name: 'eu-west-1b' }, { name: 'eu-west-1a' }] };
    slice.endpoints[0]!.targetRef = { kind: 'Pod', namespace: 'shop', name: 'front-b', uid: 'uid-b', resourceVersion: '812' };
    slice.endpoints[1]!.targetRef = { kind: 'Pod', namespace: 'shop', name: 'front-a', uid: 'uid-a' };
    slice.endpoints[1]!.conditions = { ready: false, serving: true, terminating: true };
    expect(encodeSlimString('endpointSlice', slimEndpointSlice(slice))).toBe(
      '{"v":1,"namespace":"shop","name":"front-x1","service":"front","addressType":"IPv4","endpoints":[' +
        '{"addresses":["10.244.1.3"],"ready":false,"serving":true,"terminating":true,"nodeName":"node-1","targetRef":{"kind":"Pod","namespace":"shop","name":"front-a","uid":"uid-a"}},' +
        '{"addresses":["10.244.2.3"],"ready":true,"serving":true,"terminating":false,"nodeName":"node-2","zone":"eu-west-1b","hints":{"forZones":["eu-west-1a","eu-west-1b"]},' +
        '"targetRef":{"kind":"Pod","namespace":"shop","name":"front-b","uid":"uid-b"}}],"ports":[{"name":"http","port":80,"protocol":"TCP"}]}',
    );
  });

  it('validates endpoint addresses as IPs of the slice\'s family, naming the field', () => {
    const slice = realisticEndpointSlice({ namespace: 'shop', service: 'front', endpoints: [{ ip: '10.244.1.3' }, { ip: '10.244.1.300' }] });
    expect(() => slimEndpointSlice(slice)).toThrow(/field endpoints\.1\.addresses\.0 is not a valid IPv4 address/);
    const mixed = realisticEndpointSlice({ namespace: 'shop', service: 'front', endpoints: [{ ip: 'fd00::1' }] });
    expect(() => slimEndpointSlice(mixed)).toThrow(/endpoints\.0\.addresses\.0 is not a valid IPv4 address/);
    const fqdn = realisticEndpointSlice({ namespace: 'shop', service: 'ext', endpoints: [{ ip: 'db.example.com' }] });
    fqdn.addressType = 'FQDN';
    expect(slimEndpointSlice(fqdn).endpoints[0]!.addresses).toEqual(['db.example.com']);
  });
});

describe('literal records (written by hand, not computed with the converters)', () => {
  it('a dual-stack node with InternalIP and ExternalIP', () => {
    const node = realisticNode({ name: 'node-9', internalIP: '10.0.0.9', podCIDR: '10.244.9.0/24', podCIDRv6: 'fd00:10:244:9::/64', labels: { role: 'edge' } });
    node.status!.addresses = [{ type: 'InternalIP', address: '10.0.0.9' }, { type: 'InternalIP', address: 'fd00::9' }, { type: 'ExternalIP', address: '203.0.113.19' }, { type: 'Hostname', address: 'node-9' }];
    node.metadata!.labels = { role: 'edge', 'kubernetes.io/hostname': 'node-9' };
    expect(encodeSlimString('node', slimNode(node))).toBe(
      '{"v":1,"name":"node-9","labels":{"kubernetes.io/hostname":"node-9","role":"edge"},"addresses":[{"type":"ExternalIP","ip":"203.0.113.19"},' +
        '{"type":"InternalIP","ip":"10.0.0.9"},{"type":"InternalIP","ip":"fd00::9"}],"podCIDRs":["10.244.9.0/24","fd00:10:244:9::/64"],"ready":"True","healthIPs":[]}',
    );
  });

  it('a terminating dual-stack pod', () => {
    const pod = realisticPod({ namespace: 'shop', name: 'cart-1', nodeName: 'node-9', hostIP: '10.0.0.9', podIP: '10.244.9.7', podIPv6: 'fd00:10:244:9::7', labels: { app: 'cart', 'pod-template-hash': 'abc' } });
    pod.metadata!.uid = 'uid-cart-1';
    pod.metadata!.deletionTimestamp = new Date('2026-01-01T00:01:00Z');
    expect(encodeSlimString('pod', slimPod(pod))).toBe(
      '{"v":1,"namespace":"shop","name":"cart-1","uid":"uid-cart-1","nodeName":"node-9","hostIP":"10.0.0.9","podIPs":["10.244.9.7","fd00:10:244:9::7"],' +
        '"hostNetwork":false,"phase":"Running","labels":{"app":"cart","pod-template-hash":"abc"},"deleting":true,"ports":[{"name":"http","port":80,"protocol":"TCP"}],"terminating":true}',
    );
  });
});

describe('a slice from its parts', () => {
  it('joins a header and encoded endpoints into exactly the bytes of the whole record', () => {
    const slice = realisticEndpointSlice({ namespace: 'shop', service: 'web', name: 'web-1', endpoints: [{ ip: '10.244.2.3', nodeName: 'n2', podName: 'b' }, { ip: '10.244.1.3', nodeName: 'n1', podName: 'a' }] });
    const header = buildSlimEndpointSlice({ ...slice, endpoints: [] });
    const parts = slice.endpoints.map(buildSlimEndpoint).sort((a, b) => endpointSortKey(a).localeCompare(endpointSortKey(b))).map((e) => JSON.stringify(e));
    expect(joinSlimEndpointSlice(header, parts)).toBe(JSON.stringify(buildSlimEndpointSlice(slice)));
    expect(() => joinSlimEndpointSlice(buildSlimEndpointSlice(slice), parts)).toThrow(/without endpoints/);
  });

  it('validates one endpoint as the whole record would, naming the field', () => {
    expect(() => validateSlimEndpoint('IPv4', buildSlimEndpoint({ addresses: ['10.1.2.3'] }), 0)).not.toThrow();
    expect(() => validateSlimEndpoint('IPv4', buildSlimEndpoint({ addresses: ['fd00::3'] }), 7)).toThrow(/field endpoints\.7\.addresses\.0 is not a valid IPv4 address/);
    expect(() => validateSlimEndpoint('IPv6', buildSlimEndpoint({ addresses: ['fd00::3'], zone: '' }), 1)).not.toThrow();
    expect(() => validateSlimEndpoint('FQDN', buildSlimEndpoint({ addresses: ['db.example.com'] }), 0)).not.toThrow();
  });
});

describe('decodeSlim', () => {
  it('round-trips every kind', () => {
    const node = slimNode(baseNode());
    expect(decodeSlim('node', encodeSlim('node', node))).toEqual(node);
    const pod = slimPod(realisticPod({ namespace: 'a', name: 'b', nodeName: 'n', podIP: '10.1.2.3', hostIP: '10.0.0.1' }));
    expect(decodeSlim('pod', encodeSlimString('pod', pod))).toEqual(pod);
  });

  it('rejects bad JSON, an unknown version, a wrong type and an unknown field, naming the field', () => {
    expect(() => decodeSlim('node', '{not json')).toThrow(/not valid JSON/);
    const node = slimNode(baseNode());
    expect(() => decodeSlim('node', JSON.stringify({ ...node, v: 2 }))).toThrow(/unknown schema version 2/);
    expect(() => decodeSlim('node', JSON.stringify({ ...node, podCIDRs: ['banana'] }))).toThrow(/field podCIDRs\.0 is not a valid CIDR/);
    expect(() => decodeSlim('node', JSON.stringify({ ...node, extra: 1 }))).toThrow(SlimError);
    try {
      decodeSlim('pod', JSON.stringify({ v: 1 }));
      expect.unreachable();
    } catch (err) {
      expect((err as SlimError).field).toBe('namespace');
    }
  });
});

describe('unvalidated builders', () => {
  it('encode to exactly the bytes of the validated records (fields in schema order)', () => {
    const node = baseNode();
    expect(JSON.stringify(buildSlimNode(node))).toBe(encodeSlimString('node', slimNode(node)));
    const pod = realisticPod({ namespace: 'a', name: 'b-1', nodeName: 'n', podIP: '10.1.2.3', hostIP: '10.0.0.1' });
    expect(JSON.stringify(buildSlimPod(pod))).toBe(encodeSlimString('pod', slimPod(pod)));
    const svc = realisticService({ namespace: 'a', name: 's', clusterIP: '10.96.0.1' });
    expect(JSON.stringify(buildSlimService(svc))).toBe(encodeSlimString('service', slimService(svc)));
    const slice = realisticEndpointSlice({ namespace: 'a', service: 's', endpoints: [{ ip: '10.1.2.3', nodeName: 'n' }] });
    expect(JSON.stringify(buildSlimEndpointSlice(slice))).toBe(encodeSlimString('endpointSlice', slimEndpointSlice(slice)));
  });

  it('leave validation to validateSlim, which names the bad field', () => {
    const node = baseNode();
    node.spec!.podCIDRs = ['10.244.7.9/24'];
    node.spec!.podCIDR = undefined;
    const built = buildSlimNode(node);
    expect(() => validateSlim('node', built)).toThrow(/bad node node-7: field podCIDRs\.0 is not a valid CIDR/);
    expect(() => validateSlim('node', buildSlimNode(baseNode()))).not.toThrow();
  });
});
