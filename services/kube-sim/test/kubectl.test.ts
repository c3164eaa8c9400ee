import { spawn, execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join, dirname } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { KubeSim } from '../src/index.ts';
import { startSmall, waitFor } from './helpers.ts';

const run = promisify(execFile);
let sim: KubeSim;

async function kubectl(...args: string[]): Promise<string> {
  const { stdout } = await run('kubectl', ['--kubeconfig', sim.kubeconfigPath, ...args], { timeout: 30_000 });
  return stdout;
}

beforeAll(async () => {
  sim = await startSmall({ nodes: 3, podsPerNode: 2 });
});
afterAll(async () => {
  await sim.close();
});

describe('kubectl against kube-sim', () => {
  it('gets nodes and pods with the server-side columns', async () => {
    const nodes = await kubectl('get', 'nodes');
    expect(nodes).toMatch(/^NAME\s+STATUS\s+ROLES\s+AGE\s+VERSION/);
    expect(nodes.trim().split('\n')).toHaveLength(4);
    expect(nodes).toContain('node-00001   Ready');
    const pods = await kubectl('get', 'pods', '-A', '-o', 'wide');
    expect(pods.trim().split('\n')).toHaveLength(7);
    expect(pods).toMatch(/Running/);
    expect(pods).toMatch(/10\.128\.\d+\.\d+/);
    const json = JSON.parse(await kubectl('get', 'node', 'node-00002', '-o', 'json'));
    expect(json.spec.podCIDR).toMatch(/^10\.128\.\d+\.0\/24$/);
    expect(json.status.addresses[0]).toEqual({ type: 'InternalIP', address: expect.stringMatching(/^172\.20\./) });
    const slices = await kubectl('get', 'endpointslices', '-A');
    expect(slices).toMatch(/svc-0-/);
  });

  it('describes a node (its pods included) and a pod', async () => {
    const node = await kubectl('describe', 'node', 'node-00001');
    expect(node).toMatch(/PodCIDR:\s+10\.128\.0\.0\/24/);
    expect(node).toMatch(/Non-terminated Pods:\s+\(2 in total\)/);
    const pod = sim.store.podsOnNode('node-00001')[0]!;
    const described = await kubectl('describe', 'pod', '-n', pod.namespace, pod.name);
    expect(described).toMatch(new RegExp(`Node:\\s+node-00001`));
    expect(described).toMatch(/Status:\s+Running/);
  });

  it('labels with --overwrite and annotates', async () => {
    expect(await kubectl('label', 'node', 'node-00003', 'tier=a')).toContain('labeled');
    await expect(kubectl('label', 'node', 'node-00003', 'tier=b')).rejects.toThrow(/already has a value/);
    expect(await kubectl('label', 'node', 'node-00003', 'tier=b', '--overwrite')).toContain('labeled');
    expect(await kubectl('annotate', 'node', 'node-00003', 'sluice.io/note=hello')).toContain('annotated');
    const node = sim.store.getParsed('nodes', '', 'node-00003')!;
    expect(node.metadata?.labels?.tier).toBe('b');
    expect(node.metadata?.annotations?.['sluice.io/note']).toBe('hello');
    expect(await kubectl('get', 'nodes', '-l', 'tier=b', '-o', 'name')).toBe('node/node-00003\n');
  });

  it('applies (create, then a patch), and deletes', async () => {
    const file = join(dirname(sim.kubeconfigPath), 'pod.yaml');
    const manifest = (app: string) => `apiVersion: v1\nkind: Pod\nmetadata:\n  name: applied\n  namespace: default\n  labels: {app: ${app}}\nspec:\n  containers:\n  - name: web\n    image: nginx\n`;
    await writeFile(file, manifest('one'));
    expect(await kubectl('apply', '-f', file)).toContain('pod/applied created');
    await writeFile(file, manifest('two'));
    expect(await kubectl('apply', '-f', file)).toContain('pod/applied configured');
    expect(await kubectl('apply', '-f', file)).toContain('pod/applied unchanged');
    const pod = sim.store.getParsed('pods', 'default', 'applied')!;
    expect(pod.metadata?.labels).toEqual({ app: 'two' });
    expect(pod.metadata?.annotations?.['kubectl.kubernetes.io/last-applied-configuration']).toContain('"two"');
    expect(await kubectl('delete', 'pod', 'applied', '-n', 'default')).toContain('pod "applied" deleted');
    expect(sim.store.get('pods', 'default', 'applied')).toBeUndefined();
    await expect(kubectl('get', 'pod', 'applied')).rejects.toThrow(/NotFound|not found/);
  });

  it('watches nodes and pods with get -w', async () => {
    const watch = (resource: string) => {
      const child = spawn('kubectl', ['--kubeconfig', sim.kubeconfigPath, 'get', resource, '-A', '-w', '--output-watch-events'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      return { child, output: () => out };
    };
    const nodes = watch('nodes');
    const pods = watch('pods');
    try {
      await waitFor(() => nodes.output().includes('node-00003') && pods.output().split('\n').length > 6, 20_000);
      sim.cluster.labelNode('node-00001', { watched: 'yes' });
      const created = sim.cluster.createPod({ nodeName: 'node-00002' });
      sim.cluster.deletePod(created.namespace, created.name);
      await waitFor(() => /MODIFIED\s+node-00001/.test(nodes.output()), 20_000);
      await waitFor(() => new RegExp(`DELETED\\s+${created.namespace}\\s+${created.name}`).test(pods.output()), 20_000);
      expect(pods.output()).toMatch(new RegExp(`ADDED\\s+${created.namespace}\\s+${created.name}`));
    } finally {
      nodes.child.kill();
      pods.child.kill();
    }
  });
});
