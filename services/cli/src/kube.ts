/** The Kubernetes API server named by a kubeconfig: reachable? which version? */
import { CustomObjectsApi, KubeConfig, VersionApi } from '@kubernetes/client-node';
import { z } from '@sluice/config';
import { oneLine } from './errors.ts';

export interface KubeView {
  server: string;
  reachable: boolean;
  version?: string;
  platform?: string;
  error?: string;
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms)));
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export async function readKube(kubeconfig: string, timeoutMs = 3000): Promise<KubeView> {
  const config = new KubeConfig();
  try {
    config.loadFromFile(kubeconfig);
  } catch (err) {
    return { server: '', reachable: false, error: `cannot load kubeconfig ${kubeconfig}: ${oneLine(err)}` };
  }
  const server = config.getCurrentCluster()?.server ?? '';
  if (!server) return { server, reachable: false, error: `kubeconfig ${kubeconfig} names no cluster` };
  try {
    const info = await withTimeout(config.makeApiClient(VersionApi).getCode(), timeoutMs, server);
    return { server, reachable: true, version: info.gitVersion, platform: info.platform };
  } catch (err) {
    return { server, reachable: false, error: oneLine(err) };
  }
}

/** A SluiceNodeConfig as `sluice status` reports it: the operator's verdict on its keys (its sluice.io/valid condition). */
export interface NodeConfigView {
  name: string;
  /** False: some keys or the selector were refused (message says which); undefined: the operator has not judged it yet. */
  valid?: boolean;
  message: string;
}

const conditionSchema = z.object({ type: z.string(), status: z.string(), message: z.string().optional() });
const nodeConfigList = z.object({
  items: z.array(z.object({
    metadata: z.object({ name: z.string() }),
    status: z.object({ conditions: z.array(conditionSchema).optional() }).optional(),
  })),
});

/** The cluster's SluiceNodeConfigs and what the operator said of each; an error string when they cannot be read. */
export async function readNodeConfigs(kubeconfig: string, timeoutMs = 3000): Promise<NodeConfigView[] | string> {
  const config = new KubeConfig();
  try {
    config.loadFromFile(kubeconfig);
    const body: unknown = await withTimeout(
      config.makeApiClient(CustomObjectsApi).listClusterCustomObject({ group: 'sluice.io', version: 'v1alpha1', plural: 'sluicenodeconfigs' }),
      timeoutMs,
      'SluiceNodeConfigs',
    );
    const parsed = nodeConfigList.safeParse(body);
    if (!parsed.success) return `SluiceNodeConfigs: unexpected answer (${parsed.error.issues[0]?.message ?? 'invalid'})`;
    return parsed.data.items.map((o) => {
      const valid = o.status?.conditions?.find((c) => c.type === 'sluice.io/valid');
      return { name: o.metadata.name, ...(valid ? { valid: valid.status === 'True' } : {}), message: valid?.message ?? '' };
    }).sort((a, b) => a.name.localeCompare(b.name));
  } catch (err) {
    return oneLine(err);
  }
}
