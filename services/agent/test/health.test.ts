/**
 * The agent's cluster-health pieces that live in a node namespace: the helper (health-listener.ts) answers GET /hello
 * on the node IP and sends HTTP probes from inside the namespace, and ICMP probes run under nsenter; plus the
 * --health-service flags. The whole loop (agents, health service, a cut link) is test/lab/test/health.test.ts.
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { NetLab } from '@sluice/netns';
import { ping } from '@sluice/prober';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startHealthListener, type HealthListener } from '../src/health-listener.ts';

const MAIN = fileURLToPath(new URL('../src/main.ts', import.meta.url));
const LOADER = fileURLToPath(new URL('../../../node_modules/tsx/dist/loader.mjs', import.meta.url));
const agent = (...args: string[]) => spawnSync(process.execPath, ['--import', `file://${LOADER}`, MAIN, ...args], { encoding: 'utf8', timeout: 30_000 });

const lab = new NetLab();
const a = lab.name('a');
const b = lab.name('b');
const helpers: HealthListener[] = [];

beforeAll(async () => {
  await lab.addNetns(a);
  await lab.addNetns(b);
  await lab.addVeth({ ns: a, name: 'eth0' }, { ns: b, name: 'eth0' });
  await lab.addAddr(a, 'eth0', '10.93.0.1/24');
  await lab.addAddr(b, 'eth0', '10.93.0.2/24');
});

afterAll(async () => {
  for (const h of helpers) h.stop();
  await lab.cleanup();
});

describe('health helper in the node namespace', () => {
  it('answers probes on the node IP and probes peers from inside its namespace', async () => {
    const server = await startHealthListener(b, 4240, 'node-b');
    const prober = await startHealthListener(a, 0, 'node-a');
    helpers.push(server, prober);
    const ok = await prober.httpProbe('10.93.0.2', 4240, 1000);
    expect(ok).toMatchObject({ ok: true, error: '' });
    expect(ok.rttUs).toBeGreaterThan(0);
    expect(await prober.httpProbe('10.93.0.2', 4241, 1000)).toMatchObject({ ok: false, error: 'Connection refused' });
    // Concurrent probes are matched to their answers.
    const many = await Promise.all([4240, 4241, 4240].map((port) => prober.httpProbe('10.93.0.2', port, 1000)));
    expect(many.map((o) => o.ok)).toEqual([true, false, true]);
  });

  it('rate-limits the health port per source: a flood from one namespace is cut off, other sources still get answers', async () => {
    const server = await startHealthListener(b, 4250, 'node-b');
    const flooder = await startHealthListener(a, 0, 'node-a');
    const local = await startHealthListener(b, 0, 'node-b');
    helpers.push(server, flooder, local);
    const flood = await Promise.all(Array.from({ length: 60 }, () => flooder.httpProbe('10.93.0.2', 4250, 1000)));
    const answered = flood.filter((o) => o.ok).length;
    // The burst gets through, the rest is refused before anything is parsed.
    expect(answered).toBeGreaterThanOrEqual(1);
    expect(answered).toBeLessThan(60);
    expect(flood.filter((o) => !o.ok).every((o) => /reset|refused|socket hang up|timed out/i.test(o.error))).toBe(true);
    // Another source (the node's own loopback) is not held to the flooder's budget.
    expect(await local.httpProbe('127.0.0.1', 4250, 1000)).toMatchObject({ ok: true });
  });

  it('reports a timeout for a peer that does not answer, and a failure once the helper is gone', async () => {
    const prober = await startHealthListener(a, 0, 'node-a');
    helpers.push(prober);
    await lab.exec(b, 'ip', ['link', 'set', 'eth0', 'down']);
    try {
      expect(await prober.httpProbe('10.93.0.2', 4240, 500)).toMatchObject({ ok: false });
    } finally {
      await lab.exec(b, 'ip', ['link', 'set', 'eth0', 'up']);
    }
    const exited = new Promise((resolve) => prober.child!.once('exit', resolve));
    prober.stop();
    await exited;
    expect(await prober.httpProbe('10.93.0.2', 4240, 500)).toMatchObject({ ok: false, error: 'health helper exited' });
  });

  it('sends ICMP probes from the node namespace (ping under nsenter)', async () => {
    expect(await ping('10.93.0.2', { netns: a, timeoutMs: 1000 })).toMatchObject({ ok: true, error: '' });
    expect((await ping('10.93.0.9', { netns: a, timeoutMs: 1000 })).ok).toBe(false);
  });
});

describe('--health-service flags', () => {
  it('are described by --help', () => {
    const r = agent('--help');
    expect(r.status).toBe(0);
    for (const f of ['--health-service', '--health-tls-ca', '--health-tls-cert', '--health-tls-key', '--health-tls-server-name']) expect(r.stdout).toContain(f);
  });

  it.each([
    [['--health-service', 'no-port'], /--health-service/],
    [['--health-service', 'h:4250', '--health-tls-ca', 'ca.pem', '--health-tls-cert', 'c.pem'], /--health-tls-cert/],
    [['--health-service', 'h:4250', '--health-tls-cert', 'c.pem', '--health-tls-key', 'k.pem'], /--health-tls-ca/],
    [['--health-tls-ca', 'ca.pem'], /--health-service/],
  ])('bad flags %j: exit 2 with one line', (args, pattern) => {
    const r = agent('--node-name', 'n1', '--etcd-endpoints', 'http://127.0.0.1:2379', ...args);
    expect(r.status).toBe(2);
    const lines = r.stderr.split('\n').filter((l) => l.trim() && !l.startsWith('npm warn'));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(pattern);
  });
});
