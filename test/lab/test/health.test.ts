/**
 * Cluster health in the lab, end to end: the real health service process (services/health), real agent processes
 * probing with --health-service from their node namespaces (ICMP and HTTP to the peers' node IPs and agents' health
 * ports, and to their health endpoints, which each agent makes and owns), a 3-node lab on a real bridge. Cut one node's underlay link: within the
 * documented detection time the cluster view shows it unreachable and WatchClusterHealth streams the change; restore
 * it: reachable again. The host namespace has no route into the lab, so every successful probe also shows that the
 * probes leave from the node namespaces. Then, one at a time, each shown in `sluice health status`, the gRPC answer
 * and the watch stream: a health endpoint down (a drop inside its namespace), a one-way block between two nodes (an iptables drop inside one
 * node's namespace), a dead agent (its node stays a member, "agent not running"), that node dead, and that node
 * deleted (a removal on the watch stream). An independent client reads the API through reflection.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { freePort, startEtcd, type EtcdServer } from '@sluice/etcd-runner';
import { createHealthClient, type HealthChange, type HealthClient } from '@sluice/health-api';
import { startKubeSim, type KubeSim } from '@sluice/kube-sim';
import { createKvClient, decodeRecord, healthEndpointRecord, keySchema } from '@sluice/kvstore';
import { probePlan } from '@sluice/prober';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startLab, stopAllLabs, type Lab } from '../src/index.ts';
// Not the project's client library: reflection and raw gRPC calls only (services/health/test/fixtures).
import { ReflectionClient } from '../../../services/health/test/fixtures/reflection-client.ts';
// The CLI in-process, as a user would run `sluice health status`.
import { runCli } from '../../../services/cli/src/cli.ts';

const run = promisify(execFile);
/** A command inside one of the lab's namespaces (iptables, ip): only ever namespaces this lab made. */
const inNetns = (netns: string, cmd: string, args: string[]) => run('nsenter', [`--net=/run/netns/${netns}`, '--', cmd, ...args]);

const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const N = 3;
const ROOT = 'health/';

let etcd: EtcdServer;
let sim: KubeSim;
let lab: Lab;
let service: ChildProcess | undefined;
let serviceLog = '';
let address = '';
let client: HealthClient;
const changes: HealthChange[] = [];
const watch = new AbortController();

beforeAll(async () => {
  etcd = await startEtcd();
  sim = await startKubeSim({ nodes: 0, services: 0 });
  address = `127.0.0.1:${await freePort()}`;
  service = spawn(process.execPath, ['--import', 'tsx', `${REPO}services/health/src/main.ts`, '--listen', address, '--etcd-endpoints', etcd.endpoint, '--etcd-prefix', ROOT, '--insecure', '--metrics-port', '0'], {
    cwd: REPO,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  service.stderr!.on('data', (chunk: Buffer) => (serviceLog += chunk.toString()));
  lab = await startLab({ nodes: N, podsPerNode: 0, etcdEndpoint: etcd.endpoint, kubeSim: sim, rootPrefix: ROOT, nodePrefix: 'health-node-', healthService: address });
  client = createHealthClient(address, { deadlineMs: 3000 });
  void (async () => {
    for await (const change of client.watchClusterHealth({ sendInitial: true }, { signal: watch.signal })) changes.push(change);
  })().catch(() => undefined);
}, 180_000);

afterAll(async () => {
  watch.abort();
  client?.close();
  await lab?.stop();
  stopAllLabs();
  service?.kill('SIGKILL');
  await sim?.close();
  await etcd?.stop();
});

describe('cluster health in the lab (real agents probing, real health service)', () => {
  it('publishes one health record format that the health service decodes', async () => {
    const kv = createKvClient({ endpoints: [etcd.endpoint] });
    try {
      const keys = keySchema(ROOT);
      for (const node of lab.nodes) {
        const record = decodeRecord(healthEndpointRecord, 'health endpoint', (await kv.get(keys.health(node.name)).string()) ?? '');
        // The agent made the health endpoint (the lab did not) and publishes its address and port.
        expect(record).toMatchObject({ node: node.name, nodeIP: node.ip, agentPort: 4240, healthIP: node.healthIp, healthPort: 4240 });
      }
    } finally {
      kv.close();
    }
    expect(serviceLog).not.toContain('undecodable');
  });

  it('sees every node reachable, detects a cut link, streams it, and sees the node come back', async () => {
    const plan = probePlan(N);
    const allPathsUp = async () => {
      const view = await client.getClusterHealth();
      return (
        view.summary.total === N &&
        view.summary.reachable === N &&
        view.nodes.every((n) => n.reachability === 'REACHABILITY_REACHABLE' && n.host.icmp.ok && n.host.http.ok && n.endpoint.icmp.ok && n.endpoint.http.ok)
      );
    };
    await expect.poll(allPathsUp, { timeout: 30_000, interval: 250 }).toBe(true);
    const victim = lab.nodes[2]!;
    expect(await client.getNodeHealth(victim.name)).toMatchObject({ host: { ip: victim.ip }, endpoint: { ip: victim.healthIp } });

    const cutAt = Date.now();
    await lab.cutLink(victim.name);
    const down = () => changes.find((c) => c.node === victim.name && c.current === 'REACHABILITY_UNREACHABLE' && c.timeUnixMs >= cutAt);
    // The documented worst case plus a wide margin for a loaded 2-core machine: behaviour, not a timing assertion.
    await expect.poll(down, { timeout: plan.detectionMs + 15_000, interval: 100 }).toBeDefined();
    process.stderr.write(`${victim.name} declared unreachable ${down()!.timeUnixMs - cutAt} ms after its link was cut (documented bound ${plan.detectionMs} ms)\n`);
    const view = await client.getClusterHealth();
    expect(view.summary.unreachable).toEqual([victim.name]);
    expect(view.nodes.find((n) => n.name === victim.name)?.host.icmp).toMatchObject({ ok: false });
    // The victim's own failures (one witness each) cannot get the others declared unreachable.
    for (const other of lab.nodes.slice(0, 2)) expect((await client.getNodeHealth(other.name)).reachability).not.toBe('REACHABILITY_UNREACHABLE');

    const restoredAt = Date.now();
    await lab.restoreLink(victim.name);
    const up = () => changes.find((c) => c.node === victim.name && c.previous === 'REACHABILITY_UNREACHABLE' && c.current === 'REACHABILITY_REACHABLE' && c.timeUnixMs >= restoredAt);
    await expect.poll(up, { timeout: plan.detectionMs + 15_000, interval: 100 }).toBeDefined();
    process.stderr.write(`${victim.name} reachable again ${up()!.timeUnixMs - restoredAt} ms after its link came back\n`);
    // Back to a clean view: the victim's own failed rounds from while it was cut off are superseded by its successes.
    await expect.poll(async () => (await client.getClusterHealth({ summaryOnly: true })).summary, { timeout: 30_000, interval: 250 }).toMatchObject({ reachable: N, total: N, unreachable: [], brokenPaths: [] });
  });

  /** `sluice health status` in-process: exit code and text. */
  const sluice = async (...args: string[]) => {
    let out = '';
    let err = '';
    const code = await runCli(['health', 'status', '--etcd-endpoints', etcd.endpoint, '--health', address, ...args], {
      stdout: (t) => void (out += t), stderr: (t) => void (err += t), env: { SLUICE_DEMO_STATE: '/nonexistent/demo.json' }, cwd: '/',
    });
    return { code, out, err };
  };
  const since = (t: number, match: (c: HealthChange) => boolean) => () => changes.find((c) => c.timeUnixMs >= t && match(c));

  it('is read by an independent client through reflection, and by the standard health service', async () => {
    const independent = new ReflectionClient(address);
    try {
      expect(await independent.check('')).toBe('SERVING');
      expect(await independent.listServices()).toContain('sluice.health.v1.ClusterHealth');
      const view = await independent.call('sluice.health.v1.ClusterHealth', 'GetClusterHealth', {});
      expect((view.nodes as Array<{ name: string }>).map((n) => n.name)).toEqual(lab.nodes.map((n) => n.name).sort());
    } finally {
      independent.close();
    }
    // The previous test cut a link: a node can stay suspect (one reporter's failed round not yet superseded) for a
    // round or two after the summary is clean. Wait for the view to settle, then read it whole.
    let text = await sluice('--node', lab.nodes[0]!.name);
    await expect.poll(async () => (text = await sluice('--node', lab.nodes[0]!.name)).out, { timeout: 30_000, interval: 500 }).toContain(`${lab.nodes[0]!.name} (localhost): reachable`);
    expect(text.code).toBe(0);
    expect(text.out).toContain(`Nodes:\n  ${lab.nodes[0]!.name} (localhost): reachable\n    Host connectivity to ${lab.nodes[0]!.ip}:\n      ICMP to stack:   OK, RTT=`);
    expect(text.out).toMatch(/HTTP to agent: {3}OK, RTT=/);
    expect(text.out).toContain(`Endpoint connectivity to ${lab.nodes[0]!.healthIp}:`);
    expect(text.out.split('Endpoint connectivity to')[1]).toMatch(/^ [\d.]+:\n {6}ICMP to stack: {3}OK, RTT=[^\n]+\n {6}HTTP to agent: {3}OK, RTT=/);
    expect(text.out).toContain(`Cluster health: ${N}/${N} reachable`);
  });

  it('shows a health endpoint that is down separately from its node', async () => {
    const target = lab.nodes[0]!;
    const at = Date.now();
    // Everything sent to the endpoint dropped inside its namespace (a link set down would also take its routes).
    await inNetns(target.healthNetns!, 'iptables', ['-I', 'INPUT', '-j', 'DROP']);
    try {
      await expect.poll(since(at, (c) => c.node === target.name && c.health.endpointReachability === 'REACHABILITY_UNREACHABLE'), { timeout: 30_000, interval: 200 }).toBeDefined();
      const view = await client.getNodeHealth(target.name);
      expect(view).toMatchObject({ reachability: 'REACHABILITY_REACHABLE', endpointReachability: 'REACHABILITY_UNREACHABLE', endpoint: { icmp: { ok: false } } });
      expect((await client.getClusterHealth({ summaryOnly: true })).summary).toMatchObject({ reachable: N, endpointUnreachable: [target.name] });
      const text = await sluice('--verbose');
      expect(text.out).toContain(`  ${target.name}: reachable, endpoint unreachable`);
      expect(text.out).toContain(`Endpoint health: ${N - 1}/${N} reachable (unreachable: ${target.name})`);
    } finally {
      await inNetns(target.healthNetns!, 'iptables', ['-D', 'INPUT', '-j', 'DROP']);
    }
    await expect.poll(async () => (await client.getNodeHealth(target.name)).endpointReachability, { timeout: 30_000, interval: 250 }).toBe('REACHABILITY_REACHABLE');
  });

  it('shows a one-way block between two nodes while the others reach both', async () => {
    const [a, b] = [lab.nodes[0]!, lab.nodes[1]!];
    const rule = ['INPUT', '-s', a.ip, '-j', 'DROP'];
    const at = Date.now();
    // b drops what a sends it: a's probes of b fail, and so do b's probes of a (their answers are dropped).
    await inNetns(b.netns, 'iptables', ['-I', ...rule]);
    try {
      await expect.poll(since(at, (c) => c.node === b.name && c.health.unreachableFrom.includes(a.name)), { timeout: 30_000, interval: 200 }).toBeDefined();
      await expect.poll(async () => (await client.getNodeHealth(b.name)).reachability, { timeout: 15_000, interval: 200 }).toBe('REACHABILITY_REACHABLE');
      expect((await client.getNodeHealth(b.name)).unreachableFrom).toEqual([a.name]);
      const summary = (await client.getClusterHealth({ summaryOnly: true })).summary;
      expect(summary.brokenPaths).toContain(`${a.name}->${b.name}`);
      expect(summary.unreachable).toEqual([]);
      const text = await sluice('--node', a.name);
      expect(text.out).toContain(`  ${b.name}: reachable, unreachable from ${a.name} (localhost) (others reach it)`);
    } finally {
      await inNetns(b.netns, 'iptables', ['-D', ...rule]);
    }
    await expect.poll(async () => (await client.getClusterHealth({ summaryOnly: true })).summary.brokenPaths, { timeout: 30_000, interval: 250 }).toEqual([]);
  });

  it('keeps a node whose agent died: agent not running while its host answers, unreachable once it dies, a removal once it is deleted', async () => {
    const victim = lab.nodes[2]!;
    let at = Date.now();
    await lab.killAgent(victim.name);
    await expect.poll(since(at, (c) => c.node === victim.name && c.health.agent === 'AGENT_STATE_NOT_RUNNING'), { timeout: 30_000, interval: 200 }).toBeDefined();
    expect(await client.getNodeHealth(victim.name)).toMatchObject({ reachability: 'REACHABILITY_REACHABLE', agent: 'AGENT_STATE_NOT_RUNNING', host: { icmp: { ok: true }, http: { ok: false } } });
    expect((await sluice()).out).toContain(`  ${victim.name}: reachable, agent not running`);
    // Its health record goes with its lease; the node stays a member.
    const kv = createKvClient({ endpoints: [etcd.endpoint] });
    try {
      await expect.poll(async () => (await kv.get(keySchema(ROOT).health(victim.name)).string()) === null, { timeout: 60_000, interval: 500 }).toBe(true);
    } finally {
      kv.close();
    }
    await new Promise((resolve) => setTimeout(resolve, 3000));
    expect((await client.getClusterHealth({ summaryOnly: true })).summary).toMatchObject({ total: N, agentNotRunning: [victim.name] });
    expect((await client.getNodeHealth(victim.name)).agent).toBe('AGENT_STATE_NOT_RUNNING');

    at = Date.now();
    await lab.cutLink(victim.name);
    await expect.poll(since(at, (c) => c.node === victim.name && c.current === 'REACHABILITY_UNREACHABLE'), { timeout: 30_000, interval: 200 }).toBeDefined();
    expect((await client.getClusterHealth({ summaryOnly: true })).summary).toMatchObject({ total: N, unreachable: [victim.name] });
    expect((await sluice()).out).toContain(`  ${victim.name}: unreachable`);

    at = Date.now();
    sim.store.delete('nodes', '', victim.name);
    await expect.poll(since(at, (c) => c.node === victim.name && c.removed), { timeout: 30_000, interval: 200 }).toMatchObject({ previous: 'REACHABILITY_UNREACHABLE', current: 'REACHABILITY_UNSPECIFIED' });
    expect((await client.getClusterHealth({ summaryOnly: true })).summary.total).toBe(N - 1);
    await expect(client.getNodeHealth(victim.name)).rejects.toMatchObject({ code: 5 });
  });
});
