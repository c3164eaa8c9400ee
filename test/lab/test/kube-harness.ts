/**
 * What the kubectl-driven lab suites run around their lab: a real etcd, kube-sim with the project's CRDs applied
 * (as `kubectl apply -k deploy/crds`), a private folder, and kubectl against that kube-sim; stop() takes the lab down
 * first, then the rest, whatever state the suite ended in.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { startEtcd, type EtcdServer } from '@sluice/etcd-runner';
import { startKubeSim, type KubeSim } from '@sluice/kube-sim';
import { stopAllLabs, type Lab } from '../src/index.ts';

const run = promisify(execFile);
const CRDS = fileURLToPath(new URL('../../../deploy/crds', import.meta.url));

export interface KubeHarness {
  etcd: EtcdServer;
  sim: KubeSim;
  /** A private temporary folder (manifests, kubectl's cache), removed by stop(). */
  dir: string;
  /** kubectl against the kube-sim; resolves with its standard output. */
  kubectl(...args: string[]): Promise<string>;
  stop(lab?: Lab): Promise<void>;
}

export async function startKubeHarness(name: string): Promise<KubeHarness> {
  const dir = mkdtempSync(join(tmpdir(), `sluice-${name}-`));
  let etcd: EtcdServer | undefined;
  let sim: KubeSim | undefined;
  const stop = async (lab?: Lab) => {
    await lab?.stop().catch(() => undefined);
    stopAllLabs();
    await sim?.close();
    await etcd?.stop();
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    etcd = await startEtcd();
    sim = await startKubeSim({ nodes: 0, services: 0 });
    const kubeconfig = sim.kubeconfigPath;
    const kubectl = async (...args: string[]) => (await run('kubectl', ['--kubeconfig', kubeconfig, '--cache-dir', join(dir, 'cache'), ...args], { timeout: 30_000 })).stdout;
    await kubectl('apply', '-k', CRDS);
    return { etcd, sim, dir, kubectl, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
