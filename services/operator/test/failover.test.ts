import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { etcdRecords, startEnv, waitFor, waitForMirror, type Env } from './env.ts';

const MAIN = fileURLToPath(new URL('../src/main.ts', import.meta.url));
const LEASE_TTL = 3;

/**
 * The operator as its own process, exactly as it is deployed. Node loads the TypeScript itself (`--import tsx`): the
 * tsx CLI would run it in a grandchild that a SIGKILL to the CLI leaves running.
 */
const logs = new WeakMap<ChildProcess, () => string>();

function startOperator(env: Env, identity: string, extra: string[] = []): ChildProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN, '--etcd-endpoints', env.etcd.endpoint, '--kube-server', env.sim.url, '--identity', identity, '--lease-ttl', String(LEASE_TTL), '--metrics-port', '0', '--log-level', 'warn', ...extra], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (chunk) => (stderr += String(chunk)));
  logs.set(child, () => stderr);
  child.once('exit', (code, signal) => {
    if (code && code !== 0 && signal === null) process.stderr.write(`operator ${identity} exited ${code}: ${stderr}\n`);
  });
  children.add(child);
  return child;
}

function kill(child: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill(signal);
  });
}

async function leaderIdentity(env: Env): Promise<string | undefined> {
  const value = await env.client.get(env.keys.operatorHeartbeat()).string();
  return value ? (JSON.parse(value) as { identity: string }).identity : undefined;
}

function exited(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve({ code: child.exitCode, signal: child.signalCode });
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
}

const children = new Set<ChildProcess>();
let env: Env;
beforeAll(async () => {
  env = await startEnv({ nodes: 30, podsPerNode: 10, services: 4 });
});
afterEach(async () => {
  await Promise.all([...children].map((c) => kill(c, 'SIGKILL')));
  children.clear();
});
afterAll(async () => {
  await env?.close();
});

describe('operator restarts and failover (processes)', () => {
  it('after a SIGKILL and changes while it was down, a restart makes etcd match exactly and rewrites nothing else', async () => {
    const first = startOperator(env, 'op-a');
    const before = await waitForMirror(env, 60_000);
    await kill(first, 'SIGKILL');

    const pods = env.sim.store.objectsIn('pods');
    const deleted = pods.slice(0, 10);
    for (const pod of deleted) env.sim.cluster.deletePod(pod.namespace, pod.name);
    const created = Array.from({ length: 5 }, (_, i) => env.sim.cluster.createPod({ nodeName: `node-0000${i + 1}` }));

    startOperator(env, 'op-b');
    const after = await waitForMirror(env, 60_000);
    for (const pod of deleted) expect(after.has(env.keys.pod(pod.namespace, pod.name))).toBe(false);
    for (const pod of created) expect(after.has(env.keys.pod(pod.namespace, pod.name))).toBe(true);
    // Every record that did not change kept its modRevision: nothing was rewritten.
    let untouched = 0;
    for (const [key, record] of after) {
      const old = before.get(key);
      if (old && old.value === record.value) {
        expect(record.modRevision, key).toBe(old.modRevision);
        untouched++;
      }
    }
    expect(untouched).toBeGreaterThan(300);
  }, 180_000);

  it('a warm standby follows Kubernetes without writing, and takes over without relisting; a change made during the handover lands', async () => {
    const lists = () => env.sim.server.stats.requests['list 200'] ?? 0;
    const listsAtStart = lists();
    const a = startOperator(env, 'op-leader');
    await waitFor('op-leader to lead', async () => (await leaderIdentity(env)) === 'op-leader', 60_000);
    const led = await waitForMirror(env, 60_000);
    const listsBefore = lists();
    startOperator(env, 'op-standby');
    // The standby lists every kind once, page by page, as the leader did ...
    await waitFor('the standby to list the four kinds', () => lists() >= listsBefore + (listsBefore - listsAtStart), 60_000);
    // ... and writes none of it while the leader lives.
    const standing = await etcdRecords(env.client, env.keys);
    expect([...standing].map(([k, r]) => [k, r.modRevision])).toEqual([...led].map(([k, r]) => [k, r.modRevision]));
    expect(await leaderIdentity(env)).toBe('op-leader');
    const listsBeforeFailover = lists();

    await kill(a, 'SIGKILL');
    env.sim.cluster.labelNode('node-00003', { handover: 'yes' });
    const gone = env.sim.store.objectsIn('pods')[20]!;
    env.sim.cluster.deletePod(gone.namespace, gone.name);

    await waitFor('op-standby to lead', async () => (await leaderIdentity(env)) === 'op-standby', 30_000);
    const records = await waitForMirror(env, 30_000);
    expect(records.get(env.keys.node('node-00003'))?.value).toContain('"handover":"yes"');
    expect(records.has(env.keys.pod(gone.namespace, gone.name))).toBe(false);
    expect((await etcdRecords(env.client, env.keys)).size).toBe(records.size);
    // The new leader wrote from what its informers already held: Kubernetes was not listed again.
    expect(lists()).toBe(listsBeforeFailover);
  }, 180_000);
});

describe('operator shutdown (process)', () => {
  it('ends on SIGTERM within its grace period while etcd hangs and kube-sim is gone, logging what it abandons', async () => {
    const own = await startEnv({ nodes: 10, podsPerNode: 5, services: 2 });
    let paused = false;
    try {
      const child = startOperator(own, 'op-stuck', ['--shutdown-grace', '2', '--log-level', 'info']);
      await waitForMirror(own, 60_000);
      // etcd stops answering (SIGSTOP: its connections stay open and every request hangs), with a write queued.
      process.kill(own.etcd.pid!, 'SIGSTOP');
      paused = true;
      const nodeWatch = () => own.sim.store.watchers().find((w) => w.resource.includes('nodes') && !w.closed);
      const sentBefore = nodeWatch()?.events ?? 0;
      own.sim.cluster.labelNode('node-00002', { queued: 'while-etcd-hangs' });
      await waitFor('the change to be sent to the operator', () => (nodeWatch()?.events ?? 0) > sentBefore);
      await own.sim.close();
      const exit = exited(child);
      child.kill('SIGTERM');
      const { code, signal } = await exit;
      // It exited by itself (SIGKILL was never needed), and said what it gave up.
      expect(signal).toBeNull();
      expect([0, 1]).toContain(code);
      const lines = logs.get(child)!().split('\n').filter(Boolean).map((line) => JSON.parse(line) as { msg: string });
      expect(lines.map((l) => l.msg)).toContain('shutdown: abandoned a step that did not finish within the grace period');
    } finally {
      if (paused) process.kill(own.etcd.pid!, 'SIGCONT');
      await own.client.close();
      await own.etcd.stop();
    }
  }, 120_000);
});
