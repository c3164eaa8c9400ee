/**
 * XDP acceleration of the service load balancer (`xdp_netdev` on a node's uplink): attach in driver ("native")
 * mode where the device's driver supports it, in generic (skb) mode otherwise, detach, and ask what is attached.
 *
 * Like tc.ts, every call is synchronous netlink in the calling thread's namespace, so `inNetns` can run it inside a
 * node's namespace. It refuses to act in the machine's initial network namespace: on a shared machine (the lab)
 * an XDP program on a real device would take the host's own traffic.
 */
import { statSync } from 'node:fs';
import koffi from 'koffi';
import { BpfError, bpf, check, lastErrno } from './libbpf.ts';
import { ifindex, inNetns } from './tc.ts';

/** The agent's --lb-acceleration. */
export type LbAcceleration = 'native' | 'generic' | 'disabled';
export const LB_ACCELERATIONS: readonly LbAcceleration[] = ['native', 'generic', 'disabled'];
/** How a program ended up attached. */
export type XdpMode = 'native' | 'generic';

export const XDP_FLAGS_SKB_MODE = 1 << 1;
export const XDP_FLAGS_DRV_MODE = 1 << 2;

/** XDP return codes (what BPF_PROG_TEST_RUN reports for an XDP program). */
export const XDP_ABORTED = 0;
export const XDP_DROP = 1;
export const XDP_PASS = 2;
export const XDP_TX = 3;
export const XDP_REDIRECT = 4;

const modeFlags = (mode: XdpMode) => (mode === 'native' ? XDP_FLAGS_DRV_MODE : XDP_FLAGS_SKB_MODE);

/** `XDP Acceleration: …` as `sluice status --verbose` shows it. */
export function xdpStatusText(mode: XdpMode | 'disabled'): 'Native' | 'Generic' | 'Disabled' {
  return mode === 'native' ? 'Native' : mode === 'generic' ? 'Generic' : 'Disabled';
}

/**
 * The machine's initial network namespace: pid 1's, or where it cannot be read (a sandbox), the one this process
 * started in, which on the lab's host is the same.
 */
const initialNetns = ((): number => {
  try {
    return statSync('/proc/1/ns/net').ino;
  } catch {
    return statSync('/proc/self/ns/net').ino;
  }
})();

function refuseInitialNetns(op: string): void {
  if (statSync('/proc/thread-self/ns/net').ino === initialNetns) throw new Error(`${op}: refusing to change XDP in the machine's initial network namespace (use a node namespace)`);
}

/** The program attached to `ifindex` and its mode, or undefined. */
export function queryXdp(index: number): { mode: XdpMode; progId: number } | undefined {
  for (const mode of ['native', 'generic'] as const) {
    const id: [number] = [0];
    const ret = bpf.xdpQueryId(index, modeFlags(mode), id);
    if (ret < 0 && ret !== -2 && ret !== -22) check('bpf_xdp_query_id', ret, `ifindex ${index}`);
    if (ret === 0 && id[0]) return { mode, progId: id[0] };
  }
  return undefined;
}

/** Removes whatever XDP program is attached (either mode); nothing attached is not an error. */
export function detachXdp(index: number): void {
  const attached = queryXdp(index);
  if (!attached) return;
  refuseInitialNetns('detachXdp');
  const ret = bpf.xdpDetach(index, modeFlags(attached.mode), null);
  if (ret < 0 && ret !== -2) check('bpf_xdp_detach', ret, `ifindex ${index}`);
}

/**
 * Attaches (atomically replacing a program in the same mode). `native` falls back to generic when the driver has
 * no XDP support, or not for this device's MTU; the returned mode says which one it got. A program in the other mode is removed
 * first (the kernel allows one mode at a time).
 */
export function attachXdp(index: number, progFd: number, want: XdpMode): XdpMode {
  refuseInitialNetns('attachXdp');
  const attach = (mode: XdpMode): number => {
    const current = queryXdp(index);
    if (current && current.mode !== mode) check('bpf_xdp_detach', bpf.xdpDetach(index, modeFlags(current.mode), null), `ifindex ${index}`);
    return bpf.xdpAttach(index, progFd, modeFlags(mode), null);
  };
  if (want === 'native') {
    // A driver without XDP is the expected case for generic; keep libbpf from printing the kernel's complaint.
    const print = bpf.setPrint(null);
    const ret = attach('native');
    bpf.setPrint(print);
    if (ret === 0) return 'native';
    // EOPNOTSUPP: no driver support; ERANGE: not at this MTU (veth: its peer's MTU is too large for native XDP).
    if (ret !== -95 && ret !== -22 && ret !== -34) throw new BpfError('bpf_xdp_attach', -ret, `ifindex ${index} native`);
  }
  check('bpf_xdp_attach', attach('generic'), `ifindex ${index} generic`);
  return 'generic';
}

/** attachXdp / detachXdp for a device inside a node's network namespace, by name. */
export function attachXdpInNetns(netns: string, ifname: string, progFd: number, want: XdpMode): { ifindex: number; mode: XdpMode } {
  return inNetns(netns, () => {
    const index = ifindex(ifname);
    return { ifindex: index, mode: attachXdp(index, progFd, want) };
  });
}

export function detachXdpInNetns(netns: string, ifname: string): void {
  inNetns(netns, () => detachXdp(ifindex(ifname)));
}

/**
 * Applies --lb-acceleration to a node's uplink: attaches xdp_netdev, or detaches it for `disabled`. Returns the mode
 * in effect. Without `netns` it acts on the calling thread's namespace (refused if that is the initial one).
 */
export function applyLbAcceleration(progFd: number | undefined, uplink: string, acceleration: LbAcceleration, netns?: string): XdpMode | 'disabled' {
  const act = (): XdpMode | 'disabled' => {
    const index = ifindex(uplink);
    if (acceleration === 'disabled') {
      detachXdp(index);
      return 'disabled';
    }
    if (progFd === undefined) throw new Error('applyLbAcceleration: the datapath has no xdp_netdev program');
    return attachXdp(index, progFd, acceleration);
  };
  return netns ? inNetns(netns, act) : act();
}

const libc = koffi.load('libc.so.6');
const EthtoolValue = koffi.struct('sl_ethtool_value', { cmd: 'uint32_t', data: 'uint32_t' });
koffi.struct('sl_ifreq', { name: koffi.array('char', 16), data: koffi.pointer(EthtoolValue), pad: koffi.array('uint8_t', 16) });
const socket = libc.func('int socket(int domain, int type, int protocol)') as (domain: number, type: number, protocol: number) => number;
const ioctl = libc.func('int ioctl(int fd, unsigned long request, sl_ifreq *ifr)') as (fd: number, request: number, ifr: unknown) => number;
const closeSocket = libc.func('int close(int fd)') as (fd: number) => number;
const SIOCETHTOOL = 0x8946;
/** The legacy ethtool set commands of the offloads that matter to XDP on a veth. */
const ETHTOOL_SET = { gro: 0x2c, 'tx-checksumming': 0x17 } as const;
export type Offload = keyof typeof ETHTOOL_SET;

/**
 * An offload on or off for a device of the calling thread's namespace (the legacy SIOCETHTOOL requests: no ethtool
 * binary needed). Where they matter for XDP in driver mode on a veth:
 * - `gro`: a veth gets the frames a peer transmits with ndo_xdp_xmit (XDP_REDIRECT, a live-frames generator) only
 *   while its own NAPI is on, which GRO or an XDP program of its own turns on. (A peer's XDP_TX needs the XDP
 *   program: veth wakes the receiving NAPI after XDP_TX only when one is attached, so with GRO alone the frames
 *   wait in its ring until other traffic comes.)
 * - `tx-checksumming`: a sender with it on leaves TCP/UDP checksums partial for the receiver (skb metadata), which
 *   a frame XDP sends on has lost: such a client must send complete checksums, as anything off a wire does.
 * Refused in the machine's initial namespace, like every XDP change here.
 */
export function setOffload(ifname: string, offload: Offload, on: boolean): void {
  refuseInitialNetns('setOffload');
  const fd = socket(2, 2, 0); // AF_INET, SOCK_DGRAM: any socket of the namespace carries ethtool requests
  if (fd < 0) throw new BpfError('socket', lastErrno());
  try {
    const ifr = { name: ifname, data: { cmd: ETHTOOL_SET[offload], data: on ? 1 : 0 }, pad: new Array(16).fill(0) };
    if (ioctl(fd, SIOCETHTOOL, ifr) < 0) throw new BpfError(`SIOCETHTOOL ${offload}`, lastErrno(), ifname);
  } finally {
    closeSocket(fd);
  }
}

/** setOffload for a device inside a namespace, by name. */
export function setOffloadInNetns(netns: string, ifname: string, offload: Offload, on: boolean): void {
  inNetns(netns, () => setOffload(ifname, offload, on));
}
