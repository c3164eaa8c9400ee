/**
 * Kernel routes in the node's namespace to every other node's podCIDR, as a reconciler target: `podCIDR via nodeIP
 * dev <uplink>` in native routing (Cilium's autoDirectNodeRoutes; bpf_redirect_neigh follows them), `podCIDR dev
 * <vxlan>` in tunnel mode.
 *
 * Ownership: our routes carry Sluice's route protocol number (`proto 77`); we only ever replace or delete routes
 * with that number. A destination that already has a route Sluice did not create (another protocol: the default
 * route, a static route, a kernel route) is never replaced: the row stays in error and is retried, so it lands once
 * that route is gone. The tables only ever ask for podCIDRs inside the cluster CIDR.
 *
 * Writes go through one `ip -force -batch -` per call: a failing route fails only its own row ("Command failed
 * -:<line>"), the others and the deletions still happen.
 */
import { run } from '@sluice/netns';
import type { PruneResult, ReconcileTarget, RowFailure } from '../reconciler.ts';
import type { RouteRow } from '../tables/derived.ts';

/** Route protocol number marking Sluice's routes (`ip route … proto 77`). */
export const ROUTE_PROTO = 77;

export interface RoutesTargetOptions {
  /** The node's network namespace (under /run/netns), or undefined for the current one. */
  netns?: string;
  mode: 'native' | 'tunnel';
  uplink: string;
  vxlan: string;
}

interface KernelRoute {
  dst: string;
  gateway?: string;
  dev?: string;
  protocol?: string | number;
  type?: string;
}

const canonical = (dst: string) => (dst === 'default' ? '0.0.0.0/0' : dst.includes('/') ? dst : `${dst}/32`);
const isOurs = (r: KernelRoute) => String(r.protocol) === String(ROUTE_PROTO);

export class RoutesTarget implements ReconcileTarget<RouteRow> {
  readonly name = 'routes';
  private routing: 'native' | 'tunnel';

  constructor(private readonly options: RoutesTargetOptions) {
    this.routing = options.mode;
  }

  get mode(): 'native' | 'tunnel' {
    return this.routing;
  }

  /** A live routing switch: rows written from now on take the new form; a full pass rewrites the others. */
  setMode(mode: 'native' | 'tunnel'): void {
    this.routing = mode;
  }

  private async ip(args: string[], input?: string): Promise<{ code: number; stdout: string; stderr: string }> {
    const ns = this.options.netns ? ['-n', this.options.netns] : [];
    return run('ip', [...ns, ...args], { timeoutMs: 30_000, ...(input !== undefined ? { input } : {}) });
  }

  private async routes(extra: string[] = []): Promise<KernelRoute[]> {
    const r = await this.ip(['-j', 'route', 'show', 'table', 'main', ...extra]);
    if (r.code !== 0) throw new Error(`ip route show: ${r.stderr.trim() || `exit ${r.code}`}`);
    return JSON.parse(r.stdout || '[]') as KernelRoute[];
  }

  /** Runs lines through `ip -force -batch -`; returns the error message of each failed line (1-based). */
  private async batch(lines: string[]): Promise<Map<number, string>> {
    const failed = new Map<number, string>();
    if (!lines.length) return failed;
    const r = await this.ip(['-force', '-batch', '-'], lines.join('\n') + '\n');
    let last = '';
    for (const line of r.stderr.split('\n')) {
      const m = /^Command failed -:(\d+)/.exec(line);
      if (m) {
        failed.set(Number(m[1]), last || 'failed');
        last = '';
      } else if (line.trim()) last = line.trim();
    }
    if (r.code !== 0 && failed.size === 0) for (let i = 1; i <= lines.length; i++) failed.set(i, r.stderr.trim() || `ip exited ${r.code}`);
    return failed;
  }

  private want(row: RouteRow): { gateway: string; dev: string } {
    return this.routing === 'native' ? { gateway: row.nodeIp, dev: this.options.uplink } : { gateway: '', dev: this.options.vxlan };
  }

  private routeArgs(cidr: string, row: RouteRow): string {
    const w = this.want(row);
    return `route replace ${cidr} ${w.gateway ? `via ${w.gateway} ` : ''}dev ${w.dev} proto ${ROUTE_PROTO}`;
  }

  async update(rows: ReadonlyArray<readonly [string, RouteRow]>): Promise<RowFailure[]> {
    if (!rows.length) return [];
    const foreign = new Map<string, KernelRoute>();
    for (const r of await this.routes()) if (!isOurs(r)) foreign.set(canonical(r.dst), r);
    const failures: RowFailure[] = [];
    const lines: string[] = [];
    const keys: string[] = [];
    for (const [cidr, row] of rows) {
      const other = foreign.get(cidr);
      if (cidr.endsWith('/0')) {
        failures.push({ key: cidr, error: new Error('a default route is never Sluice\'s to set') });
        continue;
      }
      if (other) {
        failures.push({ key: cidr, error: new Error(`a route to ${cidr} that Sluice did not create exists (proto ${other.protocol ?? 'boot'}, dev ${other.dev ?? '?'}); not replaced`) });
        continue;
      }
      lines.push(this.routeArgs(cidr, row));
      keys.push(cidr);
    }
    for (const [line, error] of await this.batch(lines)) failures.push({ key: keys[line - 1]!, error: new Error(`ip ${lines[line - 1]}: ${error}`) });
    return failures;
  }

  async delete(keys: readonly string[]): Promise<RowFailure[]> {
    const failures: RowFailure[] = [];
    const lines = keys.map((cidr) => `route del ${cidr} proto ${ROUTE_PROTO}`);
    for (const [line, error] of await this.batch(lines)) {
      if (/No such process|No such file/.test(error)) continue; // already gone (or not ours: left alone)
      failures.push({ key: keys[line - 1]!, error: new Error(`ip ${lines[line - 1]}: ${error}`) });
    }
    return failures;
  }

  async prune(desired: { get(key: string): RouteRow | undefined; entries(): Iterable<readonly [string, RouteRow]> }): Promise<PruneResult> {
    const have = new Map<string, KernelRoute>();
    for (const r of await this.routes(['proto', String(ROUTE_PROTO)])) have.set(canonical(r.dst), r);
    const outOfDate: string[] = [];
    for (const [cidr, row] of desired.entries()) {
      const r = have.get(cidr);
      const w = this.want(row);
      if (!r || (r.gateway ?? '') !== w.gateway || r.dev !== w.dev) outOfDate.push(cidr);
    }
    const extra = [...have.keys()].filter((cidr) => desired.get(cidr) === undefined);
    const failures = await this.delete(extra);
    const failed = new Set(failures.map((f) => f.key));
    return { outOfDate, pruned: extra.filter((k) => !failed.has(k)), failures };
  }
}
