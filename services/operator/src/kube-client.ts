import { KubeConfig } from '@kubernetes/client-node';

export interface KubeSource {
  /** A kubeconfig file. */
  kubeconfig?: string;
  /** An API server URL, without credentials (kube-sim, or a `kubectl proxy`). */
  server?: string;
}

/**
 * Where the operator finds the API server: an explicit URL, a kubeconfig file, the in-cluster service account, or
 * kubectl's defaults ($KUBECONFIG, ~/.kube/config), in that order.
 */
export function loadKubeConfig(source: KubeSource): KubeConfig {
  const config = new KubeConfig();
  if (source.server) {
    // client-node 1.4 refuses plain http unless skipTLSVerify is set; there is no TLS to verify on http anyway.
    const plainHttp = new URL(source.server).protocol === 'http:';
    config.loadFromClusterAndUser({ name: 'sluice', server: source.server, skipTLSVerify: plainHttp }, { name: 'sluice' });
  } else if (source.kubeconfig) {
    config.loadFromFile(source.kubeconfig);
  } else if (process.env.KUBERNETES_SERVICE_HOST) {
    config.loadFromCluster();
  } else {
    config.loadFromDefault();
  }
  if (!config.getCurrentCluster()) throw new Error('no Kubernetes cluster found: pass --kube-server or --kubeconfig');
  return config;
}

/** The API server's origin, to tell its connections apart from etcd's in the traffic accounting. */
export function apiServerOrigin(config: KubeConfig): URL {
  return new URL(config.getCurrentCluster()!.server);
}
