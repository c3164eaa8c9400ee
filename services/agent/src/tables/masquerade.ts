/**
 * Masquerading: the mode a node runs (off, iptables, bpf), how `sluice status` prints it, and — for iptables mode —
 * the desired rules of Sluice's own nat chain, derived from the nodes table.
 *
 * The rules (Cilium's CILIUM_POST_nat, Sluice's names): nat POSTROUTING jumps to SLUICE_POST_nat; there, traffic to
 * another cluster node's IP returns (node ↔ pod keeps the pod's address), then traffic from this node's podCIDRs to
 * anything outside the cluster CIDR is masqueraded to the outgoing interface's address. Pod ↔ pod stays inside the
 * cluster CIDR and is never masqueraded.
 *
 * First in the chain, a return for packets from_container marked as BPF's to masquerade (SL_MARK_SNAT_BPF): the
 * chain also stays in other modes while netfilter's conntrack still translates flows it masqueraded (`draining`:
 * the rules are only consulted for a flow's first packet, so they take no new flow of BPF's, but they keep conntrack
 * registered in the node's namespace — without any rule needing it the kernel stops tracking, and those flows would
 * leave untranslated and be reset). BPF's flows carry the mark in every mode, so netfilter never translates them.
 *
 * ip-masq-agent's nonMasqueradeCIDRs return too (`nonmasq:<cidr>`), before the masquerade.
 *
 * One row per rule, keyed `jump`, `bpf-snat`, `node:<ip>`, `nonmasq:<cidr>`, `masq:<podCIDR>`; the rule text is the row's value, in the canonical
 * form `iptables-save` prints (the target compares it verbatim to find drift). Rows are few (one per node), so the
 * table stores them and `refresh()` reports exactly the keys whose rule appeared, changed or went.
 */
import { SNAT_MARK_BPF } from '@sluice/bpf';
import type { DesiredRows } from '../reconciler.ts';

export type MasqueradeMode = 'off' | 'iptables' | 'bpf';
export const MASQUERADE_MODES: readonly MasqueradeMode[] = ['off', 'iptables', 'bpf'];

/** Sluice's nat chain, and the comment of the POSTROUTING rule that jumps to it. */
export const MASQ_CHAIN = 'SLUICE_POST_nat';
export const FEEDER_COMMENT = `sluice-feeder: ${MASQ_CHAIN}`;

/** One rule: the chain it lives in and its text after `-A <chain> `, as iptables-save prints it. */
export interface MasqueradeRule {
  chain: 'POSTROUTING' | typeof MASQ_CHAIN;
  rule: string;
}

/** `--masquerade` and the node config accept the old boolean too: true was the BPF SNAT, false none. */
export function parseMasqueradeMode(value: unknown): MasqueradeMode | undefined {
  if (value === true || value === 'true' || value === '') return 'bpf';
  if (value === false || value === 'false' || value === undefined) return 'off';
  return typeof value === 'string' && (MASQUERADE_MODES as readonly string[]).includes(value) ? (value as MasqueradeMode) : undefined;
}

/** Cilium's status line, without the "Masquerading: " label (`ipMasqAgent`: nonMasqueradeCIDRs are configured). */
export function masqueradingText(mode: MasqueradeMode, uplink: string, clusterCidr: string, ipMasqAgent = false): string {
  if (mode === 'iptables') return 'IPTables [IPv4: Enabled, IPv6: Disabled]';
  if (mode === 'bpf') return `BPF${ipMasqAgent ? ' (ip-masq-agent)' : ''} [${uplink}] ${clusterCidr} [IPv4: Enabled, IPv6: Disabled]`;
  return 'Disabled';
}

export interface MasqueradeInputs {
  mode: MasqueradeMode;
  clusterCidr: string;
  /** Every cluster node's IP (this node's included: harmless, and its own address never needs masquerading). */
  nodeIps: Iterable<string>;
  /** The podCIDRs this node owns. */
  ownCidrs: Iterable<string>;
  /** Outside iptables mode: netfilter still translates flows it masqueraded, so its rules stay until they end. */
  draining?: boolean;
  /** ip-masq-agent's nonMasqueradeCIDRs: destinations pods reach with their own address. */
  nonMasqueradeCidrs?: Iterable<string>;
}

const comment = (key: string) => `-m comment --comment "sluice:${key}"`;

const hex = (n: number) => `0x${n.toString(16)}`;

/** The rules iptables mode wants (none in any other mode, unless draining). */
export function masqueradeRules(inputs: MasqueradeInputs): Map<string, MasqueradeRule> {
  const rows = new Map<string, MasqueradeRule>();
  if (inputs.mode !== 'iptables' && !inputs.draining) return rows;
  const cidrs = [...inputs.ownCidrs].sort();
  if (!cidrs.length) return rows; // no podCIDR yet: nothing of ours to masquerade
  rows.set('jump', { chain: 'POSTROUTING', rule: `-m comment --comment "${FEEDER_COMMENT}" -j ${MASQ_CHAIN}` });
  rows.set('bpf-snat', { chain: MASQ_CHAIN, rule: `-m mark --mark ${hex(SNAT_MARK_BPF)}/${hex(SNAT_MARK_BPF)} ${comment('bpf-snat')} -j RETURN` });
  for (const ip of [...new Set(inputs.nodeIps)].sort()) rows.set(`node:${ip}`, { chain: MASQ_CHAIN, rule: `-d ${ip}/32 ${comment(`node:${ip}`)} -j RETURN` });
  for (const cidr of [...new Set(inputs.nonMasqueradeCidrs ?? [])].sort()) rows.set(`nonmasq:${cidr}`, { chain: MASQ_CHAIN, rule: `-d ${cidr} ${comment(`nonmasq:${cidr}`)} -j RETURN` });
  for (const cidr of cidrs) rows.set(`masq:${cidr}`, { chain: MASQ_CHAIN, rule: `-s ${cidr} ! -d ${inputs.clusterCidr} ${comment(`masq:${cidr}`)} -j MASQUERADE` });
  return rows;
}

/** The order rules must have in the chain: returns before masquerades (the first match wins). */
export function ruleOrder(a: string, b: string): number {
  const rank = (k: string) => (k === 'bpf-snat' ? 0 : k.startsWith('node:') || k.startsWith('nonmasq:') ? 1 : 2);
  return rank(a) - rank(b) || (a < b ? -1 : a > b ? 1 : 0);
}

export class MasqueradeTable implements DesiredRows<MasqueradeRule> {
  private rows = new Map<string, MasqueradeRule>();

  constructor(private readonly inputs: () => MasqueradeInputs) {}

  get(key: string): MasqueradeRule | undefined {
    return this.rows.get(key);
  }

  entries(): Iterable<readonly [string, MasqueradeRule]> {
    return this.rows.entries();
  }

  get size(): number {
    return this.rows.size;
  }

  /** Recomputes the rows from the inputs; returns the keys that appeared, changed or went. */
  refresh(): string[] {
    const next = masqueradeRules(this.inputs());
    const changed: string[] = [];
    for (const [key, rule] of next) if (this.rows.get(key)?.rule !== rule.rule) changed.push(key);
    for (const key of this.rows.keys()) if (!next.has(key)) changed.push(key);
    this.rows = next;
    return changed;
  }
}
