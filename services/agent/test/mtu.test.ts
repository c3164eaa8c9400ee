/**
 * The pods' MTU (mtu.ts): the uplink's in native routing, less VXLAN's 50 bytes in tunnel mode; and the tunnel
 * device made to carry exactly that, on a real VXLAN device in a namespace.
 */
import { NetLab, linkInfo } from '@sluice/netns';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { alignTunnelMtu, derivePodMtu, linkMtu, podMtuText, VXLAN_OVERHEAD } from '../src/mtu.ts';

describe('derivePodMtu', () => {
  it('native: the uplink\'s MTU; tunnel: less the VXLAN overhead', () => {
    expect(derivePodMtu(1500, 'native')).toEqual({ pod: 1500, uplink: 1500, overhead: 0, routing: 'native' });
    expect(derivePodMtu(1500, 'tunnel')).toEqual({ pod: 1450, uplink: 1500, overhead: 50, routing: 'tunnel' });
    expect(derivePodMtu(9000, 'tunnel').pod).toBe(9000 - VXLAN_OVERHEAD);
    expect(VXLAN_OVERHEAD).toBe(20 + 8 + 8 + 14);
  });

  it('refuses an uplink too small for IPv4 once the tunnel takes its share, and a nonsense MTU', () => {
    expect(() => derivePodMtu(600, 'tunnel')).toThrow(/550 bytes in tunnel routing, below IPv4's minimum 576/);
    expect(derivePodMtu(600, 'native').pod).toBe(600);
    expect(() => derivePodMtu(0, 'native')).toThrow(/not a positive integer/);
  });

  it('says where the figure comes from', () => {
    expect(podMtuText(derivePodMtu(9000, 'tunnel'))).toBe('8950 (uplink 9000 − VXLAN 50)');
    expect(podMtuText(derivePodMtu(9000, 'native'))).toBe('9000 (uplink 9000)');
  });
});

describe('alignTunnelMtu (real VXLAN device)', () => {
  const lab = new NetLab();
  let ns: string;

  beforeAll(async () => {
    ns = await lab.addNetns(lab.name('node'));
    const peer = await lab.addNetns(lab.name('peer'));
    await lab.addVeth({ ns, name: 'eth0', mtu: 9000 }, { ns: peer, name: 'eth0', mtu: 9000 });
    await lab.addVxlan(ns, 'vx0', { mtu: 1500 });
  });

  afterAll(async () => {
    await lab.cleanup();
  });

  it('sets the tunnel device to the pods\' MTU in tunnel mode, once; leaves it alone in native routing', async () => {
    const uplink = await linkMtu(ns, 'eth0');
    expect(uplink).toBe(9000);
    expect(await alignTunnelMtu(ns, 'vx0', derivePodMtu(uplink, 'native'))).toBeUndefined();
    expect((await linkInfo(ns, 'vx0')).mtu).toBe(1500);
    expect(await alignTunnelMtu(ns, 'vx0', derivePodMtu(uplink, 'tunnel'))).toBe(8950);
    expect((await linkInfo(ns, 'vx0')).mtu).toBe(8950);
    expect(await alignTunnelMtu(ns, 'vx0', derivePodMtu(uplink, 'tunnel'))).toBeUndefined();
  });

  it('a missing device is an error, not a silent default', async () => {
    await expect(linkMtu(ns, 'nope0')).rejects.toThrow();
  });
});
