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

/** The socket LB's programs and their cgroup attach types (enum bpf_attach_type). */
const HOOKS = [
  { program: 'sock4_connect', type: 10 }, // BPF_CGROUP_INET4_CONNECT
  { program: 'sock4_sendmsg', type: 14 }, // BPF_CGROUP_UDP4_SENDMSG
  { program: 'sock4_recvmsg', type: 19 }, // BPF_CGROUP_UDP4_RECVMSG
] as const;
/** One program per hook and cgroup, replaced by the next attach (an agent restart swaps it without a gap). */
const BPF_F_ALLOW_OVERRIDE = 1;

function withFds(pinDir: string, program: (typeof HOOKS)[number]['program'], cgroup: string, fn: (prog: number, cg: number) => void): void {
  const path = programPinPath(pinDir, program);
  const prog = check('bpf_obj_get', bpf.objGet(path), path);
  const cg = openSync(cgroup, 'r');
  try {
    fn(prog, cg);
  } finally {
    closeSync(cg);
    closeFd(prog);
  }
}

/** Attaches the node's socket load balancer (connect, and sendmsg/recvmsg of unconnected UDP) to a cgroup v2 directory. */
export function attachSocketLb(pinDir: string, cgroup: string): void {
  for (const h of HOOKS) withFds(pinDir, h.program, cgroup, (prog, cg) => void check('bpf_prog_attach', progAttach(prog, cg, h.type, BPF_F_ALLOW_OVERRIDE), `${h.program} on ${cgroup}`));
}

export function detachSocketLb(pinDir: string, cgroup: string): void {
  for (const h of HOOKS) {
    withFds(pinDir, h.program, cgroup, (prog, cg) => {
      const ret = progDetach(prog, cg, h.type);
      if (ret < 0 && ret !== -2) check('bpf_prog_detach2', ret, `${h.program} on ${cgroup}`);
    });
  }
}
