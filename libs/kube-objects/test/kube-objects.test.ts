import { describe, expect, it } from 'vitest';
import { heartbeat, realisticEndpointSlice, realisticNode, realisticPod } from '../src/index.ts';

describe('realistic objects', () => {
  it('makes a Node of 10–20 KB of JSON, the same for the same input', () => {
    const node = realisticNode({ name: 'node-1', internalIP: '10.0.0.1', podCIDR: '10.244.1.0/24' });
    const size = JSON.stringify(node).length;
    expect(size).toBeGreaterThanOrEqual(10_000);
    expect(size).toBeLessThanOrEqual(20_000);
    expect(JSON.stringify(realisticNode({ name: 'node-1', internalIP: '10.0.0.1', podCIDR: '10.244.1.0/24' }))).toBe(JSON.stringify(node));
    expect(node.status?.images?.length).toBeGreaterThan(10);
    expect(node.status?.conditions?.find((c) => c.type === 'Ready')?.status).toBe('True');
  });

  it('heartbeat changes only heartbeat and managedFields times', () => {
    const node = realisticNode({ name: 'node-2', internalIP: '10.0.0.2', podCIDR: '10.244.2.0/24' });
    const later = new Date('2026-01-01T00:00:10Z');
    const beaten = heartbeat(node, later);
    expect(beaten.status?.conditions?.every((c) => c.lastHeartbeatTime === later)).toBe(true);
    expect(beaten.metadata?.managedFields?.every((f) => f.time === later)).toBe(true);
    expect(beaten.spec).toEqual(node.spec);
    expect(beaten.metadata?.labels).toEqual(node.metadata?.labels);
  });

  it('makes a running pod with its IP', () => {
    const pod = realisticPod({ namespace: 'default', name: 'web-abc-123', nodeName: 'node-1', hostIP: '10.0.0.1', podIP: '10.244.1.5' });
    expect(pod.status?.phase).toBe('Running');
    expect(pod.status?.podIPs).toEqual([{ ip: '10.244.1.5' }]);
    expect(pod.metadata?.labels?.app).toBe('web');
  });
});

describe('realistic endpoint slices', () => {
  it('write an endpoint with the same bytes whatever else the slice holds (its targetRef is its pod\'s)', () => {
    const a = realisticEndpointSlice({ namespace: 'shop', service: 'web', name: 'web-1', endpoints: [{ ip: '10.1.0.1', podName: 'p1' }, { ip: '10.1.0.2', podName: 'p2' }] });
    const b = realisticEndpointSlice({ namespace: 'shop', service: 'web', name: 'web-1', endpoints: [{ ip: '10.1.0.2', podName: 'p2' }] });
    expect(JSON.stringify(b.endpoints[0])).toBe(JSON.stringify(a.endpoints[1]));
    expect(a.endpoints[0]!.targetRef!.uid).not.toBe(a.endpoints[1]!.targetRef!.uid);
    const given = realisticEndpointSlice({ namespace: 'shop', service: 'web', endpoints: [{ ip: '10.1.0.3', podName: 'p3', podUid: 'uid-3' }] });
    expect(given.endpoints[0]!.targetRef!.uid).toBe('uid-3');
  });

  it('draws the same identifiers from a seed as ever (uids, digests, IDs: seeded objects stay byte for byte the same)', () => {
    const n = realisticNode({ name: 'node-1', internalIP: '10.0.0.1', podCIDR: '10.244.1.0/24', seed: 42 });
    const p = realisticPod({ namespace: 'default', name: 'web-1', podIP: '10.244.1.5', seed: 7 });
    expect([n.metadata!.uid, n.spec!.providerID, n.status!.images![0]!.names![0], n.status!.nodeInfo!.machineID, p.metadata!.labels!['pod-template-hash'], p.status!.containerStatuses![0]!.containerID]).toEqual([
      'a7ddaca2-4023-4bc1-a7f8-ecfe5fdcb81e', 'aws:///eu-west-1a/i-0ce672222355833c3',
      'registry.k8s.io/kube-proxy@sha256:99e1ef7c72c32b8ada3b32c0ab73b0ad2cc09a8a86cec4d345f245149fef4401', '68d818fdcae4b591bd4e7063041ad0f0', '857d6fe767',
      'containerd://3f5e5c94e0b629e030d7b9b824c6baff2796c04c4a7bc7598c4344aac30a278c',
    ]);
  });
});
