/** `sluice bpf ipmasq list --node <name>`: a node's nonMasqueradeCIDRs as its sl_ipmasq map holds them, like `cilium-dbg bpf ipmasq list`. */
import type { Datapath } from '@sluice/datapath';
import { renderTable } from './render.ts';

/** The prefixes, in address order (then shorter first). */
export function readIpmasq(dp: Pick<Datapath, 'maps'>): string[] {
  const key = (c: string) => {
    const [ip, len] = c.split('/');
    return [...ip!.split('.').map(Number), Number(len)];
  };
  return dp.maps.ipmasq
    .entries()
    .map(([k]) => k.cidr)
    .sort((a, b) => {
      const [x, y] = [key(a), key(b)];
      for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return x[i]! - y[i]!;
      return 0;
    });
}

export function renderIpmasq(cidrs: readonly string[]): string {
  return renderTable(['IP PREFIX/ADDRESS'], cidrs.map((c) => [c]));
}
