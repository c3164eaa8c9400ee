/**
 * The demo installs Sluice the way a cluster would: `kubectl apply -k` of deploy/overlays/demo into kube-sim, under a
 * kustomization of the demo's own (in its state dir) that adds only what the demo alone knows: the Secrets of the
 * operator's and the health service's etcd identities, the API server's URL and the health service's ports. The
 * Deployments' containers then run on the demo's "control-plane host" (a WorkloadKubelet on this machine), the
 * DaemonSet's on the lab's nodes.
 */
import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { promisify } from 'node:util';
import type { EtcdServer } from '@sluice/etcd-runner';
import { ETCD_USERS } from '@sluice/kvstore';
import { REPO_ROOT } from './paths.ts';

const execFileAsync = promisify(execFile);

/** The namespace of deploy/base. */
export const SLUICE_NAMESPACE = 'sluice';
export const DEMO_OVERLAY = join(REPO_ROOT, 'deploy/overlays/demo');

export interface DemoManifestOptions {
  /** Where the demo's kustomization is written (a fresh folder under the demo's state dir). */
  dir: string;
  kubeconfig: string;
  etcd: Pick<EtcdServer, 'clientFiles'>;
  kubeServer: string;
  health: { grpcPort: number; metricsPort: number } | undefined;
  /** The agents' masquerading, as the cluster-wide default (`--masquerade iptables`: the seed's starting point). */
  masquerade?: 'off' | 'iptables' | 'bpf';
}

/** A Secret holding one etcd identity as deploy/overlays/etcd-tls reads it: etcd.config beside its files. */
function etcdIdentitySecret(name: string, etcd: Pick<EtcdServer, 'clientFiles'>, user: string): object {
  const files = etcd.clientFiles(user);
  const config = ['endpoints:', ...files.endpoints.map((e) => `  - ${e}`)];
  const stringData: Record<string, string> = {};
  if (files.ca && files.cert && files.key) {
    // Relative paths: --etcd-config resolves them against the file's folder, the Secret's mount.
    config.push('trusted-ca-file: ca.crt', 'cert-file: tls.crt', 'key-file: tls.key');
    stringData['ca.crt'] = readFileSync(files.ca, 'utf8');
    stringData['tls.crt'] = readFileSync(files.cert, 'utf8');
    stringData['tls.key'] = readFileSync(files.key, 'utf8');
  }
  stringData['etcd.config'] = `${config.join('\n')}\n`;
  return { apiVersion: 'v1', kind: 'Secret', metadata: { name, namespace: SLUICE_NAMESPACE }, type: 'Opaque', stringData };
}

const jsonPatch = (ops: object[]) => ops.map((op) => JSON.stringify(op)).join('\n').replace(/^/gm, '- ');

/** Writes the demo's kustomization over deploy/overlays/demo; returns its folder. */
export function writeDemoKustomization(options: DemoManifestOptions): string {
  const { dir } = options;
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const secrets = [etcdIdentitySecret('sluice-etcd-operator', options.etcd, ETCD_USERS.operator), etcdIdentitySecret('sluice-etcd-health', options.etcd, ETCD_USERS.health)];
  // JSON is YAML: kustomize reads both files as they are.
  writeFileSync(join(dir, 'secrets.yaml'), secrets.map((s) => JSON.stringify(s)).join('\n---\n'), { flag: 'wx', mode: 0o600 });
  const patch = (kind: string, name: string, ops: object[]) => ({ target: { kind, name }, patch: jsonPatch(ops) });
  const patches = [
    patch('ConfigMap', 'sluice-config', [{ op: 'replace', path: '/data/etcd-endpoints', value: options.etcd.clientFiles().endpoints.join(',') }]),
    patch('ConfigMap', 'sluice-operator-config', [{ op: 'add', path: '/data/kube-server', value: options.kubeServer }]),
    ...(options.masquerade ? [patch('ConfigMap', 'sluice-agent-config', [{ op: 'replace', path: '/data/masquerade', value: options.masquerade }])] : []),
    ...(options.health
      ? [
          patch('ConfigMap', 'sluice-health-config', [
            { op: 'replace', path: '/data/listen', value: `127.0.0.1:${options.health.grpcPort}` },
            { op: 'replace', path: '/data/metrics-port', value: String(options.health.metricsPort) },
          ]),
          patch('ConfigMap', 'sluice-agent-config', [{ op: 'replace', path: '/data/health-service', value: `127.0.0.1:${options.health.grpcPort}` }]),
        ]
      : [
          patch('Deployment', 'sluice-health', [{ op: 'replace', path: '/spec/replicas', value: 0 }]),
          patch('ConfigMap', 'sluice-agent-config', [{ op: 'remove', path: '/data/health-service' }]),
        ]),
  ];
  const kustomization = {
    apiVersion: 'kustomize.config.k8s.io/v1beta1',
    kind: 'Kustomization',
    resources: [relative(dir, DEMO_OVERLAY), 'secrets.yaml'],
    patches,
  };
  writeFileSync(join(dir, 'kustomization.yaml'), `${JSON.stringify(kustomization, null, 2)}\n`, { flag: 'wx', mode: 0o600 });
  return dir;
}

/**
 * `kubectl apply -k`. Asynchronous on purpose: kube-sim runs in this process and must keep answering. kube-sim has
 * no OpenAPI document for kubectl's client-side validation; test/deploy validates the same objects against the
 * Kubernetes schemas instead.
 */
export async function kubectlApply(kubeconfig: string, dir: string): Promise<string[]> {
  try {
    const { stdout } = await execFileAsync('kubectl', ['--kubeconfig', kubeconfig, 'apply', '--validate=false', '-k', dir], { timeout: 60_000, maxBuffer: 16 << 20 });
    return stdout.trim().split('\n').filter(Boolean);
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`kubectl apply -k ${dir}: ${(e.stderr || e.message).trim().split('\n').slice(-3).join(' ')}`);
  }
}
