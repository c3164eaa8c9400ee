import type { V1EndpointSlice } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { seededRandom } from '@sluice/backoff';
import { realisticEndpointSlice } from '@sluice/kube-objects';
import { buildSlimEndpointSlice, slimEndpointSlice } from '@sluice/slim';
import { EndpointSliceDecoder } from '../src/slice-decoder.ts';

const line = (type: string, object: object, spaced = false) => Buffer.from(spaced ? JSON.stringify({ type, object }, null, 1).replace(/\n/g, ' ') : JSON.stringify({ type, object }));

/** What the ordinary path makes of the same object: the reference the selective decoding must equal byte for byte. */
const reference = (slice: V1EndpointSlice) => JSON.stringify(buildSlimEndpointSlice(JSON.parse(JSON.stringify(slice))));

function slice(random: () => number, n: number, name = 'web-x1'): V1EndpointSlice {
  const s = realisticEndpointSlice({
    namespace: 'shop',
    service: 'web',
    name,
    endpoints: Array.from({ length: n }, (_, i) => ({ ip: `10.244.${i % 7}.${10 + Math.floor(random() * 200)}`, nodeName: `node-${i % 5}`, ready: random() > 0.2, podName: `web-${i}` })),
  });
  for (const e of s.endpoints) {
    if (random() < 0.3) e.zone = `zone-${Math.floor(random() * 3)}`;
    if (random() < 0.2) e.hints = { forZones: [{ name: 'zone-b' }, { name: 'zone-a' }] };
    if (random() < 0.2) e.conditions = {};
    if (random() < 0.1) e.targetRef = undefined;
    // Names a real controller would not write, but JSON can carry: quotes, backslashes, braces, non-ASCII.
    if (random() < 0.1) e.nodeName = 'nöde "q" \\ {x} [y]';
  }
  return s;
}

describe('EndpointSliceDecoder', () => {
  it('gives the ordinary path\'s bytes for every event of a changing slice, re-encoding only the changed endpoints', () => {
    const random = seededRandom(7);
    const decoder = new EndpointSliceDecoder();
    // The same events with whitespace between the tokens, as another server might frame them.
    const spaced = new EndpointSliceDecoder();
    let current = slice(random, 100);
    for (let step = 0; step < 60; step++) {
      const type = step === 0 ? 'ADDED' : 'MODIFIED';
      const decoded = decoder.decode(line(type, current));
      expect(decoded?.record).toEqual({ value: reference(current) });
      // Framing it does not recognise is left to the ordinary decoding rather than guessed at.
      expect(spaced.decode(line(type, current, true))).toBeUndefined();
      expect(decoded?.object.metadata?.name).toBe('web-x1');
      // Churn: one endpoint changes, appears or goes.
      const next: V1EndpointSlice = JSON.parse(JSON.stringify(current));
      const i = Math.floor(random() * next.endpoints.length);
      const roll = random();
      if (roll < 0.4) next.endpoints[i]!.conditions = { ready: false, serving: true, terminating: true };
      else if (roll < 0.7) next.endpoints.splice(i, 1);
      else next.endpoints.push({ addresses: [`10.244.9.${step}`], conditions: { ready: true }, nodeName: 'node-9', targetRef: { kind: 'Pod', namespace: 'shop', name: `new-${step}`, uid: `u-${step}` } });
      current = next;
    }
    // 100 endpoints decoded once, then about one per event.
    expect(decoder.stats.decoded).toBeLessThan(100 + 60 * 2);
    expect(decoder.stats.reused).toBeGreaterThan(50 * 90);
    // Each event after the first split knowing the one before it.
    expect(decoder.stats.shortcuts).toBeGreaterThan(50);
  });

  it('keeps the canonical order when endpoints are inserted, moved, reordered or share an address', () => {
    const random = seededRandom(11);
    const decoder = new EndpointSliceDecoder();
    let current = slice(random, 40);
    // Ties: several endpoints with one address keep the API's order among them, in the ordinary path as here.
    for (const i of [3, 9, 17]) current.endpoints[i]!.addresses = ['10.244.1.1'];
    for (let step = 0; step < 80; step++) {
      expect(decoder.decode(line(step === 0 ? 'ADDED' : 'MODIFIED', current))?.record).toEqual({ value: reference(current) });
      const next: V1EndpointSlice = JSON.parse(JSON.stringify(current));
      const roll = next.endpoints.length ? random() : 0;
      const i = Math.floor(random() * next.endpoints.length);
      if (roll < 0.25) next.endpoints.splice(i, 0, { addresses: [random() < 0.5 ? '10.244.1.1' : `10.244.8.${step}`], conditions: {}, nodeName: 'node-8' });
      else if (roll < 0.5) next.endpoints.push(...next.endpoints.splice(i, 1));
      else if (roll < 0.6) next.endpoints.reverse();
      else if (roll < 0.75) next.endpoints.splice(i, 1);
      else if (roll < 0.8) next.endpoints.splice(0, next.endpoints.length - (step % 3));
      // What follows the endpoints changes: the ports, or a label (before them) with them.
      else if (roll < 0.85) next.ports = [{ name: `p${step}`, port: 8000 + step, protocol: 'TCP' }];
      else if (roll < 0.9) next.metadata!.labels = { ...next.metadata!.labels, step: String(step) };
      else next.endpoints[i]!.conditions = { ready: false };
      current = next;
    }
  });

  it('stays in step, decoding only the new endpoint, when one is appended, inserted, changed in place or removed', () => {
    const decoder = new EndpointSliceDecoder();
    let current = slice(seededRandom(13), 100);
    // Kept sorted by address, as an ordered controller keeps them: then an append is an append.
    current.endpoints.sort((a, b) => (a.addresses[0]! < b.addresses[0]! ? -1 : 1));
    decoder.decode(line('ADDED', current));
    const changes: Array<(s: V1EndpointSlice, step: number) => void> = [
      (s, step) => s.endpoints.push({ addresses: [`10.250.0.${step}`], conditions: { ready: true }, nodeName: 'node-9' }),
      (s, step) => s.endpoints.splice(40, 0, { addresses: [`10.244.3.${step}`], conditions: { ready: true }, nodeName: 'node-8' }),
      (s) => {
        const e = s.endpoints[60]!;
        e.conditions = e.conditions?.terminating ? { ready: true } : { ready: false, serving: true, terminating: true };
      },
      (s) => s.endpoints.splice(20, 1),
    ];
    for (let step = 0; step < 40; step++) {
      const next: V1EndpointSlice = JSON.parse(JSON.stringify(current));
      changes[step % changes.length]!(next, step);
      current = next;
      expect(decoder.decode(line('MODIFIED', current))?.record).toEqual({ value: reference(current) });
    }
    expect(decoder.stats.realigned).toBe(0);
    // The first event's 100, then one per change that brings a new endpoint (removals bring none).
    expect(decoder.stats.decoded).toBe(100 + 30);
  });

  it('names a bad address like the ordinary validation does, and keeps the slice\'s previous endpoints', () => {
    const decoder = new EndpointSliceDecoder();
    const good = slice(seededRandom(3), 4);
    expect(decoder.decode(line('ADDED', good))?.record).toEqual({ value: reference(good) });
    const bad: V1EndpointSlice = JSON.parse(JSON.stringify(good));
    bad.endpoints.push({ addresses: ['10.244.1.300'], conditions: {} });
    const decoded = decoder.decode(line('MODIFIED', bad))?.record;
    expect(decoded && 'error' in decoded ? String((decoded.error as Error).message) : '').toMatch(/endpoints\.4\.addresses\.0 is not a valid IPv4 address/);
    expect(() => slimEndpointSlice(bad)).toThrow(/addresses\.0 is not a valid IPv4 address/);
    expect(decoder.decode(line('MODIFIED', good))?.record).toEqual({ value: reference(good) });
    expect(decoder.stats.decoded).toBe(5);
  });

  it('forgets a deleted slice, and leaves lines it does not recognise to the ordinary decoding', () => {
    const decoder = new EndpointSliceDecoder();
    const s = slice(seededRandom(5), 3);
    decoder.decode(line('ADDED', s));
    expect(decoder.size).toBe(1);
    expect(decoder.decode(line('DELETED', s))?.type).toBe('DELETED');
    expect(decoder.size).toBe(0);
    expect(decoder.decode(line('BOOKMARK', { metadata: { resourceVersion: '9' } }))).toBeUndefined();
    expect(decoder.decode(Buffer.from('{"type":"MODIFIED","object":{"metadata":{"name":"x"},"endpoints":[{"addresses":'))).toBeUndefined();
    expect(decoder.decode(Buffer.from('not json at all'))).toBeUndefined();
  });
});
