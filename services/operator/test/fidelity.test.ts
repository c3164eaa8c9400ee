/**
 * Objects shaped as kubelets, controllers and users write them, through kube-sim (over HTTPS, with a bearer token)
 * → the operator → etcd. What etcd must hold is written out by hand here, byte for byte, not computed with the slim
 * functions the operator uses: a slim bug cannot hide behind the same bug in the expectation.
 */
import type { V1EndpointSlice, V1Pod, V1Service } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { realisticNode, realisticPod } from '@sluice/kube-objects';
import type { KubeObject } from '@sluice/kube-sim';
import { keySchema } from '@sluice/kvstore';
import { createLogger } from '@sluice/log';
import { createRegistry, type Registry } from '@sluice/metrics';
import { loadKubeConfig } from '../src/kube-client.ts';
import { Operator } from '../src/operator.ts';
import { etcdRecords, startEnv, waitFor, type Env, metricValue } from './env.ts';

const NS = 'shop';

function pod(name: string, fields: { podIP?: string; podIPv6?: string; phase?: 'Pending' | 'Running' | 'Succeeded' | 'Failed'; hostNetwork?: boolean }): V1Pod {
  const p = realisticPod({ namespace: NS, name, nodeName: 'dual-1', hostIP: '10.0.5.1', ...fields });
  p.metadata!.labels = { app: 'cart' };
  return p;
}

const service = (name: string, spec: V1Service['spec']): V1Service => ({ apiVersion: 'v1', kind: 'Service', metadata: { namespace: NS, name }, spec });

const slice = (name: string, serviceName: string, addressType: string, endpoints: V1EndpointSlice['endpoints']): V1EndpointSlice => ({
  apiVersion: 'discovery.k8s.io/v1',
  kind: 'EndpointSlice',
  metadata: { namespace: NS, name, labels: { 'kubernetes.io/service-name': serviceName, 'endpointslice.kubernetes.io/managed-by': 'sluice-test' } },
  addressType,
  endpoints,
  ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
});

describe('kube-sim (HTTPS, bearer token) → operator → etcd, with literal records', () => {
  let env: Env;
  let operator: Operator;
  let registry: Registry;
  const uid: Record<string, string> = {};

  const create = (plural: string, object: object) => env.sim.store.create(plural, object as KubeObject);
  const key = {
    node: (name: string) => env.keys.node(name),
    pod: (name: string) => env.keys.pod(NS, name),
    service: (name: string) => env.keys.service(NS, name),
    slice: (name: string) => env.keys.endpointSlice(NS, name),
  };
  const value = async (k: string) => env.client.get(k).string();
  const settles = (what: string, k: string, expected: string | null) => waitFor(what, async () => (await value(k)) === expected, 20_000).catch(async (err: Error) => {
    // Show the difference rather than only the timeout.
    expect(await value(k)).toBe(expected);
    throw err;
  });

  beforeAll(async () => {
    env = await startEnv({ nodes: 0, podsPerNode: 0, services: 0, namespaces: 1, tls: true, auth: true });
    create('namespaces', { metadata: { name: NS } });

    // A dual-stack node, as a kubelet registers it (InternalIP of each family, an ExternalIP, Hostname, InternalDNS).
    const node = realisticNode({ name: 'dual-1', internalIP: '10.0.5.1', podCIDR: '10.244.50.0/24', podCIDRv6: 'fd00:10:244:50::/64', annotations: { 'sluice.io/health-ips': 'fd00:10:244:50::2, 10.244.50.2' } });
    node.metadata!.labels = { 'kubernetes.io/hostname': 'dual-1', 'topology.kubernetes.io/zone': 'zone-a' };
    node.status!.addresses = [
      { type: 'InternalIP', address: '10.0.5.1' },
      { type: 'InternalIP', address: 'fd00::5:1' },
      { type: 'ExternalIP', address: '203.0.113.51' },
      { type: 'Hostname', address: 'dual-1' },
      { type: 'InternalDNS', address: 'dual-1.eu-west-1.compute.internal' },
    ];
    create('nodes', node);

    create('pods', pod('cart-running', { podIP: '10.244.50.10', podIPv6: 'fd00:10:244:50::10' }));
    create('pods', pod('cart-hostnet', { podIP: '10.0.5.1', hostNetwork: true }));
    create('pods', pod('cart-pending', { phase: 'Pending' }));
    // Finished pods: the kubelet leaves their last IP in the status, but it is released.
    create('pods', pod('cart-done', { podIP: '10.244.50.12', phase: 'Succeeded' }));
    create('pods', pod('cart-failed', { podIP: '10.244.50.13', phase: 'Failed' }));
    create('pods', pod('cart-terminating', { podIP: '10.244.50.14' }));
    for (const name of ['cart-running', 'cart-pending', 'cart-terminating']) uid[name] = env.sim.store.get('pods', NS, name)!.uid;

    create('services', service('api', { type: 'ClusterIP', clusterIP: 'fd00:10:96::a', clusterIPs: ['fd00:10:96::a', '10.96.0.50'], ipFamilies: ['IPv6', 'IPv4'], ipFamilyPolicy: 'RequireDualStack', ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }] }));
    create('services', service('web', { type: 'NodePort', clusterIP: '10.96.0.51', ipFamilies: ['IPv4'], externalIPs: ['198.51.100.7'], sessionAffinity: 'ClientIP', ports: [{ name: 'http', port: 80, targetPort: 8080, nodePort: 30080, protocol: 'TCP' }] }));
    create('services', service('front', {
      type: 'LoadBalancer', clusterIP: '10.96.0.52', ipFamilies: ['IPv4'], externalTrafficPolicy: 'Local', healthCheckNodePort: 32000,
      loadBalancerSourceRanges: ['192.0.2.0/24', '10.0.0.0/8'], loadBalancerClass: 'sluice.io/lb', sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: 600 } },
      ports: [{ name: 'https', port: 443, targetPort: 8443, nodePort: 30443, protocol: 'TCP' }],
    }));
    // The load-balancer controller's status write.
    env.sim.store.mutate('services', NS, 'front', (obj) => {
      obj.status = { loadBalancer: { ingress: [{ ip: '203.0.113.9', ipMode: 'VIP' }, { hostname: 'front.example.com' }] } };
    });
    create('services', service('ext', { type: 'ExternalName', externalName: 'db.example.com' }));

    create('endpointslices', slice('web-abc12', 'web', 'IPv4', [
      { addresses: ['10.244.50.10'], conditions: { ready: true, serving: true, terminating: false }, nodeName: 'dual-1', zone: 'zone-a', hints: { forZones: [{ name: 'zone-a' }] }, targetRef: { kind: 'Pod', namespace: NS, name: 'cart-running', uid: 'u-1' } },
      { addresses: ['10.244.50.14'], conditions: { ready: false, serving: true, terminating: true }, nodeName: 'dual-1', zone: 'zone-a', targetRef: { kind: 'Pod', namespace: NS, name: 'cart-terminating', uid: 'u-2' } },
    ]));
    create('endpointslices', slice('api-v6', 'api', 'IPv6', [{ addresses: ['fd00:10:244:50::10'], conditions: { ready: true }, nodeName: 'dual-1' }]));
    create('endpointslices', slice('api-bad', 'api', 'IPv4', [{ addresses: ['10.244.50.300'], conditions: { ready: true } }]));

    registry = createRegistry();
    // The kubeconfig kube-sim wrote: its CA and the bearer token; nothing else tells the operator how to connect.
    const kube = loadKubeConfig({ kubeconfig: env.sim.kubeconfigPath });
    expect(kube.getCurrentCluster()?.server).toMatch(/^https:/);
    operator = new Operator({ kube, etcd: env.client, keys: env.keys, registry, log: createLogger({ component: 'operator', level: 'silent' }), leaseTtlSeconds: 5 });
    operator.start();
    await operator.waitUntilSynced(AbortSignal.timeout(60_000));
  });
  afterAll(async () => {
    await operator?.stop();
    await env?.close();
  });

  it('holds the node, the endpoint pods, each Service type and the slices exactly as written here, and nothing else', async () => {
    await settles('the node', key.node('dual-1'),
      '{"v":1,"name":"dual-1","labels":{"kubernetes.io/hostname":"dual-1","topology.kubernetes.io/zone":"zone-a"},' +
      '"addresses":[{"type":"ExternalIP","ip":"203.0.113.51"},{"type":"InternalIP","ip":"10.0.5.1"},{"type":"InternalIP","ip":"fd00::5:1"}],' +
      '"podCIDRs":["10.244.50.0/24","fd00:10:244:50::/64"],"ready":"True","healthIPs":["10.244.50.2","fd00:10:244:50::2"]}');
    await settles('the running pod', key.pod('cart-running'),
      `{"v":1,"namespace":"shop","name":"cart-running","uid":"${uid['cart-running']}","nodeName":"dual-1","hostIP":"10.0.5.1",` +
      '"podIPs":["10.244.50.10","fd00:10:244:50::10"],"hostNetwork":false,"phase":"Running","labels":{"app":"cart"},"deleting":false,' +
      '"ports":[{"name":"http","port":80,"protocol":"TCP"}]}');
    await settles('the dual-stack ClusterIP service', key.service('api'),
      '{"v":1,"namespace":"shop","name":"api","type":"ClusterIP","clusterIPs":["fd00:10:96::a","10.96.0.50"],"externalIPs":[],"loadBalancerIPs":[],' +
      '"ports":[{"name":"http","port":80,"targetPort":8080,"nodePort":0,"protocol":"TCP"}],"sessionAffinity":"None","externalTrafficPolicy":"Cluster",' +
      '"internalTrafficPolicy":"Cluster","ipFamilies":["IPv6","IPv4"]}');
    await settles('the NodePort service', key.service('web'),
      '{"v":1,"namespace":"shop","name":"web","type":"NodePort","clusterIPs":["10.96.0.51"],"externalIPs":["198.51.100.7"],"loadBalancerIPs":[],' +
      '"ports":[{"name":"http","port":80,"targetPort":8080,"nodePort":30080,"protocol":"TCP"}],"sessionAffinity":"ClientIP","externalTrafficPolicy":"Cluster",' +
      '"internalTrafficPolicy":"Cluster","ipFamilies":["IPv4"],"sessionAffinityTimeoutSeconds":10800}');
    await settles('the LoadBalancer service', key.service('front'),
      '{"v":1,"namespace":"shop","name":"front","type":"LoadBalancer","clusterIPs":["10.96.0.52"],"externalIPs":[],"loadBalancerIPs":["203.0.113.9"],' +
      '"ports":[{"name":"https","port":443,"targetPort":8443,"nodePort":30443,"protocol":"TCP"}],"sessionAffinity":"ClientIP","externalTrafficPolicy":"Local",' +
      '"internalTrafficPolicy":"Cluster","ipFamilies":["IPv4"],"loadBalancerIngress":[{"ip":"203.0.113.9","ipMode":"VIP"},{"hostname":"front.example.com"}],' +
      '"healthCheckNodePort":32000,"loadBalancerSourceRanges":["10.0.0.0/8","192.0.2.0/24"],"sessionAffinityTimeoutSeconds":600,"loadBalancerClass":"sluice.io/lb"}');
    await settles('the ExternalName service', key.service('ext'),
      '{"v":1,"namespace":"shop","name":"ext","type":"ExternalName","clusterIPs":[],"externalIPs":[],"loadBalancerIPs":[],"ports":[],' +
      '"sessionAffinity":"None","externalTrafficPolicy":"Cluster","internalTrafficPolicy":"Cluster"}');
    await settles('the IPv4 slice', key.slice('web-abc12'),
      '{"v":1,"namespace":"shop","name":"web-abc12","service":"web","addressType":"IPv4","endpoints":[' +
      '{"addresses":["10.244.50.10"],"ready":true,"serving":true,"terminating":false,"nodeName":"dual-1","zone":"zone-a","hints":{"forZones":["zone-a"]},' +
      '"targetRef":{"kind":"Pod","namespace":"shop","name":"cart-running","uid":"u-1"}},' +
      '{"addresses":["10.244.50.14"],"ready":false,"serving":true,"terminating":true,"nodeName":"dual-1","zone":"zone-a",' +
      '"targetRef":{"kind":"Pod","namespace":"shop","name":"cart-terminating","uid":"u-2"}}],"ports":[{"name":"http","port":8080,"protocol":"TCP"}]}');
    await settles('the IPv6 slice', key.slice('api-v6'),
      '{"v":1,"namespace":"shop","name":"api-v6","service":"api","addressType":"IPv6","endpoints":[' +
      '{"addresses":["fd00:10:244:50::10"],"ready":true,"serving":true,"terminating":false,"nodeName":"dual-1"}],"ports":[{"name":"http","port":8080,"protocol":"TCP"}]}');

    // Not endpoints: hostNetwork, Pending without an IP, Succeeded, Failed; and a slice with an address that is no IP.
    const keys = [...(await etcdRecords(env.client, env.keys)).keys()].sort();
    expect(keys).toEqual([
      key.pod('cart-running'), key.pod('cart-terminating'), key.node('dual-1'),
      key.service('api'), key.service('ext'), key.service('front'), key.service('web'),
      key.slice('api-v6'), key.slice('web-abc12'),
    ].sort());
  });

  it('writes a pod once the kubelet reports it Running with an IP', async () => {
    expect(await value(key.pod('cart-pending'))).toBeNull();
    env.sim.store.mutate('pods', NS, 'cart-pending', (obj) => {
      Object.assign(obj.status as object, { phase: 'Running', podIP: '10.244.50.11', podIPs: [{ ip: '10.244.50.11' }], hostIP: '10.0.5.1' });
    });
    await settles('the started pod', key.pod('cart-pending'),
      `{"v":1,"namespace":"shop","name":"cart-pending","uid":"${uid['cart-pending']}","nodeName":"dual-1","hostIP":"10.0.5.1",` +
      '"podIPs":["10.244.50.11"],"hostNetwork":false,"phase":"Running","labels":{"app":"cart"},"deleting":false,"ports":[{"name":"http","port":80,"protocol":"TCP"}]}');
  });

  it('keeps a terminating pod, marked terminating, until it is gone', async () => {
    env.sim.store.delete('pods', NS, 'cart-terminating', { gracePeriodSeconds: 30 });
    await settles('the terminating pod', key.pod('cart-terminating'),
      `{"v":1,"namespace":"shop","name":"cart-terminating","uid":"${uid['cart-terminating']}","nodeName":"dual-1","hostIP":"10.0.5.1",` +
      '"podIPs":["10.244.50.14"],"hostNetwork":false,"phase":"Running","labels":{"app":"cart"},"deleting":true,"ports":[{"name":"http","port":80,"protocol":"TCP"}],"terminating":true}');
    env.sim.store.delete('pods', NS, 'cart-terminating', { gracePeriodSeconds: 0 });
    await settles('the terminated pod to go', key.pod('cart-terminating'), null);
  });

  it('follows an endpoint change inside a slice (the selective decoding of watch events)', async () => {
    env.sim.store.mutate('endpointslices', NS, 'web-abc12', (obj) => {
      const endpoints = obj.endpoints as { conditions: object }[];
      endpoints[1]!.conditions = { ready: true, serving: true, terminating: false };
      endpoints.push({ addresses: ['10.244.50.11'], conditions: { ready: true }, nodeName: 'dual-1', targetRef: { kind: 'Pod', namespace: NS, name: 'cart-pending', uid: 'u-3' } } as never);
    });
    await settles('the changed slice', key.slice('web-abc12'),
      '{"v":1,"namespace":"shop","name":"web-abc12","service":"web","addressType":"IPv4","endpoints":[' +
      '{"addresses":["10.244.50.10"],"ready":true,"serving":true,"terminating":false,"nodeName":"dual-1","zone":"zone-a","hints":{"forZones":["zone-a"]},' +
      '"targetRef":{"kind":"Pod","namespace":"shop","name":"cart-running","uid":"u-1"}},' +
      '{"addresses":["10.244.50.11"],"ready":true,"serving":true,"terminating":false,"nodeName":"dual-1",' +
      '"targetRef":{"kind":"Pod","namespace":"shop","name":"cart-pending","uid":"u-3"}},' +
      '{"addresses":["10.244.50.14"],"ready":true,"serving":true,"terminating":false,"nodeName":"dual-1","zone":"zone-a",' +
      '"targetRef":{"kind":"Pod","namespace":"shop","name":"cart-terminating","uid":"u-2"}}],"ports":[{"name":"http","port":8080,"protocol":"TCP"}]}');
  });
});

describe('bearer tokens against kube-sim over HTTPS', () => {
  let env: Env;
  const operators: Operator[] = [];
  beforeAll(async () => {
    env = await startEnv({
      nodes: 2, podsPerNode: 2, services: 1, tls: true,
      tokens: [
        { token: 'operator-token-0001', user: 'sluice-operator', rules: [{ verbs: ['get', 'list', 'watch'], resources: ['*'] }] },
        { token: 'no-pods-token-0002', user: 'half-blind', rules: [{ verbs: ['get', 'list', 'watch'], resources: ['nodes', 'services', 'endpointslices'] }] },
      ],
    });
  });
  afterAll(async () => {
    await Promise.all(operators.map((o) => o.stop()));
    await env?.close();
  });

  /** The kubeconfig kube-sim wrote (its CA), with another token. */
  function withToken(token: string) {
    const written = loadKubeConfig({ kubeconfig: env.sim.kubeconfigPath });
    const kube = loadKubeConfig({ kubeconfig: env.sim.kubeconfigPath });
    kube.loadFromClusterAndUser(written.getCurrentCluster()!, { name: 'other', token });
    return kube;
  }

  function start(token: string, registry: Registry, keys = env.keys): Operator {
    const operator = new Operator({ kube: withToken(token), etcd: env.client, keys, registry, log: createLogger({ component: 'operator', level: 'silent' }), leaseTtlSeconds: 5, identity: token });
    operators.push(operator);
    operator.start();
    return operator;
  }

  const restarts = (registry: Registry, kind: string) => metricValue(registry, 'sluice_operator_informer_restarts_total', { kind });

  it('a token without access to pods gets 403s for pods only: it mirrors the rest and retries pods', async () => {
    const registry = createRegistry();
    const operator = start('no-pods-token-0002', registry);
    await waitFor('nodes to be mirrored', async () => (await env.client.get(env.keys.node('node-00001')).string()) !== null, 30_000);
    await waitFor('pods to be refused and retried', async () => (await restarts(registry, 'Pod')) >= 2, 30_000);
    expect(operator.status().kinds.pods?.synced).toBe(false);
    expect(operator.status().kinds.nodes?.synced).toBe(true);
    expect(env.sim.server.stats.requests['list 403']).toBeGreaterThan(0);
    await operator.stop();
    operators.splice(operators.indexOf(operator), 1);
  });

  it('an unknown token gets 401s and mirrors nothing; the right one syncs everything', async () => {
    const refused = createRegistry();
    // Under a prefix of its own, so that what it writes (nothing) is not mixed with what the previous test's wrote.
    const strangerKeys = keySchema('stranger/');
    const stranger = start('not-a-known-token', refused, strangerKeys);
    await waitFor('every kind to be refused', async () => (await Promise.all(['Node', 'Pod', 'Service', 'EndpointSlice'].map((k) => restarts(refused, k)))).every((n) => n >= 1), 30_000);
    expect(env.sim.server.stats.requests['other 401']).toBeGreaterThan(0);
    expect(stranger.informersSynced).toBe(false);
    await stranger.stop();
    operators.splice(operators.indexOf(stranger), 1);
    expect((await etcdRecords(env.client, strangerKeys)).size).toBe(0);

    const operator = start('operator-token-0001', createRegistry());
    await operator.waitUntilSynced(AbortSignal.timeout(60_000));
    const records = await etcdRecords(env.client, env.keys);
    expect(records.has(env.keys.pod(...(() => { const p = env.sim.store.objectsIn('pods')[0]!; return [p.namespace, p.name] as const; })()))).toBe(true);
  });
});
