/**
 * The MTU of the node's pods, derived from the uplink and the routing mode (Cilium's MTU detection): in native
 * routing a pod packet leaves as it is, so pods get the uplink's MTU; in tunnel mode every packet to another node
 * gains a VXLAN header, so pods get the uplink's MTU less that overhead — a pod left at 1500 on a 1500 uplink in
 * tunnel mode sends 1550-byte frames the uplink cannot carry (dropped, or fragmented outside the pod's sight).
 *
 * The CNI plugin asks for it (GET /v1/node → mtu) at each ADD, and the answer is computed then from the uplink's
 * current MTU, so a node whose uplink or routing mode changed gives its new pods the new value. Existing pods keep
 * the MTU they were made with (their veth is theirs, the agent never reaches into a pod's namespace): they pick up
 * the new one when they are recreated; in the meantime TCP's path MTU discovery (ICMP "fragmentation needed" from
 * the stack) narrows what they send to a tunnel — under BPF host routing too, which leaves packets too big for the
 * VXLAN device to the stack for that (route() in bpf/sluice.bpf.c) after a live switch to tunnel routing.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { RoutingMode } from '@sluice/kvstore';

const exec = promisify(execFile);

/** VXLAN over IPv4: outer IPv4 (20) + UDP (8) + VXLAN (8) + the inner Ethernet header (14). */
export const VXLAN_OVERHEAD = 50;
/** IPv4's minimum MTU a link must carry (RFC 791); below it the derivation refuses rather than break every pod. */
export const MIN_MTU = 576;

export interface PodMtu {
  /** The MTU of the pods' veths (both ends). */
  pod: number;
  /** The uplink's MTU it was derived from. */
  uplink: number;
  /** Bytes the routing mode adds to a packet to another node (VXLAN: 50; native: 0). */
  overhead: number;
  routing: RoutingMode;
  /** Set by the node's configuration (SluiceNodeConfig `mtu`), not derived. */
  configured?: boolean;
}

/** `configured`: the node configuration's MTU, which wins over the derivation (the admin knows the path beyond the uplink). */
export function derivePodMtu(uplinkMtu: number, routing: RoutingMode, configured?: number): PodMtu {
  if (!Number.isInteger(uplinkMtu) || uplinkMtu <= 0) throw new Error(`uplink MTU ${uplinkMtu} is not a positive integer`);
  const overhead = routing === 'tunnel' ? VXLAN_OVERHEAD : 0;
  if (configured !== undefined) {
    if (!Number.isInteger(configured) || configured < MIN_MTU) throw new Error(`configured MTU ${configured} is below IPv4's minimum ${MIN_MTU}`);
    return { pod: configured, uplink: uplinkMtu, overhead, routing, configured: true };
  }
  const pod = uplinkMtu - overhead;
  if (pod < MIN_MTU) throw new Error(`uplink MTU ${uplinkMtu} leaves pods ${pod} bytes in ${routing} routing, below IPv4's minimum ${MIN_MTU}`);
  return { pod, uplink: uplinkMtu, overhead, routing };
}

/** One line, as `sluice status` prints it: `8950 (uplink 9000 − VXLAN 50)` or `9000 (uplink 9000)`. */
export function podMtuText(m: PodMtu): string {
  if (m.configured) return `${m.pod} (node configuration; uplink ${m.uplink})`;
  return m.overhead ? `${m.pod} (uplink ${m.uplink} − VXLAN ${m.overhead})` : `${m.pod} (uplink ${m.uplink})`;
}

/** A device's MTU in the node's namespace. */
export async function linkMtu(netns: string | undefined, dev: string): Promise<number> {
  const { stdout } = await exec('ip', [...(netns ? ['-n', netns] : []), '-j', 'link', 'show', 'dev', dev], { timeout: 10_000 });
  const [link] = JSON.parse(stdout || '[]') as Array<{ mtu?: number }>;
  if (typeof link?.mtu !== 'number') throw new Error(`${dev} has no MTU in ${netns ?? 'this namespace'}`);
  return link.mtu;
}

/**
 * Tunnel mode: the VXLAN device must carry what the pods send (pod MTU). A device left at its 1500 default on a
 * jumbo uplink would make the stack refuse the pods' large packets (legacy host routing) for no reason; one above
 * it would let encapsulated frames outgrow the uplink. Returns the MTU set, or undefined when it already was right.
 */
export async function alignTunnelMtu(netns: string | undefined, vxlan: string, mtu: PodMtu): Promise<number | undefined> {
  if (mtu.routing !== 'tunnel') return undefined;
  if ((await linkMtu(netns, vxlan)) === mtu.pod) return undefined;
  await exec('ip', [...(netns ? ['-n', netns] : []), 'link', 'set', 'dev', vxlan, 'mtu', String(mtu.pod)], { timeout: 10_000 });
  return mtu.pod;
}
