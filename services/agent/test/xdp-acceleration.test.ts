/**
 * --lb-acceleration: the agent attaches xdp_netdev to its node's uplink (driver mode on a veth), reports it in its
 * /status as kubeProxyReplacement.xdpAcceleration, and detaches it when it stops (tc carries the flows on).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defaultPinDir, ifindex, inNetns, queryXdp } from '@sluice/datapath';
import { startEtcd, type EtcdServer } from '@sluice/etcd-runner';
import { createKvClient, keySchema } from '@sluice/kvstore';
import { createLogger } from '@sluice/log';
import { NetLab } from '@sluice/netns';
import { afterAll, describe, expect, it } from 'vitest';
import { runAgent } from '../src/index.ts';

const lab = new NetLab();
let etcd: EtcdServer | undefined;
const stateDirs: string[] = [];

afterAll(async () => {
  try {
    await lab.cleanup();
  } finally {
    await etcd?.stop().catch(() => undefined);
    for (const d of stateDirs) rmSync(d, { recursive: true, force: true });
  }
});

describe('agent --lb-acceleration', () => {
  it('native: XDP on the uplink in driver mode, "Native" in /status, detached on stop; tunnel routing keeps it off', async () => {
    etcd = await startEtcd();
    const prefix = `xdp-${lab.id}/`;
    const writer = createKvClient({ endpoints: [etcd.endpoint] });
    await writer.put(keySchema(prefix).node('xdp-node')).value(JSON.stringify({ v: 1, name: 'xdp-node', labels: {}, addresses: [{ type: 'InternalIP', ip: '192.168.231.1' }], podCIDRs: ['10.231.0.0/24'], ready: 'True', healthIPs: [] }));
    writer.close();
    const nodeNs = await lab.addNetns(lab.name('node'));
    const peer = await lab.addNetns(lab.name('peer'));
    await lab.addVeth({ ns: nodeNs, name: 'eth0' }, { ns: peer, name: 'eth0' });
    await lab.addAddr(nodeNs, 'eth0', '192.168.231.1/24');
    const start = async (routing: 'native' | 'tunnel') => {
      const stateDir = mkdtempSync(join(tmpdir(), 'sluice-xdp-test-'));
      stateDirs.push(stateDir);
      return runAgent({
        nodeName: 'xdp-node', etcd: [etcd!.endpoint], rootPrefix: prefix, pinDir: lab.trackPinDir(defaultPinDir(`${lab.id}-xdp`)), netns: nodeNs, uplink: 'eth0',
        routing, hostRouting: 'auto', lbAcceleration: 'native', stateDir, apiSocket: join(stateDir, 'agent.sock'), healthPort: 0, clusterCidr: '10.231.0.0/16',
        log: createLogger({ component: 'agent', level: 'silent' }),
      });
    };
    const attached = () => inNetns(nodeNs, () => queryXdp(ifindex('eth0')));

    const agent = await start('native');
    try {
      expect(attached()?.mode).toBe('native');
      const status = (await (await fetch(`${agent.status.url}/status`)).json()) as { kubeProxyReplacement: { xdpAcceleration: string; xdp: { requested: string; device: string } } };
      expect(status.kubeProxyReplacement.xdpAcceleration).toBe('Native');
      expect(status.kubeProxyReplacement.xdp).toMatchObject({ requested: 'native', device: 'eth0' });
    } finally {
      await agent.stop({ graceMs: 3000 });
    }
    expect(attached()).toBeUndefined();

    const tunnel = await start('tunnel');
    try {
      expect(attached()).toBeUndefined();
      const status = (await (await fetch(`${tunnel.status.url}/status`)).json()) as { kubeProxyReplacement: { xdpAcceleration: string; xdp: { reason?: string } } };
      expect(status.kubeProxyReplacement.xdpAcceleration).toBe('Disabled');
      expect(status.kubeProxyReplacement.xdp.reason).toMatch(/native routing/);
    } finally {
      await tunnel.stop({ graceMs: 3000 });
    }
  }, 90_000);
});
