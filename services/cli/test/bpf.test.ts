/** `sluice bpf …` reads real pinned maps: a datapath is loaded and pinned here, filled, and read back by the CLI. */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EP_F_HOST, IPCACHE_F_LOCAL, IPMASQ_F_NODE } from '@sluice/bpf';
import { BPFFS_ROOT, loadDatapath, removePins, upsertIpcache, type Datapath } from '@sluice/datapath';
import { writeDemoState } from '@sluice/demo-state';
import { runCli } from '../src/cli.ts';
import { capture, tempDir } from './helpers.ts';

describe('sluice bpf', () => {
  const pinDir = join(BPFFS_ROOT, `cli-test-${process.pid}`, 'n1');
  let dp: Datapath;

  beforeAll(() => {
    dp = loadDatapath({ pinDir });
    dp.maps.endpoints.upsertBatch([
      [{ ip: '10.200.0.11' }, { ifindex: 7, flags: 0, mac: '02:00:00:00:00:0b', nodeMac: '02:00:00:00:01:0b' }],
      [{ ip: '10.200.0.200' }, { ifindex: 9, flags: EP_F_HOST, mac: '02:00:00:00:00:c8', nodeMac: '02:00:00:00:01:c8' }],
    ]);
    upsertIpcache(dp, [
      [{ cidr: '10.200.0.11/32' }, { nodeIp: '10.0.0.1', flags: IPCACHE_F_LOCAL }],
      [{ cidr: '10.200.1.0/24' }, { nodeIp: '10.0.0.2', flags: 0 }],
    ]);
    dp.maps.tunnel.upsertBatch([[{ cidr: '10.200.1.0/24' }, { nodeIp: '10.0.0.2', vni: 0 }]]);
    dp.maps.ipmasq.upsertBatch([[{ cidr: '192.168.0.0/16' }, { flags: 0 }], [{ cidr: '10.0.0.0/8' }, { flags: 0 }], [{ cidr: '169.254.0.0/16' }, { flags: 0 }], [{ cidr: '10.0.0.2/32' }, { flags: IPMASQ_F_NODE }]]);
  });

  it('ipmasq list prints the nonMasqueradeCIDRs as cilium-dbg bpf ipmasq list does', async () => {
    const c = capture();
    expect(await runCli(['bpf', 'ipmasq', 'list', '--node', 'n1', '--pin-dir', pinDir], c.io)).toBe(0);
    expect(c.out()).toBe('IP PREFIX/ADDRESS\n10.0.0.0/8\n169.254.0.0/16\n192.168.0.0/16\n');
    const j = capture();
    expect(await runCli(['bpf', 'ipmasq', 'list', '--node', 'n1', '--pin-dir', pinDir, '--json'], j.io)).toBe(0);
    // The node IPs the agent keeps there (never masqueraded) show with --json only.
    expect(JSON.parse(j.out())).toEqual([{ cidr: '10.0.0.0/8', node: false }, { cidr: '10.0.0.2/32', node: true }, { cidr: '169.254.0.0/16', node: false }, { cidr: '192.168.0.0/16', node: false }]);
  });

  afterAll(() => {
    dp?.close();
    removePins(join(BPFFS_ROOT, `cli-test-${process.pid}`));
  });

  it('endpoints, ipcache and tunnel as tables', async () => {
    const ep = capture();
    expect(await runCli(['bpf', 'endpoints', '--node', 'n1', '--pin-dir', pinDir], ep.io)).toBe(0);
    expect(ep.out().split('\n').slice(0, 3)).toEqual([
      'IP             IFINDEX   MAC                 NODE-MAC            FLAGS',
      '10.200.0.11    7         02:00:00:00:00:0b   02:00:00:00:01:0b   -',
      '10.200.0.200   9         02:00:00:00:00:c8   02:00:00:00:01:c8   host',
    ]);
    const ipc = capture();
    expect(await runCli(['bpf', 'ipcache', '--node', 'n1', '--pin-dir', pinDir, '--json'], ipc.io)).toBe(0);
    expect(JSON.parse(ipc.out())).toEqual([
      { cidr: '10.200.0.11/32', nodeIp: '10.0.0.1', local: true },
      { cidr: '10.200.1.0/24', nodeIp: '10.0.0.2', local: false },
    ]);
    const tun = capture();
    expect(await runCli(['bpf', 'tunnel', '--node', 'n1', '--pin-dir', pinDir], tun.io)).toBe(0);
    expect(tun.out()).toBe('PREFIX          TUNNEL-ENDPOINT   VNI\n10.200.1.0/24   10.0.0.2          default\n');
  });

  it('finds the pin dir of a lab node through the demo state, and refuses a node the demo does not have', async () => {
    const path = join(tempDir('sluice-bpf-'), 'demo.json');
    await writeDemoState(path, {
      version: 1, phase: 'ready', pid: process.pid, startedAt: 'now', etcd: { endpoints: ['http://127.0.0.1:9'] },
      nodes: [{ name: 'n1', nodeIP: '10.0.0.1', netns: 'sl-t-n1', pinDir }],
    });
    const c = capture({ statePath: path });
    expect(await runCli(['bpf', 'tunnel', '--node', 'n1'], c.io)).toBe(0);
    expect(c.out()).toContain('10.200.1.0/24');
    const other = capture({ statePath: path });
    expect(await runCli(['bpf', 'tunnel', '--node', 'n7'], other.io)).toBe(1);
    expect(other.err()).toBe('sluice: no lab node n7 in the demo (nodes: n1)\n');
  });
});
