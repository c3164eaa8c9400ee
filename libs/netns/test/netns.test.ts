import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { NetLab, NetnsError, checkIfname, execIn, linkInfo, ping, shortId } from '../src/index.ts';

const namespaces = () => execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).split('\n').map((l) => l.split(' ')[0]);

describe('NetLab', () => {
  const outsider = `sl-${shortId()}-out`;
  afterAll(() => {
    // It may not exist if the test failed before making it.
    if (namespaces().includes(outsider)) execFileSync('ip', ['netns', 'delete', outsider], { stdio: 'ignore' });
  });

  it('builds namespaces, veths, a bridge, addresses and routes that pass traffic, then removes exactly them', async () => {
    // Made outside the lab: cleanup must leave it alone even though its name looks like ours.
    execFileSync('ip', ['netns', 'add', outsider]);
    const lab = new NetLab();
    try {
      const a = await lab.addNetns(lab.name('a'));
      const b = await lab.addNetns(lab.name('b'));
      const br = await lab.addNetns(lab.name('br'), { forwarding: true });
      await lab.addBridge(br, 'br0');
      await lab.addVeth({ ns: a, name: 'eth0' }, { ns: br, name: 'pa' });
      await lab.addVeth({ ns: b, name: 'eth0' }, { ns: br, name: 'pb' });
      await lab.setMaster(br, 'pa', 'br0');
      await lab.setMaster(br, 'pb', 'br0');
      await lab.addAddr(a, 'eth0', '10.99.0.1/24');
      await lab.addAddr(b, 'eth0', '10.99.0.2/24');
      await lab.route(a, ['10.98.0.0/16', 'via', '10.99.0.2']);
      expect(await ping(a, '10.99.0.2')).toBe(true);
      const info = await linkInfo(a, 'eth0');
      expect(info).toMatchObject({ ifname: 'eth0', up: true });
      expect(info.mac).toMatch(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
      const routes = await execIn(a, 'ip', ['route', 'show', '10.98.0.0/16']);
      expect(routes.stdout).toContain('via 10.99.0.2');
      // nsenter keeps the bpffs visible (ip netns exec would remount /sys).
      const bpffs = await execIn(a, 'stat', ['-f', '-c', '%T', '/sys/fs/bpf']);
      expect(bpffs.stdout.trim()).toBe('bpf_fs');
      const dir = lab.trackPinDir(`/sys/fs/bpf/sluice/${lab.name('pins')}`);
      mkdirSync(dir, { recursive: true });
      const sleeper = lab.spawnIn(a, 'sleep', ['60']);
      expect(namespaces()).toEqual(expect.arrayContaining([a, b, br]));

      expect(await lab.cleanup()).toEqual([]);
      expect(namespaces()).not.toEqual(expect.arrayContaining([a]));
      expect(namespaces().filter((n) => [a, b, br].includes(n ?? ''))).toEqual([]);
      expect(existsSync(dir)).toBe(false);
      await new Promise((r) => setTimeout(r, 50));
      expect(sleeper.signalCode ?? sleeper.exitCode).not.toBeNull();
      expect(namespaces()).toContain(outsider);
      expect(await lab.cleanup()).toEqual([]); // idempotent
    } finally {
      await lab.cleanup();
    }
  });

  it('cleans up after a failed step, and refuses names it must not own', async () => {
    const lab = new NetLab();
    try {
      const ns = await lab.addNetns(lab.name('x'));
      await expect(lab.addNetns('not-ours')).rejects.toThrow(NetnsError);
      await expect(lab.addVeth({ name: 'veth-host' }, { ns, name: 'eth0' })).rejects.toThrow(/must start with sl-/);
      await expect(lab.addVeth({ ns, name: 'a-very-long-ifname' }, { ns, name: 'b' })).rejects.toThrow(/at most 15/);
      await expect(lab.addAddr(ns, 'nosuchdev', '10.0.0.1/32')).rejects.toThrow(/ip -n .* addr add/);
      expect(await lab.cleanup()).toEqual([]);
      expect(namespaces()).not.toContain(ns);
      expect(() => checkIfname('sl-abcd-lxc1234')).not.toThrow();
    } finally {
      await lab.cleanup();
    }
  });
});
