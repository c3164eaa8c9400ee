/** A kubeconfig for kube-sim, readable by kubectl and @kubernetes/client-node: plain HTTP, or HTTPS with its CA and a token. */
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';

export interface KubeconfigAuth {
  /** PEM of the CA to trust (HTTPS). */
  caPem?: string;
  /** Bearer token of the user. */
  token?: string;
}

export function kubeconfigFor(url: string, name = 'kube-sim', auth: KubeconfigAuth = {}): string {
  const cluster: Record<string, unknown> = { server: url };
  if (auth.caPem) cluster['certificate-authority-data'] = Buffer.from(auth.caPem).toString('base64');
  // client-node 1.4 refuses plain http unless the cluster says insecure-skip-tls-verify (there is no TLS to verify).
  else cluster['insecure-skip-tls-verify'] = true;
  const config = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name, cluster }],
    users: [{ name, user: auth.token ? { token: auth.token } : {} }],
    contexts: [{ name, context: { cluster: name, user: name, namespace: 'default' } }],
    'current-context': name,
    preferences: {},
  };
  // JSON is YAML: both kubectl and client-node (js-yaml) read it.
  return `${JSON.stringify(config, null, 2)}\n`;
}

export async function writeKubeconfig(path: string, url: string, auth: KubeconfigAuth = {}): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, kubeconfigFor(url, 'kube-sim', auth), { mode: 0o600 });
}
