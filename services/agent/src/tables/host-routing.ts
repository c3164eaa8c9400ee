/**
 * BPF host routing's prerequisites. BPF host routing hands packets between the uplink and the pods' veths in tc,
 * past netfilter: iptables masquerading would never see them (pods would leave with their own address), and
 * kube-proxy's iptables rules would never translate a ClusterIP. So it needs the BPF masquerade (when masquerading is
 * on at all) and the BPF service load-balancer. `auto` falls back to legacy host routing with a reason that says
 * which one is missing (the agent logs it once, `sluice status` shows it); `bpf` with a missing prerequisite is a
 * configuration error.
 */
import type { HostRoutingDecision } from '@sluice/datapath';
import type { MasqueradeMode } from './masquerade.ts';

export type HostRoutingRequest = 'auto' | 'bpf' | 'legacy';

export interface HostRoutingPrerequisites {
  masquerade: MasqueradeMode;
  /** The BPF service load-balancer (kube-proxy replacement) runs. */
  bpfServiceLb: boolean;
}

/** The first prerequisite of BPF host routing that is not met, as Cilium names the setting; undefined: all are. */
export function unmetPrerequisite(p: HostRoutingPrerequisites): string | undefined {
  if (p.masquerade === 'iptables') return 'enable-bpf-masquerade';
  if (!p.bpfServiceLb) return 'kube-proxy-replacement';
  return undefined;
}

/** The line to grep for: `BPF host routing requires …`. */
export function fallbackReason(missing: string): string {
  return `BPF host routing requires ${missing}. Falling back to legacy host routing (enable-host-legacy-routing=true).`;
}

/** The error of `--host-routing bpf` with a prerequisite missing. */
export function prerequisiteError(missing: string, p: HostRoutingPrerequisites): string {
  const why = missing === 'enable-bpf-masquerade' ? `--masquerade ${p.masquerade} runs in netfilter, which BPF host routing bypasses; use --masquerade bpf or off` : 'the BPF service load-balancer is off';
  return `BPF host routing requires ${missing}: ${why} (or --host-routing auto/legacy)`;
}

/**
 * The kernel's answer (decideHostRouting) narrowed by the configuration's prerequisites. With `bpf` requested and a
 * prerequisite missing, `strict` throws (flags at start); otherwise it falls back like `auto` (a node config from
 * etcd must never stop a running agent).
 */
export function withPrerequisites(kernel: HostRoutingDecision, requested: HostRoutingRequest, p: HostRoutingPrerequisites, strict = false): HostRoutingDecision {
  if (kernel.mode === 'Legacy') return kernel;
  const missing = unmetPrerequisite(p);
  if (!missing) return kernel;
  if (requested === 'bpf' && strict) throw new Error(prerequisiteError(missing, p));
  const reason = fallbackReason(missing);
  return { mode: 'Legacy', reason, status: `Host Routing: Legacy (${reason})` };
}
