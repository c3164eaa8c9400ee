/** Simulated reports for the health benchmark: what 5,000 agents send in one probing round. */
import type { ProbeResult, ReportProbesRequest } from '@sluice/health-api';
import { roundRing, type ProbePlan } from '@sluice/prober';

export const N = 5000;
export const names = Array.from({ length: N }, (_, i) => `node-${String(i).padStart(5, '0')}`);
const KINDS = ['PROBE_KIND_HOST_ICMP', 'PROBE_KIND_HOST_HTTP', 'PROBE_KIND_ENDPOINT_ICMP', 'PROBE_KIND_ENDPOINT_HTTP'] as const;

/** One round of reports: every node's batch for its k peers of the round, 4 results each. */
export function roundReports(plan: ProbePlan, round: number, now: number, dead = new Set<string>()): ReportProbesRequest[] {
  const ring = roundRing(names, round);
  const reports: ReportProbesRequest[] = [];
  for (let p = 0; p < ring.length; p++) {
    const reporter = ring[p]!;
    if (dead.has(reporter)) continue;
    const results: ProbeResult[] = [];
    for (let j = 1; j <= plan.fanout; j++) {
      const target = ring[(p + j) % ring.length]!;
      const up = !dead.has(target);
      for (const kind of KINDS) {
        results.push({ target, kind, ip: '10.0.0.1', ok: up, rttUs: up ? 200 + j : 0, error: up ? '' : 'Connection timed out', timeUnixMs: now });
      }
    }
    reports.push({ reporter, results });
  }
  return reports;
}
