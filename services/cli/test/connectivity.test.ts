/**
 * The connectivity command's plan, rendering and exit code. The probes themselves run for real in the demo's
 * end-to-end test (services/demo); here a runner stands in for them so that a failure can be chosen.
 */
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { writeDemoState, type DemoState, type DemoStateInput } from '@sluice/demo-state';
import { RECORD_VERSION, type HealthEndpointRecord } from '@sluice/kvstore';
import { runCli } from '../src/cli.ts';
import { planTests, type Probe } from '../src/connectivity.ts';
import { capture, tempDir } from './helpers.ts';

const nodes = ['n1', 'n2', 'n3'];
const input: DemoStateInput = {
  version: 1,
  phase: 'ready',
  pid: process.pid,
  startedAt: '2026-11-21T00:00:00.000Z',
  // Nothing listens there: the plan must not need etcd (the health records are optional).
  etcd: { endpoints: ['http://127.0.0.1:9'] },
  nodes: nodes.map((name, i) => ({ name, nodeIP: `10.0.0.${i + 1}`, netns: `sl-t-${name}`, pinDir: `/sys/fs/bpf/sluice/t/${name}` })),
  pods: nodes.flatMap((node, i) => [1, 2].map((p) => ({ name: `web-${p}`, namespace: `ns-${node}`, ip: `10.200.${i}.${p + 1}`, netns: `sl-t-${node}-p${p}`, node, port: 8080 }))),
};

const describeProbe = (p: Probe) => (p.kind === 'http' ? `http ${p.netns} ${p.url}` : p.kind === 'icmp' ? `icmp ${p.netns} ${p.ip}` : `health ${p.address}`);

describe('sluice connectivity test', () => {
  it('plans same-node, cross-node (both directions), pod-to-host and health paths', () => {
    const state = { ...input, simNodes: 0, processes: [], namespaces: [] } as unknown as DemoState;
    const health = new Map<string, HealthEndpointRecord>(
      nodes.map((node, i) => [node, { v: RECORD_VERSION, node, nodeIP: `10.0.0.${i + 1}`, healthIP: `10.200.${i}.200`, agentPort: 4240 }]),
    );
    const tests = planTests(state, health, '127.0.0.1:4250');
    const count = (scenario: string) => tests.filter((t) => t.scenario === scenario).length;
    expect(count('pod-to-pod (same node)')).toBe(3);
    expect(count('pod-to-pod (cross node)')).toBe(6);
    expect(count('pod-to-host (own node)')).toBe(3);
    expect(count('pod-to-host (remote node)')).toBe(3);
    expect(count('health (agent)')).toBe(3);
    expect(count('health (endpoint)')).toBe(3);
    expect(count('health (cluster view)')).toBe(1);
    expect(tests.map((t) => describeProbe(t.probe))).toContain('http sl-t-n1-p1 http://10.200.0.3:8080/');
    expect(tests.map((t) => describeProbe(t.probe))).toContain('http sl-t-n1-p1 http://10.200.1.2:8080/');
    expect(tests.map((t) => describeProbe(t.probe))).toContain('http sl-t-n1-p1 http://10.0.0.2:4240/hello');
    expect(tests.map((t) => describeProbe(t.probe))).toContain('icmp sl-t-n3-p1 10.200.0.200');
    // The HTTP checks name whom the answer must come from.
    expect(tests.find((t) => t.probe.kind === 'http' && t.probe.url === 'http://10.0.0.2:4240/hello')?.probe).toMatchObject({ expect: 'n2' });
    // A health record with the endpoint's port adds the endpoint's HTTP check.
    const withPort = new Map([...health].map(([node, r]) => [node, { ...r, healthPort: 4240 }]));
    const endpointHttp = planTests(state, withPort, undefined).filter((t) => t.scenario === 'health (endpoint)' && t.probe.kind === 'http');
    expect(endpointHttp.map((t) => describeProbe(t.probe))).toContain('http sl-t-n3-p1 http://10.200.0.200:4240/hello');
    expect(endpointHttp).toHaveLength(3);
  });

  it('all probes pass: a ✅ line each, the summary, exit 0', async () => {
    const path = join(tempDir('sluice-conn-'), 'demo.json');
    await writeDemoState(path, input);
    const seen: string[] = [];
    const c = capture({ statePath: path, probeRunner: async (p) => (seen.push(describeProbe(p)), { ok: true, detail: 'HTTP 200' }) });
    expect(await runCli(['connectivity', 'test'], c.io)).toBe(0);
    const lines = c.out().trimEnd().split('\n');
    expect(lines[0]).toBe('ℹ️  Connectivity test: 3 nodes, 6 pods, 15 tests');
    expect(lines.filter((l) => l.startsWith('✅ ['))).toHaveLength(15);
    expect(lines).toContain('✅ [pod-to-pod (same node)] ns-n1/web-1 → ns-n1/web-2 on n1: HTTP 200');
    expect(lines.at(-1)).toBe('✅ All 15 tests successful.');
    expect(seen).toHaveLength(15);
  });

  it('one failing probe: its ❌ line, the failures listed, exit 1', async () => {
    const path = join(tempDir('sluice-conn-'), 'demo.json');
    await writeDemoState(path, input);
    const runner = async (p: Probe) => (p.kind === 'http' && p.url.includes('10.200.2.') ? { ok: false, detail: 'curl: (28) Connection timed out' } : { ok: true, detail: 'HTTP 200' });
    const c = capture({ statePath: path, probeRunner: runner });
    expect(await runCli(['connectivity', 'test'], c.io)).toBe(1);
    expect(c.out()).toContain('❌ [pod-to-pod (cross node)] ns-n1/web-1 (n1) → ns-n3/web-1 (n3): curl: (28) Connection timed out\n');
    expect(c.out()).toMatch(/❌ 3\/15 tests failed:\n( {3}- .*\n){3}$/);
  });

  it('a demo without lab pods cannot be tested, and says why', async () => {
    const path = join(tempDir('sluice-conn-'), 'demo.json');
    await writeDemoState(path, { ...input, nodes: [], pods: [], labError: 'the lab needs root' });
    const c = capture({ statePath: path });
    expect(await runCli(['connectivity', 'test'], c.io)).toBe(1);
    expect(c.err()).toBe('sluice: the demo has no lab pods to test from (the lab needs root)\n');
  });
});

describe('sluice connectivity test: skipped tests', () => {
  it('a skipped test is shown and counted, and does not fail the run', async () => {
    const path = join(tempDir('sluice-conn-'), 'demo.json');
    await writeDemoState(path, { ...input, health: { address: '127.0.0.1:9' } });
    const runner = async (p: Probe) => (p.kind === 'health' ? { ok: true, skipped: true, detail: 'skipped: no agent has reported probes to the health service yet' } : { ok: true, detail: 'HTTP 200' });
    const c = capture({ statePath: path, probeRunner: runner });
    expect(await runCli(['connectivity', 'test'], c.io)).toBe(0);
    expect(c.out()).toContain('⏭️  [health (cluster view)] health service 127.0.0.1:9 sees n1, n2, n3 reachable: skipped: no agent has reported probes to the health service yet\n');
    expect(c.out()).toMatch(/✅ All 15 tests successful, 1 test skipped\.\n$/);
  });
});

describe('HTTP checks', () => {
  it('pass only on a 2xx from the pod asked for', async () => {
    const { judgeHttp } = await import('../src/connectivity.ts');
    expect(judgeHttp(0, 'web-2-1\n200', '', 'web-2-1')).toEqual({ ok: true, detail: 'HTTP 200 from web-2-1' });
    expect(judgeHttp(0, 'web-3-1\n200', '', 'web-2-1')).toEqual({ ok: false, detail: 'HTTP 200 from "web-3-1", not web-2-1' });
    expect(judgeHttp(0, 'oops\n503', '', 'web-2-1')).toEqual({ ok: false, detail: 'HTTP 503' });
    expect(judgeHttp(7, '', 'curl: (7) Failed to connect', 'web-2-1')).toMatchObject({ ok: false, detail: 'curl: (7) Failed to connect' });
  });
});
