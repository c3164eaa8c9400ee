/** A kubeconfig for an http server without authentication, readable by kubectl and @kubernetes/client-node. */
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';

export function kubeconfigFor(url: string, name = 'kube-sim'): string {
  const config = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name, cluster: { server: url } }],
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
