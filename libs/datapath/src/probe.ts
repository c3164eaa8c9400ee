/**
 * Kernel feature probe and the host-routing decision, reported the way Cilium's agent does:
 * "Host Routing: BPF", or "Host Routing: Legacy" with the reason BPF host routing is not used.
 */
import { FUNC_REDIRECT_NEIGH, FUNC_REDIRECT_PEER, PROG_TYPE_SCHED_CLS, bpf, errnoName } from './libbpf.ts';

export interface KernelFeatures {
  kernel: string;
  /** bpf_redirect_peer usable from tc (SCHED_CLS) programs (Linux ≥ 5.10). */
  redirectPeer: boolean;
  /** bpf_redirect_neigh usable from tc programs (Linux ≥ 5.10). */
  redirectNeigh: boolean;
  /** Probe failures (e.g. EPERM without CAP_BPF), by helper. */
  errors: Record<string, string>;
}

export type HostRoutingMode = 'BPF' | 'Legacy';

export interface HostRoutingDecision {
  mode: HostRoutingMode;
  /** Empty for BPF; why legacy otherwise. */
  reason: string;
  /** One line for logs and the status endpoint, e.g. "Host Routing: Legacy (BPF host routing requires …)". */
  status: string;
}

function probeHelper(id: number, name: string, errors: Record<string, string>): boolean {
  const ret = bpf.probeHelper(PROG_TYPE_SCHED_CLS, id, null);
  if (ret < 0) errors[name] = errnoName(-ret);
  return ret === 1;
}

export async function probeKernel(): Promise<KernelFeatures> {
  const { release } = await import('node:os');
  const errors: Record<string, string> = {};
  return {
    kernel: release(),
    redirectPeer: probeHelper(FUNC_REDIRECT_PEER, 'bpf_redirect_peer', errors),
    redirectNeigh: probeHelper(FUNC_REDIRECT_NEIGH, 'bpf_redirect_neigh', errors),
    errors,
  };
}

/**
 * `requested`: 'auto' uses BPF host routing when the kernel has both helpers; 'bpf' asks for it (still falls back,
 * with the reason, rather than load programs that would fail); 'legacy' turns it off.
 */
export function decideHostRouting(features: KernelFeatures, requested: 'auto' | 'bpf' | 'legacy' = 'auto'): HostRoutingDecision {
  if (requested === 'legacy') {
    const reason = 'BPF host routing disabled by configuration';
    return { mode: 'Legacy', reason, status: `Host Routing: Legacy (${reason})` };
  }
  const missing: string[] = [];
  if (!features.redirectPeer) missing.push('bpf_redirect_peer');
  if (!features.redirectNeigh) missing.push('bpf_redirect_neigh');
  if (missing.length) {
    const detail = Object.entries(features.errors).map(([k, v]) => `${k}: ${v}`).join(', ');
    const reason = `BPF host routing requires kernel support for bpf_redirect_peer and bpf_redirect_neigh (Linux >= 5.10); missing ${missing.join(', ')} on kernel ${features.kernel}${detail ? ` (${detail})` : ''}; falling back to legacy host routing`;
    return { mode: 'Legacy', reason, status: `Host Routing: Legacy (${reason})` };
  }
  return { mode: 'BPF', reason: '', status: 'Host Routing: BPF' };
}
