/**
 * sl_ipmasq, the destinations a pod's traffic reaches with its own address in BPF masquerading: ip-masq-agent's
 * nonMasqueradeCIDRs (--non-masquerade-cidrs, as Cilium's cilium_ipmasq_v4) and every cluster node's IP
 * (IPMASQ_F_NODE; pod → node is not masqueraded, as SLUICE_POST_nat's node returns do in iptables mode). The
 * nonMasqueradeCIDRs get return rules in SLUICE_POST_nat too (tables/masquerade.ts).
 */
import { IPMASQ_F_NODE } from '@sluice/bpf';
import type { Datapath } from '@sluice/datapath';
import type { Logger } from '@sluice/log';
import { parseV4Cidr } from '../tables/cidr.ts';

/** Makes sl_ipmasq hold exactly these CIDRs and node IPs; returns what it added, changed and removed. */
export function syncIpmasq(map: Datapath['maps']['ipmasq'], cidrs: readonly string[], nodeIps: readonly string[] = []): { added: string[]; removed: string[] } {
  const want = new Map<string, number>();
  for (const ip of nodeIps) want.set(`${ip}/32`, IPMASQ_F_NODE);
  // A configured /32 that is also a node's is configuration.
  for (const c of cidrs) want.set(parseV4Cidr(c)?.text ?? c, 0);
  const have = new Map(map.entries().map(([k, v]) => [k.cidr, v.flags]));
  const added = [...want].filter(([c, f]) => have.get(c) !== f).map(([c]) => c).sort();
  const removed = [...have.keys()].filter((c) => !want.has(c)).sort();
  if (added.length) map.upsertBatch(added.map((cidr) => [{ cidr }, { flags: want.get(cidr)! }]));
  if (removed.length) map.deleteBatch(removed.map((cidr) => ({ cidr })));
  return { added, removed };
}

/** Keeps sl_ipmasq in step with the configuration (read at each sync: it changes live) and the cluster's nodes (coalesced to one sync per macrotask). */
export function ipmasqSync(options: { map: Datapath['maps']['ipmasq']; cidrs: () => readonly string[]; nodeIps: () => string[]; log: Logger }): { sync(): void; nodesChanged(): void } {
  let queued = false;
  let failing = false;
  const sync = () => {
    try {
      syncIpmasq(options.map, options.cidrs(), options.nodeIps());
      failing = false;
    } catch (err) {
      if (!failing) options.log.warn({ error: (err as Error).message }, 'sl_ipmasq not updated (retried on the next node or configuration change)');
      failing = true;
    }
  };
  return {
    sync,
    nodesChanged() {
      if (queued) return;
      queued = true;
      setImmediate(() => {
        queued = false;
        sync();
      });
    },
  };
}
