/** The Kubernetes API server named by a kubeconfig: reachable? which version? */
import { KubeConfig, VersionApi } from '@kubernetes/client-node';
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
