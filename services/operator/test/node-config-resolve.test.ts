/**
 * The per-node configuration rules (node-config/resolve.ts): selection by matchLabels and matchExpressions, the
 * precedence between several matching SluiceNodeConfigs (applied by name, the last name wins per key), invalid keys
 * and values reported and not applied, an unreadable selector selecting nothing.
 */
import { describe, expect, it } from 'vitest';
import { nodeConfigRecord } from '@sluice/kvstore';
import { effectiveRecord, nodeConfigInput, resolveNodeConfigs, type NodeInput } from '../src/node-config/resolve.ts';
import { reportConditions } from '../src/node-config/controller.ts';

const snc = (name: string, spec: Record<string, unknown>) => nodeConfigInput({ metadata: { name, generation: 1 }, spec });
const nodes: NodeInput[] = [
  { name: 'n1', labels: { 'sluice.io/enable-ebpf': 'true', zone: 'a' } },
  { name: 'n2', labels: { zone: 'a' } },
  { name: 'n3', labels: { zone: 'b' } },
];

describe('resolveNodeConfigs', () => {
  it('applies matching objects in name order, the last name winning per key', () => {
    const r = resolveNodeConfigs(
      [
        snc('50-ebpf', { nodeSelector: { matchLabels: { 'sluice.io/enable-ebpf': 'true' } }, defaults: { masquerade: 'bpf', 'host-routing': 'bpf' } }),
        snc('10-base', { defaults: { masquerade: 'iptables', 'host-routing': 'auto', routing: 'native' } }),
        snc('20-zone-b', { nodeSelector: { matchExpressions: [{ key: 'zone', operator: 'In', values: ['b'] }] }, defaults: { routing: 'tunnel' } }),
      ],
      nodes,
    );
    expect(r.nodes.get('n1')).toEqual({ sources: ['10-base', '50-ebpf'], masquerade: 'bpf', hostRouting: 'bpf', routing: 'native' });
    expect(r.nodes.get('n2')).toEqual({ sources: ['10-base'], masquerade: 'iptables', hostRouting: 'auto', routing: 'native' });
    expect(r.nodes.get('n3')).toEqual({ sources: ['10-base', '20-zone-b'], masquerade: 'iptables', hostRouting: 'auto', routing: 'tunnel' });
    expect(r.reports.map((x) => [x.name, x.nodes, x.problems])).toEqual([
      ['10-base', ['n1', 'n2', 'n3'], []],
      ['20-zone-b', ['n3'], []],
      ['50-ebpf', ['n1'], []],
    ]);
    // The order does not depend on the order the objects arrive in.
    const reversed = resolveNodeConfigs([snc('b', { defaults: { masquerade: 'off' } }), snc('a', { defaults: { masquerade: 'bpf' } })], nodes);
    expect(reversed.nodes.get('n2')?.masquerade).toBe('off');
  });

  it('reports unknown keys and bad values and does not apply them; the valid keys still apply', () => {
    const r = resolveNodeConfigs([snc('odd', { defaults: { masquerade: 'nft', 'enable-foo': 'true', 'host-routing': 'legacy' } })], nodes);
    expect(r.reports[0]!.problems).toEqual(['unknown key "enable-foo" (known: routing, host-routing, masquerade, non-masquerade-cidrs, mtu)', 'masquerade: "nft" is not one of off, iptables, bpf']);
    expect(r.nodes.get('n1')).toEqual({ sources: ['odd'], hostRouting: 'legacy' });
    const [valid, selected] = reportConditions(r.reports[0]!);
    expect(valid).toMatchObject({ type: 'sluice.io/valid', status: 'False', reason: 'InvalidKeys' });
    expect(valid!.message).toContain('unknown key "enable-foo"');
    expect(selected).toMatchObject({ status: 'True', message: '3 node(s): n1, n2, n3' });
  });

  it('reads nonMasqueradeCIDRs and the MTU from their strings, and names what is wrong in either', () => {
    const good = resolveNodeConfigs([snc('masq', { defaults: { 'non-masquerade-cidrs': ' 10.0.0.0/8, 192.168.0.0/16,10.0.0.0/8', mtu: '1450' } })], nodes);
    expect(good.reports[0]!.problems).toEqual([]);
    expect(good.nodes.get('n2')).toEqual({ sources: ['masq'], nonMasqueradeCidrs: ['10.0.0.0/8', '192.168.0.0/16'], mtu: 1450 });
    const bad = resolveNodeConfigs([snc('bad', { defaults: { 'non-masquerade-cidrs': '10.0.0.0/8,10.300.0.0/16', mtu: '9k', masquerade: 'bpf' } })], nodes);
    expect(bad.reports[0]!.problems).toEqual(['mtu: "9k" is not an MTU (an integer from 1280 to 65535)', 'non-masquerade-cidrs: "10.300.0.0/16" is not an IPv4 CIDR']);
    expect(bad.nodes.get('n1')).toEqual({ sources: ['bad'], masquerade: 'bpf' });
    // What the operator writes is what the agent's record schema takes.
    expect(nodeConfigRecord.parse(effectiveRecord(good.nodes.get('n1')!, 1))).toMatchObject({ nonMasqueradeCidrs: ['10.0.0.0/8', '192.168.0.0/16'], mtu: 1450 });
  });

  it('an unreadable selector selects nothing and says so; a node no object sets anything for has no record', () => {
    const r = resolveNodeConfigs([snc('bad-sel', { nodeSelector: { matchExpressions: [{ key: 'zone', operator: 'Near' }] }, defaults: { masquerade: 'bpf' } })], nodes);
    expect(r.nodes.size).toBe(0);
    expect(r.reports[0]!.problems[0]).toMatch(/^nodeSelector\.matchExpressions\.0\.operator: .*\(selects no node\)$/);
    expect(reportConditions(r.reports[0]!)[1]).toMatchObject({ status: 'False', reason: 'NoNodes' });
  });
});
