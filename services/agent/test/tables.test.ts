/**
 * The desired-state tables without any target: podCIDR validation and overlap ownership, IP claims, the conflict
 * log (one line per reason in a burst), IPv4 parsing.
 */
import { Writable } from 'node:stream';
import { createLogger } from '@sluice/log';
import { createRegistry } from '@sluice/metrics';
import { describe, expect, it } from 'vitest';
import { ipv4ToInt, parseV4Cidr } from '../src/tables/cidr.ts';
import { Conflicts } from '../src/tables/conflicts.ts';
import { NodeTable } from '../src/tables/nodes.ts';
import { PodTable } from '../src/tables/pods.ts';

function capture() {
  const lines: Array<Record<string, unknown>> = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split('\n')) if (l.trim()) lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  return { lines, log: createLogger({ component: 'test', level: 'info', destination }) };
}

const flush = () => new Promise((r) => setTimeout(r, 20));

describe('tables', () => {
  it('parses IPv4 addresses and CIDRs strictly', () => {
    expect(ipv4ToInt('10.1.2.3')).toBe(0x0a010203);
    expect(ipv4ToInt('255.255.255.255')).toBe(0xffffffff);
    for (const bad of ['10.1.2', '10.1.2.3.4', '10.1.2.256', '010.1.2.3', '10.1.2.a', '', '1..2.3']) expect(ipv4ToInt(bad)).toBeUndefined();
    expect(parseV4Cidr('10.1.2.3/24')).toEqual({ net: 0x0a010200, len: 24, text: '10.1.2.0/24' });
    expect(parseV4Cidr('10.1.2.0/33')).toBeUndefined();
    expect(parseV4Cidr('10.1.2.0')).toBeUndefined();
  });

  it('nodes: CIDR ownership by name among overlapping claims, whatever the order; pod IPs checked against owned CIDRs', () => {
    const { log } = capture();
    const changed: string[] = [];
    const make = () => new NodeTable(parseV4Cidr('10.0.0.0/8')!, new Conflicts(log), { cidrChanged: (c) => changed.push(c), nodeChanged: () => undefined, healthChanged: () => undefined });
    for (const order of [['b', 'a', 'c'], ['c', 'b', 'a']]) {
      const t = make();
      const cidr = { a: '10.1.0.0/24', b: '10.1.0.0/16', c: '10.2.0.0/24' } as Record<string, string>;
      for (const n of order) t.upsert({ name: n, ip: `192.168.0.${n.charCodeAt(0)}`, cidrs: [cidr[n]!], healthIPs: [] });
      expect(Object.fromEntries(t.ownedCidrs())).toEqual({ '10.1.0.0/24': 'a', '10.2.0.0/24': 'c' });
      expect(t.inOwnedCidr('a', '10.1.0.9')).toBe(true);
      expect(t.inOwnedCidr('b', '10.1.7.9')).toBe(false); // b lost its /16 to a's /24
      expect(t.inClaimedCidr('b', '10.1.7.9')).toBe(true);
      t.delete('a');
      expect(Object.fromEntries(t.ownedCidrs())).toEqual({ '10.1.0.0/16': 'b', '10.2.0.0/24': 'c' });
      expect(t.inOwnedCidr('b', '10.1.7.9')).toBe(true);
    }
    const t = make();
    t.upsert({ name: 'x', ip: '10.9.9.9', cidrs: ['10.3.0.0/24'], healthIPs: [] }); // node IP inside the cluster CIDR
    t.upsert({ name: 'y', ip: '192.168.1.1', cidrs: ['0.0.0.0/0', '11.0.0.0/24', '10.4.0.0/31'], healthIPs: [] });
    expect(t.get('x')).toBeUndefined();
    expect(t.ownedCidrs().size).toBe(0);
  });

  it('pods: the first key owns a shared IP; removing either claim leaves the other', () => {
    const { log } = capture();
    const conflicts = new Conflicts(log);
    const touched: string[] = [];
    const pods = new PodTable(conflicts, (ip) => touched.push(ip));
    pods.set('ns/b', { ip: '10.1.0.5', node: 'n2' });
    pods.set('ns/a', { ip: '10.1.0.5', node: 'n1' });
    expect(pods.ownerOf('10.1.0.5')?.node).toBe('n1');
    expect(conflicts.counts()).toEqual({ pod_ip_claimed_twice: 1 });
    pods.set('ns/a', null);
    expect(pods.ownerOf('10.1.0.5')?.node).toBe('n2');
    expect(conflicts.size).toBe(0);
    pods.set('ns/a', { ip: '10.1.0.5', node: 'n1' });
    pods.set('ns/b', null);
    expect(pods.ownerOf('10.1.0.5')?.node).toBe('n1');
    expect(pods.ipCount).toBe(1);
    expect(touched.every((ip) => ip === '10.1.0.5')).toBe(true);
  });

  it('conflicts: counted one by one, logged once per reason in a burst', async () => {
    const { lines, log } = capture();
    const registry = createRegistry();
    const conflicts = new Conflicts(log, registry);
    for (let i = 0; i < 100; i++) conflicts.report('pod_ip_outside_node_cidr', `10.9.0.${i}`, `pod IP 10.9.0.${i} is outside its node's podCIDRs`);
    conflicts.report('pod_ip_outside_node_cidr', '10.9.0.1', 'again'); // the same conflict: not a new one
    conflicts.report('pod_cidr_overlap', 'n2 10.1.0.0/24', 'overlap');
    await flush();
    expect(lines.filter((l) => String(l.msg).startsWith('not programmed')).map((l) => l.reason)).toEqual(['pod_ip_outside_node_cidr', 'pod_cidr_overlap']);
    expect(conflicts.counts()).toEqual({ pod_ip_outside_node_cidr: 100, pod_cidr_overlap: 1 });
    expect(await registry.getSingleMetricAsString('sluice_agent_conflicts_total')).toMatch(/reason="pod_ip_outside_node_cidr"} 100/);
    conflicts.clear('pod_cidr_overlap', 'n2 10.1.0.0/24');
    expect(await registry.getSingleMetricAsString('sluice_agent_active_conflicts')).toMatch(/reason="pod_cidr_overlap"} 0/);
  });
});
