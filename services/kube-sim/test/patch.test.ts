import { describe, expect, it } from 'vitest';
import { jsonPatch, mergePatch, strategicMergePatch } from '../src/patch.ts';
import { parseFieldSelector, parseLabelSelector } from '../src/selectors.ts';

describe('patches', () => {
  it('JSON merge patch replaces lists and deletes with null', () => {
    expect(mergePatch({ a: 1, b: { c: [1, 2], d: 1 } }, { b: { c: [3], d: null }, e: 'x' })).toEqual({ a: 1, b: { c: [3] }, e: 'x' });
  });

  it('strategic merge patch merges lists by key, honours $patch directives', () => {
    const node = { status: { conditions: [{ type: 'Ready', status: 'True' }, { type: 'DiskPressure', status: 'False' }], addresses: [{ type: 'InternalIP', address: '1.1.1.1' }] } };
    const out = strategicMergePatch(node, {
      status: { conditions: [{ type: 'Ready', status: 'False' }, { type: 'DiskPressure', $patch: 'delete' }, { type: 'PIDPressure', status: 'False' }], '$setElementOrder/conditions': [] },
    });
    expect(out).toEqual({ status: { conditions: [{ type: 'Ready', status: 'False' }, { type: 'PIDPressure', status: 'False' }], addresses: [{ type: 'InternalIP', address: '1.1.1.1' }] } });
    expect(strategicMergePatch({ metadata: { finalizers: ['a'] } }, { metadata: { finalizers: ['b'] } })).toEqual({ metadata: { finalizers: ['a', 'b'] } });
    expect(strategicMergePatch({ endpoints: [{ a: 1 }] }, { endpoints: [{ a: 2 }] }, true)).toEqual({ endpoints: [{ a: 2 }] });
    expect(strategicMergePatch({ spec: { x: 1, y: 2 } }, { spec: { $patch: 'replace', z: 3 } })).toEqual({ spec: { z: 3 } });
  });

  it('JSON patch applies add/replace/remove/test and rejects a failed test', () => {
    const doc = { metadata: { labels: { a: '1' } }, list: [1, 2] };
    expect(jsonPatch(doc, [
      { op: 'add', path: '/metadata/labels/b~1c', value: '2' }, { op: 'replace', path: '/list/0', value: 9 },
      { op: 'remove', path: '/metadata/labels/a' }, { op: 'add', path: '/list/-', value: 3 }, { op: 'test', path: '/list/2', value: 3 },
    ])).toEqual({ metadata: { labels: { 'b/c': '2' } }, list: [9, 2, 3] });
    expect(() => jsonPatch(doc, [{ op: 'test', path: '/list/0', value: 5 }])).toThrow(/test failed/);
    expect(doc.list).toEqual([1, 2]);
  });
});

describe('selectors', () => {
  it('parses set-based and equality label selectors', () => {
    const s = parseLabelSelector('app in (a, b),tier!=db,!legacy,env')!;
    expect(s.matches({ app: 'a', env: 'x' })).toBe(true);
    expect(s.matches({ app: 'a', env: 'x', tier: 'db' })).toBe(false);
    expect(s.matches({ app: 'c', env: 'x' })).toBe(false);
    expect(s.matches({ app: 'b', env: 'x', legacy: '' })).toBe(false);
    expect(() => parseLabelSelector('app in')).toThrow();
  });

  it('parses field selectors and rejects unsupported fields', () => {
    const f = parseFieldSelector('spec.nodeName=n1,status.phase!=Failed', new Set(['spec.nodeName', 'status.phase']))!;
    expect(f.matches((k) => ({ 'spec.nodeName': 'n1', 'status.phase': 'Running' })[k] ?? '')).toBe(true);
    expect(f.matches((k) => ({ 'spec.nodeName': 'n1', 'status.phase': 'Failed' })[k] ?? '')).toBe(false);
    expect(f.exact('spec.nodeName')).toBe('n1');
    expect(() => parseFieldSelector('spec.bogus=1', new Set(['spec.nodeName']))).toThrow(/not supported/);
  });
});
