/**
 * The run's report: report.md with SVG plots rendered by vega-lite → vega (server-side, no canvas, no native deps),
 * goals against results, and how each figure was obtained.
 */
import { healthPhaseFindings } from './health-phase.ts';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as vega from 'vega';
import * as vl from 'vega-lite';
import type { TopLevelSpec } from 'vega-lite';
import type { Results } from './results.ts';

async function svg(spec: TopLevelSpec): Promise<string> {
  const compiled = vl.compile(spec).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none' });
  const out = await view.toSVG();
  view.finalize();
  return out;
}

const W = 640;
const H = 240;

export interface Goal {
  goal: string;
  target: string;
  result: string;
  met: boolean | null;
}

const fmt = (n: number | null | undefined, digits = 0) => (n === null || n === undefined || Number.isNaN(n) ? 'n/a' : n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits }));
const bytesText = (b: number | null | undefined) => {
  if (b === null || b === undefined) return 'n/a';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = b;
  let u = 0;
  while (Math.abs(v) >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(v >= 100 ? 0 : 1)} ${units[u]}`;
};

export function goals(r: Results): Goal[] {
  const p99 = r.propagation.steadyMs.p99;
  return [
    {
      goal: `Propagation p99 at ${fmt(r.scenario.nodes)} nodes / ${fmt(r.memory.podsInCluster)} pods / ${r.scenario.churnPerSecond} changes/s (steady: changes made outside the burst and the etcd outage, each counted until its backlog drained)`,
      target: '≤ 1 s', result: `${fmt(p99)} ms (all changes that arrived: p99 ${fmt(r.propagation.toAllFullAgentsMs.p99)} ms, max ${fmt(r.propagation.toAllFullAgentsMs.max)} ms${r.propagation.incomplete ? `; ${fmt(r.propagation.incomplete)} changes never arrived and are not in these percentiles` : ''})`, met: Number.isFinite(p99) ? p99 <= 1000 : null,
    },
    ...(r.services && r.services.agents > 0 ? [{
      goal: `Service change (EndpointSlice) → every services table of ${fmt(r.services.agents)} full agents, ${fmt(r.services.services)} services / ${fmt(r.services.slicesInCluster)} slices / ${fmt(r.memory.podsInCluster)} backends, ${fmt(r.services.sliceChurnPerSecond)} readiness flips/s + the pods' churn (steady)`,
      target: 'p99 ≤ 1 s', result: `${fmt(r.services.steadyMs.p99)} ms (all: p99 ${fmt(r.services.toAllAgentsMs.p99)} ms, max ${fmt(r.services.toAllAgentsMs.max)} ms; ${fmt(r.services.reachedEveryAgent)} of ${fmt(r.services.changes)} slice changes in every table${r.services.notInEtcd ? `, ${fmt(r.services.notInEtcd)} never written as such (coalesced or unchanged)` : ''})`,
      met: Number.isFinite(r.services.steadyMs.p99) && r.services.steadyMs.count > 0 ? r.services.steadyMs.p99 <= 1000 : null,
    }] : []),
    {
      goal: `etcd writes from heartbeats (${fmt(r.heartbeats.windowS)} s of heartbeats only)`, target: '0',
      result: `${r.heartbeats.operatorWrites} writes for ${fmt(r.heartbeats.nodeEventsAtOperator)} node events (${fmt(r.heartbeats.heartbeatsSent)} heartbeats); node keys' max modRevision ${r.heartbeats.nodeKeysMaxModRevision.join(' → ')}`,
      met: r.heartbeats.operatorWrites === 0 && r.heartbeats.nodeKeysWritten === 0,
    },
    {
      goal: 'Node keys over the whole run (heartbeats continue; any rewrite comes from elsewhere, e.g. a new leadership term)', target: 'unchanged',
      result: `max modRevision ${r.heartbeats.wholeRun.nodeKeysMaxModRevision.join(' → ')} with ${fmt(r.heartbeats.wholeRun.heartbeatsSent)} heartbeats`,
      met: r.heartbeats.wholeRun.nodeKeysMaxModRevision[0] === r.heartbeats.wholeRun.nodeKeysMaxModRevision[1],
    },
    {
      goal: 'Bytes to agents vs every agent watching the API server', target: '≥ 100× fewer',
      result: r.bytes.reduction === null ? 'n/a' : `${fmt(r.bytes.reduction)}× fewer (${fmt(r.bytes.agentsAllNodesMbitS, 2)} vs ${fmt(r.bytes.counterfactualMbitS)} Mbit/s)`,
      met: r.bytes.reduction === null ? null : r.bytes.reduction >= 100,
    },
    {
      goal: `Agent memory per pod in the cluster${r.services && r.services.agents > 0 ? ` (averaged over the full agents; ${fmt(r.services.agents)} of the ${fmt(r.agents.full.count)} also hold the services reconciler's table and load-balancer maps of ${fmt(r.services.services)} services)` : ''}`, target: '≤ 1 KiB',
      result: `${fmt(r.memory.heapBytesPerPod)} B heap, ${fmt(r.memory.rssBytesPerPod)} B RSS per pod (${bytesText(r.memory.fullAgentHeapBytes)} heap per full agent at ${fmt(r.memory.podsInCluster)} pods)`,
      met: r.memory.heapBytesPerPod <= 1024,
    },
    {
      goal: '"too many requests" reaching a caller, even after the etcd restart', target: '0',
      result: `${r.tooManyRequests.reachingWatchConsumers} at watch consumers, ${r.tooManyRequests.operatorLogMentions} in the operator's log (etcd answered ResourceExhausted ${fmt(r.tooManyRequests.etcdReturnedResourceExhausted)} times, since its restart)`,
      met: r.tooManyRequests.reachingWatchConsumers === 0 && r.tooManyRequests.operatorLogMentions === 0,
    },
    ...(r.herd?.cold ? [{
      goal: `Thundering herd, cold start: all ${fmt(r.herd.cold.watchers)} lightweight watchers list nodes + pods (${r.herd.list}) and watch`, target: 'all back ≤ 60 s',
      result: r.herd.cold.allBackS === null ? `${fmt(r.herd.cold.back)} of ${fmt(r.herd.cold.watchers)} back` : `${fmt(r.herd.cold.allBackS, 1)} s (p99 ${fmt(r.herd.cold.backS.p99, 1)} s)`,
      met: r.herd.cold.allBackS !== null && r.herd.cold.allBackS <= 60,
    }] : []),
    ...(r.herd?.fault ? [{
      goal: `Thundering herd after the etcd fault: the ${fmt(r.herd.fault.watchers)} watchers that lost their stream list again and watch (from ${r.herd.fault.zero})`, target: 'all back ≤ 60 s',
      result: r.herd.fault.allBackS === null ? `${fmt(r.herd.fault.back)} of ${fmt(r.herd.fault.watchers)} back` : `${fmt(r.herd.fault.allBackS, 1)} s (p99 ${fmt(r.herd.fault.backS.p99, 1)} s)${r.herd.stillAway ? `; ${fmt(r.herd.stillAway)} not connected at the end` : ''}`,
      met: r.herd.fault.watchers > 0 && r.herd.fault.allBackS !== null && r.herd.fault.allBackS <= 60 && !r.herd.stillAway,
    }] : []),
    ...(r.herd ? [{
      goal: 'Errors reaching a caller (not retried by the kvstore policy) during the herds', target: '0',
      result: `${fmt(r.herd.errorsReachingCallers)}; ${fmt(r.tooManyRequests.seenAndRetried ?? 0)} "too many requests"/ResourceExhausted seen and retried with backoff`,
      met: r.herd.errorsReachingCallers === 0,
    }] : []),
    {
      goal: 'Every change reached every full agent', target: 'all',
      result: `${fmt(r.propagation.reachedEveryFullAgent)} of ${fmt(r.propagation.changes)} changes`, met: r.propagation.incomplete === 0 && r.propagation.changes > 0,
    },
    ...(r.health
      ? [{
          goal: `Health: unreachable node detected (n = ${fmt(r.health.n)})`, target: '≤ 10 s',
          result: r.health.detectionMs === null ? 'not detected' : `${fmt(r.health.detectionMs / 1000, 2)} s (documented bound ${fmt(r.health.documentedDetectionMs / 1000, 2)} s)`,
          met: r.health.detectionMs === null ? false : r.health.detectionMs <= 10_000,
        }, {
          goal: 'Health: probes per node per second', target: '≤ 15',
          result: `${fmt(r.health.probesPerNodePerSecondMean, 1)} mean, ${fmt(r.health.probesPerNodePerSecondMax, 1)} max`, met: r.health.probesPerNodePerSecondMax <= 15.5,
        }, {
          goal: `Health: no false verdict with ${fmt((r.health.lossRate ?? 0) * 100, 1)} % random probe loss`, target: '0',
          result: `${fmt(r.health.falseVerdicts ?? 0)}`, met: (r.health.falseVerdicts ?? 0) === 0,
        }, ...(r.health.pair ? [{
          goal: 'Health: broken pair shown (from its first failed probe; the ring reaches a random pair later)', target: '≤ 60 s',
          result: r.health.pair.shownAfterFirstFailedProbeMs === null ? 'not shown' : `${fmt(r.health.pair.shownAfterFirstFailedProbeMs / 1000, 1)} s (${fmt((r.health.pair.shownAfterMs ?? 0) / 1000, 1)} s after the block; random pair ~${fmt(r.health.pair.expectedCoverageMs / 1000, 0)} s)`,
          met: r.health.pair.shownAfterFirstFailedProbeMs !== null && r.health.pair.shownAfterFirstFailedProbeMs <= 60_000,
        }] : [])]
      : []),
  ];
}

export async function writeReport(r: Results, outDir: string): Promise<string[]> {
  const files: string[] = [];
  const plot = async (name: string, spec: TopLevelSpec) => {
    await writeFile(join(outDir, name), await svg(spec));
    files.push(name);
    return name;
  };
  const marks: Array<{ t: number; what: string }> = [];
  if (r.restart) marks.push({ t: r.restart.pausedAtS, what: 'etcd stopped' }, { t: r.restart.resumedAtS, what: 'etcd back' });
  marks.push({ t: r.scenario.burstAt / 1000, what: 'burst' });
  const rules = { data: { values: marks }, mark: { type: 'rule' as const, strokeDash: [4, 4], color: 'gray' }, encoding: { x: { field: 't', type: 'quantitative' as const } } };
  const ruleText = { data: { values: marks }, mark: { type: 'text' as const, align: 'left' as const, dx: 3, dy: -4, color: 'gray', baseline: 'top' as const, y: 0 }, encoding: { x: { field: 't', type: 'quantitative' as const }, text: { field: 'what' } } };

  const latencyPlot = await plot('propagation.svg', {
    width: W, height: H, title: 'Propagation: change in kube-sim → in the maps of every full agent',
    layer: [
      { data: { values: r.propagation.series.map((p) => ({ ...p, ms: Math.max(1, p.ms), kind: p.type === 'A' ? 'create' : 'delete' })) }, mark: { type: 'point', size: 8, opacity: 0.5, filled: true },
        encoding: { x: { field: 't', type: 'quantitative', title: 'time in the measured phase (s)' }, y: { field: 'ms', type: 'quantitative', scale: { type: 'log' }, title: 'latency (ms, log)' }, color: { field: 'kind', type: 'nominal' } } },
      rules, ruleText,
    ],
  });
  const p99Windows = new Map<number, number[]>();
  for (const p of r.propagation.series) {
    const w = Math.floor(p.t / 10) * 10;
    const list = p99Windows.get(w) ?? [];
    list.push(p.ms);
    p99Windows.set(w, list);
  }
  const windowed = [...p99Windows.entries()].flatMap(([t, list]) => {
    const s = list.sort((a, b) => a - b);
    const q = (p: number) => s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))]!;
    return [{ t, ms: Math.max(1, q(0.5)), stat: 'p50' }, { t, ms: Math.max(1, q(0.99)), stat: 'p99' }, { t, ms: Math.max(1, s.at(-1)!), stat: 'max' }];
  });
  const latencyWindowPlot = await plot('propagation-windows.svg', {
    width: W, height: H, title: 'Propagation latency per 10 s window',
    layer: [
      { data: { values: windowed }, mark: { type: 'line', point: true }, encoding: { x: { field: 't', type: 'quantitative', title: 'time (s)' }, y: { field: 'ms', type: 'quantitative', scale: { type: 'log' }, title: 'ms (log)' }, color: { field: 'stat', type: 'nominal' } } },
      { data: { values: [{ ms: 1000 }] }, mark: { type: 'rule', color: 'red' }, encoding: { y: { field: 'ms', type: 'quantitative' } } },
      rules,
    ],
  });
  const cpuRows = r.series.flatMap((p) => Object.entries(p.cpu).map(([proc, v]) => ({ t: p.t, proc, v })));
  const cpuPlot = await plot('cpu.svg', {
    width: W, height: H, title: 'CPU by process (% of one core; the machine has ' + r.host.cpus + ' cores)',
    layer: [{ data: { values: cpuRows }, mark: { type: 'line' }, encoding: { x: { field: 't', type: 'quantitative', title: 'time (s)' }, y: { field: 'v', type: 'quantitative', title: '% of one core' }, color: { field: 'proc', type: 'nominal' } } }, rules],
  });
  const rssRows = r.series.flatMap((p) => Object.entries(p.rssMiB).map(([proc, v]) => ({ t: p.t, proc, v })));
  const rssPlot = await plot('memory.svg', {
    width: W, height: H, title: 'Resident memory by process (MiB)',
    layer: [{ data: { values: rssRows }, mark: { type: 'line' }, encoding: { x: { field: 't', type: 'quantitative', title: 'time (s)' }, y: { field: 'v', type: 'quantitative', title: 'MiB' }, color: { field: 'proc', type: 'nominal' } } }, rules],
  });
  const dbPlot = await plot('etcd-db.svg', {
    width: W, height: 180, title: 'etcd database size (etcd_mvcc_db_total_size_in_bytes)',
    layer: [{ data: { values: r.series.filter((p) => p.etcdDbMiB !== undefined).map((p) => ({ t: p.t, v: p.etcdDbMiB })) }, mark: 'line', encoding: { x: { field: 't', type: 'quantitative', title: 'time (s)' }, y: { field: 'v', type: 'quantitative', title: 'MiB' } } }, rules],
  });
  const bytesPlot = await plot('bytes.svg', {
    width: W, height: 160, title: `Bytes during the measured phase (${fmt(r.events.phaseS)} s)`,
    data: { values: [
      { what: 'kube-sim → operator (watches)', bytes: r.bytes.kubeSimToOperator },
      { what: `etcd → agents (${fmt(r.scenario.nodes)} nodes, estimate)`, bytes: r.bytes.agentsAllNodesEstimate },
      ...(r.bytes.etcdGrpcSent !== null ? [{ what: 'etcd gRPC sent, all clients (etcd metric)', bytes: r.bytes.etcdGrpcSent }] : []),
      { what: `counterfactual: ${fmt(r.scenario.nodes)} agents watch the API server`, bytes: r.bytes.counterfactualDirectWatches },
    ].map((x) => ({ ...x, bytes: Math.max(1, x.bytes) })) },
    mark: 'bar', encoding: { y: { field: 'what', type: 'nominal', title: null, sort: null }, x: { field: 'bytes', type: 'quantitative', scale: { type: 'log' }, title: 'bytes (log)' } },
  });
  const reconnectPlot = r.restart
    ? await plot('reconnects.svg', {
        width: W, height: 200, title: 'Watch reconnect attempts after the etcd stop, per second (jittered, cluster-size-scaled backoff)',
        data: { values: r.restart.histogram.flatMap((h) => [{ s: h.secondAfterStop, kind: 'lightweight watchers', n: h.light }, { s: h.secondAfterStop, kind: 'full agents', n: h.full }]) },
        mark: 'bar', encoding: { x: { field: 's', type: 'ordinal', title: 's after etcd was stopped' }, y: { field: 'n', type: 'quantitative', title: 'attempts', stack: 'zero' }, color: { field: 'kind', type: 'nominal' } },
      })
    : undefined;

  const herdRows = [
    ...(r.herd?.cold ? r.herd.cold.curve.map((p) => ({ ...p, wave: 'cold start (s since the first watcher started)' })) : []),
    ...(r.herd?.fault ? r.herd.fault.curve.map((p) => ({ ...p, wave: `after the etcd fault (s since ${r.herd!.fault!.zero})` })) : []),
  ];
  const herdPlot = herdRows.length
    ? await plot('herd.svg', {
        width: W, height: H, title: `Thundering herd: lightweight watchers back (listed nodes + pods, watching), ${r.herd!.list === 'keys' ? 'keys only' : 'values'}`,
        layer: [
          { data: { values: herdRows }, mark: { type: 'line', interpolate: 'step-after' }, encoding: { x: { field: 's', type: 'quantitative', title: 'seconds' }, y: { field: 'back', type: 'quantitative', title: 'agents back' }, color: { field: 'wave', type: 'nominal', title: null } } },
          { data: { values: [{ s: 60 }] }, mark: { type: 'rule', color: 'red', strokeDash: [4, 4] }, encoding: { x: { field: 's', type: 'quantitative' } } },
        ],
      })
    : undefined;

  const g = goals(r);
  const verdict = (m: boolean | null) => (m === null ? '—' : m ? '✅ met' : '❌ not met');
  const s = r.scenario;
  const lines: string[] = [];
  lines.push(`# Sluice scale run — ${r.startedAt}`, '');
  lines.push(`${fmt(s.nodes)} nodes, ${fmt(r.memory.podsInCluster)} pods (${s.podsPerNode} per node), ${s.services} services; heartbeats every ${s.heartbeatInterval / 1000} s; ` +
    `${s.churnPerSecond} pod changes/s for ${s.duration / 1000} s with a burst of ${fmt(s.burstPods)} pods at ${s.burstAt / 1000} s and an etcd stop/start at ${s.etcdRestartAt / 1000} s (${s.etcdDowntime / 1000} s down). ` +
    `Machine: ${r.host.cpus} cores, ${fmt(r.host.memoryGiB)} GiB, Node ${r.host.node}. Everything ran on this one machine.`, '');
  lines.push('## Goals', '', '| goal | target | result | |', '| --- | --- | --- | --- |');
  for (const x of g) lines.push(`| ${x.goal} | ${x.target} | ${x.result} | ${verdict(x.met)} |`);
  lines.push('');
  lines.push('## What ran', '');
  lines.push(`- **etcd** 3.4, one member, data on tmpfs (\`@sluice/etcd-runner\`), its own process.`);
  lines.push(`- **kube-sim** in its own process (\`node --max-old-space-size=1536 --heap-growing-percent=100\`, as kube-sim's own \`npm start\` runs it: services/kube-sim/README.md), started in ${fmt(r.setup.kubeSimStartS, 1)} s.`);
  lines.push(`- **operator** (\`services/operator/dist/main.mjs\`, compiled as deploy/ runs it), synced into etcd in ${fmt(r.setup.operatorSyncS, 1)} s after start.`);
  lines.push(`- **health service** (\`services/health/dist/main.mjs\`), finding nodes through etcd.`);
  lines.push(`- **Full-state agents: ${r.agents.full.count}** — the real \`AgentCore\` (watchers, caches, reconcile) against \`memoryDatapath()\` (same codecs and capacity limits as the BPF maps), in ${r.agents.full.processes} process(es), sharing one etcd client per process. Nodes ${r.agents.full.nodes.slice(0, 3).join(', ')} … ${r.agents.full.nodes.at(-1)}. Each held ${fmt(r.agents.full.endpointsHeld.p50)} cluster endpoints after sync. Synced (list + full reconcile) ${fmt(r.setup.agentsSyncS, 1)} s after start.`);
  lines.push(`- **Lightweight watchers: ${fmt(r.agents.light.count)}** — one per other node: an etcd watch on the nodes prefix and one on the pods prefix each (${r.herd && r.herd.list !== 'none' ? `each first listed — ${r.herd.list === 'keys' ? 'keys only' : 'values counted, not kept'} — at cold start and after every lost stream, see the thundering herd` : 'from the current revision, no list'}), counting events and bytes, reconnecting with the same cluster-size-scaled jittered backoff as \`watchPrefix\`; spread over **${fmt(r.agents.light.etcdClients)} etcd clients** in ${r.agents.light.processes} process(es).`);
  lines.push(`- etcd3 (the npm client) multiplexes every watcher of one client on a single gRPC bidi \`Watch\` stream over the client's one HTTP/2 connection; so streams = clients: ${fmt(r.agents.clientConnections)} client connections carrying watches here (${fmt(r.agents.light.etcdClients)} lightweight + one per full-agent process + the harness/operator/health clients). etcd reported **${fmt(r.agents.etcdWatchStreams)} watch streams and ${fmt(r.agents.etcdWatchers)} watchers** (etcd_debugging_mvcc_watch_stream_total / _watcher_total).`);
  lines.push('');
  lines.push('## Kubernetes events in, etcd writes out', '');
  lines.push(`- Heartbeats only (${fmt(r.heartbeats.windowS)} s, no churn): ${fmt(r.heartbeats.heartbeatsSent)} heartbeats, ${fmt(r.heartbeats.nodeEventsAtOperator)} node events at the operator, **${r.heartbeats.operatorWrites} etcd writes**; max modRevision of the ${fmt(r.heartbeats.nodeKeys)} node keys ${r.heartbeats.nodeKeysMaxModRevision.join(' → ')}. Over the whole run: ${fmt(r.heartbeats.wholeRun.heartbeatsSent)} heartbeats, node keys' max modRevision ${r.heartbeats.wholeRun.nodeKeysMaxModRevision.join(' → ')}.`);
  lines.push(`- Measured phase (${fmt(r.events.phaseS)} s): **${fmt(r.events.kubeEventsIn)} Kubernetes events in** (${fmt(r.events.nodeEvents)} node, ${fmt(r.events.podEvents)} pod, the rest services/EndpointSlices), **${fmt(r.events.etcdWritesOut)} etcd writes out** (puts + deletes; ${fmt(r.events.skippedWrites)} skipped as unchanged), ${fmt(r.events.etcdRevisions)} etcd revisions: ${fmt(r.events.eventsPerWrite, 1)} events per write, ${fmt(r.events.writesPer1000Events, 1)} writes per 1,000 events.`);
  lines.push('');
  lines.push('## Bytes', '', `![bytes](${bytesPlot})`, '');
  lines.push(`- kube-sim → operator (watch streams, counted by kube-sim): ${bytesText(r.bytes.kubeSimToOperator)} = **${fmt(r.bytes.kubeSimToOperatorMbitS, 1)} Mbit/s**.`);
  lines.push(`- etcd → one agent (lightweight watcher on nodes + pods): ${bytesText(r.bytes.perLightWatcher)} (${fmt(r.bytes.lightWatcherEvents)} events over all lightweight watchers), counted as key + value + ${24} B per event + ${40} B per response (protobuf framing, estimated); × ${fmt(s.nodes)} nodes = ${bytesText(r.bytes.agentsAllNodesEstimate)} = **${fmt(r.bytes.agentsAllNodesMbitS, 2)} Mbit/s** for the whole cluster.` +
    (r.bytes.etcdGrpcSent !== null ? ` etcd's own counter of gRPC bytes sent to all clients (etcd_network_client_grpc_sent_bytes_total, sampled every 2 s and summed across the restart, which resets it) read ${bytesText(r.bytes.etcdGrpcSent)}.` : ''));
  lines.push(`- Counterfactual, every agent watches the API server directly (Cilium before 1.5; its post measured 400 Mbit/s at 2,000 nodes): each of the ${fmt(s.nodes)} agents would watch what the operator watches (nodes, pods, services, EndpointSlices — what Cilium's agents watched) and receive what the operator received, i.e. ${fmt(s.nodes)} × ${bytesText(r.bytes.kubeSimToOperator)} = ${bytesText(r.bytes.counterfactualDirectWatches)} = **${fmt(r.bytes.counterfactualMbitS)} Mbit/s** leaving the API server. Reduction: **${fmt(r.bytes.reduction)}×**. (JSON, as kube-sim serves it; protobuf would be ~2–3× smaller, which does not change the order of magnitude.)`);
  lines.push('');
  lines.push('## Propagation latency', '', `![propagation](${latencyPlot})`, '', `![windows](${latencyWindowPlot})`, '');
  const pr = r.propagation;
  lines.push(`Measured from the moment kube-sim created or deleted a pod (its store's change, stamped in the kube-sim process) to the moment the change was in the maps of **every** full agent (\`onProgrammed\` revision ≥ the change's etcd modRevision, seen by a revision-tracking watch). Same clock (one machine).`, '');
  lines.push('| set | changes | p50 | p90 | p99 | max |', '| --- | --- | --- | --- | --- | --- |');
  const row = (name: string, x: { count: number; p50: number; p90: number; p99: number; max: number }) => lines.push(`| ${name} | ${fmt(x.count)} | ${fmt(x.p50)} ms | ${fmt(x.p90)} ms | ${fmt(x.p99)} ms | ${fmt(x.max)} ms |`);
  row('all changes, to every full agent', pr.toAllFullAgentsMs);
  const windowText = (pr.perturbedWindows ?? []).map((w) => `${w.name === 'burst' ? 'the burst' : 'the etcd outage'} ${fmt(w.fromS, 1)}–${fmt(w.toS, 1)} s`).join(', ');
  row(`steady (changes made outside ${windowText || 'any perturbation'}: from each start until its backlog was in every full agent)`, pr.steadyMs);
  if (pr.burst) row(`burst of ${fmt(pr.burst.pods)} pods`, pr.burst.latencyMs);
  row('per agent (each agent × change)', pr.perAgentMs);
  row('kube-sim → etcd (operator only)', pr.kubeToEtcdMs);
  if (pr.split) {
    row('split, steady: kube-sim → operator receipt (API server + watch)', pr.split.steady.kubeSimToOperatorMs);
    row('split, steady: operator receipt → etcd (decode, slim, write)', pr.split.steady.operatorToEtcdMs);
    row('split, steady: etcd → every full agent', pr.split.steady.etcdToAllAgentsMs);
    row('split, all: kube-sim → operator receipt', pr.split.all.kubeSimToOperatorMs);
    row('split, all: operator receipt → etcd', pr.split.all.operatorToEtcdMs);
    row('split, all: etcd → every full agent', pr.split.all.etcdToAllAgentsMs);
  }
  if (r.services && r.services.agents > 0) {
    const sv = r.services;
    row(`services: slice change → every full agent's services table (${fmt(sv.agents)} agents), all`, sv.toAllAgentsMs);
    row('services: steady (outside the same windows)', sv.steadyMs);
    row('services: per agent (each agent × change)', sv.perAgentMs);
    row('services: kube-sim → etcd (operator)', sv.kubeToEtcdMs);
    row('services: etcd → every services table', sv.etcdToAllAgentsMs);
  }
  lines.push('', `${fmt(pr.changes)} changes recorded, ${fmt(pr.reachedEveryFullAgent)} reached every full agent, ${fmt(pr.incomplete)} did not${pr.notInEtcd ? ` (${fmt(pr.notInEtcd)} never appeared in etcd)` : ''}.` +
    (pr.coalesced ? ` ${fmt(pr.coalesced)} more were pods created and deleted while the operator could not write (a net no-op the writer coalesced; etcd never saw them; not counted as lost).` : '') +
    (pr.burst ? ` The burst: ${fmt(pr.burst.pods)} pods created in ${fmt(pr.burst.createMs)} ms; the last one was in every full agent ${fmt(pr.burst.lastArrivalMs)} ms after the burst began.` : ''), '');
  if (r.services && r.services.agents > 0) {
    const sv = r.services;
    lines.push(`Services: ${fmt(sv.services)} Services whose EndpointSlices (${fmt(sv.slicesInCluster)}) hold every pod (${fmt(r.memory.podsInCluster)} backends); ${fmt(sv.agents)} full agents run the services reconciler of the real agent (\`startServices\`, Services + EndpointSlices → the load balancer's maps of their memoryDatapath) and held ${fmt(sv.tableServices.p50)} services / ${fmt(sv.tableSlices.p50)} slices (${fmt(sv.programmedServices.p50)} services in the maps) at the end. Slice churn: the pods' churn (a pod running or gone changes its slice) plus ${fmt(sv.sliceChurnPerSecond)} readiness flips per second (a pod's Ready condition, so its endpoint's \`ready\`). Each slice change is stamped in kube-sim, matched to the first etcd event of that slice after it (a change coalesced with a later one lands in its write), and counted as programmed in an agent once its services table's programmed revision (table revision, below every row not yet done: the reconciler's pass listener) reached that event's revision. ${fmt(sv.changes)} slice changes, ${fmt(sv.reachedEveryAgent)} in every table${sv.incomplete ? `, ${fmt(sv.incomplete)} not (${fmt(sv.notInEtcd)} had no etcd write of their own)` : ''}.`, '');
  }
  lines.push('## Memory and CPU', '', `![cpu](${cpuPlot})`, '', `![memory](${rssPlot})`, '', `![etcd db](${dbPlot})`, '');
  lines.push(`- Full agents: ${bytesText(r.memory.fullAgentHeapBytes)} of heap each (worker heap after sync minus before any agent, after a GC, divided by agents) = **${fmt(r.memory.heapBytesPerPod)} B per pod in the cluster** (RSS: ${fmt(r.memory.rssBytesPerPod)} B per pod). That includes the agent's caches, its memoryDatapath maps (the real agent's maps are in the kernel) and its watchers' key → revision maps.`);
  lines.push('', '| process | mean CPU (measured phase, % of one core) | peak RSS | longest event-loop delay (measured phase) | 2 s windows with a delay over 200 ms |', '| --- | --- | --- | --- | --- |');
  for (const [name, p] of Object.entries(r.processes)) {
    lines.push(`| ${name} | ${fmt(p.cpuPercentMean)} % | ${fmt(p.peakRssMiB)} MiB | ${p.eventLoopMaxMs === null || p.eventLoopMaxMs === undefined ? '–' : `${fmt(p.eventLoopMaxMs)} ms`} | ${fmt(p.eventLoopWindowsOver200Ms ?? null)} |`);
  }
  lines.push('', `etcd database size at the end: ${bytesText(r.etcd.dbSizeBytes)}; slow watchers at the end: ${fmt(r.etcd.slowWatchers)}.`, '');
  if (r.restart) {
    lines.push('## etcd restart', '');
    if (reconnectPlot) lines.push(`![reconnects](${reconnectPlot})`, '');
    // Older results have no etcdMembers/etcdFault: one member, restarted.
    const killed = r.scenario.etcdFault === 'leader-kill' ? `The leader of ${r.scenario.etcdMembers} etcd members was killed (SIGKILL)` : (r.scenario.etcdMembers ?? 1) > 1 ? `All ${r.scenario.etcdMembers} etcd members were killed (SIGKILL, data kept)` : 'etcd was killed (SIGKILL, data kept)';
    lines.push(`${killed} at ${fmt(r.restart.pausedAtS, 1)} s and was serving again at ${fmt(r.restart.resumedAtS, 1)} s (${fmt(r.restart.downtimeS, 1)} s down). ` +
      `Reconnect attempts: ${fmt(r.restart.retries.full)} by full-agent watches (retries counted by the library when a stream is lost), ${fmt(r.restart.retries.light)} by lightweight watches (after their backoff). ` +
      `The operator wrote its first pod change again **${r.restart.operatorWritesResumedMs === null ? 'never' : `${fmt(r.restart.operatorWritesResumedMs / 1000, 1)} s`}** after etcd was back. ` +
      `Every watcher was connected again within **${r.restart.lightReconnectedMs === null ? 'n/a' : `${fmt(r.restart.lightReconnectedMs / 1000, 1)} s`}** of etcd's return (2 s sampling); ` +
      `full resync — every full agent had programmed that first post-restart change (revision ${fmt(r.restart.firstRevisionAfterResume)}) — **${r.restart.fullResyncMs === null ? 'not reached' : `${fmt(r.restart.fullResyncMs / 1000, 1)} s`}** after etcd was back.`);
    lines.push('', `"too many requests": ${r.tooManyRequests.reachingWatchConsumers} reached a watch consumer, ${r.tooManyRequests.operatorLogMentions} in the operator's log; etcd answered ResourceExhausted ${fmt(r.tooManyRequests.etcdReturnedResourceExhausted)} times since its restart (the writer retries those). Errors recorded by the watchers (the full agents' last watch error, after which the library retried; the lightweight watchers' error events): ${Object.keys(r.errorsSeenByWatchers).length === 0 ? 'none' : errorKinds(r.errorsSeenByWatchers).map(([k, v]) => `\`${k}\` × ${v}`).join(', ')}.`, '');
  }
  if (r.herd) {
    const h = r.herd;
    lines.push('## Thundering herd', '');
    if (herdPlot) lines.push(`![herd](${herdPlot})`, '');
    const wave = (name: string, w: NonNullable<typeof h.cold>) => lines.push(`| ${name} | ${fmt(w.back)} / ${fmt(w.watchers)} | ${w.allBackS === null ? 'not all' : `${fmt(w.allBackS, 1)} s`} | ${fmt(w.backS.p50, 1)} s | ${fmt(w.backS.p99, 1)} s | ${fmt(w.backS.max, 1)} s | ${fmt(w.ownS.p99, 1)} s | ${fmt(w.retries)} | ${fmt(w.tooMany)} |`);
    lines.push(h.list === 'none'
      ? 'The lightweight watchers did not list (`lightList: none`): they watched from a revision and resumed from their own.'
      : `${h.listers !== undefined && h.listers < r.agents.light.count ? `${fmt(h.listers)} of the ${fmt(r.agents.light.count)} lightweight watchers (scenario lightListShare ${r.scenario.lightListShare}; the others only watch and resume)` : 'Every lightweight watcher'} lists the nodes and pods prefixes (${h.list === 'keys' ? 'keys only' : 'values, counted and dropped'}; paginated at one pinned revision, pages sized by bytes as the kvstore sizes them: 1,000 keys, then ~4 MiB) at cold start, all at once, and again after every lost stream (as Cilium's agents do after an outage), then watches from the list's revision. A failed page is asked again (the list resumes there, at the same revision) after the kvstore's jittered backoff scaled by cluster size (${fmt(s.nodes)} nodes). ${fmt(h.lists)} lists, ${fmt(h.listKeys)} keys, ${bytesText(h.listBytes)} listed in the whole run.`, '');
    lines.push('| wave | back | all back | p50 | p99 | max | p99 from its own loss | retries | of which "too many requests" |', '| --- | --- | --- | --- | --- | --- | --- | --- | --- |');
    if (h.cold) wave('cold start (from the first watcher\'s start)', h.cold);
    if (h.fault) wave(`after the etcd fault (from ${h.fault.zero})`, h.fault);
    if (h.fault) lines.push('', `Full agents (the kvstore's watchPrefix: resume, no relist) had programmed the first post-fault change ${fmt(h.fault.fullAgentsS.p50, 1)} s (p50) / ${fmt(h.fault.fullAgentsS.max, 1)} s (max) from ${h.fault.zero}.`);
    lines.push('', `Errors reaching a caller (not retried by the kvstore's policy, isRetryableEtcdError): **${fmt(h.errorsReachingCallers)}**${h.errorsReachingCallers ? ` (${Object.entries(h.unretried).map(([k, v]) => `\`${k}\` × ${v}`).join(', ')})` : ''}; lightweight watchers not connected at the end: ${fmt(h.stillAway)}.`, '');
  }
  if (r.health) {
    const h = r.health;
    lines.push('## Health', '');
    lines.push(`The real health service, with ${fmt(h.n)} simulated probers on the schedule of \`@sluice/prober\` (fanout ${h.fanout}, round ${fmt(h.roundMs)} ms, a probe of each node every ${fmt(h.slotMs)} ms, quorum ${h.quorum}), each reporting once per second on its own open ReportProbes stream. Probes are simulated (no packets: this machine cannot hold ${fmt(h.n)} network namespaces); a node (${h.victim}) died half-way, a pair stopped reaching each other early on. ` +
      `**Detection: ${h.detectionMs === null ? 'not detected' : `${fmt(h.detectionMs / 1000, 2)} s`}** (WatchClusterHealth event; documented bound ${fmt(h.documentedDetectionMs / 1000, 2)} s). **Probes per node per second: ${fmt(h.probesPerNodePerSecondMean, 1)}** (max ${fmt(h.probesPerNodePerSecondMax, 1)}). Health service: ${fmt(h.serviceCpuPercent)} % CPU, ${fmt(h.serviceRssMiB)} MiB RSS during this phase. Report send errors: ${h.sendErrors}. ${healthPhaseFindings(h)}`, '');
  }
  lines.push('## Files', '', '- `results.json`: every figure above and the time series.', `- ${files.map((f) => `\`${f}\``).join(', ')}: plots (vega-lite → SVG).`, '- `logs/`: each process\'s log.', '');
  await writeFile(join(outDir, 'report.md'), lines.join('\n'));
  return ['report.md', ...files];
}

/** Error messages grouped by their text without the numbers (timings, addresses) that make each one unique. */
function errorKinds(errors: Record<string, number>): Array<[string, number]> {
  const kinds = new Map<string, number>();
  for (const [message, count] of Object.entries(errors)) {
    const kind = message.replace(/\d+(\.\d+)?s?/g, '…');
    kinds.set(kind, (kinds.get(kind) ?? 0) + count);
  }
  return [...kinds].sort((a, b) => b[1] - a[1]);
}
