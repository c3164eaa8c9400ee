/**
 * The scale scenario: what the harness builds and the timeline it plays. A JSON file validated here; flags override it.
 * Durations are milliseconds or strings like "10s", "5m".
 */
import { readFile } from 'node:fs/promises';
import { schemas, z } from '@sluice/config';

const duration = schemas.duration;

export const scenarioSchema = z.strictObject({
  nodes: z.number().int().min(10).default(5000),
  podsPerNode: z.number().int().min(1).default(20),
  /**
   * Services (each selecting its share of the pods round-robin, so that their EndpointSlices hold every pod: 20,000
   * services over 100,000 pods are Cilium 1.5's 20,000 services and 100,000 backends).
   */
  services: z.number().int().min(0).default(20_000),
  /** EndpointSlice churn in the measured phase beyond the pods': readiness flips of random running pods per second. */
  sliceChurnPerSecond: z.number().min(0).default(10),
  /**
   * Full agents that also run the services reconciler (the load balancer's maps); default 5, one per default worker
   * process. Each holds the whole services table and does its node's whole services work (a cold pass of ~3 CPU-s,
   * every slice change): all 50 fit in memory (the in-memory maps share identical Maglev tables) but saturate this
   * 2-core machine (a run of 50 took 657 s to sync and its slice changes lagged by up to 53 s).
   */
  serviceAgents: z.number().int().min(0).default(5),
  heartbeatInterval: duration.default(10_000),
  seed: z.number().int().default(1),
  /** Pod creates plus deletes per second during the measured phase. */
  churnPerSecond: z.number().min(0).default(20),
  /** Length of the measured phase (churn, burst, etcd restart). */
  duration: duration.default(300_000),
  /** Heartbeats only, no churn, before the measured phase: proves heartbeats write nothing. */
  heartbeatOnly: duration.default(25_000),
  /** Pods created at once, and when (from the start of the measured phase). */
  burstPods: z.number().int().min(0).default(2000),
  burstAt: duration.default(90_000),
  /** etcd stopped (SIGKILL, data kept) and started again, and how long it stays down. */
  etcdRestartAt: duration.default(180_000),
  etcdDowntime: duration.default(10_000),
  /** etcd members: 1, or a 3-member cluster on loopback. */
  etcdMembers: z.union([z.literal(1), z.literal(3)]).default(1),
  /** The fault at etcdRestartAt: every member SIGKILLed and restarted, or only the leader (needs 3 members). */
  etcdFault: z.enum(['restart', 'leader-kill']).default('restart'),
  /**
   * Full-state AgentCores against memoryDatapath, over this many worker processes. A real agent has its own ~35 MiB
   * heap; 25 agents in one process share a ~900 MiB heap whose collections stall all of them at once (at the default
   * scenario, 2 processes measured a steady p99 of 1.8 s, 5 processes 0.5 s).
   */
  fullAgents: z.number().int().min(1).default(50),
  fullWorkers: z.number().int().min(1).default(5),
  /** Lightweight watchers (nodes + pods, counting only); default: one per remaining node. */
  lightWatchers: z.number().int().min(0).optional(),
  lightWorkers: z.number().int().min(1).default(2),
  /** etcd client connections (each one gRPC watch stream) the lightweight watchers spread over, in total. */
  lightClients: z.number().int().min(1).default(1000),
  /** After the measured phase: simulated probers report to the health service; one node is made unreachable. */
  healthPhase: duration.default(40_000),
  /** Share of the health phase's probes lost at random: no false verdict may come of it (the goal: 1 % over 10 min). */
  healthLoss: z.number().min(0).max(0.5).default(0.01),
  /** The pair of nodes that stop reaching each other during the health phase (see health-sim.ts). */
  healthPair: z.enum(['next', 'random', 'none']).default('next'),
  /**
   * Churned and burst pods are created Pending (scheduled, no IP) and run with an IP this long after, as a kubelet
   * would (kube-sim's --pod-start-delay); propagation is measured from the moment a pod runs with its IP (when the
   * operator writes its endpoint). 0: created Running.
   */
  podStartDelay: duration.default(1_000),
  /**
   * What each lightweight watcher lists, at cold start and after every lost stream (the thundering herd of issue 17:
   * all agents list the nodes and pods prefixes at once): values (what an agent reads), keys only, or none (watch only,
   * resumed from its own revision).
   */
  lightList: z.enum(['values', 'keys', 'none']).default('values'),
  /**
   * Share of the lightweight watchers that list (the rest only watch and resume). 1: the whole herd. One machine
   * serves and receives every agent's list: 4,950 lists of 100,000 pods (~405 B each) are ~200 GB, beyond what 2
   * cores move in a minute (~70 MB/s measured), so by default 2 % list (~100 × 42 MB) and the report says so.
   */
  lightListShare: z.number().min(0).max(1).default(0.02),
  /** Seconds between progress lines when stdout is not a TTY. */
  progressEvery: duration.default(5_000),
});

export type ScenarioInput = z.input<typeof scenarioSchema>;
export type Scenario = z.output<typeof scenarioSchema> & { lightWatchers: number };

export class ScenarioError extends Error {}

/** Fills defaults and derived values, and checks that the timeline fits. */
export function resolveScenario(input: unknown): Scenario {
  const result = scenarioSchema.safeParse(input);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    throw new ScenarioError(`${issue.path.join('.') || '(root)'}: ${issue.message}`);
  }
  const s = result.data;
  if (s.fullAgents > s.nodes) throw new ScenarioError(`fullAgents (${s.fullAgents}) exceeds nodes (${s.nodes})`);
  const lightWatchers = s.lightWatchers ?? s.nodes - s.fullAgents;
  if (s.burstAt >= s.duration) throw new ScenarioError(`burstAt must fall inside duration`);
  if (s.etcdRestartAt + s.etcdDowntime >= s.duration) throw new ScenarioError(`the etcd restart must end inside duration`);
  if (s.etcdFault === 'leader-kill' && s.etcdMembers !== 3) throw new ScenarioError('etcdFault leader-kill needs etcdMembers 3');
  const serviceAgents = Math.min(s.fullAgents, s.serviceAgents);
  return { ...s, lightWatchers, serviceAgents, lightClients: Math.min(s.lightClients, Math.max(1, lightWatchers)) };
}

export async function loadScenarioFile(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new ScenarioError(`cannot read scenario ${path}: ${(err as Error).message}`);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new ScenarioError(`scenario ${path} is not JSON: ${(err as Error).message}`);
  }
}

/** The smoke scenario of `npm test`: every phase, small and short. */
export const SMOKE: ScenarioInput = {
  nodes: 500, podsPerNode: 20, services: 2000, sliceChurnPerSecond: 10, churnPerSecond: 20, duration: 60_000, heartbeatOnly: 12_000,
  burstPods: 300, burstAt: 15_000, etcdRestartAt: 30_000, etcdDowntime: 5_000, fullAgents: 10, fullWorkers: 1,
  lightWatchers: 490, lightWorkers: 1, lightClients: 100, lightListShare: 0.2, serviceAgents: 10, healthPhase: 15_000, progressEvery: 5_000,
};
