/**
 * tc (clsact) hooks through libbpf's bpf_tc_* netlink calls, and running them inside another network namespace.
 *
 * bpf_tc_* talk netlink in the *calling thread's* network namespace. A network namespace belongs to a thread, not
 * to the process, so `inNetns` switches only Node's main thread with setns(2), runs a synchronous function (which
 * opens its netlink sockets there) and switches back before returning: no JavaScript runs in between, libuv's
 * worker threads never change namespace, and sockets opened elsewhere keep theirs. The function must therefore be
 * synchronous (every call in this module is). An agent that runs inside its node's namespace (`nsenter --net=…`)
 * needs none of this and calls attachTc directly. setns(CLONE_NEWNET) is allowed in multi-threaded processes
 * (only user and mount namespaces are not) and needs CAP_SYS_ADMIN.
 */
import { closeSync, openSync } from 'node:fs';
import { BpfError, BpfTcHook, BpfTcOpts, CLONE_NEWNET, TC_EGRESS, TC_F_REPLACE, TC_INGRESS, bpf, check, lastErrno, libcFns } from './libbpf.ts';
import koffi from 'koffi';

export type TcDirection = 'ingress' | 'egress';

export interface TcAttachment {
  ifindex: number;
  direction: TcDirection;
  /** tc filter priority and handle: the same pair replaces the program atomically (no gap without a program). */
  priority?: number;
  handle?: number;
}

const hookSize = koffi.sizeof(BpfTcHook);
const optsSize = koffi.sizeof(BpfTcOpts);

function hook(ifindex: number, direction: TcDirection) {
  return { sz: hookSize, ifindex, attach_point: direction === 'ingress' ? TC_INGRESS : TC_EGRESS, parent: 0 };
}

/** Creates the clsact qdisc if missing and attaches (or atomically replaces) the program. Returns its prog id. */
export function attachTc(att: TcAttachment & { progFd: number }): number {
  const h = hook(att.ifindex, att.direction);
  // An existing clsact qdisc is the normal case (EEXIST); keep libbpf from printing the kernel's complaint about it.
  const print = bpf.setPrint(null);
  const ret = bpf.tcHookCreate(h);
  bpf.setPrint(print);
  if (ret < 0 && ret !== -17) check('bpf_tc_hook_create', ret, `ifindex ${att.ifindex}`);
  const opts = { sz: optsSize, prog_fd: att.progFd, flags: TC_F_REPLACE, prog_id: 0, handle: att.handle ?? 1, priority: att.priority ?? 1 };
  check('bpf_tc_attach', bpf.tcAttach(h, opts), `ifindex ${att.ifindex} ${att.direction}`);
  return opts.prog_id;
}

/** Detaches; a filter that is not there is not an error. */
export function detachTc(att: TcAttachment): void {
  const opts = { sz: optsSize, prog_fd: 0, flags: 0, prog_id: 0, handle: att.handle ?? 1, priority: att.priority ?? 1 };
  const print = bpf.setPrint(null);
  const ret = bpf.tcDetach(hook(att.ifindex, att.direction), opts);
  bpf.setPrint(print);
  if (ret < 0 && ret !== -2 && ret !== -22) check('bpf_tc_detach', ret, `ifindex ${att.ifindex} ${att.direction}`);
}

/** The attached program's id, or undefined when nothing is attached there. */
export function queryTc(att: TcAttachment): number | undefined {
  const opts = { sz: optsSize, prog_fd: 0, flags: 0, prog_id: 0, handle: att.handle ?? 1, priority: att.priority ?? 1 };
  const print = bpf.setPrint(null);
  const ret = bpf.tcQuery(hook(att.ifindex, att.direction), opts);
  bpf.setPrint(print);
  if (ret === -2 || ret === -22) return undefined;
  check('bpf_tc_query', ret, `ifindex ${att.ifindex} ${att.direction}`);
  return opts.prog_id;
}

/** Removes the clsact qdisc (and every tc program on the device). */
export function destroyTcHook(ifindex: number): void {
  const h = { sz: hookSize, ifindex, attach_point: TC_INGRESS | TC_EGRESS, parent: 0 };
  const ret = bpf.tcHookDestroy(h);
  if (ret < 0 && ret !== -2 && ret !== -22) check('bpf_tc_hook_destroy', ret, `ifindex ${ifindex}`);
}

/** ifindex of `name` in the current thread's namespace. */
export function ifindex(name: string): number {
  const index = libcFns.ifNameToIndex(name);
  if (!index) throw new BpfError('if_nametoindex', lastErrno() || 19, name);
  return index;
}

/**
 * Runs `fn` with the main thread inside network namespace `netns` (a name under /run/netns or a path), then returns
 * to the original namespace. `fn` must be synchronous; see the module comment.
 */
export function inNetns<T>(netns: string, fn: () => T): T {
  if (typeof fn !== 'function') throw new TypeError('inNetns needs a function');
  const path = netns.includes('/') ? netns : `/run/netns/${netns}`;
  const target = openSync(path, 'r');
  const home = openSync('/proc/thread-self/ns/net', 'r');
  try {
    if (libcFns.setns(target, CLONE_NEWNET) < 0) throw new BpfError('setns', lastErrno(), path);
    try {
      const result = fn();
      if (result instanceof Promise) throw new TypeError('inNetns: fn must be synchronous');
      return result;
    } finally {
      if (libcFns.setns(home, CLONE_NEWNET) < 0) {
        // Staying in the wrong namespace would silently misprogram everything after; better to stop.
        process.stderr.write(`inNetns: cannot return to the original network namespace (errno ${lastErrno()})\n`);
        process.exit(70);
      }
    }
  } finally {
    closeSync(target);
    closeSync(home);
  }
}

/** attachTc for a device inside another network namespace, by interface name. */
export function attachTcInNetns(netns: string, ifname: string, direction: TcDirection, progFd: number, opts: { priority?: number; handle?: number } = {}): { ifindex: number; progId: number } {
  return inNetns(netns, () => {
    const index = ifindex(ifname);
    return { ifindex: index, progId: attachTc({ ifindex: index, direction, progFd, ...opts }) };
  });
}

export function detachTcInNetns(netns: string, ifname: string, direction: TcDirection, opts: { priority?: number; handle?: number } = {}): void {
  inNetns(netns, () => detachTc({ ifindex: ifindex(ifname), direction, ...opts }));
}

/** Where Sluice's programs go on a node. */
export interface NodeAttachments {
  /** The node's uplink (from_netdev on its ingress). */
  uplink: string;
  /** The collect_md VXLAN device, in tunnel mode (from_overlay on ingress, to_overlay on egress). */
  vxlan?: string;
  /** Host-side veths of pods (from_container on ingress). */
  pods?: string[];
}
