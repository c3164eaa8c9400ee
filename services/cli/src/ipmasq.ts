/**
 * `sluice bpf ipmasq list --node <name>`: a node's nonMasqueradeCIDRs as its sl_ipmasq map holds them, like
 * `cilium-dbg bpf ipmasq list`; the cluster nodes' IPs the agent keeps there too (never masqueraded) only with --json.
 */
import { IPMASQ_F_NODE } from '@sluice/bpf';
import type { Datapath } from '@sluice/datapath';
import { renderTable } from './render.ts';

/** The entries, in address order (then shorter first); `node`: a cluster node's IP the agent keeps there. */
export function readIpmasq(dp: Pick<Datapath, 'maps'>): Array<{ cidr: string; node: boolean }> {
  const key = (c: string) => {
    const [ip, len] = c.split('/');
    return [...ip!.split('.').map(Number), Number(len)];
  };
  return dp.maps.ipmasq
    .entries()
    .map(([k, v]) => ({ cidr: k.cidr, node: (v.flags & IPMASQ_F_NODE) !== 0 }))
    .sort((a, b) => {
      const [x, y] = [key(a.cidr), key(b.cidr)];
      for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return x[i]! - y[i]!;
      return 0;
    });
}

export function renderIpmasq(entries: ReadonlyArray<{ cidr: string; node: boolean }>): string {
  return renderTable(['IP PREFIX/ADDRESS'], entries.filter((e) => !e.node).map((e) => [e.cidr]));
}
