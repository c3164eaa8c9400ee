/**
 * The demo end to end, the way a newcomer uses it: start it, look at it with `sluice` and kubectl, change a node
 * label through Kubernetes and watch it reach etcd, then Ctrl-C and check that nothing is left behind.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, lstatSync, mkdtempSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { demoStateSchema, pidAlive, type DemoState } from '@sluice/demo-state';
import { TSX_LOADER } from '../src/children.ts';
import { cleanupStale } from '../src/cleanup.ts';
import { REPO_ROOT } from '../src/paths.ts';

const DEMO = join(REPO_ROOT, 'services/demo/src/main.ts');
const SLUICE = join(REPO_ROOT, 'services/cli/bin/sluice');

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
  const sluice = (...args: string[]) => run(SLUICE, ['--demo-state', statePath, ...args]);

  beforeAll(async () => {
    const args = ['--import', TSX_LOADER, DEMO, '--demo-dir', stateDir, '--sim-nodes', '2', '--sim-pods-per-node', '1'];
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
    // After a failure midway: stop the demo the normal way, and if even that fails, clean up after it by its state.
    if (demo && demo.exitCode === null && demo.signalCode === null) {
      const exited = new Promise((resolve) => demo.once('exit', resolve));
      demo.kill('SIGINT');
      await Promise.race([exited, sleep(30_000)]);
      if (demo.exitCode === null && demo.signalCode === null) {
        demo.kill('SIGKILL');
        await exited;
      }
    }
    if (existsSync(statePath)) cleanupStale(demoStateSchema.parse(JSON.parse(readFileSync(statePath, 'utf8'))));
    rmSync(stateDir, { recursive: true, force: true });
  }, 60_000);

  it('shows each part coming up, where it is, the status and what to try, without carriage returns', () => {
    expect(output).toMatch(/✔ etcd {2}https?:\/\/127\.0\.0\.1:\d+/);
    expect(output).toMatch(/✔ kube-sim {2}http:\/\/127\.0\.0\.1:\d+/);
    expect(output).toMatch(/✔ manifests {2}kubectl apply -k \S+ {2}\(deploy\/overlays\/demo: \d+ objects\)/);
    expect(output).toMatch(/✔ operator {2}leader, synced {2}\(sluice-operator-\d of 2 replicas/);
    expect(output).toMatch(/✔ health service {2}grpc 127\.0\.0\.1:\d+/);
    for (const n of state.nodes) expect(output).toContain(`✔ node ${n.name}  ${n.nodeIP}  netns ${n.netns}  agent http://127.0.0.1:`);
    expect(output).toMatch(/✔ lab {2}3 nodes, 6 pods/);
    expect(output).toMatch(/✔ cluster health {2}3\/3 lab nodes reachable/);
    expect(state.nodes).toHaveLength(3);
    expect(state.pods).toHaveLength(6);
    expect(output).toContain(`bpf endpoints --node ${state.nodes[0]!.name}`);
    expect(output).toContain('$ sluice status');
    expect(output).toMatch(/kubectl --kubeconfig \S+ get nodes/);
    expect(output).not.toContain('\r');
    expect(state.phase).toBe('ready');
    expect(state.pid).toBe(demo.pid);
    // The lab's and the control-plane host's folders: made by mkdtemp (a random suffix), the owner's only, no link.
    const own = state.tempDirs.filter((d) => /^\/tmp\/sluice-(lab|demo)-/.test(d));
    expect(own.map((d) => basename(d).replace(/-[A-Za-z0-9]{6}$/, '-*')).sort()).toEqual(['sluice-demo-*', expect.stringMatching(/^sluice-lab-\w+-\*$/)]);
    for (const d of own) {
      const st = lstatSync(d);
      expect(st.isDirectory() && !st.isSymbolicLink(), d).toBe(true);
      expect(st.mode & 0o777, d).toBe(0o700);
    }
  });

  it('sluice status reports every part', async () => {
    const r = await sluice('status');
    expect(r.stderr).toBe('');
    const endpoint = state.etcd!.endpoints[0]!;
    expect(r.stdout).toMatch(new RegExp(`^KVStore:\\s+Ok\\s+etcd: 1/1 connected, revision \\d+: ${endpoint} - \\d+\\.\\d+\\.\\d+ \\(Leader\\)$`, 'm'));
    expect(r.stdout).toMatch(/Kubernetes:\s+Ok\s+v1\.\d+/);
    expect(r.stdout).toMatch(/Operator:\s+Ok\s+leader \S+ \(term \d+, since [^)]+\), synced/);
    expect(r.stdout).toMatch(/^Agents:\s+Ok\s+3\/3 running, version \S+, 2 of 5 nodes without an agent$/m);
    expect(r.stdout).toMatch(/^Host Routing:\s+(BPF|Legacy \(.+\))/m);
    expect(r.stdout).toMatch(/^Masquerading:\s+\S/m);
    expect(r.stdout).toMatch(/^Endpoints:\s+8 pods in etcd, \d+ local endpoints on 3 agents$/m);
    expect(r.stdout).toMatch(/^Controller Status:\s+7\/7 healthy/m);
    // Every node record is a member of the health view: the lab's agents probe each other and the 2 simulated nodes,
    // which have no agent and no host to answer, so they are unreachable (re-probed every round, they stay so).
    expect(r.stdout).toMatch(/^Cluster health:\s+3\/5 reachable \(unreachable: [^)]+\)/m);
    expect(r.code).toBe(0);
    const asJson = await sluice('status', '--json');
    expect(JSON.parse(asJson.stdout).operator.state).toBe('Ok');
  });

  it('sluice connectivity test passes every test', async () => {
    const r = await sluice('connectivity', 'test');
    expect(r.stdout).not.toContain('❌');
    expect(r.stdout).toMatch(/^✅ All \d+ tests successful(, 1 test skipped)?\.$/m);
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
    expect(names).toHaveLength(5);
    for (const n of state.nodes) expect(names).toContain(n.name);
    const node = state.nodes[1]!.name;
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

  it('what runs is what the manifests in kube-sim say: their replicas, their command, their config directory', async () => {
    const kubectl = (...args: string[]) => run('kubectl', ['--kubeconfig', state.kubernetes!.kubeconfig!, ...args]);
    const got = await kubectl('get', 'deployments,daemonsets', '-n', 'sluice', '-o', 'json');
    expect(got.stderr).toBe('');
    const items = (JSON.parse(got.stdout) as { items: Array<{ kind: string; metadata: { name: string }; spec: { replicas?: number; template: { spec: { containers: Array<{ command: string[]; args: string[] }> } } } }> }).items;
    const byName = new Map(items.map((i) => [i.metadata.name, i]));
    expect([...byName.keys()].sort()).toEqual(['sluice-agent', 'sluice-health', 'sluice-operator']);
    const running = new Map<string, Array<{ cmd: string; cwd: string }>>();
    for (const p of state.processes) {
      const [container] = p.name.split(' ');
      const cmd = readFileSync(`/proc/${p.pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ');
      running.set(container!, [...(running.get(container!) ?? []), { cmd, cwd: readlinkSync(`/proc/${p.pid}/cwd`) }]);
    }
    expect(running.get('operator')).toHaveLength(byName.get('sluice-operator')!.spec.replicas!);
    expect(running.get('health')).toHaveLength(byName.get('sluice-health')!.spec.replicas!);
    expect(running.get('agent')).toHaveLength(state.nodes.length);
    for (const [container, workload] of [['operator', 'sluice-operator'], ['health', 'sluice-health'], ['agent', 'sluice-agent']] as const) {
      const c = byName.get(workload)!.spec.template.spec.containers[0]!;
      // The compiled service deploy/ runs, not its sources through a loader.
      const script = c.command.find((a) => a.endsWith('/dist/main.mjs'))!;
      expect(script, container).toBe(`services/${container}/dist/main.mjs`);
      for (const { cmd, cwd } of running.get(container)!) {
        // The command as the manifest says, in the image's WORKDIR (this checkout), the config from its files.
        expect(cmd, container).toMatch(new RegExp(`^\\S*node ${c.command.slice(1).join(' ')} --config-dir /tmp/sluice-(demo|lab)-\\S+`));
        expect(cmd, container).toContain(script);
        expect(cwd, container).toBe(REPO_ROOT);
      }
    }
  });

  it('sluice bpf endpoints shows the pods of the node from its pinned map', async () => {
    const node = state.nodes[0]!;
    const r = await sluice('bpf', 'endpoints', '--node', node.name);
    expect(r.code).toBe(0);
    const local = state.pods.filter((x) => x.node === node.name);
    expect(local.length).toBeGreaterThan(0);
    for (const p of local) expect(r.stdout).toMatch(new RegExp(`^${p.ip.replace(/\./g, '\\.')}\\s+\\d+\\s`, 'm'));
    const ipcache = await sluice('bpf', 'ipcache', '--node', node.name, '--json');
    const prefixes = (JSON.parse(ipcache.stdout) as Array<{ cidr: string }>).map((e) => e.cidr);
    expect(state.pods.length).toBeGreaterThan(local.length);
    for (const p of state.pods) expect(prefixes).toContain(`${p.ip}/32`);
  });

  it('a second demo on the same state says one is running and exits non-zero', async () => {
    const r = await run(process.execPath, ['--import', TSX_LOADER, DEMO, '--demo-dir', stateDir]);
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
    expect(state.processes.map((p) => p.name)).toEqual(expect.arrayContaining(['operator sluice-operator-0', 'operator sluice-operator-1', 'health sluice-health-0', ...state.nodes.map((n) => `agent ${n.name}`)]));
    for (const pid of pids) expect(pidAlive(pid), `pid ${pid}`).toBe(false);
    const addresses = [state.etcd!.endpoints[0]!, state.kubernetes!.server, state.operator!.metricsUrl, state.health!.address, ...state.nodes.map((n) => n.agentStatusUrl!)];
    for (const a of addresses) expect(await portOpen(a), a).toBe(false);
    const namespaces = (await run('ip', ['netns', 'list'])).stdout;
    expect(state.namespaces.length).toBeGreaterThanOrEqual(1 + 3 + 3 + 6);
    for (const ns of state.namespaces) expect(namespaces).not.toContain(ns);
    expect(namespaces).not.toContain(state.namespacePrefix!);
    expect(state.pinRoot).toMatch(/^\/sys\/fs\/bpf\/sluice\/\w+$/);
    expect(existsSync(state.pinRoot!)).toBe(false);
    // Nothing running in (or for) the lab's namespaces: the pods' web servers, nsenter, the agents.
    const leftovers = await run('pgrep', ['-f', state.namespacePrefix!]);
    expect(leftovers.stdout).toBe('');
    const after = await run(SLUICE, ['--demo-state', statePath, 'status']);
    expect(after.code).toBe(1);
    expect(after.stderr).toBe(`sluice: no demo running: ${statePath} not found; start one with npm start, or pass --etcd-endpoints\n`);
  }, 60_000);
});

describe('a demo that was killed (SIGKILL) is cleaned up after by the next one', () => {
  const stateDir = mkdtempSync(join(tmpdir(), 'sluice-demo-crash-'));
  const statePath = join(stateDir, 'demo.json');
  const children: ChildProcess[] = [];
  let first: DemoState | undefined;
  let done = false;

  const startDemo = async (args: string[]): Promise<{ child: ChildProcess; output: () => string }> => {
    const child = spawn(process.execPath, ['--import', TSX_LOADER, DEMO, '--demo-dir', stateDir, ...args], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let output = '';
    child.stdout!.on('data', (c: Buffer) => (output += c.toString()));
    child.stderr!.on('data', (c: Buffer) => (output += c.toString()));
    const deadline = Date.now() + 120_000;
    while (!output.includes('Press Ctrl-C to stop it')) {
      if (child.exitCode !== null) throw new Error(`the demo exited (${child.exitCode}):\n${output}`);
      if (Date.now() > deadline) throw new Error(`the demo did not become ready:\n${output}`);
      await sleep(250);
    }
    return { child, output: () => output };
  };

  afterAll(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    // Whatever the outcome, nothing of either demo may outlive the test: a SIGKILLed demo runs no exit hooks.
    if (first && !done) cleanupStale(first);
    if (!done && existsSync(statePath)) cleanupStale(demoStateSchema.parse(JSON.parse(readFileSync(statePath, 'utf8'))));
    rmSync(stateDir, { recursive: true, force: true });
  });

  it('kills what is left, deletes its namespaces and pins, then starts', async () => {
    const a = await startDemo(['--nodes', '1', '--pods-per-node', '1', '--no-health']);
    first = demoStateSchema.parse(JSON.parse(readFileSync(statePath, 'utf8')));
    expect(first.pods).toHaveLength(1);
    a.child.kill('SIGKILL');
    await new Promise((resolve) => a.child.once('exit', resolve));
    // The killed demo could not clean up: its etcd, operator, agent, namespaces and pins are all still there.
    const orphans = [first.etcd!.pid!, ...first.processes.map((p) => p.pid)];
    for (const pid of orphans) expect(pidAlive(pid), `pid ${pid}`).toBe(true);
    expect(existsSync(first.pinRoot!)).toBe(true);
    expect((await run('ip', ['netns', 'list'])).stdout).toContain(first.namespacePrefix!);
    const etcdDataDir = first.tempDirs.find((dir) => basename(dir).startsWith('sluice-etcd-'));
    expect(etcdDataDir && existsSync(etcdDataDir)).toBe(true);

    const b = await startDemo(['--nodes', '0', '--no-health']);
    expect(b.output()).toMatch(/✔ cleaned up after a previous demo that did not stop {2}.*netns /);
    await sleep(500);
    for (const pid of orphans) expect(pidAlive(pid), `pid ${pid}`).toBe(false);
    expect(existsSync(first.pinRoot!)).toBe(false);
    for (const dir of first.tempDirs) expect(existsSync(dir)).toBe(false);
    expect((await run('ip', ['netns', 'list'])).stdout).not.toContain(first.namespacePrefix!);
    expect((await run('pgrep', ['-f', first.namespacePrefix!])).stdout).toBe('');
    const second = demoStateSchema.parse(JSON.parse(readFileSync(statePath, 'utf8')));
    expect(second.pid).toBe(b.child.pid);

    const exited = new Promise<number | null>((resolve) => b.child.once('exit', (code) => resolve(code)));
    b.child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(existsSync(statePath)).toBe(false);
    done = true;
  }, 240_000);
});
