/**
 * ip-masq-agent's nonMasqueradeCIDRs (--non-masquerade-cidrs): destinations a pod's traffic reaches with its own
 * address in either masquerade mode — the BPF map sl_ipmasq (an LPM trie, as Cilium's cilium_ipmasq_v4) for BPF
 * masquerading, and return rules in SLUICE_POST_nat for iptables masquerading (tables/masquerade.ts).
 */
import type { Datapath } from '@sluice/datapath';
import { parseV4Cidr } from '../tables/cidr.ts';

/** Makes sl_ipmasq hold exactly these CIDRs; returns what it added and removed. */
export function syncIpmasq(map: Datapath['maps']['ipmasq'], cidrs: readonly string[]): { added: string[]; removed: string[] } {
  const want = new Set(cidrs.map((c) => parseV4Cidr(c)?.text ?? c));
  const have = new Set(map.entries().map(([k]) => k.cidr));
  const added = [...want].filter((c) => !have.has(c)).sort();
  const removed = [...have].filter((c) => !want.has(c)).sort();
  if (added.length) map.upsertBatch(added.map((cidr) => [{ cidr }, { flags: 0 }]));
  if (removed.length) map.deleteBatch(removed.map((cidr) => ({ cidr })));
  return { added, removed };
}
