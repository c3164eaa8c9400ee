/**
 * The demo end to end, the way a newcomer uses it: start it, look at it with `sluice` and kubectl, change a node
 * label through Kubernetes and watch it reach etcd, then Ctrl-C and check that nothing is left behind.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { demoStateSchema, pidAlive, type DemoState } from '@sluice/demo-state';
import { TSX_LOADER } from '../src/children.ts';
import { REPO_ROOT } from '../src/paths.ts';

const DEMO = join(REPO_ROOT, 'services/demo/src/main.ts');
const SLUICE = join(REPO_ROOT, 'services/cli/bin/sluice');
const LAB_EXISTS = existsSync(join(REPO_ROOT, 'test/lab/src/index.ts'));

function run(cmd: string, args: string[], timeoutMs = 60_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs, cwd: REPO_ROOT }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

function portOpen(hostPort: string): Promise<boolean> {
  const [host, port] = hostPort.replace(/^https?:\/\//, '').split('/')[0]!.split(':') as [string, string];
  return new Promise((resolve) => {
    const socket = connect({ host, port: Number(port) });
    socket.once('connect', () => (socket.destroy(), resolve(true)));
    socket.once('error', () => resolve(false));
  });
}

describe('npm start (the demo)', () => {
  const stateDir = mkdtempSync(join(tmpdir(), 'sluice-demo-test-'));
  const statePath = join(stateDir, 'demo.json');
  let demo: ChildProcess;
  let output = '';
  let state: DemoState;
  const sluice = (...args: string[]) => run(SLUICE, ['--state', statePath, ...args]);

  beforeAll(async () => {
    const args = ['--import', TSX_LOADER, DEMO, '--state-dir', stateDir];
    if (!LAB_EXISTS) args.push('--sim-nodes', '2', '--sim-pods-per-node', '2');
    demo = spawn(process.execPath, args, { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    demo.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    demo.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const deadline = Date.now() + 170_000;
    for (;;) {
      if (demo.exitCode !== null) throw new Error(`the demo exited (${demo.exitCode}):\n${output}`);
      if (output.includes('Press Ctrl-C to stop it')) break;
      if (Date.now() > deadline) throw new Error(`the demo did not become ready:\n${output}`);
      await sleep(250);
    }
    state = demoStateSchema.parse(JSON.parse(readFileSync(statePath, 'utf8')));
  }, 180_000);

  afterAll(async () => {
    if (demo.exitCode === null) {
      demo.kill('SIGKILL');
      await sleep(200);
    }
    rmSync(stateDir, { recursive: true, force: true });
  });

  it('shows each part coming up, where it is, the status and what to try, without carriage returns', () => {
    expect(output).toMatch(/✔ etcd {2}http:\/\/127\.0\.0\.1:\d+/);
    expect(output).toMatch(/✔ kube-sim {2}http:\/\/127\.0\.0\.1:\d+/);
    expect(output).toMatch(/✔ operator {2}leader, synced/);
    expect(output).toMatch(/✔ health service {2}grpc 127\.0\.0\.1:\d+/);
    expect(output).toContain('$ sluice status');
    expect(output).toMatch(/kubectl --kubeconfig \S+ get nodes/);
    expect(output).not.toContain('\r');
    expect(state.phase).toBe('ready');
    expect(state.pid).toBe(demo.pid);
  });

  it('sluice status reports every part', async () => {
    const r = await sluice('status');
    expect(r.stderr).toBe('');
    const endpoint = state.etcd!.endpoints[0]!;
    expect(r.stdout).toMatch(new RegExp(`^KVStore:\\s+Ok\\s+etcd: 1/1 connected, revision \\d+: ${endpoint} - \\d+\\.\\d+\\.\\d+ \\(Leader\\)$`, 'm'));
    expect(r.stdout).toMatch(/Kubernetes:\s+Ok\s+v1\.\d+/);
    expect(r.stdout).toMatch(/Operator:\s+Ok\s+leader \S+ \(term \d+, since [^)]+\), synced/);
    expect(r.stdout).toMatch(/^Host Routing:\s+\S/m);
    expect(r.stdout).toMatch(/^Cluster health:\s+\d+\/\d+ reachable/m);
    if (LAB_EXISTS) {
      expect(r.stdout).toMatch(/^Host Routing:\s+(BPF|Legacy \(.+\))/m);
      expect(r.stdout).toMatch(new RegExp(`^Cluster health:\\s+${state.nodes.length}/${state.nodes.length} reachable`, 'm'));
      expect(r.code).toBe(0);
    }
    const asJson = await sluice('status', '--json');
    expect(JSON.parse(asJson.stdout).operator.state).toBe('Ok');
  });

  it.runIf(LAB_EXISTS)('sluice connectivity test passes every test', async () => {
    const r = await sluice('connectivity', 'test');
    expect(r.stdout).not.toContain('❌');
    expect(r.stdout).toMatch(/✅ All \d+ tests successful\./);
    expect(r.stdout).toContain('[pod-to-pod (same node)]');
    expect(r.stdout).toContain('[pod-to-pod (cross node)]');
    expect(r.stdout).toContain('[pod-to-host (remote node)]');
    expect(r.code).toBe(0);
  }, 90_000);

  it('kubectl lists the nodes, and a label set with kubectl reaches etcd through the operator', async () => {
    const kubeconfig = state.kubernetes!.kubeconfig;
    const nodes = await run('kubectl', ['--kubeconfig', kubeconfig, 'get', 'nodes', '-o', 'name']);
    expect(nodes.code).toBe(0);
    const names = nodes.stdout.trim().split('\n').map((l) => l.replace(/^node\//, ''));
    if (LAB_EXISTS) for (const n of state.nodes) expect(names).toContain(n.name);
    const node = names[0]!;
    expect(node).toBeTruthy();
    const label = await run('kubectl', ['--kubeconfig', kubeconfig, 'label', 'node', node, 'sluice.example/demo-test=yes']);
    expect(label.stderr).toBe('');
    expect(label.code).toBe(0);
    const deadline = Date.now() + 20_000;
    let labels: Record<string, string> | undefined;
    while (Date.now() < deadline) {
      const r = await sluice('nodes', '--json');
      const items = JSON.parse(r.stdout).items as Array<{ name: string; labels: Record<string, string> }>;
      labels = items.find((n) => n.name === node)?.labels;
      if (labels?.['sluice.example/demo-test'] === 'yes') break;
      await sleep(250);
    }
    expect(labels?.['sluice.example/demo-test']).toBe('yes');
    const table = await sluice('nodes');
    expect(table.stdout).toContain('sluice.example/demo-test=yes');
  });

  it('a second demo on the same state says one is running and exits non-zero', async () => {
    const r = await run(process.execPath, ['--import', TSX_LOADER, DEMO, '--state-dir', stateDir]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`a demo is already running (pid ${state.pid}`);
  });

  it('Ctrl-C stops everything: processes, ports, namespaces, pins, the state file', async () => {
    const exited = new Promise<number | null>((resolve) => demo.once('exit', (code) => resolve(code)));
    demo.kill('SIGINT');
    expect(await exited).toBe(0);
    expect(output).toContain('Stopped; nothing left behind.');
    expect(existsSync(statePath)).toBe(false);
    const pids = [...state.processes.map((p) => p.pid), state.etcd!.pid!];
    for (const pid of pids) expect(pidAlive(pid), `pid ${pid}`).toBe(false);
    const addresses = [state.etcd!.endpoints[0]!, state.kubernetes!.server, state.operator!.metricsUrl, state.health!.address];
    for (const a of addresses) expect(await portOpen(a), a).toBe(false);
    const namespaces = (await run('ip', ['netns', 'list'])).stdout;
    for (const ns of state.namespaces) expect(namespaces).not.toContain(ns);
    if (state.pinRoot) expect(existsSync(state.pinRoot)).toBe(false);
    const after = await run(SLUICE, ['--state', statePath, 'status']);
    expect(after.code).toBe(1);
    expect(after.stderr).toBe(`sluice: no demo running: ${statePath} not found; start one with npm start, or pass --etcd\n`);
  }, 60_000);
});
