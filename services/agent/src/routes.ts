/**
 * Kernel routes in the node's namespace to every other node's podCIDR: `podCIDR via nodeIP dev <uplink>` in native
 * routing (Cilium's autoDirectNodeRoutes; bpf_redirect_neigh follows them), `podCIDR dev <vxlan>` in tunnel mode.
 * Ours carry a private route protocol number, so a restarted agent finds exactly the routes it owns and diffs
 * against them (replace what changed, delete what is no longer wanted) — never a flush.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { RouteSync } from './core.ts';

const exec = promisify(execFile);
/** Route protocol id marking Sluice's routes (`ip route … proto 77`). */
export const ROUTE_PROTO = 77;

export interface NetnsRoutesOptions {
  /** The node's network namespace name (under /run/netns), or undefined for the current one. */
  netns?: string;
  mode: 'native' | 'tunnel';
  uplink: string;
  vxlan: string;
}

async function ip(netns: string | undefined, args: string[]): Promise<string> {
  const full = netns ? ['-n', netns, ...args] : args;
  const { stdout } = await exec('ip', full, { timeout: 10_000 });
  return stdout;
}

export class NetnsRoutes implements RouteSync {
  constructor(private readonly options: NetnsRoutesOptions) {}

  /** The routes we installed earlier (by protocol id): dst → gateway ('' for device routes). */
  async installed(): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    const rows = JSON.parse((await ip(this.options.netns, ['-j', 'route', 'show', 'proto', String(ROUTE_PROTO)])) || '[]') as Array<{ dst: string; gateway?: string; dev?: string }>;
    for (const r of rows) out.set(r.dst.includes('/') ? r.dst : `${r.dst}/32`, `${r.gateway ?? ''}@${r.dev ?? ''}`);
    return out;
  }

  async sync(desired: ReadonlyMap<string, string>): Promise<void> {
    const { mode, uplink, vxlan, netns } = this.options;
    const have = await this.installed();
    for (const [cidr, nodeIp] of desired) {
      const want = mode === 'native' ? `${nodeIp}@${uplink}` : `@${vxlan}`;
      if (have.get(cidr) === want) continue;
      const via = mode === 'native' ? ['via', nodeIp, 'dev', uplink] : ['dev', vxlan];
      await ip(netns, ['route', 'replace', cidr, ...via, 'proto', String(ROUTE_PROTO)]);
    }
    for (const cidr of have.keys()) {
      if (!desired.has(cidr)) await ip(netns, ['route', 'del', cidr, 'proto', String(ROUTE_PROTO)]).catch(() => undefined);
    }
  }
}
