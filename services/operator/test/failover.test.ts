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
function startOperator(env: Env, identity: string): ChildProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN, '--etcd', env.etcd.endpoint, '--kube-server', env.sim.url, '--identity', identity, '--lease-ttl', String(LEASE_TTL), '--metrics-port', '0', '--log-level', 'warn'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (chunk) => (stderr += String(chunk)));
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

  it('a standby takes over within the lease TTL after the leader dies, and a change made during the handover lands', async () => {
    const a = startOperator(env, 'op-leader');
    await waitFor('op-leader to lead', async () => (await leaderIdentity(env)) === 'op-leader', 60_000);
    await waitForMirror(env, 60_000);
    startOperator(env, 'op-standby');
    // The standby must not write while the leader lives.
    await new Promise((resolve) => setTimeout(resolve, 1500));
    expect(await leaderIdentity(env)).toBe('op-leader');

    await kill(a, 'SIGKILL');
    const killedAt = Date.now();
    env.sim.cluster.labelNode('node-00003', { handover: 'yes' });
    const gone = env.sim.store.objectsIn('pods')[20]!;
    env.sim.cluster.deletePod(gone.namespace, gone.name);

    await waitFor('op-standby to lead', async () => (await leaderIdentity(env)) === 'op-standby', 30_000);
    // The lease expires TTL seconds after the last keep-alive; the standby needs one more round trip to notice.
    expect(Date.now() - killedAt).toBeLessThan((LEASE_TTL + 3) * 1000);
    const records = await waitForMirror(env, 30_000);
    expect(records.get(env.keys.node('node-00003'))?.value).toContain('"handover":"yes"');
    expect(records.has(env.keys.pod(gone.namespace, gone.name))).toBe(false);
    expect((await etcdRecords(env.client, env.keys)).size).toBe(records.size);
  }, 180_000);
});
