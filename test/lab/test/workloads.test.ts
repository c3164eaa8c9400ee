/**
 * The lab kubelet's workload half against kube-sim: what a DaemonSet or Deployment applied with kubectl says is
 * what runs (command, args, env, ConfigMap and Secret files, hostPaths, init containers, restarts).
 */
import { execFile } from 'node:child_process';
import { existsSync, lstatSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startKubeSim, type KubeSim } from '@sluice/kube-sim';
import { createLogger } from '@sluice/log';
import { WorkloadKubelet, type WorkloadContainer } from '../src/kubelet.ts';

const REPO = fileURLToPath(new URL('../../../', import.meta.url)).replace(/\/$/, '');
const exec = promisify(execFile);

// A container that prints what it was given: its argv, selected env, and the files of its mounts, then stays up.
const PROBE = `
const fs = require('node:fs');
const dump = (d) => Object.fromEntries(fs.readdirSync(d).map((f) => [f, fs.readFileSync(d + '/' + f, 'utf8')]));
console.log(JSON.stringify({ argv: process.argv.slice(1), cwd: process.cwd(), env: { NODE: process.env.MY_NODE, POD: process.env.MY_POD, FROM_CM: process.env.FROM_CM, FROM_SECRET: process.env.FROM_SECRET, LAB: process.env.SLUICE_LAB_FACT, LEAKED: process.env.SLUICE_NOT_FOR_PODS }, config: dump(process.argv[2]), secret: dump(process.argv[3]), marker: fs.readFileSync(process.argv[4], 'utf8') }));
if (process.env.EXIT_AT_ONCE) process.exit(3);
setInterval(() => {}, 1000);
`;

const manifests = (namespace: string, image: string) => `
apiVersion: v1
kind: Namespace
metadata: { name: wl }
---
${JSON.stringify({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'probe-code', namespace: 'wl' }, data: { 'probe.cjs': PROBE } })}
---
apiVersion: v1
kind: ConfigMap
metadata: { name: probe-config, namespace: wl }
data: { routing: tunnel, etcd-prefix: sluice/ }
---
apiVersion: v1
kind: Secret
metadata: { name: probe-secret, namespace: wl }
stringData: { tls.key: not-a-real-key }
---
apiVersion: apps/v1
kind: DaemonSet
metadata: { name: probe, namespace: wl }
spec:
  selector: { matchLabels: { app: probe } }
  template:
    metadata: { labels: { app: probe } }
    spec:
      hostNetwork: true
      initContainers:
        - name: init
          image: sluice:dev
          workingDir: /opt/sluice
          command: [sh, -c, 'echo installed > "$1"', sh, /host/opt/marker]
          volumeMounts: [{ name: host-opt, mountPath: /host/opt }]
      containers:
        - name: main
          image: sluice:dev
          workingDir: /opt/sluice
          command: [node, /etc/probe/code/probe.cjs]
          args: [/etc/probe/config, /etc/probe/secret, /host/opt/marker]
          env:
            - { name: MY_NODE, valueFrom: { fieldRef: { fieldPath: spec.nodeName } } }
            - { name: MY_POD, valueFrom: { fieldRef: { fieldPath: metadata.name } } }
            - { name: FROM_CM, valueFrom: { configMapKeyRef: { name: probe-config, key: routing } } }
            - { name: FROM_SECRET, valueFrom: { secretKeyRef: { name: probe-secret, key: tls.key } } }
          volumeMounts:
            - { name: code, mountPath: /etc/probe/code }
            - { name: config, mountPath: /etc/probe/config }
            - { name: secret, mountPath: /etc/probe/secret }
            - { name: host-opt, mountPath: /host/opt }
      volumes:
        - { name: code, configMap: { name: probe-code } }
        - { name: config, projected: { sources: [{ configMap: { name: probe-config } }] } }
        - { name: secret, secret: { secretName: probe-secret } }
        - { name: host-opt, hostPath: { path: /opt/probe, type: DirectoryOrCreate } }
---
apiVersion: apps/v1
kind: Deployment
metadata: { name: crasher, namespace: wl }
spec:
  replicas: 2
  selector: { matchLabels: { app: crasher } }
  template:
    metadata: { labels: { app: crasher } }
    spec:
      containers:
        - name: main
          image: sluice:dev
          workingDir: /opt/sluice
          command: [node, -e, 'console.log("up " + process.env.MY_POD); setTimeout(() => process.exit(1), 200)']
          env: [{ name: MY_POD, valueFrom: { fieldRef: { fieldPath: metadata.name } } }]
`.replace(/namespace: wl\b/g, `namespace: ${namespace}`).replace('name: wl }', `name: ${namespace} }`).replace(/image: sluice:dev/g, `image: ${image}`);

async function until<T>(what: string, fn: () => T | undefined, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('WorkloadKubelet', () => {
  let sim: KubeSim;
  const dir = mkdtempSync(join(tmpdir(), 'sluice-workloads-'));
  const kubeconfig = join(dir, 'kubeconfig');
  const kubelets: WorkloadKubelet[] = [];
  const lines: Array<[WorkloadContainer, string]> = [];

  beforeAll(async () => {
    sim = await startKubeSim({ nodes: 0, podsPerNode: 0, services: 0, kubeconfigPath: kubeconfig });
    const file = join(dir, 'manifests.yaml');
    writeFileSync(file, manifests('wl', 'sluice:dev'));
    try {
      await exec('kubectl', ['--kubeconfig', kubeconfig, 'apply', '--validate=false', '-f', file], { timeout: 60_000 });
    } catch (err) {
      throw new Error(`kubectl apply: ${(err as { stderr?: string }).stderr ?? (err as Error).message}`);
    }
  });

  afterAll(async () => {
    await Promise.all(kubelets.map((k) => k.stop(1000)));
    await sim?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const kubelet = (kinds: Array<'DaemonSet' | 'Deployment'>, nodeName: string) => {
    const k = new WorkloadKubelet({
      apiUrl: sim.url,
      namespace: 'wl',
      kinds,
      repoRoot: REPO,
      log: createLogger({ component: 'test', level: 'silent' }),
      node: { name: nodeName, ip: '10.0.0.7', hostRoot: join(dir, nodeName), env: { SLUICE_LAB_FACT: `node ${nodeName}` } },
      onLine: (c, line) => lines.push([c, line]),
    });
    kubelets.push(k);
    return k;
  };

  it('runs a DaemonSet pod as the manifest says: init first, then argv, env, config and secret files, hostPaths', async () => {
    process.env.SLUICE_NOT_FOR_PODS = 'secret of the host';
    const k = kubelet(['DaemonSet'], 'node-a');
    await k.start();
    const line = await until('the probe to print', () => lines.find(([c]) => c.pod === 'probe-node-a' && c.container === 'main')?.[1]);
    const seen = JSON.parse(line) as { argv: string[]; cwd: string; env: Record<string, string | undefined>; config: Record<string, string>; secret: Record<string, string>; marker: string };
    expect(seen.cwd).toBe(REPO);
    expect(seen.env).toEqual({ NODE: 'node-a', POD: 'probe-node-a', FROM_CM: 'tunnel', FROM_SECRET: 'not-a-real-key', LAB: 'node node-a', LEAKED: undefined });
    expect(seen.config).toEqual({ routing: 'tunnel', 'etcd-prefix': 'sluice/' });
    expect(seen.secret).toEqual({ 'tls.key': 'not-a-real-key' });
    // The init container wrote into the node's hostPath, which the main container reads: both saw the same place.
    expect(seen.marker).toBe('installed\n');
    expect(existsSync(join(dir, 'node-a/opt/probe/marker'))).toBe(true);
    // Mount paths were rewritten to private files on this machine; secrets are the owner's only.
    const [configDir, secretDir] = seen.argv.slice(1, 3) as [string, string];
    expect(configDir.startsWith(join(dir, 'node-a'))).toBe(true);
    expect(statSync(join(secretDir, 'tls.key')).mode & 0o777).toBe(0o400);
    expect(lstatSync(join(configDir, '..', '..')).mode & 0o777).toBe(0o700);
    expect(readFileSync(join(configDir, 'routing'), 'utf8')).toBe('tunnel');
    expect(k.containers().map((c) => `${c.pod}/${c.container}`)).toEqual(['probe-node-a/main']);
  });

  it('runs every replica of a Deployment and restarts a container that exits', async () => {
    const k = kubelet(['Deployment'], 'control-plane');
    await k.start();
    expect(k.containers().map((c) => c.pod).sort()).toEqual(['crasher-0', 'crasher-1']);
    await until('a restart of each', () => (['crasher-0', 'crasher-1'].every((pod) => lines.filter(([c, l]) => c.pod === pod && l === `up ${pod}`).length >= 2) ? true : undefined));
    expect(k.containers().every((c) => c.starts >= 2)).toBe(true);
  });

  it('refuses an image that is not Sluice\'s', async () => {
    const file = join(dir, 'other.yaml');
    writeFileSync(file, manifests('wl2', 'nginx:1.27'));
    await exec('kubectl', ['--kubeconfig', kubeconfig, 'apply', '--validate=false', '-f', file], { timeout: 60_000 });
    const k = new WorkloadKubelet({ apiUrl: sim.url, namespace: 'wl2', kinds: ['DaemonSet'], repoRoot: REPO, log: createLogger({ component: 'test', level: 'silent' }), node: { name: 'node-b', ip: '10.0.0.8', hostRoot: join(dir, 'node-b') } });
    kubelets.push(k);
    await expect(k.start()).rejects.toThrow(/image nginx:1\.27 is not Sluice's/);
  });
});
