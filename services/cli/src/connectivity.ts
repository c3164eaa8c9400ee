/**
 * `sluice connectivity test`: probes from inside the lab's pods (their network namespaces, entered with nsenter) to
 * other pods on the same node and across nodes, to nodes, and along the health paths, plus the health service's
 * view. One ✅/❌ line per test, a summary, and a verdict the caller turns into the exit code.
 */
import { execFile } from 'node:child_process';
import pLimit from 'p-limit';
import type { DemoPod, DemoState } from '@sluice/demo-state';
import { createHealthClient } from '@sluice/health-api';
import { decodeRecord, healthEndpointRecord, type HealthEndpointRecord } from '@sluice/kvstore';
import { openCluster } from './cluster.ts';
import { oneLine } from './errors.ts';
import type { Target } from './target.ts';

export type Probe =
  /** `expect`: the body must be this name (the pod's web server answers with its pod name, a health port with its node's). */
  | { kind: 'http'; netns: string; url: string; expect?: string }
  | { kind: 'icmp'; netns: string; ip: string }
  | { kind: 'health'; address: string; nodes: string[] };

export interface PlannedTest {
  scenario: string;
  description: string;
  probe: Probe;
}

export interface ProbeOutcome {
  ok: boolean;
  detail: string;
  /** Nothing to judge yet (e.g. no agent has reported probes): neither a pass nor a failure, and said so. */
  skipped?: boolean;
}

export interface TestResult extends PlannedTest, ProbeOutcome {
  ms: number;
}

export type ProbeRunner = (probe: Probe, timeoutMs: number) => Promise<ProbeOutcome>;

const podName = (p: DemoPod) => `${p.namespace}/${p.name}`;

/** The tests for a demo: every scenario from at least one pod of each node, every node pair once in each direction. */
export function planTests(demo: DemoState, health: Map<string, HealthEndpointRecord>, healthAddress: string | undefined): PlannedTest[] {
  const tests: PlannedTest[] = [];
  const podsOf = (node: string) => demo.pods.filter((p) => p.node === node).sort((a, b) => a.name.localeCompare(b.name));
  // Any 2xx is not enough: the answer must come from the pod asked for (a stale route or a wrong NAT could hand the
  // request to another pod, which answers 200 too).
  const http = (from: DemoPod, to: DemoPod): Probe => ({ kind: 'http', netns: from.netns, url: `http://${to.ip}:${to.port}/`, expect: to.name });
  for (const node of demo.nodes) {
    const [a, b] = podsOf(node.name);
    if (a && b) tests.push({ scenario: 'pod-to-pod (same node)', description: `${podName(a)} → ${podName(b)} on ${node.name}`, probe: http(a, b) });
  }
  for (const from of demo.nodes) {
    for (const to of demo.nodes) {
      if (from === to) continue;
      const [a] = podsOf(from.name);
      const [b] = podsOf(to.name);
      if (a && b) tests.push({ scenario: 'pod-to-pod (cross node)', description: `${podName(a)} (${from.name}) → ${podName(b)} (${to.name})`, probe: http(a, b) });
    }
  }
  for (const [i, node] of demo.nodes.entries()) {
    const [a] = podsOf(node.name);
    if (!a) continue;
    tests.push({ scenario: 'pod-to-host (own node)', description: `${podName(a)} → ${node.name} ${node.nodeIP} (ICMP)`, probe: { kind: 'icmp', netns: a.netns, ip: node.nodeIP } });
    const other = demo.nodes[(i + 1) % demo.nodes.length];
    if (other && other !== node) {
      tests.push({ scenario: 'pod-to-host (remote node)', description: `${podName(a)} → ${other.name} ${other.nodeIP} (ICMP)`, probe: { kind: 'icmp', netns: a.netns, ip: other.nodeIP } });
      const record = health.get(other.name);
      if (record?.agentPort) {
        const url = `http://${record.nodeIP}:${record.agentPort}/hello`;
        tests.push({ scenario: 'health (agent)', description: `${podName(a)} → ${other.name} agent ${url}`, probe: { kind: 'http', netns: a.netns, url, expect: other.name } });
      }
      if (record?.healthIP) {
        tests.push({ scenario: 'health (endpoint)', description: `${podName(a)} → ${other.name} health endpoint ${record.healthIP} (ICMP)`, probe: { kind: 'icmp', netns: a.netns, ip: record.healthIP } });
        if (record.healthPort) {
          // The endpoint's listener answers with its node's name, like the agent's health port.
          const url = `http://${record.healthIP}:${record.healthPort}/hello`;
          tests.push({ scenario: 'health (endpoint)', description: `${podName(a)} → ${other.name} health endpoint ${url}`, probe: { kind: 'http', netns: a.netns, url, expect: other.name } });
        }
      }
    }
  }
  if (healthAddress) {
    const nodes = demo.nodes.map((n) => n.name);
    tests.push({ scenario: 'health (cluster view)', description: `health service ${healthAddress} sees ${nodes.join(', ')} reachable`, probe: { kind: 'health', address: healthAddress, nodes } });
  }
  return tests;
}

function exec(cmd: string, args: string[], timeoutMs: number): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : 1) : 0;
      resolve({ code, stdout, stderr: stderr || (err && typeof (err as { code?: unknown }).code !== 'number' ? err.message : '') });
    });
  });
}

/** Runs probes for real: curl and ping inside the pod's namespace, the gRPC health service for the cluster view. */
export const runProbe: ProbeRunner = async (probe, timeoutMs) => {
  const seconds = String(Math.max(1, Math.round(timeoutMs / 1000)));
  switch (probe.kind) {
    case 'http': {
      // The body, then the status code on a line of its own.
      const r = await exec('nsenter', [`--net=/run/netns/${probe.netns}`, '--', 'curl', '-sS', '-m', seconds, '-w', '\\n%{http_code}', probe.url], timeoutMs + 2000);
      return judgeHttp(r.code, r.stdout, r.stderr, probe.expect);
    }
    case 'icmp': {
      const r = await exec('nsenter', [`--net=/run/netns/${probe.netns}`, '--', 'ping', '-c', '1', '-W', seconds, probe.ip], timeoutMs + 2000);
      const rtt = /time=([\d.]+ ?ms)/.exec(r.stdout)?.[1];
      return r.code === 0 ? { ok: true, detail: `reply${rtt ? `, RTT=${rtt.replace(' ', '')}` : ''}` } : { ok: false, detail: oneLine(r.stderr || 'no reply') };
    }
    case 'health': {
      const client = createHealthClient(probe.address, { deadlineMs: timeoutMs });
      try {
        const health = await client.getClusterHealth();
        if (health.summary.probeTimeUnixMs === 0) {
          return { ok: true, skipped: true, detail: 'skipped: no agent has reported probes to the health service yet' };
        }
        const bad = probe.nodes.filter((n) => health.nodes.find((x) => x.name === n)?.reachability !== 'REACHABILITY_REACHABLE');
        return bad.length ? { ok: false, detail: `not reachable: ${bad.join(', ')}` } : { ok: true, detail: `${health.summary.reachable}/${health.summary.total} reachable` };
      } catch (err) {
        return { ok: false, detail: oneLine(err) };
      } finally {
        client.close();
      }
    }
  }
};

/** An HTTP check's verdict from curl's exit code and output (body, then the status code): a 2xx from the pod asked for. */
export function judgeHttp(code: number, stdout: string, stderr: string, expect?: string): ProbeOutcome {
  if (code !== 0) return { ok: false, detail: oneLine(stderr || `curl exit ${code}`) };
  const cut = stdout.lastIndexOf('\n');
  const status = stdout.slice(cut + 1).trim();
  const body = stdout.slice(0, Math.max(0, cut)).trim();
  if (!/^2\d\d$/.test(status)) return { ok: false, detail: `HTTP ${status}` };
  if (expect !== undefined && body !== expect) return { ok: false, detail: `HTTP ${status} from ${JSON.stringify(body.slice(0, 60))}, not ${expect}` };
  return { ok: true, detail: expect !== undefined ? `HTTP ${status} from ${expect}` : `HTTP ${status}` };
}

/** The agents' health records from etcd (where each node's agent health port and health endpoint are). */
export async function readHealthRecords(target: Target): Promise<Map<string, HealthEndpointRecord>> {
  const reader = openCluster(target.etcd, target.etcdRoot);
  try {
    const all = await reader.client.getAll().prefix(reader.keys.prefix('health')).exec();
    const out = new Map<string, HealthEndpointRecord>();
    for (const kv of all.kvs) {
      try {
        const record = decodeRecord(healthEndpointRecord, 'health endpoint', kv.value);
        out.set(record.node, record);
      } catch {
        // A malformed record: the health paths of that node are just not planned.
      }
    }
    return out;
  } finally {
    reader.close();
  }
}

export async function runTests(
  tests: PlannedTest[],
  options: { runner?: ProbeRunner; timeoutMs?: number; concurrency?: number; onResult?: (r: TestResult) => void } = {},
): Promise<TestResult[]> {
  const limit = pLimit(options.concurrency ?? 4);
  const runner = options.runner ?? runProbe;
  return Promise.all(
    tests.map((test) =>
      limit(async () => {
        const started = performance.now();
        let outcome: ProbeOutcome;
        try {
          outcome = await runner(test.probe, options.timeoutMs ?? 3000);
        } catch (err) {
          outcome = { ok: false, detail: oneLine(err) };
        }
        const result = { ...test, ...outcome, ms: Math.round(performance.now() - started) };
        options.onResult?.(result);
        return result;
      }),
    ),
  );
}

export function renderResult(r: TestResult): string {
  return `${r.skipped ? '⏭️ ' : r.ok ? '✅' : '❌'} [${r.scenario}] ${r.description}: ${r.detail}\n`;
}

/** Failed when any test failed or none ran; skipped tests are neither. */
export const connectivityFailed = (results: TestResult[]): boolean => results.some((r) => !r.ok) || !results.some((r) => !r.skipped);

export function renderSummary(results: TestResult[]): string {
  const failed = results.filter((r) => !r.ok);
  const skipped = results.filter((r) => r.skipped).length;
  const ran = results.length - skipped;
  const skippedNote = skipped ? `, ${skipped} ${skipped === 1 ? 'test' : 'tests'} skipped` : '';
  if (!ran) return `⚠️  No tests ran${skippedNote}\n`;
  if (!failed.length) return `✅ All ${ran} tests successful${skippedNote}.\n`;
  return `❌ ${failed.length}/${ran} tests failed${skippedNote}:\n${failed.map((r) => `   - [${r.scenario}] ${r.description}: ${r.detail}\n`).join('')}`;
}
