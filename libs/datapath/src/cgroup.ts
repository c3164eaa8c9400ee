/**
 * Socket-level load balancing for the node's own processes: sock4_connect on a cgroup (v2), attached by path from
 * the node's pinned program. A real node attaches it to the root of the cgroup hierarchy; the lab to a cgroup of
 * its own per node, so that only the processes it puts there are affected.
 */
import { closeSync, openSync } from 'node:fs';
import koffi from 'koffi';
import { programPinPath } from './datapath.ts';
import { bpf, check, closeFd } from './libbpf.ts';

const lib = koffi.load('libbpf.so.1');
const progAttach = lib.func('int bpf_prog_attach(int prog_fd, int attachable_fd, int type, unsigned int flags)') as (prog: number, target: number, type: number, flags: number) => number;
const progDetach = lib.func('int bpf_prog_detach2(int prog_fd, int attachable_fd, int type)') as (prog: number, target: number, type: number) => number;

const BPF_CGROUP_INET4_CONNECT = 10;
/** One program per cgroup, replaced by the next attach (an agent restart swaps it without a gap). */
const BPF_F_ALLOW_OVERRIDE = 1;

function withFds<T>(pinDir: string, cgroup: string, fn: (prog: number, cg: number) => T): T {
  const path = programPinPath(pinDir, 'sock4_connect');
  const prog = check('bpf_obj_get', bpf.objGet(path), path);
  const cg = openSync(cgroup, 'r');
  try {
    return fn(prog, cg);
  } finally {
    closeSync(cg);
    closeFd(prog);
  }
}

/** Attaches the node's connect() load balancer to a cgroup v2 directory. */
export function attachSocketLb(pinDir: string, cgroup: string): void {
  withFds(pinDir, cgroup, (prog, cg) => check('bpf_prog_attach', progAttach(prog, cg, BPF_CGROUP_INET4_CONNECT, BPF_F_ALLOW_OVERRIDE), cgroup));
}

export function detachSocketLb(pinDir: string, cgroup: string): void {
  withFds(pinDir, cgroup, (prog, cg) => {
    const ret = progDetach(prog, cg, BPF_CGROUP_INET4_CONNECT);
    if (ret < 0 && ret !== -2) check('bpf_prog_detach2', ret, cgroup);
  });
}
