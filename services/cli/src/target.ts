/**
 * Where the cluster is: the flags (--etcd-endpoints or --etcd-config, --health, --kubeconfig) win; whatever they leave out comes from the demo's
 * state file (.sluice/demo.json, found walking up from the cwd, or $SLUICE_DEMO_STATE, or --demo-state).
 */
import { DemoStateError, demoStatePath, loadDemoState, type ReadyDemoState } from '@sluice/demo-state';
import { readFileSync } from 'node:fs';
import { etcdFlagShape, resolveEtcdConfig, z } from '@sluice/config';
import type { KvClientOptions } from '@sluice/kvstore';
import { CliError } from './errors.ts';

export const globalOptionsSchema = z.object({
  ...etcdFlagShape,
  health: z.string().regex(/^(unix:\/\/\/.+|\[?[0-9a-zA-Z.:-]+\]?:\d{1,5})$/, 'expected host:port').optional(),
  kubeconfig: z.string().min(1).optional(),
  demoState: z.string().min(1).optional(),
});
export type GlobalOptions = z.infer<typeof globalOptionsSchema>;

export interface Target {
  etcdEndpoints: string[];
  /** The etcd client configuration: the flags', or the demo's (its CA and client certificate). */
  etcd: KvClientOptions;
  etcdRoot: string;
  healthAddress?: string;
  kubeconfig?: string;
  /** The demo, when one was found (or required). */
  demo?: ReadyDemoState;
  statePath: string;
}

/**
 * Resolves the target. The demo state is required only when no etcd endpoint is given; with one, a demo that happens to be
 * running still fills in --health and --kubeconfig, unless the flags name another cluster.
 */
export async function resolveTarget(options: GlobalOptions, env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): Promise<Target> {
  const etcd = resolveEtcdConfig(options, { endpointsOptional: true });
  const given = etcd.client.endpoints.length > 0 ? etcd.client.endpoints : undefined;
  const statePath = options.demoState ?? demoStatePath(cwd, env);
  let demo: ReadyDemoState | undefined;
  try {
    demo = await loadDemoState(statePath);
  } catch (err) {
    if (!(err instanceof DemoStateError)) throw err;
    if (!given) throw new CliError(err.message);
  }
  // A demo only fills the gaps when it is the cluster the flags point at (or the flags name none).
  const sameCluster = !given || (demo?.etcd.endpoints.some((e) => given.includes(e)) ?? false);
  if (!sameCluster) demo = undefined;
  const client: KvClientOptions = given ? etcd.client : demoEtcdClient(demo!);
  return {
    etcdEndpoints: client.endpoints,
    etcd: client,
    etcdRoot: etcd.prefix,
    healthAddress: options.health ?? demo?.health?.address,
    kubeconfig: options.kubeconfig ?? demo?.kubernetes?.kubeconfig,
    demo,
    statePath,
  };
}

/** How to reach the demo's etcd: its endpoints, and under TLS the CA and the client certificate it left for the CLI. */
function demoEtcdClient(demo: ReadyDemoState): KvClientOptions {
  const { endpoints, ca, cert, key } = demo.etcd;
  const read = (file: string) => {
    try {
      return readFileSync(file);
    } catch (err) {
      throw new CliError(`cannot read the demo's etcd credentials ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  };
  if (!ca && !cert) return { endpoints };
  return { endpoints, tls: { ...(ca ? { ca: read(ca) } : {}), ...(cert && key ? { cert: read(cert), key: read(key) } : {}) } };
}

/** The demo is needed (connectivity test, pin dirs): a clear error when there is none. */
export function requireDemo(target: Target, what: string): ReadyDemoState {
  if (!target.demo) throw new CliError(`${what} needs the demo's state (${target.statePath}); start the demo with npm start`);
  return target.demo;
}
