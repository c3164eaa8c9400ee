/** results.json: every figure of a run (the report is made from it; the smoke test asserts on it). */
import type { KubeSimCounters } from './ipc.ts';
import type { Scenario } from './scenario.ts';
import type { summarize } from './stats.ts';

export type Summary = ReturnType<typeof summarize>;

export interface SeriesPoint {
  /** Seconds since the start of the measured phase. */
  t: number;
  /** CPU of each process over the last interval, % of one core. */
  cpu: Record<string, number>;
  rssMiB: Record<string, number>;
  etcdDbMiB?: number;
  lightEvents?: number;
  fullConnected?: number;
  lightConnected?: number;
  /** Each process's longest event-loop delay over the last interval, ms. */
  eventLoopMaxMs?: Record<string, number>;
}

/** One wave of the thundering herd: lightweight watchers listing nodes and pods and watching again. */
export interface HerdPhase {
  /** Watchers expected back (cold: all of them; fault: those that lost their stream) and back. */
  watchers: number;
  back: number;
  /** Seconds from the zero (cold: the first watcher's start; fault: see `zero`) until the last was back; null if one never was. */
  allBackS: number | null;
  /** Each watcher's return, in seconds from the zero, and from its own loss (its time-to-back). */
  backS: Summary;
  ownS: Summary;
  retries: number;
  /** Retries whose error was "too many requests" / ResourceExhausted (retried, not reaching a caller). */
  tooMany: number;
  /** Agents back against seconds since the zero (cumulative, ≤ ~400 points). */
  curve: Array<{ s: number; back: number }>;
}

export interface Results {
  version: 1;
  startedAt: string;
  host: { cpus: number; memoryGiB: number; node: string };
  scenario: Scenario;
  setup: { kubeSimStartS: number; operatorSyncS: number; agentsSyncS: number };
  agents: {
    full: { count: number; processes: number; nodes: string[]; endpointsHeld: Summary };
    light: { count: number; processes: number; etcdClients: number };
    etcdWatchStreams: number | null;
    etcdWatchers: number | null;
    clientConnections: number;
  };
  heartbeats: {
    windowS: number;
    heartbeatsSent: number;
    nodeEventsAtOperator: number;
    operatorWrites: number;
    skippedWrites: number;
    nodeKeys: number;
    /** 1 if any node key's modRevision moved during the heartbeat-only window. */
    nodeKeysWritten: number;
    nodeKeysMaxModRevision: number[];
    wholeRun: { heartbeatsSent: number; nodeKeysMaxModRevision: number[] };
  };
  events: {
    phaseS: number;
    kubeEventsIn: number;
    nodeEvents: number;
    podEvents: number;
    etcdWritesOut: number;
    skippedWrites: number;
    writeRetries: number;
    etcdRevisions: number;
    eventsPerWrite: number | null;
    writesPer1000Events: number | null;
  };
  bytes: {
    kubeSimToOperator: number;
    kubeSimToOperatorMbitS: number;
    perLightWatcher: number;
    lightWatcherEvents: number;
    agentsAllNodesEstimate: number;
    agentsAllNodesMbitS: number;
    etcdGrpcSent: number | null;
    etcdGrpcSentMbitS: number | null;
    counterfactualDirectWatches: number;
    counterfactualMbitS: number;
    reduction: number | null;
  };
  propagation: {
    changes: number;
    reachedEveryFullAgent: number;
    incomplete: number;
    /** Pods created and deleted while etcd or the operator was away: coalesced by the writer, never in etcd. */
    coalesced: number;
    notInEtcd: number;
    incompleteSample: Array<{ key: string; type: 'A' | 'D'; t: number; inEtcd: boolean; missingAgents: number }>;
    toAllFullAgentsMs: Summary;
    steadyMs: Summary;
    /** What the steady set leaves out: from each perturbation's start until its backlog reached every full agent. */
    perturbedWindows: Array<{ name: 'burst' | 'outage'; fromS: number; toS: number }>;
    perAgentMs: Summary;
    kubeToEtcdMs: Summary;
    /**
     * Each change's latency split at the operator's receipt (its --receipt-log): kube-sim → operator (the API server
     * and the watch), operator → etcd (decode, slim, write), etcd → every full agent. All changes, and the steady set.
     */
    split: {
      all: { kubeSimToOperatorMs: Summary; operatorToEtcdMs: Summary; etcdToAllAgentsMs: Summary };
      steady: { kubeSimToOperatorMs: Summary; operatorToEtcdMs: Summary; etcdToAllAgentsMs: Summary };
      receiptsMatched: number;
    };
    burst: { pods: number; createMs: number; lastArrivalMs: number; latencyMs: Summary } | null;
    /** Per change: when it was made (s into the phase), its latency to every full agent, and to etcd (the operator's part). */
    series: Array<{ t: number; ms: number; etcdMs?: number; type: 'A' | 'D' }>;
  };
  memory: {
    podsInCluster: number;
    fullAgentHeapBytes: number;
    fullAgentRssBytes: number;
    heapBytesPerPod: number;
    rssBytesPerPod: number;
    byProcess: Array<{ agents: number; heapBytes: number; rssBytes: number }>;
  };
  processes: Record<string, { cpuPercentMean: number | null; peakRssMiB: number; eventLoopMaxMs: number | null; eventLoopWindowsOver200Ms: number | null }>;
  etcd: { dbSizeBytes: number | null; resourceExhaustedReturned: number | null; slowWatchers: number | null };
  tooManyRequests: { reachingWatchConsumers: number; seenAndRetried?: number; operatorLogMentions: number; etcdReturnedResourceExhausted: number | null };
  /**
   * Services at scale (issue 14): each EndpointSlice change (kube-sim's stamp) → its etcd revision → every services
   * table of the full agents that run the services reconciler programmed past it.
   */
  services?: {
    services: number;
    agents: number;
    sliceChurnPerSecond: number;
    slicesInCluster: number | null;
    /** Per agent at the end: services and slices in its table, services in its load-balancer maps. */
    tableServices: Summary;
    tableSlices: Summary;
    programmedServices: Summary;
    changes: number;
    reachedEveryAgent: number;
    notInEtcd: number;
    incomplete: number;
    toAllAgentsMs: Summary;
    steadyMs: Summary;
    perAgentMs: Summary;
    kubeToEtcdMs: Summary;
    etcdToAllAgentsMs: Summary;
  };
  /** The thundering herd (issue 17): every lightweight watcher lists at cold start and after the etcd fault. */
  herd?: {
    list: 'values' | 'keys' | 'none';
    /** Lightweight watchers that list (scenario lightListShare); the others only watch. */
    listers?: number;
    cold: HerdPhase | null;
    fault: (HerdPhase & { zero: string; fullAgentsS: Summary }) | null;
    /** Lightweight watchers not connected at the last sample. */
    stillAway: number | null;
    lists: number;
    listKeys: number;
    listBytes: number;
    /** Errors that the kvstore's retry policy would not retry (they would reach an agent's code), and which. */
    errorsReachingCallers: number;
    unretried: Record<string, number>;
  };
  errorsSeenByWatchers: Record<string, number>;
  restart:
    | {
        pausedAtS: number;
        resumedAtS: number;
        downtimeS: number;
        revisionAtResume: number;
        /** From etcd's return to the first pod change written by the operator. */
        operatorWritesResumedMs: number | null;
        firstRevisionAfterResume: number | null;
        retries: { full: number; light: number };
        histogram: Array<{ secondAfterStop: number; full: number; light: number }>;
        fullResyncMs: number | null;
        lightReconnectedMs: number | null;
      }
    | undefined;
  health:
    | {
        n: number;
        fanout: number;
        roundMs: number;
        slotMs: number;
        quorum: number;
        documentedDetectionMs: number;
        victim: string;
        failAt: number;
        detectedAt?: number;
        detectionMs: number | null;
        probesPerNodePerSecondMean: number;
        probesPerNodePerSecondMax: number;
        sendErrors: number;
        serviceCpuPercent?: number;
        serviceRssMiB?: number;
        lossRate?: number;
        /** The broken pair: when its first probe failed and when the service showed it, from the block. */
        pair?: {
          a: string; b: string; choice: string; blockedAt: number;
          firstFailedProbeAfterMs: number | null; shownAfterMs: number | null; shownAfterFirstFailedProbeMs: number | null; expectedCoverageMs: number;
        } | null;
        /** Verdicts about nodes that were fine (unreachable, endpoint or agent down, a pair other than the broken one). */
        falseVerdicts?: number;
        falseVerdictExamples?: string[];
      }
    | undefined;
  kubeSim: { stats: KubeSimCounters | null };
  operator: { metrics: Record<string, number> | null };
  series: SeriesPoint[];
}
