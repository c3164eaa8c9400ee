/**
 * The BPF masquerade's NAT ports (SNAT_PORT_MIN..SNAT_PORT_MAX, above the kernel's default ip_local_port_range)
 * are reserved in the node's namespace (net.ipv4.ip_local_reserved_ports), so even with a widened
 * ip_local_port_range the node's own connections never take a port a masqueraded flow may hold: a reply to it would
 * be translated to the pod. Whatever the node reserved already is kept.
 */
import { SNAT_PORT_MAX, SNAT_PORT_MIN } from '@sluice/bpf';
import type { Logger } from '@sluice/log';
import { run } from '@sluice/netns';

const PATH = '/proc/sys/net/ipv4/ip_local_reserved_ports';

/** The new value of ip_local_reserved_ports with min..max added, or undefined when a range there covers it already. */
export function withReservedRange(current: string, min = SNAT_PORT_MIN, max = SNAT_PORT_MAX): string | undefined {
  const ranges = current.trim().split(',').map((r) => r.trim()).filter(Boolean);
  for (const r of ranges) {
    const [lo, hi = lo] = r.split('-').map(Number);
    if (lo! <= min && hi! >= max) return undefined;
  }
  return [...ranges, `${min}-${max}`].join(',');
}

/** Reserves the NAT ports in the namespace (the agent's own without one); failures are logged, never fatal. */
export async function reserveSnatPorts(netns: string | undefined, log: Logger): Promise<void> {
  const exec = (cmd: string, args: string[]) => (netns ? run('ip', ['netns', 'exec', netns, cmd, ...args], { timeoutMs: 10_000 }) : run(cmd, args, { timeoutMs: 10_000 }));
  try {
    const read = await exec('cat', [PATH]);
    if (read.code !== 0) throw new Error(read.stderr.trim() || `cat ${PATH}: exit ${read.code}`);
    const next = withReservedRange(read.stdout);
    if (next === undefined) return;
    const write = await exec('sysctl', ['-q', '-w', `net.ipv4.ip_local_reserved_ports=${next}`]);
    if (write.code !== 0) throw new Error(write.stderr.trim() || `sysctl: exit ${write.code}`);
    log.info({ reserved: next }, `the masquerade's NAT ports ${SNAT_PORT_MIN}-${SNAT_PORT_MAX} reserved for it (ip_local_reserved_ports)`);
  } catch (err) {
    log.warn({ error: (err as Error).message }, `could not reserve the masquerade's NAT ports ${SNAT_PORT_MIN}-${SNAT_PORT_MAX}; the node's own connections could take one if its ip_local_port_range reaches them`);
  }
}
