/**
 * npm run scale -- [--scenario file.json] [flags]: the scale harness. Writes scale-runs/<timestamp>/ with report.md,
 * SVG plots, results.json and every process's log.
 */
import { mkdir, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Command, flag, parseOptions, z } from '@sluice/config';
import { runScale } from './harness.ts';
import type { Results } from './results.ts';
import { writeReport } from './report.ts';
import { loadScenarioFile, resolveScenario, ScenarioError, SMOKE } from './scenario.ts';

const program = new Command('sluice-scale')
  .description('Scale harness: real etcd, kube-sim, operator and health service, simulated agents; writes a report')
  .addOption(flag('--scenario <file>', 'JSON scenario file (flags given explicitly win)'))
  .addOption(flag('--smoke', 'the small smoke scenario (500 nodes, 1 minute) as the base instead of the default'))
  .addOption(flag('--nodes <n>', 'simulated nodes (default 5000)'))
  .addOption(flag('--pods-per-node <n>', 'pods per node (default 20)'))
  .addOption(flag('--services <n>', 'services, each with EndpointSlices over its share of the pods (default 20000)'))
  .addOption(flag('--slice-churn <perSecond>', 'EndpointSlice changes per second beyond the pods\' (readiness flips; default 10)'))
  .addOption(flag('--service-agents <n>', 'full agents that also run the services reconciler (default 5)'))
  .addOption(flag('--churn <perSecond>', 'pod creates plus deletes per second (default 20)'))
  .addOption(flag('--duration <duration>', 'measured phase, e.g. 5m (default 5m)'))
  .addOption(flag('--heartbeat-only <duration>', 'heartbeats-only window before it (default 25s)'))
  .addOption(flag('--burst-pods <n>', 'pods created at once (default 2000)'))
  .addOption(flag('--burst-at <duration>', 'when, in the measured phase (default 90s)'))
  .addOption(flag('--etcd-restart-at <duration>', 'when etcd is stopped (default 180s)'))
  .addOption(flag('--etcd-downtime <duration>', 'how long it stays down (default 10s)'))
  .addOption(flag('--etcd-members <n>', '1, or 3 (a 3-member etcd cluster on loopback; default 1)'))
  .addOption(flag('--etcd-fault <kind>', 'restart (every member SIGKILLed and started again) or leader-kill (3 members; default restart)'))
  .addOption(flag('--full-agents <n>', 'full-state AgentCores (default 50)'))
  .addOption(flag('--full-workers <n>', 'processes for them (default 2)'))
  .addOption(flag('--light-watchers <n>', 'lightweight watchers (default: nodes − full agents)'))
  .addOption(flag('--light-workers <n>', 'processes for them (default 2)'))
  .addOption(flag('--light-clients <n>', 'etcd clients (watch streams) for them, in total (default 1000)'))
  .addOption(flag('--health-phase <duration>', 'health phase after the measured one, 0 to skip (default 40s)'))
  .addOption(flag('--health-loss <share>', 'share of the health phase\'s probes lost at random (default 0.01)'))
  .addOption(flag('--health-pair <which>', 'the pair that breaks in the health phase: next, random or none (default next)'))
  .addOption(flag('--pod-start-delay <duration>', 'churned and burst pods run (get their IP) this long after creation; 0: created Running (default 1s)'))
  .addOption(flag('--light-list <what>', 'what each lightweight watcher lists at cold start and after a lost stream: values, keys or none (default values)'))
  .addOption(flag('--light-list-share <share>', 'share of the lightweight watchers that list, 0–1 (default 0.02; 1: the whole herd, ~200 GB of lists at 100,000 pods)'))
  .addOption(flag('--out <dir>', 'parent folder of the run folder', 'scale-runs'))
  .addOption(flag('--report <runDir>', 'only (re)write the report of an earlier run from its results.json'));

const intFlag = z.coerce.number().int().min(0).optional();
const options = parseOptions(program, z.object({
  scenario: z.string().min(1).optional(),
  smoke: z.boolean().optional(),
  nodes: intFlag, podsPerNode: intFlag, services: intFlag, churn: z.coerce.number().min(0).optional(),
  duration: z.string().optional(), heartbeatOnly: z.string().optional(), burstPods: intFlag, burstAt: z.string().optional(),
  etcdRestartAt: z.string().optional(), etcdDowntime: z.string().optional(), fullAgents: intFlag, fullWorkers: intFlag,
  etcdMembers: z.coerce.number().pipe(z.union([z.literal(1), z.literal(3)])).optional(), etcdFault: z.enum(['restart', 'leader-kill']).optional(),
  lightWatchers: intFlag, lightWorkers: intFlag, lightClients: intFlag, healthPhase: z.string().optional(), out: z.string().min(1),
  healthLoss: z.coerce.number().min(0).max(0.5).optional(), healthPair: z.enum(['next', 'random', 'none']).optional(),
  report: z.string().min(1).optional(),
  podStartDelay: z.string().optional(), lightList: z.enum(['values', 'keys', 'none']).optional(),
  lightListShare: z.coerce.number().min(0).max(1).optional(),
  sliceChurn: z.coerce.number().min(0).optional(), serviceAgents: intFlag,
}));

if (options.report) {
  let earlier: Results;
  try {
    earlier = JSON.parse(await readFile(join(options.report, 'results.json'), 'utf8')) as Results;
  } catch (err) {
    process.stderr.write(`sluice-scale: --report: ${(err as Error).message}\n`);
    process.exit(2);
  }
  const written = await writeReport(earlier, options.report);
  process.stdout.write(`report: ${join(options.report, written[0]!)}\n`);
  process.exit(0);
}

let scenario;
try {
  const base = (options.scenario ? await loadScenarioFile(options.scenario) : options.smoke ? SMOKE : {}) as Record<string, unknown>;
  const overrides: Record<string, unknown> = {
    nodes: options.nodes, podsPerNode: options.podsPerNode, services: options.services, churnPerSecond: options.churn,
    duration: options.duration, heartbeatOnly: options.heartbeatOnly, burstPods: options.burstPods, burstAt: options.burstAt,
    etcdRestartAt: options.etcdRestartAt, etcdDowntime: options.etcdDowntime, fullAgents: options.fullAgents, fullWorkers: options.fullWorkers,
    lightWatchers: options.lightWatchers, lightWorkers: options.lightWorkers, lightClients: options.lightClients, healthPhase: options.healthPhase,
    healthLoss: options.healthLoss, healthPair: options.healthPair, etcdMembers: options.etcdMembers, etcdFault: options.etcdFault,
    podStartDelay: options.podStartDelay, lightList: options.lightList, lightListShare: options.lightListShare,
    sliceChurnPerSecond: options.sliceChurn, serviceAgents: options.serviceAgents,
  };
  for (const [k, v] of Object.entries(overrides)) if (v !== undefined) base[k] = v;
  scenario = resolveScenario(base);
} catch (err) {
  if (!(err instanceof ScenarioError)) throw err;
  process.stderr.write(`sluice-scale: invalid scenario: ${err.message}\n`);
  process.exit(2);
}

// Children are killed by exit hooks; a signal must go through process.exit for them to run.
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => process.exit(130));

const stamp = new Date().toISOString().replace(/[:.]/g, '-');
const outDir = resolve(join(options.out, stamp));
await mkdir(outDir, { recursive: true });
const tty = process.stdout.isTTY;
process.stdout.write(`sluice-scale: run folder ${outDir}\n`);
const results = await runScale(scenario, {
  outDir,
  progress: (line) => process.stdout.write(tty ? `\r\x1b[2K${line}\n` : `${line}\n`),
}).catch((err: unknown) => {
  process.stderr.write(`sluice-scale: ${(err as Error).message}\n`);
  process.exit(1);
});
const files = await writeReport(results, outDir);
process.stdout.write(`report: ${join(outDir, files[0]!)}\n`);
process.exit(0);
