import { execFile } from 'node:child_process';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { Simulation, Store, type KubeSim } from '../src/index.ts';
import { request, startSmall, waitFor } from './helpers.ts';

const run = promisify(execFile);
let sim: KubeSim | undefined;
afterEach(async () => {
  await sim?.close();
  sim = undefined;
});

async function kubectl(s: KubeSim, ...args: string[]): Promise<string> {
  const { stdout } = await run('kubectl', ['--kubeconfig', s.kubeconfigPath, '--cache-dir', join(dirname(s.kubeconfigPath), 'cache'), ...args], { timeout: 30_000 });
  return stdout;
}

type Slice = { endpoints: { addresses: string[]; conditions: { ready: boolean; serving: boolean; terminating: boolean } }[] };
const endpointOfIP = (s: KubeSim, namespace: string, ip: string) =>
  s.store.objectsIn('endpointslices', namespace).flatMap((o) => (JSON.parse(o.json) as Slice).endpoints).find((e) => e.addresses.includes(ip));

describe('graceful deletion', () => {
  it('kubectl delete --grace-period=5 leaves a Terminating pod, still a serving endpoint, that goes when its grace ends', async () => {
    sim = await startSmall({ nodes: 1, podsPerNode: 2, services: 1, namespaces: 1 });
    const pod = sim.store.objectsIn('pods')[0]!;
    const ip = (JSON.parse(pod.json) as { status: { podIP: string } }).status.podIP;
    expect(endpointOfIP(sim, pod.namespace, ip)?.conditions).toEqual({ ready: true, serving: true, terminating: false });
    expect(await kubectl(sim, 'delete', 'pod', '-n', pod.namespace, pod.name, '--grace-period=5', '--wait=false')).toContain(`pod "${pod.name}" deleted`);
    const stored = sim.store.getParsed('pods', pod.namespace, pod.name)!;
    expect(stored.metadata?.deletionGracePeriodSeconds).toBe(5);
    expect(Date.parse(stored.metadata!.deletionTimestamp!) - Date.now()).toBeGreaterThan(2_000);
    expect(await kubectl(sim, 'get', 'pod', '-n', pod.namespace, pod.name)).toMatch(new RegExp(`${pod.name}\\s+1/1\\s+Terminating`));
    expect(endpointOfIP(sim, pod.namespace, ip)?.conditions).toEqual({ ready: false, serving: true, terminating: true });
    await waitFor(() => !sim!.store.get('pods', pod.namespace, pod.name), 10_000);
    expect(endpointOfIP(sim, pod.namespace, ip)).toBeUndefined();
  });

  it('honours gracePeriodSeconds in the DeleteOptions body and the query, the pod spec default, and 0 as immediate', async () => {
    sim = await startSmall({ nodes: 1, podsPerNode: 4, services: 1, namespaces: 1 });
    const [a, b, c, d] = sim.store.objectsIn('pods');
    const path = (p: { namespace: string; name: string }) => `/api/v1/namespaces/${p.namespace}/pods/${p.name}`;
    const body = await request(sim, 'DELETE', path(a!), { kind: 'DeleteOptions', apiVersion: 'v1', gracePeriodSeconds: 7 });
    expect(body.json.metadata.deletionGracePeriodSeconds).toBe(7);
    const query = await request(sim, 'DELETE', `${path(b!)}?gracePeriodSeconds=9`, { gracePeriodSeconds: 7 });
    expect(query.json.metadata.deletionGracePeriodSeconds).toBe(9);
    const spec = await request(sim, 'DELETE', path(c!));
    expect(spec.json.metadata.deletionGracePeriodSeconds).toBe(30);
    // A second delete with a shorter grace brings the end forward; 0 ends it now.
    const shorter = await request(sim, 'DELETE', path(c!), { gracePeriodSeconds: 2 });
    expect(shorter.json.metadata.deletionGracePeriodSeconds).toBe(2);
    await request(sim, 'DELETE', path(a!), { gracePeriodSeconds: 0 });
    expect(sim.store.get('pods', a!.namespace, a!.name)).toBeUndefined();
    const now = await request(sim, 'DELETE', path(d!), { gracePeriodSeconds: 0 });
    expect(now.status).toBe(200);
    expect(sim.store.get('pods', d!.namespace, d!.name)).toBeUndefined();
    // A pod never scheduled goes at once, as on a real server.
    await request(sim, 'POST', `/api/v1/namespaces/default/pods`, { metadata: { name: 'unscheduled' }, spec: { containers: [{ name: 'c', image: 'x' }] } });
    await request(sim, 'DELETE', '/api/v1/namespaces/default/pods/unscheduled');
    expect(sim.store.get('pods', 'default', 'unscheduled')).toBeUndefined();
  });

  it('keeps a terminating pod with finalizers after its grace, until the last finalizer goes', async () => {
    sim = await startSmall({ nodes: 1, podsPerNode: 1, services: 0, namespaces: 1 });
    const pod = sim.store.objectsIn('pods')[0]!;
    const path = `/api/v1/namespaces/${pod.namespace}/pods/${pod.name}`;
    await request(sim, 'PATCH', path, { metadata: { finalizers: ['example.com/wait'] } }, 'application/merge-patch+json');
    await request(sim, 'DELETE', path, { gracePeriodSeconds: 1 });
    await new Promise((r) => setTimeout(r, 1_500));
    expect(sim.store.get('pods', pod.namespace, pod.name)).toBeDefined();
    await request(sim, 'PATCH', path, { metadata: { finalizers: null } }, 'application/merge-patch+json');
    expect(sim.store.get('pods', pod.namespace, pod.name)).toBeUndefined();
  });
});

describe('pod lifecycle', () => {
  it('churned, created and API-bound pods go Pending without an IP, then Running with one after the start delay', async () => {
    sim = await startSmall({ nodes: 2, podsPerNode: 1, services: 1, namespaces: 1, podStartDelayMs: 300 });
    const created = sim.cluster.createPod({ nodeName: 'node-00001' });
    const pending = sim.store.getParsed('pods', created.namespace, created.name)!;
    expect((pending.status as { phase: string }).phase).toBe('Pending');
    expect((pending.status as { podIP?: string }).podIP).toBeUndefined();
    expect((pending.spec as { nodeName: string }).nodeName).toBe('node-00001');
    // Through the API: a pod bound to a simulated node is run by its simulated kubelet too.
    const posted = await request(sim, 'POST', '/api/v1/namespaces/default/pods', { metadata: { name: 'api-pod' }, spec: { nodeName: 'node-00002', containers: [{ name: 'web', image: 'nginx' }] } });
    expect(posted.json.status.phase).toBe('Pending');
    await waitFor(() => {
      const pods = [sim!.store.get('pods', created.namespace, created.name)!, sim!.store.get('pods', 'default', 'api-pod')!];
      return pods.every((p) => p.fields['status.phase'] === 'Running' && !!p.fields['status.podIP']);
    });
    const running = sim.store.getParsed('pods', 'default', 'api-pod')! as { status: { podIP: string; hostIP: string; conditions: { type: string; status: string }[]; containerStatuses: { ready: boolean }[] } };
    expect(running.status.podIP).toMatch(/^10\.128\.1\.\d+$/);
    expect(running.status.hostIP).toMatch(/^172\.20\./);
    expect(running.status.conditions.find((c) => c.type === 'Ready')?.status).toBe('True');
    expect(running.status.containerStatuses[0]!.ready).toBe(true);
    // The churn's creates take the same path.
    const pendingNow = () => sim!.store.objectsIn('pods').filter((p) => p.fields['status.phase'] === 'Pending');
    // The churn alternates creates and deletes: at most two steps make a pod.
    for (let i = 0; i < 2 && pendingNow().length === 0; i++) sim.cluster.churnOnce();
    const churned = pendingNow();
    expect(churned.length).toBe(1);
    await waitFor(() => sim!.store.get('pods', churned[0]!.namespace, churned[0]!.name)?.fields['status.phase'] === 'Running');
  });

  it('keeps the lab kubelet\'s path: a Pending pod on an empty node, its status patched Running by the kubelet, deleted at once', async () => {
    sim = await startSmall({ nodes: 1, podsPerNode: 1, services: 0, namespaces: 1, podStartDelayMs: 50 });
    sim.cluster.addNode({ name: 'lab-1', pods: 0, heartbeat: true });
    const info = sim.cluster.nodeInfo('lab-1')!;
    sim.cluster.createPod({ namespace: 'default', name: 'web-1-1', nodeName: 'lab-1', phase: 'Pending', assignIP: false, labels: { app: 'lab-web' } });
    const listed = await request(sim, 'GET', `/api/v1/pods?fieldSelector=${encodeURIComponent('spec.nodeName=lab-1')}`);
    expect(listed.json.items.map((p: { metadata: { name: string } }) => p.metadata.name)).toEqual(['web-1-1']);
    await new Promise((r) => setTimeout(r, 200));
    expect(sim.store.get('pods', 'default', 'web-1-1')!.fields['status.phase']).toBe('Pending');
    const ip = info.podCIDR.replace(/0\/\d+$/, '7');
    const patched = await request(sim, 'PATCH', '/api/v1/namespaces/default/pods/web-1-1/status',
      { status: { phase: 'Running', podIP: ip, podIPs: [{ ip }], hostIP: info.internalIP, hostIPs: [{ ip: info.internalIP }] } }, 'application/merge-patch+json');
    expect(patched.status).toBe(200);
    expect(patched.json.status.podIP).toBe(ip);
    sim.cluster.deletePod('default', 'web-1-1');
    expect(sim.store.get('pods', 'default', 'web-1-1')).toBeUndefined();
  });

  it('leaves the lab kubelet\'s pods (on nodes registered empty) to it', () => {
    const store = new Store();
    const cluster = new Simulation(store, { nodes: 0, services: 0, podStartDelayMs: 1 });
    cluster.populate();
    cluster.addNode({ name: 'lab-1', pods: 0 });
    const pod = cluster.createPod({ name: 'web-1-1', namespace: 'default', nodeName: 'lab-1', phase: 'Pending', assignIP: false });
    expect(cluster.startDuePods(Date.now() + 60_000)).toBe(0);
    expect(store.get('pods', 'default', pod.name)!.fields['status.phase']).toBe('Pending');
    cluster.stop();
  });
});

describe('node heartbeats', () => {
  it('lease mode renews a Lease per node in kube-node-lease and writes the Node status only every report interval or on a condition change', async () => {
    sim = await startSmall({
      nodes: 3, podsPerNode: 0, services: 0, heartbeats: true, heartbeatMode: 'lease', heartbeatIntervalMs: 200, heartbeatJitter: 0,
      nodeStatusReportIntervalMs: 600_000,
    });
    const leases = sim.store.objectsIn('leases', 'kube-node-lease');
    expect(leases.map((l) => l.name).sort()).toEqual(['node-00001', 'node-00002', 'node-00003']);
    const lease = JSON.parse(leases[0]!.json) as { spec: { holderIdentity: string; leaseDurationSeconds: number; renewTime: string }; metadata: { ownerReferences: { kind: string; name: string }[] } };
    expect(lease.spec.holderIdentity).toBe(leases[0]!.name);
    expect(lease.spec.leaseDurationSeconds).toBe(40);
    expect(lease.spec.renewTime).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
    expect(lease.metadata.ownerReferences[0]).toMatchObject({ kind: 'Node', name: leases[0]!.name });
    const nodeRVs = sim.store.objectsIn('nodes').map((n) => n.rv);
    const leaseRVs = leases.map((l) => l.rv);
    await waitFor(() => sim!.store.objectsIn('leases', 'kube-node-lease').every((l, i) => l.rv > leaseRVs[i]! + 0) && sim!.cluster.counters.leaseRenewals >= 9, 10_000);
    expect(sim.store.objectsIn('nodes').map((n) => n.rv)).toEqual(nodeRVs);
    expect(sim.stats()).toMatchObject({ nodeStatusWrites: 0, objects: { leases: 3 } });
    expect(sim.stats().leaseRenewals).toBeGreaterThanOrEqual(9);
    // A condition change is written at once.
    sim.cluster.setNodeCondition('node-00002', 'MemoryPressure', 'True', 'KubeletHasInsufficientMemory');
    const node = sim.store.getParsed('nodes', '', 'node-00002')! as { status: { conditions: { type: string; status: string }[] } };
    expect(node.status.conditions.find((c) => c.type === 'MemoryPressure')?.status).toBe('True');
    expect(sim.store.get('nodes', '', 'node-00002')!.rv).toBeGreaterThan(nodeRVs[1]!);
    // A node's Lease goes with it.
    sim.store.delete('nodes', '', 'node-00003');
    expect(sim.store.get('leases', 'kube-node-lease', 'node-00003')).toBeUndefined();
  });

  it('lease mode still writes the Node status once per report interval, spread over it', () => {
    const store = new Store();
    const cluster = new Simulation(store, { nodes: 50, podsPerNode: 0, services: 0, heartbeatMode: 'lease', heartbeatIntervalMs: 10_000, nodeStatusReportIntervalMs: 300_000 });
    cluster.populate(new Date(0));
    for (let now = 0; now <= 300_000; now += 1_000) cluster.heartbeats.tick(now);
    // 50 nodes × 30 renewals over 5 minutes; each node's status once (its first report falls somewhere in the interval).
    expect(cluster.counters.leaseRenewals).toBeGreaterThanOrEqual(50 * 29);
    expect(cluster.counters.nodeStatusWrites).toBeGreaterThanOrEqual(45);
    expect(cluster.counters.nodeStatusWrites).toBeLessThanOrEqual(55);
    cluster.stop();
  });

  it('node-status mode (the default) patches the Node every heartbeat and makes no Leases', async () => {
    sim = await startSmall({ nodes: 2, podsPerNode: 0, services: 0, heartbeats: true, heartbeatIntervalMs: 200, heartbeatJitter: 0 });
    expect(sim.store.count('leases')).toBe(0);
    const before = sim.store.objectsIn('nodes').map((n) => n.rv);
    await waitFor(() => sim!.store.objectsIn('nodes').every((n, i) => n.rv > before[i]!), 10_000);
  });
});
