/** A kubeconfig for an http server without authentication, readable by kubectl and @kubernetes/client-node. */
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';

export function kubeconfigFor(url: string, name = 'kube-sim'): string {
  const config = {
    apiVersion: 'v1',
    kind: 'Config',
    // client-node 1.4 refuses plain http unless the cluster says insecure-skip-tls-verify (there is no TLS to verify).
    clusters: [{ name, cluster: { server: url, 'insecure-skip-tls-verify': true } }],
    users: [{ name, user: {} }],
    contexts: [{ name, context: { cluster: name, user: name, namespace: 'default' } }],
    'current-context': name,
    preferences: {},
  };
  // JSON is YAML: both kubectl and client-node (js-yaml) read it.
  return `${JSON.stringify(config, null, 2)}\n`;
}

export async function writeKubeconfig(path: string, url: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, kubeconfigFor(url), { mode: 0o600 });
}
