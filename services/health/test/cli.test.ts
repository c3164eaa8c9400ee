/** `sluice health status` and `sluice health watch` (services/cli, in-process) against a real service. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ProbeResult } from '@sluice/health-api';
import { createLogger } from '@sluice/log';
import { runCli } from '../../cli/src/cli.ts';
import { Aggregator, startHealthServer, type HealthServer } from '../src/index.ts';

let server: HealthServer;
let aggregator: Aggregator;
beforeAll(async () => {
  aggregator = new Aggregator({ staleMs: 60_000 });
  aggregator.setNodes(['node-1', 'node-2', 'node-3', 'node-4'].map((name, i) => ({ name, hostIP: `10.0.0.${i + 1}`, endpointIP: `10.200.0.${i + 1}` })));
  server = await startHealthServer({ aggregator, address: '127.0.0.1:0', insecure: true, logger: createLogger({ component: 'test', level: 'silent' }) });
  server.setServing(true);
});
afterAll(async () => {
  await server?.stop(100);
});

const run = async (...args: string[]) => {
  let out = '';
  let err = '';
  const code = await runCli([...args, '--etcd-endpoints', 'http://127.0.0.1:9', '--health', `127.0.0.1:${server.port}`], {
    stdout: (t) => void (out += t), stderr: (t) => void (err += t), env: { SLUICE_DEMO_STATE: '/nonexistent/demo.json' }, cwd: '/',
  });
  return { code, out, err };
};
const host = (target: string, ok: boolean, time = Date.now()): ProbeResult[] => [
  { target, kind: 'PROBE_KIND_HOST_ICMP', ip: '10.0.0.9', ok, rttUs: ok ? 412 : 0, error: ok ? '' : 'Connection timed out', timeUnixMs: time },
  { target, kind: 'PROBE_KIND_HOST_HTTP', ip: '10.0.0.9', ok, rttUs: ok ? 1208 : 0, error: ok ? '' : 'Connection timed out', timeUnixMs: time },
];

describe('sluice health', () => {
  it('status prints the cilium-health shape, the asking node first as localhost', async () => {
    for (const target of ['node-1', 'node-3']) aggregator.ingest('node-2', host(target, true));
    const r = await run('health', 'status', '--node', 'node-3');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^Probe time: {3}\d{4}-/);
    expect(r.out).toContain('Nodes:\n  node-3 (localhost): reachable\n    Host connectivity to 10.0.0.3:\n      ICMP to stack:   OK, RTT=412µs\n      HTTP to agent:   OK, RTT=1.208ms\n    Endpoint connectivity to 10.200.0.3:\n');
    expect((await run('health', 'status', '--node', 'node-9')).code).toBe(1);
    expect((await run('health', 'status', '--succinct', '--verbose')).code).toBe(2);
  });

  it('watch streams the changes as lines or JSON objects', async () => {
    const watching = run('health', 'watch', '--count', '2', '-o', 'json');
    await expect.poll(() => server.stats().watchers).toBe(1);
    const t = Date.now() + 1;
    for (const reporter of ['node-1', 'node-2', 'node-3']) aggregator.ingest(reporter, host('node-4', false, t));
    const r = await watching;
    expect(r.code).toBe(0);
    const events = r.out.trim().split('\n').map((l) => JSON.parse(l) as { node: string; current: string });
    expect(events.map((e) => [e.node, e.current])).toEqual([['node-4', 'suspect'], ['node-4', 'unreachable']]);
    await expect.poll(() => server.stats().watchers).toBe(0);
    const text = run('health', 'watch', '--count', '1');
    await expect.poll(() => server.stats().watchers).toBe(1);
    aggregator.setNodes(['node-1', 'node-2', 'node-3'].map((name, i) => ({ name, hostIP: `10.0.0.${i + 1}`, endpointIP: '' })));
    expect((await text).out).toMatch(/ {2}node-4: unreachable → removed \(left the cluster\)\n$/);
  });
});
