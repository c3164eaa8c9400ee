import { describe, expect, it } from 'vitest';
import type { V1Node } from '@kubernetes/client-node';
import { heartbeat, realisticEndpointSlice, realisticNode, realisticPod, realisticService } from '@sluice/kube-objects';
import {
  buildSlimEndpointSlice,
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

  it('does not count Succeeded, Failed, Pending, hostNetwork, IP-less or terminating pods', () => {
    const succeeded = running();
    succeeded.status!.phase = 'Succeeded';
    const failed = running();
    failed.status!.phase = 'Failed';
    const pending = realisticPod({ namespace: 'shop', name: 'p', nodeName: 'node-1' });
    const hostNet = running();
    hostNet.spec!.hostNetwork = true;
    const deleting = running();
    deleting.metadata!.deletionTimestamp = new Date();
    for (const pod of [succeeded, failed, pending, hostNet, deleting]) expect(isEndpoint(slimPod(pod))).toBe(false);
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
      sessionAffinity: 'None', externalTrafficPolicy: 'Cluster', internalTrafficPolicy: 'Cluster',
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
