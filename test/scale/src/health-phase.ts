/**
 * The scale run's health phase: the simulated probers of every node (health-sim.ts, its own process) against the
 * real health service, with the phase's knobs (length, random probe loss, a broken pair). The harness runs it after
 * its measured phase; `health-phase-main.ts` runs it alone (etcd with n node records and the service, nothing else),
 * for the long loss runs that do not need the rest of the harness.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { spawnService } from './processes.ts';
import { processUsage } from '@sluice/process';
import type { Results } from './results.ts';

export interface HealthPhaseOptions {
  /** host:port of the health service. */
  address: string;
  nodes: string[];
  durationMs: number;
  /** Share of probes lost at random (0.01: 1 %). */
  lossRate: number;
  /** Which pair breaks ("next": one the ring probes soon; "random": any; "none"). */
  pair: 'next' | 'random' | 'none';
  /** The service's pid, for its CPU and memory. */
  servicePid?: number;
  logFile: string;
}

export type HealthPhaseResult = NonNullable<Results['health']>;

export async function runHealthPhase(options: HealthPhaseOptions): Promise<HealthPhaseResult | undefined> {
  const victim = options.nodes[Math.floor(options.nodes.length / 2)]!;
  const sim = spawnService('health-sim', fileURLToPath(new URL('./health-sim.ts', import.meta.url)), [JSON.stringify({
    address: options.address, nodes: options.nodes, failAfterMs: options.durationMs / 2, durationMs: options.durationMs, victim,
    lossRate: options.lossRate, pair: options.pair, pairAfterMs: Math.min(options.durationMs * 0.1, 10_000),
  })], options.logFile, 'pipe');
  let out = '';
  sim.process.stdout!.on('data', (chunk: Buffer) => (out += chunk.toString()));
  const exited = new Promise<void>((resolve) => sim.process.once('exit', () => resolve()));
  const sample = () => (options.servicePid ? processUsage(options.servicePid) : undefined);
  const cpu0 = sample()?.cpuSeconds ?? 0;
  const t0 = Date.now();
  await Promise.race([exited, sleep(options.durationMs + 60_000)]);
  await sim.stop();
  const cpu1 = sample()?.cpuSeconds ?? 0;
  const line = out.trim().split('\n').at(-1);
  if (!line) return undefined;
  const parsed = JSON.parse(line) as HealthPhaseResult;
  return { ...parsed, serviceCpuPercent: ((cpu1 - cpu0) / ((Date.now() - t0) / 1000)) * 100, serviceRssMiB: (sample()?.rssBytes ?? 0) / 1024 / 1024 };
}

/** The report's lines about the pair and the false verdicts. */
export function healthPhaseFindings(h: HealthPhaseResult): string {
  const s = (ms: number | null | undefined) => (ms === null || ms === undefined ? 'n/a' : `${(ms / 1000).toFixed(1)} s`);
  const parts = [`Random probe loss ${((h.lossRate ?? 0) * 100).toFixed(1)} %: **${h.falseVerdicts ?? 0} false verdicts**${h.falseVerdictExamples?.length ? ` (${h.falseVerdictExamples.join('; ')})` : ''}.`];
  if (h.pair) {
    parts.push(
      `Broken pair ${h.pair.a} ↔ ${h.pair.b} (${h.pair.choice === 'next' ? 'a pair the ring probed soon after the block' : 'a random pair'}): ` +
        `first failed probe ${s(h.pair.firstFailedProbeAfterMs)} after the block, **shown ${s(h.pair.shownAfterMs)} after the block (${s(h.pair.shownAfterFirstFailedProbeMs)} after its first failed probe)**; ` +
        `a random pair waits ${s(h.pair.expectedCoverageMs)} on average for the ring to probe it in either direction.`,
    );
  }
  return parts.join(' ');
}
