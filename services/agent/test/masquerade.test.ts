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
import { iptablesMasquerade } from '../src/reconcilers/iptables.ts';
import { masqueradeRules, masqueradingText, parseMasqueradeMode } from '../src/tables/masquerade.ts';

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
    expect([...rows.keys()]).toEqual(['jump', 'node:192.168.1.2', 'node:192.168.1.3', 'masq:10.128.1.0/24']);
    expect(rows.get('masq:10.128.1.0/24')!.rule).toBe('-s 10.128.1.0/24 ! -d 10.128.0.0/9 -m comment --comment "sluice:masq:10.128.1.0/24" -j MASQUERADE');
    for (const mode of ['off', 'bpf'] as const) expect(masqueradeRules({ mode, clusterCidr: '10.128.0.0/9', nodeIps: ['192.168.1.2'], ownCidrs: ['10.128.1.0/24'] }).size).toBe(0);
    // No podCIDR yet: nothing to masquerade, no chain.
    expect(masqueradeRules({ mode: 'iptables', clusterCidr: '10.128.0.0/9', nodeIps: ['192.168.1.2'], ownCidrs: [] }).size).toBe(0);
  });

  it('reads the mode (and the old boolean) and prints it as Cilium does', () => {
    expect([true, 'true', false, 'false', 'iptables', 'bpf', 'off', 'nft'].map(parseMasqueradeMode)).toEqual(['bpf', 'bpf', 'off', 'off', 'iptables', 'bpf', 'off', undefined]);
    expect(masqueradingText('iptables', 'eth0', '10.128.0.0/9')).toBe('IPTables [IPv4: Enabled, IPv6: Disabled]');
    expect(masqueradingText('bpf', 'eth0', '10.128.0.0/9')).toBe('BPF [eth0] 10.128.0.0/9 [IPv4: Enabled, IPv6: Disabled]');
    expect(masqueradingText('off', 'eth0', '10.128.0.0/9')).toBe('Disabled');
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
      '-A SLUICE_POST_nat -d 192.168.230.1/32 -m comment --comment "sluice:node:192.168.230.1" -j RETURN',
      '-A SLUICE_POST_nat -d 192.168.230.2/32 -m comment --comment "sluice:node:192.168.230.2" -j RETURN',
      '-A SLUICE_POST_nat -s 10.230.1.0/24 ! -d 10.230.0.0/16 -m comment --comment "sluice:masq:10.230.1.0/24" -j MASQUERADE',
    ];
    try {
      await masq.start();
      expect(await natLines()).toEqual(expected);
      expect(masq.reconciler.status().rows).toEqual({ done: 4, pending: 0, error: 0 });

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

      // The mode leaves iptables (bpf): the feeder and the chain go; the stranger's POSTROUTING rule stays.
      await masq.setMode('bpf');
      expect(await natLines()).toEqual([foreign]);
      expect(masq.reconciler.status().rows).toEqual({ done: 0, pending: 0, error: 0 });
      // … and stays gone through full passes.
      await masq.reconciler.fullPass();
      expect(await natLines()).toEqual([foreign]);

      // Back to iptables.
      await masq.setMode('iptables');
      expect((await natLines()).filter((l) => l.includes('SLUICE'))).toHaveLength(6);
      await masq.setMode('off');
      expect(await natLines()).toEqual([foreign]);
    } finally {
      await masq.stop();
    }
  });
});
