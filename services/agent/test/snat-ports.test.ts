/** The masquerade's NAT ports reserved in the node's namespace (ip_local_reserved_ports), keeping what was there. */
import { SNAT_PORT_MAX, SNAT_PORT_MIN } from '@sluice/bpf';
import { createLogger } from '@sluice/log';
import { NetLab, must } from '@sluice/netns';
import { afterAll, describe, expect, it } from 'vitest';
import { reserveSnatPorts, withReservedRange } from '../src/reconcilers/snat-ports.ts';

const lab = new NetLab();
afterAll(async () => {
  await lab.cleanup();
});
const log = createLogger({ component: 'test', level: 'silent' });

describe('NAT port reservation', () => {
  it('adds the range to what is reserved, unless a range there covers it', () => {
    expect(withReservedRange('\n')).toBe(`${SNAT_PORT_MIN}-${SNAT_PORT_MAX}`);
    expect(withReservedRange('8080,30000-32767\n')).toBe(`8080,30000-32767,${SNAT_PORT_MIN}-${SNAT_PORT_MAX}`);
    expect(withReservedRange('60000-65535')).toBeUndefined();
    expect(withReservedRange('61000-65000')).toBe(`61000-65000,${SNAT_PORT_MIN}-${SNAT_PORT_MAX}`);
  });

  it('reserves them in a real namespace, keeps the node\'s own reservations, and is idempotent', async () => {
    const ns = await lab.addNetns(lab.name('ports'));
    const read = async () => (await must('ip', ['netns', 'exec', ns, 'cat', '/proc/sys/net/ipv4/ip_local_reserved_ports'])).trim();
    await must('ip', ['netns', 'exec', ns, 'sysctl', '-q', '-w', 'net.ipv4.ip_local_reserved_ports=8080']);
    await reserveSnatPorts(ns, log);
    expect(await read()).toBe(`8080,${SNAT_PORT_MIN}-${SNAT_PORT_MAX}`);
    await reserveSnatPorts(ns, log);
    expect(await read()).toBe(`8080,${SNAT_PORT_MIN}-${SNAT_PORT_MAX}`);
  });
});
