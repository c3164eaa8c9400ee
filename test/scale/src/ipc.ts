/** Messages between the harness and its child processes (Node's IPC channel, JSON). */
import type { KubeSimOptions } from '@sluice/kube-sim';
import type { LightEpisode, LightList } from './light-watcher.ts';

/** `namespace/name`, A(dded) or D(eleted), epoch ms in the API server. */
export type PodChange = [key: string, type: 'A' | 'D', at: number];
/** An EndpointSlice's `namespace/name`, S(et: added or modified) or X (deleted), epoch ms in the API server. */
export type SliceChange = [key: string, type: 'S' | 'X', at: number];

export interface KubeSimCounters {
  bytesWritten: number;
  watchBytesSent: number;
  watchEventsSent: number;
  heartbeats: number;
  podsCreated: number;
  podsDeleted: number;
  watchers: number;
  /** Bytes sent on live watches, by resource (nodes, pods, …). */
  watchBytesByResource: Record<string, number>;
  objects: Record<string, number>;
  heapUsed: number;
}

export type HostCommand =
  | { type: 'start'; options: Omit<KubeSimOptions, 'log'> }
  | { type: 'record'; on: boolean }
  | { type: 'churn'; perSecond: number }
  | { type: 'burst'; pods: number }
  /** Readiness flips per second of random running pods: each one changes its EndpointSlice (ready ↔ not ready). */
  | { type: 'sliceChurn'; perSecond: number }
  | { type: 'stats'; id: number }
  | { type: 'stop' };

export type HostMessage =
  | { type: 'ready'; url: string; nodes: string[] }
  | { type: 'changes'; changes: PodChange[]; slices: SliceChange[] }
  /** `keys`: the burst's pods (their changes are recorded when they run, podStartDelay later). */
  | { type: 'burstDone'; started: number; ended: number; pods: number; keys: string[] }
  | { type: 'stats'; id: number; stats: KubeSimCounters }
  /** The event loop's delay over the last ~2 s (max and p99, ms): a stall is pinned on the process that had it. */
  | { type: 'eventLoop'; maxMs: number; p99Ms: number };

export interface WorkerInit {
  type: 'init';
  /** etcd client URLs, comma-separated. */
  etcd: string;
  root: string;
  clusterSize: number;
  /** Node names of the full-state agents this worker runs. */
  full: string[];
  /** Node names of the lightweight watchers this worker runs. */
  light: string[];
  /** etcd clients the lightweight watchers spread over. */
  lightClients: number;
  /** Watch the pods prefix and report every event's revision (one worker does it). */
  trackRevisions: boolean;
  /** Revision from which the lightweight watchers start when they do not list. */
  startRevision: number;
  /** What the lightweight watchers list at cold start and after a lost stream, and how many of them do (the first ones). */
  lightList: LightList;
  lightListers: number;
  /** The first this many of this worker's full agents also run the services reconciler (startServices). */
  serviceAgents: number;
}

/** `gc`: collect first, for a memory figure (costly with big heaps, so not in the periodic samples). */
export type WorkerCommand = WorkerInit | { type: 'sample'; id: number; gc: boolean } | { type: 'stop' };

/** [key without the pods prefix, P(ut) or D(elete), modRevision]. */
export type EtcdPodEvent = [key: string, type: 'P' | 'D', revision: number];

export interface WorkerSample {
  /** Sum over this worker's full agents / lightweight watchers. */
  fullSynced: number;
  fullConnected: number;
  lightConnected: number;
  /** Watch events and value bytes (key + value + per-event overhead estimate) received by lightweight watchers. */
  lightEvents: number;
  lightBytes: number;
  /** The same estimate for the full agents' watches (counted by the revision tracker's decoder hook). */
  fullRetries: number;
  lightRetries: number;
  /** Lists done by lightweight watchers (one per prefix per way back), keys and bytes listed. */
  lightLists: number;
  lightListKeys: number;
  lightListBytes: number;
  /**
   * Errors seen by watchers, by message: each one retried with backoff (the full agents' last watch error, after which
   * the library retried; the lightweight watchers' failed pages and lost streams).
   */
  errors: Record<string, number>;
  /** Errors that a real agent's kvstore would not have retried, so that they would reach its code: must stay empty. */
  unretried: Record<string, number>;
  /** Bytes read by this process from its sockets (rchar of /proc/self/io: almost all of it is etcd traffic). */
  rchar: number;
  heapUsed: number;
  rss: number;
  /** The longest event-loop delay since the previous sample, ms. */
  eventLoopMaxMs: number;
  /** Endpoints and nodes held by each full agent (for completeness checks). */
  clusterEndpoints: number[];
  /** Per full agent with the services reconciler: services and slices in its table, services in its maps. */
  serviceTables?: Array<{ services: number; slices: number; programmed: number }>;
}

export type WorkerMessage =
  /** Memory before any agent or watcher was created (after a GC). */
  | { type: 'ready'; baseline: { heapUsed: number; rss: number } }
  | { type: 'synced'; at: number }
  /** Per full agent: [agent index, podsRevision, at] after each flush that reached its maps. */
  | { type: 'programmed'; items: Array<[agent: number, podsRevision: number, at: number]> }
  | { type: 'etcdEvents'; items: Array<[...EtcdPodEvent, number]> }
  /** Per full agent with services: [agent index, services table revision programmed, at]. */
  | { type: 'svcProgrammed'; items: Array<[agent: number, revision: number, at: number]> }
  /** EndpointSlice changes in etcd: [key without the prefix, P | D, modRevision, at]. */
  | { type: 'sliceEvents'; items: Array<[...EtcdPodEvent, number]> }
  /** A watcher (re)connect attempt after a lost stream: [at, 'full' | 'light']. */
  | { type: 'retries'; items: Array<[at: number, kind: 'full' | 'light']> }
  /** Lightweight watchers back (listed and watching again), one item per way back. */
  | { type: 'back'; items: LightEpisode[] }
  | { type: 'sample'; id: number; sample: WorkerSample };
