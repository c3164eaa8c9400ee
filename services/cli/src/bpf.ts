/** `sluice bpf endpoints|ipcache|tunnel --node <name>`: what a node's pinned BPF maps hold, read through the codecs. */
import { existsSync } from 'node:fs';
import { EP_F_HOST, IPCACHE_F_LOCAL } from '@sluice/bpf';
import { defaultPinDir, openPinnedMaps, type Datapath } from '@sluice/datapath';
import { CliError, oneLine } from './errors.ts';
import { renderTable } from './render.ts';
import type { Target } from './target.ts';

export const BPF_MAPS = ['endpoints', 'ipcache', 'tunnel'] as const;
export type BpfMapName = (typeof BPF_MAPS)[number];

/** The node's pin dir: --pin-dir, else the demo's record of the node, else the agent's default. */
export function pinDirFor(target: Target | undefined, node: string, pinDir?: string): string {
  if (pinDir) return pinDir;
  const fromDemo = target?.demo?.nodes.find((n) => n.name === node);
  if (target?.demo && !fromDemo && target.demo.nodes.length) {
    throw new CliError(`no lab node ${node} in the demo (nodes: ${target.demo.nodes.map((n) => n.name).join(', ')})`);
  }
  return fromDemo?.pinDir ?? defaultPinDir(node);
}

export function openNodeMaps(node: string, pinDir: string): Datapath {
  if (!existsSync(pinDir)) throw new CliError(`no pinned maps for node ${node}: ${pinDir} does not exist (is its agent running? are you root?)`);
  try {
    return openPinnedMaps(pinDir);
  } catch (err) {
    throw new CliError(`cannot open the pinned maps of node ${node} in ${pinDir}: ${oneLine(err)}`);
  }
}

export type BpfRow = Record<string, string | number | boolean>;

export function readBpfMap(dp: Datapath, map: BpfMapName): BpfRow[] {
  switch (map) {
    case 'endpoints':
      return dp.maps.endpoints
        .entries()
        .map(([k, v]) => ({ ip: k.ip, ifindex: v.ifindex, mac: v.mac, nodeMac: v.nodeMac, host: (v.flags & EP_F_HOST) !== 0 }))
        .sort((a, b) => ipOrder(a.ip, b.ip));
    case 'ipcache':
      return [
        ...dp.maps.ipcacheHost.entries().map(([k, v]) => [`${k.ip}/32`, v] as const),
        ...dp.maps.ipcache.entries().map(([k, v]) => [k.cidr, v] as const),
      ]
        .map(([cidr, v]) => ({ cidr, nodeIp: v.nodeIp, local: (v.flags & IPCACHE_F_LOCAL) !== 0 }))
        .sort((a, b) => ipOrder(a.cidr, b.cidr));
    case 'tunnel':
      return dp.maps.tunnel
        .entries()
        .map(([k, v]) => ({ cidr: k.cidr, nodeIp: v.nodeIp, vni: v.vni }))
        .sort((a, b) => ipOrder(a.cidr, b.cidr));
  }
}

function ipOrder(a: string, b: string): number {
  const n = (s: string) => s.split(/[./]/).map(Number);
  const [x, y] = [n(a), n(b)];
  for (let i = 0; i < Math.max(x.length, y.length); i++) if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) - (y[i] ?? 0);
  return 0;
}

export function renderBpf(map: BpfMapName, rows: BpfRow[]): string {
  if (!rows.length) return `The ${map} map is empty\n`;
  switch (map) {
    case 'endpoints':
      return renderTable(['IP', 'IFINDEX', 'MAC', 'NODE-MAC', 'FLAGS'], rows.map((r) => [String(r.ip), String(r.ifindex), String(r.mac), String(r.nodeMac), r.host ? 'host' : '-']));
    case 'ipcache':
      return renderTable(['PREFIX', 'NODE-IP', 'FLAGS'], rows.map((r) => [String(r.cidr), String(r.nodeIp), r.local ? 'local' : '-']));
    case 'tunnel':
      return renderTable(['PREFIX', 'TUNNEL-ENDPOINT', 'VNI'], rows.map((r) => [String(r.cidr), String(r.nodeIp), r.vni === 0 ? 'default' : String(r.vni)]));
  }
}
