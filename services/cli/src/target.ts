/**
 * Where the cluster is: the flags (--etcd, --health, --kubeconfig) win; whatever they leave out comes from the demo's
 * state file (.sluice/demo.json, found walking up from the cwd, or $SLUICE_DEMO_STATE, or --state).
 */
import { DemoStateError, demoStatePath, loadDemoState, type ReadyDemoState } from '@sluice/demo-state';
import { schemas, z } from '@sluice/config';
import { CliError } from './errors.ts';

export const globalOptionsSchema = z.object({
  etcd: schemas.endpoints.optional(),
  health: z.string().regex(/^(unix:\/\/\/.+|\[?[0-9a-zA-Z.:-]+\]?:\d{1,5})$/, 'expected host:port').optional(),
  kubeconfig: z.string().min(1).optional(),
  state: z.string().min(1).optional(),
  etcdRoot: z.string().regex(/^[^/].*\/$/, 'must be non-empty and end with "/"'),
});
export type GlobalOptions = z.infer<typeof globalOptionsSchema>;

export interface Target {
  etcdEndpoints: string[];
  etcdRoot: string;
  healthAddress?: string;
  kubeconfig?: string;
  /** The demo, when one was found (or required). */
  demo?: ReadyDemoState;
  statePath: string;
}

/**
 * Resolves the target. The demo state is required only when --etcd is missing; with --etcd, a demo that happens to be
 * running still fills in --health and --kubeconfig, unless the flags name another cluster.
 */
export async function resolveTarget(options: GlobalOptions, env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): Promise<Target> {
  const statePath = options.state ?? demoStatePath(cwd, env);
  let demo: ReadyDemoState | undefined;
  try {
    demo = await loadDemoState(statePath);
  } catch (err) {
    if (!(err instanceof DemoStateError)) throw err;
    if (!options.etcd) throw new CliError(err.message);
  }
  // A demo only fills the gaps when it is the cluster the flags point at (or the flags name none).
  const sameCluster = !options.etcd || (demo?.etcd.endpoints.some((e) => options.etcd!.includes(e)) ?? false);
  if (!sameCluster) demo = undefined;
  return {
    etcdEndpoints: options.etcd ?? demo!.etcd.endpoints,
    etcdRoot: options.etcdRoot,
    healthAddress: options.health ?? demo?.health?.address,
    kubeconfig: options.kubeconfig ?? demo?.kubernetes?.kubeconfig,
    demo,
    statePath,
  };
}

/** The demo is needed (connectivity test, pin dirs): a clear error when there is none. */
export function requireDemo(target: Target, what: string): ReadyDemoState {
  if (!target.demo) throw new CliError(`${what} needs the demo's state (${target.statePath}); start the demo with npm start`);
  return target.demo;
}
