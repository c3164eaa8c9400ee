/**
 * The agent with `--masquerade iptables` inside a node namespace: host routing `auto` falls back to legacy and says
 * why exactly once (the line a user greps for), /status and the etcd status record print the masquerading as Cilium
 * does, and SLUICE_POST_nat holds a return for every node and the masquerade of this node's podCIDR — written only
 * once the node list is known, and left in place when the agent stops (a restart must not cut masqueraded flows).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { decideHostRouting, defaultPinDir, probeKernel } from '@sluice/datapath';
import { startEtcd, type EtcdServer } from '@sluice/etcd-runner';
import { createKvClient, keySchema } from '@sluice/kvstore';
import { createLogger } from '@sluice/log';
import { NetLab, must } from '@sluice/netns';
import { IPMASQ_F_NODE } from '@sluice/bpf';
import { afterAll, describe, expect, it } from 'vitest';
import { runAgent } from '../src/index.ts';

const lab = new NetLab();
let etcd: EtcdServer | undefined;
let stateDir: string | undefined;

afterAll(async () => {
  try {
    await lab.cleanup();
  } finally {
    await etcd?.stop().catch(() => undefined);
    if (stateDir) rmSync(stateDir, { recursive: true, force: true });
  }
});

const nodeRecord = (name: string, ip: string, cidr: string) => JSON.stringify({ v: 1, name, labels: {}, addresses: [{ type: 'InternalIP', ip }], podCIDRs: [cidr], ready: 'True', healthIPs: [] });

async function until(what: string, check: () => Promise<boolean> | boolean, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('agent with iptables masquerading', () => {
  let nodeNs = '';
  let prefix = '';
  const start = (log = createLogger({ component: 'agent', level: 'silent' }), extra: { nonMasqueradeCidrs?: string[] } = {}) => runAgent({
    nodeName: 'mq-1', etcd: [etcd!.endpoint], rootPrefix: prefix, pinDir: lab.trackPinDir(defaultPinDir(`${lab.id}-mq`)), netns: nodeNs, uplink: 'eth0',
    routing: 'native', hostRouting: 'auto', masquerade: 'iptables', stateDir: stateDir!, apiSocket: join(stateDir!, 'agent.sock'), healthPort: 0, clusterCidr: '10.231.0.0/16',
    reconcileIntervalMs: 0, log, ...extra,
  });
  const nat = async () => (await must('ip', ['netns', 'exec', nodeNs, 'iptables-save', '-t', 'nat'])).split('\n').filter((l) => l.includes('SLUICE_POST_nat') && l.startsWith('-A'));

  it('falls back to legacy host routing once, reports IPTables, and programs SLUICE_POST_nat from the node list', async () => {
    etcd = await startEtcd();
    prefix = `masq-${lab.id}/`;
    const keys = keySchema(prefix);
    const writer = createKvClient({ endpoints: [etcd.endpoint] });
    await writer.put(keys.node('mq-1')).value(nodeRecord('mq-1', '192.168.231.1', '10.231.1.0/24'));
    await writer.put(keys.node('mq-2')).value(nodeRecord('mq-2', '192.168.231.2', '10.231.2.0/24'));
    nodeNs = await lab.addNetns(lab.name('node'));
    const peer = await lab.addNetns(lab.name('peer'));
    await lab.addVeth({ ns: nodeNs, name: 'eth0' }, { ns: peer, name: 'eth0' });
    await lab.addAddr(nodeNs, 'eth0', '192.168.231.1/24');
    stateDir = mkdtempSync(join(tmpdir(), 'sluice-masq-test-'));
    const lines: Array<{ msg?: string }> = [];
    const destination = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const l of chunk.toString().split('\n')) if (l.trim()) lines.push(JSON.parse(l) as { msg?: string });
        done();
      },
    });
    const agent = await start(createLogger({ component: 'agent', level: 'info', destination }));
    try {
      const reason = 'BPF host routing requires enable-bpf-masquerade. Falling back to legacy host routing (enable-host-legacy-routing=true).';
      expect(agent.hostRouting).toEqual({ mode: 'Legacy', reason, status: `Host Routing: Legacy (${reason})` });
      expect(lines.filter((l) => l.msg?.includes('BPF host routing requires'))).toEqual([expect.objectContaining({ msg: reason })]);
      // BPF SNAT stays off: the netfilter rules masquerade.
      expect(agent.datapath.getConfig()).toMatchObject({ masquerade: false, bpfHostRouting: false });

      await agent.core.synced();
      await until('SLUICE_POST_nat', async () => (await nat()).length === 5);
      expect(await nat()).toEqual([
        '-A POSTROUTING -m comment --comment "sluice-feeder: SLUICE_POST_nat" -j SLUICE_POST_nat',
        '-A SLUICE_POST_nat -m mark --mark 0x100000/0x100000 -m comment --comment "sluice:bpf-snat" -j RETURN',
        '-A SLUICE_POST_nat -d 192.168.231.1/32 -m comment --comment "sluice:node:192.168.231.1" -j RETURN',
        '-A SLUICE_POST_nat -d 192.168.231.2/32 -m comment --comment "sluice:node:192.168.231.2" -j RETURN',
        '-A SLUICE_POST_nat -s 10.231.1.0/24 ! -d 10.231.0.0/16 -m comment --comment "sluice:masq:10.231.1.0/24" -j MASQUERADE',
      ]);
      // A node joins through etcd: its return rule follows.
      await writer.put(keys.node('mq-3')).value(nodeRecord('mq-3', '192.168.231.3', '10.231.3.0/24'));
      await until('the new node\'s return rule', async () => (await nat()).some((l) => l.includes('-d 192.168.231.3/32')));

      const status = (await (await fetch(`${agent.status.url}/status`)).json()) as { masquerading: string; hostRouting: { mode: string }; reconcilers: Array<{ name: string }> };
      expect(status.masquerading).toBe('IPTables [IPv4: Enabled, IPv6: Disabled]');
      expect(status.hostRouting.mode).toBe('Legacy');
      expect(status.reconcilers.map((r) => r.name)).toContain('iptables-masquerade');
    } finally {
      await agent.stop({ graceMs: 5000 });
      writer.close();
    }
    // Stopping leaves the rules (flows keep their translation while no agent runs).
    expect(await nat()).toHaveLength(6);
  }, 90_000);

  it('switches masquerading and host routing live from the operator\'s record, new path first, and a restart gives the same', async () => {
    const keys = keySchema(prefix);
    const writer = createKvClient({ endpoints: [etcd!.endpoint] });
    const bpfHostRouting = decideHostRouting(await probeKernel(), 'auto');
    const reason = 'BPF host routing requires enable-bpf-masquerade. Falling back to legacy host routing (enable-host-legacy-routing=true).';
    let agent = await start();
    try {
      await agent.core.synced();
      await until('SLUICE_POST_nat', async () => (await nat()).length === 6);
      // The operator resolved a SluiceNodeConfig for this node: BPF masquerading.
      await writer.put(keys.effectiveNodeConfig('mq-1')).value(JSON.stringify({ v: 1, masquerade: 'bpf', hostRouting: 'auto', sources: ['50-ebpf'] }));
      await until('the chain to go', async () => (await nat()).length === 0);
      await until('the switch to end', () => agent.hostRouting.mode === bpfHostRouting.mode);
      expect(agent.datapath.getConfig()).toMatchObject({ masquerade: true, bpfHostRouting: bpfHostRouting.mode === 'BPF' });
      expect(agent.hostRouting).toEqual(bpfHostRouting);
      const status = (await (await fetch(`${agent.status.url}/status`)).json()) as { masquerading: string };
      expect(status.masquerading).toBe('BPF [eth0] 10.231.0.0/16 [IPv4: Enabled, IPv6: Disabled]');

      // And back: the rules first, then the BPF SNAT off and legacy host routing, with the reason.
      await writer.put(keys.effectiveNodeConfig('mq-1')).value(JSON.stringify({ v: 1, masquerade: 'iptables', sources: ['10-base'] }));
      await until('the chain to come back', async () => (await nat()).length === 6);
      await until('the BPF SNAT off', () => agent.datapath.getConfig()?.masquerade === false && agent.hostRouting.mode === 'Legacy');
      expect(agent.datapath.getConfig()).toMatchObject({ bpfHostRouting: false });
      expect(agent.hostRouting).toMatchObject({ mode: 'Legacy', reason });

      // The record gone: the flags again (iptables here), nothing to switch.
      await writer.delete().key(keys.effectiveNodeConfig('mq-1'));
      await new Promise((r) => setTimeout(r, 300));
      expect(await nat()).toHaveLength(6);

      // A restart with the record already there starts in its mode, and takes away the rules the last run left.
      await agent.stop({ graceMs: 5000 });
      await writer.put(keys.effectiveNodeConfig('mq-1')).value(JSON.stringify({ v: 1, masquerade: 'bpf', sources: ['50-ebpf'] }));
      expect(await nat()).toHaveLength(6);
      agent = await start();
      expect(agent.datapath.getConfig()).toMatchObject({ masquerade: true });
      expect(agent.hostRouting).toEqual(bpfHostRouting);
      await agent.core.synced();
      await until('the old run\'s chain to go', async () => (await nat()).length === 0);
    } finally {
      await agent.stop({ graceMs: 5000 });
      writer.close();
    }
  }, 120_000);

  it('programs ip-masq-agent\'s nonMasqueradeCIDRs into sl_ipmasq and SLUICE_POST_nat, and a restart with another list replaces them', async () => {
    const keys = keySchema(prefix);
    const writer = createKvClient({ endpoints: [etcd!.endpoint] });
    // Back to the flags' iptables mode (the last test left the operator's bpf record).
    await writer.delete().key(keys.effectiveNodeConfig('mq-1'));
    let agent = await start(undefined, { nonMasqueradeCidrs: ['198.51.100.0/24', '10.0.0.0/8'] });
    try {
      const configured = () => agent.datapath.maps.ipmasq.entries().filter(([, v]) => !(v.flags & IPMASQ_F_NODE)).map(([k]) => k.cidr).sort();
      const nodeEntries = () => agent.datapath.maps.ipmasq.entries().filter(([, v]) => v.flags & IPMASQ_F_NODE).map(([k]) => k.cidr).sort();
      expect(configured()).toEqual(['10.0.0.0/8', '198.51.100.0/24']);
      // Every cluster node's IP too: pod → node keeps the pod's address in BPF masquerading, as in iptables mode.
      await until('the node IPs in sl_ipmasq', async () => nodeEntries().join() === ['192.168.231.1/32', '192.168.231.2/32', '192.168.231.3/32'].join());
      // The NAT ports are reserved in the node (its own connections never take one).
      await until('the NAT ports reserved', async () => (await must('ip', ['netns', 'exec', nodeNs, 'cat', '/proc/sys/net/ipv4/ip_local_reserved_ports'])).includes('61000-65535'));
      await agent.core.synced();
      await until('the nonMasqueradeCIDRs\' return rules', async () => (await nat()).filter((l) => l.includes('nonmasq:')).length === 2);
      const chain = (await nat()).filter((l) => l.startsWith('-A SLUICE_POST_nat'));
      expect(chain.findIndex((l) => l.includes('-d 198.51.100.0/24 -m comment --comment "sluice:nonmasq:198.51.100.0/24" -j RETURN'))).toBeLessThan(chain.findIndex((l) => l.includes('-j MASQUERADE')));
      await agent.stop({ graceMs: 5000 });
      agent = await start(undefined, { nonMasqueradeCidrs: ['10.0.0.0/8'] });
      expect(configured()).toEqual(['10.0.0.0/8']);
      // A node leaves: its IP goes.
      await writer.delete().key(keys.node('mq-3'));
      await until('mq-3\'s IP out of sl_ipmasq', async () => nodeEntries().join() === ['192.168.231.1/32', '192.168.231.2/32'].join());
      // In BPF mode the status says so, as Cilium's does.
      await writer.put(keys.effectiveNodeConfig('mq-1')).value(JSON.stringify({ v: 1, masquerade: 'bpf', sources: ['50-ebpf'] }));
      await agent.core.synced();
      await until('BPF masquerading', async () => ((await (await fetch(`${agent.status.url}/status`)).json()) as { masquerading: string }).masquerading.startsWith('BPF'));
      expect(((await (await fetch(`${agent.status.url}/status`)).json()) as { masquerading: string }).masquerading).toBe('BPF (ip-masq-agent) [eth0] 10.231.0.0/16 [IPv4: Enabled, IPv6: Disabled]');
    } finally {
      await agent.stop({ graceMs: 5000 });
      writer.close();
    }
  }, 120_000);

  it('takes nonMasqueradeCIDRs and the pods\' MTU from the node configuration live, and gives the flags\' back when it goes', async () => {
    const keys = keySchema(prefix);
    const writer = createKvClient({ endpoints: [etcd!.endpoint] });
    await writer.delete().key(keys.effectiveNodeConfig('mq-1'));
    const agent = await start(undefined, { nonMasqueradeCidrs: ['10.0.0.0/8'] });
    try {
      const configured = () => agent.datapath.maps.ipmasq.entries().filter(([, v]) => !(v.flags & IPMASQ_F_NODE)).map(([k]) => k.cidr).sort().join();
      const status = async () => (await (await fetch(`${agent.status.url}/status`)).json()) as { masquerading: string; mtu: { pod: number; status: string } };
      await agent.core.synced();
      expect(configured()).toBe('10.0.0.0/8');
      const derived = (await status()).mtu.pod;
      // The operator resolves a SluiceNodeConfig with both keys: the map, the chain and new pods' MTU follow.
      await writer.put(keys.effectiveNodeConfig('mq-1')).value(JSON.stringify({ v: 1, nonMasqueradeCidrs: ['172.16.0.0/12', '198.51.100.0/24'], mtu: 1400, sources: ['60-masq'] }));
      await until('the configuration\'s CIDRs in sl_ipmasq', () => configured() === '172.16.0.0/12,198.51.100.0/24');
      await until('their return rules in SLUICE_POST_nat', async () => (await nat()).filter((l) => l.includes('nonmasq:')).map((l) => /-d (\S+)/.exec(l)?.[1]).sort().join() === '172.16.0.0/12,198.51.100.0/24');
      await until('the configured MTU', async () => (await status()).mtu.pod === 1400);
      expect((await status()).mtu.status).toBe(`1400 (node configuration; uplink ${derived})`);
      // The record goes: the flag's list and the derived MTU again.
      await writer.delete().key(keys.effectiveNodeConfig('mq-1'));
      await until('the flag\'s CIDRs back', () => configured() === '10.0.0.0/8');
      await until('the flag\'s return rule back', async () => (await nat()).filter((l) => l.includes('nonmasq:')).map((l) => /-d (\S+)/.exec(l)?.[1]).join() === '10.0.0.0/8');
      await until('the derived MTU back', async () => (await status()).mtu.pod === derived);
    } finally {
      await agent.stop({ graceMs: 5000 });
      writer.close();
    }
  }, 120_000);
});
