import { spawn, execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';

const run = promisify(execFile);
const main = fileURLToPath(new URL('../src/main.ts', import.meta.url));
const tsx = fileURLToPath(new URL('../../../node_modules/.bin/tsx', import.meta.url));
const made: string[] = [];
async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'kube-sim-main-'));
  made.push(dir);
  return dir;
}
afterAll(() => Promise.all(made.map((dir) => rm(dir, { recursive: true, force: true }))));

async function exitOf(args: string[]): Promise<{ code: number; stderr: string; stdout: string }> {
  try {
    const { stdout, stderr } = await run(tsx, [main, ...args], { timeout: 30_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stderr: string; stdout: string };
    return { code: e.code, stderr: e.stderr, stdout: e.stdout };
  }
}

describe('kube-sim main', () => {
  it('prints help and exits 0', async () => {
    const { code, stdout } = await exitOf(['--help']);
    expect(code).toBe(0);
    expect(stdout).toContain('--pods-per-node');
    expect(stdout).toContain('--scenario');
  });

  it('exits 2 with one line on a bad flag or a bad scenario', async () => {
    for (const args of [['--nodes', 'many'], ['--cluster-cidr', '10.0.0.0'], ['--heartbeat-interval', 'soon'], ['--bogus'], ['--heartbeat-mode', 'pigeon'], ['--token-file', '/nonexistent/tokens.json']]) {
      const { code, stderr } = await exitOf(args);
      expect(code).toBe(2);
      expect(stderr.trim().split('\n').filter((l) => !l.startsWith('npm warn'))).toHaveLength(1);
    }
    const dir = await tempDir();
    const bad = join(dir, 'bad.json');
    await writeFile(bad, JSON.stringify({ nodes: -1 }));
    const { code, stderr } = await exitOf(['--scenario', bad]);
    expect(code).toBe(2);
    expect(stderr).toMatch(/scenario .*nodes/);
  });

  it('serves a scenario and writes a kubeconfig', async () => {
    const dir = await tempDir();
    const scenario = join(dir, 'scenario.json');
    const kubeconfig = join(dir, 'kubeconfig');
    await writeFile(scenario, JSON.stringify({ nodes: 2, podsPerNode: 3, services: 1, nodeList: [{ name: 'lab-node', pods: 0 }], heartbeatInterval: '1s' }));
    const child = spawn(tsx, [main, '--scenario', scenario, '--port', '0', '--kubeconfig', kubeconfig, '--log-level', 'silent'], { stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      const start = Date.now();
      while (!out.includes('kubeconfig')) {
        if (Date.now() - start > 20_000) throw new Error(`no startup line: ${out}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      const url = /serving (http:\S+)/.exec(out)![1]!;
      expect(await readFile(kubeconfig, 'utf8')).toContain(url);
      const nodes = (await (await fetch(`${url}/api/v1/nodes`)).json()) as { items: { metadata: { name: string } }[] };
      expect(nodes.items.map((n) => n.metadata.name).sort()).toEqual(['lab-node', 'node-00001', 'node-00002']);
      const pods = (await (await fetch(`${url}/api/v1/pods`)).json()) as { items: unknown[] };
      expect(pods.items).toHaveLength(6);
    } finally {
      child.kill('SIGTERM');
    }
  });

  it('serves HTTPS with tokens from a token file, lease heartbeats from the scenario, and ends on SIGTERM with a watch open', async () => {
    const dir = await tempDir();
    const scenario = join(dir, 'scenario.json');
    const tokens = join(dir, 'tokens.json');
    const kubeconfig = join(dir, 'kubeconfig');
    await writeFile(scenario, JSON.stringify({ nodes: 2, podsPerNode: 1, services: 1, heartbeat: 'lease', heartbeatInterval: '200ms' }));
    await writeFile(tokens, JSON.stringify({ tokens: [{ token: 'main-test-token-1', user: 'admin', rules: [{ verbs: ['*'], resources: ['*'] }] }] }));
    const child = spawn(tsx, [main, '--scenario', scenario, '--port', '0', '--kubeconfig', kubeconfig, '--tls', '--token-file', tokens, '--shutdown-grace', '2', '--log-level', 'silent'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    try {
      const start = Date.now();
      while (!out.includes('\nca ')) {
        if (Date.now() - start > 20_000) throw new Error(`no startup lines: ${out}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      const url = /serving (https:\S+)/.exec(out)![1]!;
      const caPath = /\nca (\S+)/.exec(out)![1]!;
      expect(caPath).toBe(join(dir, 'kube-sim-ca.crt'));
      const cache = join(dir, 'cache');
      const { stdout } = await run('kubectl', ['--kubeconfig', kubeconfig, '--cache-dir', cache, 'get', 'leases', '-n', 'kube-node-lease', '-o', 'name'], { timeout: 30_000 });
      expect(stdout).toBe('lease.coordination.k8s.io/node-00001\nlease.coordination.k8s.io/node-00002\n');
      // A watch that never reads: shutdown must not wait for it.
      const watcher = spawn('kubectl', ['--kubeconfig', kubeconfig, '--cache-dir', cache, 'get', 'pods', '-A', '-w'], { stdio: ['ignore', 'ignore', 'ignore'] });
      await new Promise((r) => setTimeout(r, 1_000));
      expect(url).toMatch(/^https:/);
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      watcher.kill();
    } finally {
      child.kill('SIGKILL');
    }
  });
});
