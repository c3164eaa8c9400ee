import { describe, expect, it } from 'vitest';
import { decodePodEntry } from '../src/core.ts';

// Literal records as the operator writes them (libs/slim's schema, version 1), not built with the slim functions.
function record(fields: Record<string, unknown>): Uint8Array {
  const base = { v: 1, namespace: 'default', name: 'web', uid: 'u1', nodeName: 'n1', hostIP: '192.168.9.1', podIPs: ['10.9.1.10'], hostNetwork: false, phase: 'Running', labels: {}, deleting: false, ports: [] };
  return Buffer.from(JSON.stringify({ ...base, ...fields }));
}

describe('which pod records the agent programs', () => {
  it('keeps a terminating pod while it holds its IP, so that its connections drain', () => {
    expect(decodePodEntry(record({ deleting: true, terminating: true }))).toEqual({ ip: '10.9.1.10', node: 'n1' });
  });

  it('programs a Pending pod once it has an IP (init containers use the network)', () => {
    expect(decodePodEntry(record({ phase: 'Pending' }))).toEqual({ ip: '10.9.1.10', node: 'n1' });
    expect(decodePodEntry(record({ phase: 'Pending', podIPs: [] }))).toBeNull();
  });

  it('drops pods that released their IP or never had one of their own', () => {
    expect(decodePodEntry(record({ phase: 'Succeeded' }))).toBeNull();
    expect(decodePodEntry(record({ phase: 'Failed' }))).toBeNull();
    expect(decodePodEntry(record({ hostNetwork: true, podIPs: ['192.168.9.1'] }))).toBeNull();
  });
});
