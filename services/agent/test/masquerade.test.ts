/**
 * iptables masquerading (Cilium's CILIUM_POST_nat, as SLUICE_POST_nat) with real iptables (nft backend) inside a
 * test namespace: the rules the table derives, drift repaired by the periodic full pass (a flushed chain, a deleted
 * feeder, a foreign rule in our chain), a node joining, everything removed when the mode leaves iptables, and other
 * rules of nat POSTROUTING never touched. Every iptables command runs in the namespace (`ip netns exec`).
 */
import { createLogger } from '@sluice/log';
import { createRegistry } from '@sluice/metrics';
import { NetLab, must } from '@sluice/netns';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { iptablesMasquerade, masqueradedFlows } from '../src/reconcilers/iptables.ts';
import { masqueradeRules, masqueradingText, parseMasqueradeMode, ruleOrder } from '../src/tables/masquerade.ts';

const log = createLogger({ component: 'test', level: 'silent' });
const lab = new NetLab();
let ns: string;

const nat = () => must('ip', ['netns', 'exec', ns, 'iptables-save', '-t', 'nat']);
const natLines = async () => (await nat()).split('\n').filter((l) => l.startsWith('-A ') || l.startsWith(':SLUICE'));
const iptables = (...args: string[]) => must('ip', ['netns', 'exec', ns, 'iptables', ...args]);

async function until(what: string, check: () => Promise<boolean> | boolean, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}: ${(await natLines()).join(' | ')}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

beforeAll(async () => {
  ns = await lab.addNetns(lab.name('masq'));
  // Someone else's rule in nat POSTROUTING (Docker's, an admin's): never ours to touch.
  await iptables('-t', 'nat', '-A', 'POSTROUTING', '-s', '172.17.0.0/16', '-j', 'MASQUERADE');
});

afterAll(async () => {
  await lab.cleanup();
});

describe('masquerade table', () => {
  it('wants returns to every node and a masquerade of this node\'s podCIDR outside the cluster, only in iptables mode', () => {
    const rows = masqueradeRules({ mode: 'iptables', clusterCidr: '10.128.0.0/9', nodeIps: ['192.168.1.3', '192.168.1.2'], ownCidrs: ['10.128.1.0/24'] });
    expect([...rows.keys()]).toEqual(['jump', 'bpf-snat', 'node:192.168.1.2', 'node:192.168.1.3', 'masq:10.128.1.0/24']);
    // Packets from_container marked as BPF's to masquerade (SL_MARK_SNAT_BPF) are never netfilter's.
    expect(rows.get('bpf-snat')!.rule).toBe('-m mark --mark 0x100000/0x100000 -m comment --comment "sluice:bpf-snat" -j RETURN');
    expect(rows.get('masq:10.128.1.0/24')!.rule).toBe('-s 10.128.1.0/24 ! -d 10.128.0.0/9 -m comment --comment "sluice:masq:10.128.1.0/24" -j MASQUERADE');
    for (const mode of ['off', 'bpf'] as const) expect(masqueradeRules({ mode, clusterCidr: '10.128.0.0/9', nodeIps: ['192.168.1.2'], ownCidrs: ['10.128.1.0/24'] }).size).toBe(0);
    // Outside iptables mode while netfilter still translates flows it masqueraded: the same rules.
    expect([...masqueradeRules({ mode: 'bpf', draining: true, clusterCidr: '10.128.0.0/9', nodeIps: ['192.168.1.2'], ownCidrs: ['10.128.1.0/24'] }).keys()]).toEqual(['jump', 'bpf-snat', 'node:192.168.1.2', 'masq:10.128.1.0/24']);
    // ip-masq-agent's nonMasqueradeCIDRs return before the masquerade.
    const ipmasq = masqueradeRules({ mode: 'iptables', clusterCidr: '10.128.0.0/9', nodeIps: ['192.168.1.2'], ownCidrs: ['10.128.1.0/24'], nonMasqueradeCidrs: ['198.51.100.0/24'] });
    expect(ipmasq.get('nonmasq:198.51.100.0/24')!.rule).toBe('-d 198.51.100.0/24 -m comment --comment "sluice:nonmasq:198.51.100.0/24" -j RETURN');
    expect([...ipmasq.keys()].sort(ruleOrder).at(-1)).toBe('masq:10.128.1.0/24');
    // No podCIDR yet: nothing to masquerade, no chain.
    expect(masqueradeRules({ mode: 'iptables', clusterCidr: '10.128.0.0/9', nodeIps: ['192.168.1.2'], ownCidrs: [] }).size).toBe(0);
  });

  it('reads the mode (and the old boolean) and prints it as Cilium does', () => {
    expect([true, 'true', false, 'false', 'iptables', 'bpf', 'off', 'nft'].map(parseMasqueradeMode)).toEqual(['bpf', 'bpf', 'off', 'off', 'iptables', 'bpf', 'off', undefined]);
    expect(masqueradingText('iptables', 'eth0', '10.128.0.0/9')).toBe('IPTables [IPv4: Enabled, IPv6: Disabled]');
    expect(masqueradingText('bpf', 'eth0', '10.128.0.0/9')).toBe('BPF [eth0] 10.128.0.0/9 [IPv4: Enabled, IPv6: Disabled]');
    expect(masqueradingText('off', 'eth0', '10.128.0.0/9')).toBe('Disabled');
    expect(masqueradingText('bpf', 'eth0', '10.128.0.0/9', true)).toBe('BPF (ip-masq-agent) [eth0] 10.128.0.0/9 [IPv4: Enabled, IPv6: Disabled]');
  });
});

describe('iptables masquerade reconciler (real iptables in a namespace)', () => {
  it('writes SLUICE_POST_nat, repairs drift, follows nodes, and removes it all when the mode changes', async () => {
    const registry = createRegistry();
    let nodes = { nodeIps: ['192.168.230.1', '192.168.230.2'], ownCidrs: ['10.230.1.0/24'] };
    const masq = iptablesMasquerade({ netns: ns, clusterCidr: '10.230.0.0/16', nodes: () => nodes, mode: 'iptables', log, registry, refreshIntervalMs: 300 });
    const foreign = '-A POSTROUTING -s 172.17.0.0/16 -j MASQUERADE';
    const expected = [
      ':SLUICE_POST_nat - [0:0]',
      foreign,
      '-A POSTROUTING -m comment --comment "sluice-feeder: SLUICE_POST_nat" -j SLUICE_POST_nat',
      '-A SLUICE_POST_nat -m mark --mark 0x100000/0x100000 -m comment --comment "sluice:bpf-snat" -j RETURN',
      '-A SLUICE_POST_nat -d 192.168.230.1/32 -m comment --comment "sluice:node:192.168.230.1" -j RETURN',
      '-A SLUICE_POST_nat -d 192.168.230.2/32 -m comment --comment "sluice:node:192.168.230.2" -j RETURN',
      '-A SLUICE_POST_nat -s 10.230.1.0/24 ! -d 10.230.0.0/16 -m comment --comment "sluice:masq:10.230.1.0/24" -j MASQUERADE',
    ];
    try {
      await masq.start();
      expect(await natLines()).toEqual(expected);
      expect(masq.reconciler.status().rows).toEqual({ done: 5, pending: 0, error: 0 });

      // Drift: the chain flushed behind our back comes back in the next periodic pass, counted.
      await iptables('-t', 'nat', '-F', 'SLUICE_POST_nat');
      await until('the flushed chain to be refilled', async () => (await natLines()).join('\n') === expected.join('\n'));
      expect(masq.reconciler.status().driftRepaired).toBeGreaterThanOrEqual(3);

      // Drift: the feeder deleted, and a stranger's rule inside our chain.
      await iptables('-t', 'nat', '-D', 'POSTROUTING', '-m', 'comment', '--comment', 'sluice-feeder: SLUICE_POST_nat', '-j', 'SLUICE_POST_nat');
      await iptables('-t', 'nat', '-I', 'SLUICE_POST_nat', '-d', '8.8.8.8/32', '-j', 'RETURN');
      await until('the feeder back and the stranger gone', async () => (await natLines()).join('\n') === expected.join('\n'));

      // A node joins: its return rule lands before the masquerade.
      nodes = { ...nodes, nodeIps: [...nodes.nodeIps, '192.168.230.3'] };
      masq.nodesChanged();
      await until('the new node\'s rule', async () => (await natLines()).includes('-A SLUICE_POST_nat -d 192.168.230.3/32 -m comment --comment "sluice:node:192.168.230.3" -j RETURN'));
      const chain = (await natLines()).filter((l) => l.startsWith('-A SLUICE_POST_nat'));
      expect(chain.at(-1)).toContain('-j MASQUERADE');

      // The mode leaves iptables (bpf), no flow of netfilter's in conntrack: the feeder and the chain go; the
      // stranger's POSTROUTING rule stays.
      await masq.setMode('bpf');
      expect(await natLines()).toEqual([foreign]);
      expect(masq.reconciler.status().rows).toEqual({ done: 0, pending: 0, error: 0 });
      // … and stays gone through full passes.
      await masq.reconciler.fullPass();
      expect(await natLines()).toEqual([foreign]);

      // Back to iptables.
      await masq.setMode('iptables');
      expect((await natLines()).filter((l) => l.includes('SLUICE'))).toHaveLength(7);
      await masq.setMode('off');
      expect(await natLines()).toEqual([foreign]);
    } finally {
      await masq.stop();
    }
  });
});

describe('leaving iptables mode while netfilter still translates flows it masqueraded', () => {
  // /proc/net/nf_conntrack lines as the kernel prints them: one masqueraded by netfilter (reply to the node's address),
  // one BPF's (netfilter saw the pod's address both ways), one from another podCIDR, one of the node itself.
  const masqueraded = 'ipv4     2 tcp      6 431997 ESTABLISHED src=10.230.1.2 dst=172.20.255.250 sport=53986 dport=7007 src=172.20.255.250 dst=172.20.0.10 sport=7007 dport=53986 [ASSURED] mark=0 zone=0 use=2';
  const others = [
    'ipv4     2 tcp      6 117 SYN_SENT src=10.230.1.2 dst=172.20.255.250 sport=41000 dport=7007 [UNREPLIED] src=172.20.255.250 dst=10.230.1.2 sport=7007 dport=41000 mark=1048576 zone=0 use=2',
    'ipv4     2 udp      17 25 src=10.99.0.2 dst=8.8.8.8 sport=5353 dport=53 src=8.8.8.8 dst=172.20.0.11 sport=53 dport=5353 mark=0 zone=0 use=2',
    'ipv4     2 tcp      6 299 ESTABLISHED src=172.20.0.10 dst=172.20.0.11 sport=40000 dport=2379 src=172.20.0.11 dst=172.20.0.10 sport=2379 dport=40000 [ASSURED] mark=0 zone=0 use=2',
  ];

  it('counts the entries netfilter source-NATed from this node\'s podCIDRs', () => {
    expect(masqueradedFlows([masqueraded, ...others].join('\n'), ['10.230.1.0/24'])).toBe(1);
    expect(masqueradedFlows(others.join('\n'), ['10.230.1.0/24'])).toBe(0);
    expect(masqueradedFlows('', ['10.230.1.0/24'])).toBe(0);
  });

  it('keeps the rules (real iptables) until conntrack holds none of those flows, then removes them', async () => {
    let conntrack = [masqueraded, ...others].join('\n');
    const nodes = { nodeIps: ['192.168.230.1'], ownCidrs: ['10.230.1.0/24'] };
    const masq = iptablesMasquerade({ netns: ns, clusterCidr: '10.230.0.0/16', nodes: () => nodes, mode: 'iptables', log, refreshIntervalMs: 60_000, drainIntervalMs: 50, readConntrack: async () => conntrack });
    const ours = async () => (await natLines()).filter((l) => l.includes('SLUICE'));
    try {
      await masq.start();
      const rules = await ours();
      expect(rules).toHaveLength(5);
      await masq.setMode('bpf');
      expect(masq.draining).toBe(true);
      expect(await ours()).toEqual(rules);
      // A full pass while draining keeps them too.
      await masq.reconciler.fullPass();
      expect(await ours()).toEqual(rules);
      // The flow ends: the next look at conntrack removes the rules.
      conntrack = others.join('\n');
      await until('the rules to go once the flow ended', async () => (await ours()).length === 0);
      expect(masq.draining).toBe(false);

      // A restart straight into bpf mode with such a flow still in conntrack: the rules are written, not removed.
      await masq.stop();
      conntrack = masqueraded;
      let unreadable = false;
      const again = iptablesMasquerade({
        netns: ns,
        clusterCidr: '10.230.0.0/16',
        nodes: () => nodes,
        mode: 'bpf',
        log,
        refreshIntervalMs: 60_000,
        drainIntervalMs: 50,
        readConntrack: async () => {
          if (unreadable) throw new Error('permission denied');
          return conntrack;
        },
      });
      try {
        await again.start();
        expect(again.draining).toBe(true);
        expect(await ours()).toEqual(rules);
        // conntrack unreadable: nothing is removed on a guess …
        unreadable = true;
        conntrack = '';
        await new Promise((r) => setTimeout(r, 300));
        expect(again.draining).toBe(true);
        expect(await ours()).toEqual(rules);
        // … and once it can be read again (the flow gone), the rules go.
        unreadable = false;
        await until('the rules to go once conntrack is readable', async () => (await ours()).length === 0);
      } finally {
        await again.stop();
      }
    } finally {
      await masq.stop();
    }
  });
});
