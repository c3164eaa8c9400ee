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
import { defaultPinDir } from '@sluice/datapath';
import { startEtcd, type EtcdServer } from '@sluice/etcd-runner';
import { createKvClient, keySchema } from '@sluice/kvstore';
import { createLogger } from '@sluice/log';
import { NetLab, must } from '@sluice/netns';
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
  it('falls back to legacy host routing once, reports IPTables, and programs SLUICE_POST_nat from the node list', async () => {
    etcd = await startEtcd();
    const prefix = `masq-${lab.id}/`;
    const keys = keySchema(prefix);
    const writer = createKvClient({ endpoints: [etcd.endpoint] });
    await writer.put(keys.node('mq-1')).value(nodeRecord('mq-1', '192.168.231.1', '10.231.1.0/24'));
    await writer.put(keys.node('mq-2')).value(nodeRecord('mq-2', '192.168.231.2', '10.231.2.0/24'));
    const nodeNs = await lab.addNetns(lab.name('node'));
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
    const agent = await runAgent({
      nodeName: 'mq-1', etcd: [etcd.endpoint], rootPrefix: prefix, pinDir: lab.trackPinDir(defaultPinDir(`${lab.id}-mq`)), netns: nodeNs, uplink: 'eth0',
      routing: 'native', hostRouting: 'auto', masquerade: 'iptables', stateDir, apiSocket: join(stateDir, 'agent.sock'), healthPort: 0, clusterCidr: '10.231.0.0/16',
      reconcileIntervalMs: 0, log: createLogger({ component: 'agent', level: 'info', destination }),
    });
    const nat = async () => (await must('ip', ['netns', 'exec', nodeNs, 'iptables-save', '-t', 'nat'])).split('\n').filter((l) => l.includes('SLUICE_POST_nat') && l.startsWith('-A'));
    try {
      const reason = 'BPF host routing requires enable-bpf-masquerade. Falling back to legacy host routing (enable-host-legacy-routing=true).';
      expect(agent.hostRouting).toEqual({ mode: 'Legacy', reason, status: `Host Routing: Legacy (${reason})` });
      expect(lines.filter((l) => l.msg?.includes('BPF host routing requires'))).toEqual([expect.objectContaining({ msg: reason })]);
      // BPF SNAT stays off: the netfilter rules masquerade.
      expect(agent.datapath.getConfig()).toMatchObject({ masquerade: false, bpfHostRouting: false });

      await agent.core.synced();
      await until('SLUICE_POST_nat', async () => (await nat()).length === 4);
      expect(await nat()).toEqual([
        '-A POSTROUTING -m comment --comment "sluice-feeder: SLUICE_POST_nat" -j SLUICE_POST_nat',
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
    expect(await nat()).toHaveLength(5);
  }, 90_000);
});
