/**
 * The scale harness end to end on a small scenario (500 nodes × 20 pods, 1 minute with a burst and an etcd restart,
 * then the health phase): asserts behaviour and completeness, never timings.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveScenario, runScale, SMOKE, writeReport, type Results } from '../src/index.ts';

describe('scale harness (smoke scenario)', () => {
  let outDir: string;
  let results: Results;
  let files: string[];

  beforeAll(async () => {
    outDir = await mkdtemp(join(tmpdir(), 'sluice-scale-'));
    results = await runScale(resolveScenario(SMOKE), { outDir });
    files = await writeReport(results, outDir);
  }, 480_000);

  afterAll(async () => {
    if (outDir) await rm(outDir, { recursive: true, force: true });
  });

  it('ran the agents it was asked for', () => {
    expect(results.agents.full.count).toBe(10);
    expect(results.agents.light.count).toBe(490);
    // Every full agent held every pod of the cluster after its first reconcile.
    expect(results.agents.full.endpointsHeld.p50).toBe(results.memory.podsInCluster);
    expect(results.agents.etcdWatchers).toBeGreaterThanOrEqual(2 * (490 + 10));
  });

  it('heartbeats wrote no etcd record', () => {
    expect(results.heartbeats.heartbeatsSent).toBeGreaterThan(0);
    expect(results.heartbeats.nodeEventsAtOperator).toBeGreaterThan(0);
    expect(results.heartbeats.operatorWrites).toBe(0);
    expect(results.heartbeats.nodeKeysWritten).toBe(0);
    const [before, after] = results.heartbeats.nodeKeysMaxModRevision;
    expect(after).toBe(before);
  });

  it('every change reached every full agent, the burst and the etcd restart included', () => {
    expect(results.propagation.changes).toBeGreaterThan(SMOKE.burstPods!);
    expect(results.propagation.incomplete).toBe(0);
    expect(results.propagation.burst?.pods).toBe(SMOKE.burstPods);
  });

  it('splits each change at the operator\'s receipt and reports every process\'s event-loop delay', () => {
    const { split } = results.propagation;
    // Nearly every change has a receipt (those made while the operator's watch was being re-established may not).
    expect(split.receiptsMatched).toBeGreaterThan(results.propagation.changes * 0.9);
    expect(split.all.kubeSimToOperatorMs.count).toBeGreaterThan(SMOKE.burstPods!);
    expect(split.all.operatorToEtcdMs.count).toBe(split.all.kubeSimToOperatorMs.count);
    for (const name of ['kube-sim', 'operator', 'health', 'agents-full-0']) expect(results.processes[name]?.eventLoopMaxMs, name).toBeGreaterThan(0);
  });

  it('everyone reconnected and resynced after the etcd restart, and no "too many requests" reached a caller', () => {
    const restart = results.restart!;
    expect(restart).toBeDefined();
    expect(restart.retries.full + restart.retries.light).toBeGreaterThan(0);
    expect(restart.operatorWritesResumedMs).not.toBeNull();
    expect(restart.fullResyncMs).not.toBeNull();
    expect(restart.lightReconnectedMs).not.toBeNull();
    expect(results.tooManyRequests.reachingWatchConsumers).toBe(0);
    expect(results.tooManyRequests.operatorLogMentions).toBe(0);
  });

  it('the thundering herd: the listing watchers listed nodes and pods at cold start and after the etcd restart, all came back, no error reached a caller', () => {
    const herd = results.herd!;
    expect(herd.listers).toBe(Math.round(490 * SMOKE.lightListShare!));
    expect(herd.cold?.back).toBe(herd.listers);
    expect(herd.cold?.allBackS).not.toBeNull();
    // Every lister lost its stream when etcd was killed, listed again and watched.
    expect(herd.fault?.watchers).toBe(herd.listers);
    expect(herd.fault?.allBackS).not.toBeNull();
    expect(herd.stillAway).toBe(0);
    expect(herd.lists).toBeGreaterThanOrEqual(2 * 2 * herd.listers!);
    expect(herd.listKeys).toBeGreaterThanOrEqual(2 * herd.listers! * results.memory.podsInCluster);
    expect(herd.errorsReachingCallers).toBe(0);
    expect(herd.cold!.curve.at(-1)!.back).toBe(herd.listers);
  });

  it('services: every EndpointSlice change reached the services table of every full agent', () => {
    const sv = results.services!;
    expect(sv.agents).toBe(10);
    expect(sv.tableServices.p50).toBe(SMOKE.services);
    expect(sv.changes).toBeGreaterThan(0);
    expect(sv.reachedEveryAgent).toBeGreaterThan(sv.changes * 0.9);
    expect(sv.toAllAgentsMs.count).toBe(sv.reachedEveryAgent);
  });

  it('churned and burst pods went Pending → Running, measured from when they ran with an IP', () => {
    expect(results.scenario.podStartDelay).toBeGreaterThan(0);
    // Every burst pod was counted once it ran (matched by name) and reached every full agent; only one the churn
    // deleted while it was still Pending never became an endpoint.
    expect(results.propagation.burst?.latencyMs.count).toBeGreaterThan(SMOKE.burstPods! * 0.95);
    expect(results.propagation.burst?.latencyMs.count).toBeLessThanOrEqual(SMOKE.burstPods!);
  });

  it('measured bytes, events and memory, and detected the dead node', () => {
    expect(results.events.kubeEventsIn).toBeGreaterThan(results.events.etcdWritesOut);
    expect(results.bytes.kubeSimToOperator).toBeGreaterThan(0);
    expect(results.bytes.perLightWatcher).toBeGreaterThan(0);
    expect(results.bytes.reduction).toBeGreaterThan(1);
    expect(results.memory.heapBytesPerPod).toBeGreaterThan(0);
    expect(results.health?.detectionMs).not.toBeNull();
    expect(results.health?.probesPerNodePerSecondMean).toBeGreaterThan(0);
  });

  it('wrote the report, its plots and the figures', async () => {
    expect(files[0]).toBe('report.md');
    for (const f of [...files, 'results.json']) expect(existsSync(join(outDir, f)), f).toBe(true);
    const report = await readFile(join(outDir, 'report.md'), 'utf8');
    expect(report).toContain('## Goals');
    expect(report).toContain('![propagation](propagation.svg)');
    expect(await readFile(join(outDir, 'propagation.svg'), 'utf8')).toMatch(/^<svg/);
    const json = JSON.parse(await readFile(join(outDir, 'results.json'), 'utf8')) as Results;
    expect(json.propagation.changes).toBe(results.propagation.changes);
  });
});
