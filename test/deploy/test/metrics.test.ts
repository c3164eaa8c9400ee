/**
 * Every component's /metrics, from the real processes (an operator and a health service against etcd and kube-sim,
 * an agent on a lab node with its eBPF datapath): `promtool check metrics` passes on each, Node's default metrics
 * are there under their standard names, and every metric a dashboard panel or an alert reads is one they export.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { freePort, startEtcd, type EtcdServer } from '@sluice/etcd-runner';
import { startKubeSim, type KubeSim } from '@sluice/kube-sim';
import { startLab, stopAllLabs, type Lab } from '@sluice/lab';
import { createLogger } from '@sluice/log';
import { DEPLOY, REPO } from '../src/index.ts';
import { families, metricsIn, promtoolCheckMetrics, seriesNames } from '../src/metrics.ts';

const log = createLogger({ component: 'metrics-test', level: 'warn' });
const scrapes = new Map<string, string>();
let etcd: EtcdServer | undefined;
let sim: KubeSim | undefined;
let lab: Lab | undefined;
const children: ChildProcess[] = [];
const dir = mkdtempSync(join(tmpdir(), 'sluice-metrics-'));

function service(main: string, args: string[]): ChildProcess {
  const child = spawn(process.execPath, [join(REPO, main), ...args], { cwd: REPO, stdio: ['ignore', 'ignore', 'pipe'] });
  child.stderr!.on('data', (c: Buffer) => writeFileSync(join(dir, `${main.split('/')[1]}.log`), c, { flag: 'a' }));
  children.push(child);
  return child;
}

async function scrape(url: string, until: (text: string) => boolean, what: string): Promise<string> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const text = await fetch(url).then((r) => (r.ok ? r.text() : '')).catch(() => '');
    if (text && until(text)) return text;
    if (Date.now() > deadline) throw new Error(`${what}: ${url} did not answer with what was expected; it said:\n${text.split('\n').filter((l) => /^sluice_(health|node)/.test(l)).slice(0, 20).join('\n')}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

beforeAll(async () => {
  etcd = await startEtcd();
  sim = await startKubeSim({ nodes: 0, podsPerNode: 0, services: 0, kubeconfigPath: join(dir, 'kubeconfig'), log });
  const [operatorPort, healthGrpc, healthMetrics] = [await freePort(), await freePort(), await freePort()];
  service('services/operator/dist/main.mjs', ['--etcd-endpoints', etcd.endpoint, '--kube-server', sim.url, '--metrics-host', '0.0.0.0', '--metrics-port', String(operatorPort), '--lease-ttl', '5', '--log-level', 'warn']);
  service('services/health/dist/main.mjs', ['--etcd-endpoints', etcd.endpoint, '--listen', `127.0.0.1:${healthGrpc}`, '--insecure', '--metrics-host', '0.0.0.0', '--metrics-port', String(healthMetrics), '--log-level', 'warn']);
  // One node with a pod: the agent programs maps, probes (ICMP and HTTP) and reports to the health service.
  lab = await startLab({ nodes: 2, podsPerNode: 1, etcdEndpoint: etcd.endpoint, kubeSim: sim, operator: false, healthService: `127.0.0.1:${healthGrpc}`, log });
  scrapes.set('operator', await scrape(`http://127.0.0.1:${operatorPort}/metrics`, (t) => /^sluice_operator_synced 1$/m.test(t), 'the operator synced'));
  scrapes.set('agent', await scrape(`${lab.nodes[0]!.statusUrl}/metrics`, (t) => /^sluice_agent_synced 1$/m.test(t), 'the agent synced'));
  scrapes.set('health', await scrape(`http://127.0.0.1:${healthMetrics}/metrics`, (t) => /^sluice_health_reachable_nodes 2$/m.test(t) && /^sluice_health_probe_results_total\{/m.test(t), 'the health service saw both nodes reachable'));
}, 240_000);

afterAll(async () => {
  await lab?.stop();
  stopAllLabs();
  await Promise.all(children.map((c) => new Promise<void>((resolve) => {
    if (c.exitCode !== null || c.signalCode !== null) return resolve();
    c.once('exit', () => resolve());
    c.kill('SIGTERM');
    setTimeout(() => c.kill('SIGKILL'), 5000).unref();
  })));
  await sim?.close();
  await etcd?.stop();
  rmSync(dir, { recursive: true, force: true });
}, 60_000);

const exported = () => new Set([...scrapes.values()].flatMap((t) => [...seriesNames(families(t))]));

/** Label names seen on each series name across the scrapes. */
const labelsByMetric = () => {
  const out = new Map<string, Set<string>>();
  for (const text of scrapes.values()) {
    for (const m of text.matchAll(/^([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}/gm)) {
      const set = out.get(m[1]!) ?? new Set<string>();
      for (const l of m[2]!.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="/g)) set.add(l[1]!);
      out.set(m[1]!, set);
    }
  }
  return out;
};

/** The labels an expression groups by or prints, checked against the metrics it reads (Prometheus's own: instance, job). */
function checkLabels(expr: string, extra: string[], where: string): void {
  const labels = labelsByMetric();
  const grouped = [...expr.matchAll(/\b(?:by|without)\s*\(([^)]*)\)/g)].flatMap((m) => m[1]!.split(',').map((s) => s.trim()).filter(Boolean));
  const metrics = metricsIn(expr);
  for (const label of [...grouped, ...extra]) {
    if (label === 'instance' || label === 'job' || label === 'le') continue;
    // A metric with no series yet (no event of that kind happened) shows no labels: judged by those that have some.
    const seen = metrics.map((m) => labels.get(m) ?? labels.get(`${m}_bucket`)).filter((l): l is Set<string> => l !== undefined);
    if (!seen.length) continue;
    expect(seen.some((l) => l.has(label)), `${where}: label ${label} on none of ${metrics.join(', ')}`).toBe(true);
  }
}

describe('every component\'s /metrics', () => {
  for (const component of ['operator', 'agent', 'health']) {
    it(`${component}: promtool check metrics passes`, () => {
      const r = promtoolCheckMetrics(scrapes.get(component)!);
      expect(r.output, `promtool check metrics on the ${component}:\n${r.output}`).toBe('');
      expect(r.code).toBe(0);
    });

    it(`${component}: Node's default metrics under their standard names, Sluice's under sluice_`, () => {
      const fams = families(scrapes.get(component)!);
      for (const name of ['process_cpu_seconds_total', 'process_resident_memory_bytes', 'process_start_time_seconds', 'nodejs_heap_size_used_bytes', 'nodejs_eventloop_lag_p99_seconds']) expect(fams.has(name), name).toBe(true);
      for (const name of fams.keys()) expect(name, name).toMatch(/^(sluice|process|nodejs)_/);
      // In OpenMetrics a counter x_total is the family x: no other metric may be called x.
      for (const [name, type] of fams) if (type === 'counter' && name.endsWith('_total')) expect(fams.has(name.slice(0, -'_total'.length)), `${name} and ${name.slice(0, -6)}`).toBe(false);
    });
  }

  it('promtool is a real check: it refuses a counter without _total', () => {
    expect(promtoolCheckMetrics('# HELP sluice_x_bytes Bytes.\n# TYPE sluice_x_bytes counter\nsluice_x_bytes 1\n').code).not.toBe(0);
  });
});

describe('the dashboard and the alerts read only what the components export', () => {
  const dashboard = JSON.parse(readFileSync(join(DEPLOY, 'monitoring/sluice-dashboard.json'), 'utf8')) as { panels: Array<{ title: string; type: string; targets?: Array<{ expr: string; legendFormat?: string }> }> };

  it('every panel\'s queries', () => {
    const names = exported();
    const panels = dashboard.panels.filter((p) => p.type !== 'row');
    expect(panels.length).toBeGreaterThan(10);
    for (const panel of panels) {
      expect(panel.targets?.length, panel.title).toBeGreaterThan(0);
      for (const t of panel.targets!) {
        const metrics = metricsIn(t.expr);
        expect(metrics.length, `${panel.title}: ${t.expr}`).toBeGreaterThan(0);
        for (const m of metrics) expect(names, `${panel.title}: ${m}`).toContain(m);
        checkLabels(t.expr, [...(t.legendFormat ?? '').matchAll(/\{\{\s*(\w+)\s*\}\}/g)].map((m) => m[1]!), panel.title);
      }
    }
  });

  it('the dashboard covers the operator (events, etcd writes, leader), the agents (map operations, programming latency, map fill) and health (reachability, detection)', () => {
    const all = dashboard.panels.flatMap((p) => p.targets ?? []).map((t) => t.expr).join('\n');
    for (const m of ['sluice_operator_kube_events_total', 'sluice_kv_writes_total', 'sluice_kv_leader', 'sluice_agent_reconciler_operations_total', 'sluice_agent_reconciler_duration_seconds_bucket', 'sluice_bpf_map_entries', 'sluice_bpf_map_capacity', 'sluice_health_reachable_nodes', 'sluice_unreachable_nodes', 'sluice_health_verdict_changes_total']) {
      expect(all).toContain(m);
    }
  });

  it('the PrometheusRule: promtool check rules passes, and every alert reads exported metrics', () => {
    const rule = parseYaml(readFileSync(join(DEPLOY, 'monitoring/prometheus-rule.yaml'), 'utf8')) as { kind: string; spec: { groups: Array<{ rules: Array<{ alert: string; expr: string; annotations: Record<string, string> }> }> } };
    expect(rule.kind).toBe('PrometheusRule');
    const file = join(dir, 'rules.yaml');
    writeFileSync(file, JSON.stringify({ groups: rule.spec.groups }));
    const r = spawnSync('promtool', ['check', 'rules', file], { encoding: 'utf8' });
    expect(`${r.stdout}${r.stderr}`).toMatch(/SUCCESS: \d+ rules found/);
    expect(r.status).toBe(0);
    const names = exported();
    const alerts = rule.spec.groups.flatMap((g) => g.rules);
    expect(alerts.map((a) => a.alert)).toEqual(expect.arrayContaining(['SluiceOperatorLeaderLost', 'SluiceAgentNotSynced', 'SluiceNodesUnreachable', 'SluiceBpfMapNearlyFull']));
    for (const a of alerts) {
      for (const m of metricsIn(a.expr)) expect(names, `${a.alert}: ${m}`).toContain(m);
      checkLabels(a.expr, Object.values(a.annotations).flatMap((v) => [...v.matchAll(/\$labels\.(\w+)/g)].map((m) => m[1]!)), a.alert);
    }
  });
});
