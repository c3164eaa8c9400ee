/**
 * @sluice/kvstore: Sluice's etcd layer.
 *
 * - `keySchema(root)`: every key and value format (keys.ts).
 * - `createKvClient({endpoints})`: the one etcd3 client of a process, shared by everything below.
 * - `KvWriter`: batched, coalesced, deduplicated, rate-limited, retried, leader-fenced writes; mark-and-sweep
 *   (`beginSync` / `finishSync`) and `flush()`.
 * - `watchPrefix(client, prefix, {decode, onEvent})`: list + watch with typed events (`upsert`, `delete`, one
 *   `listDone`), resumes without loss or duplicates, relists on compaction emitting only differences.
 * - `LeaderElection` (a `WriteGuard` for the writer), `observeLeader`: lease-based leader election.
 * - `LeasedKeys`: keys bound to the process's own lease (heartbeats, agent status/health registration).
 * - records.ts: zod schemas of NodeConfigRecord, AgentStatusRecord, HealthEndpointRecord (`decodeRecord`).
 */
export * from './keys.ts';
export { createKvClient, type Etcd3, type KvClientOptions } from './client.ts';
export { isRetryableEtcdError, isCompactedError, isWatchCanceledError } from './errors.ts';
export {
  KvWriter,
  type KvWriterOptions,
  type WriteGuard,
  type Fence,
  type WriterStats,
  type PrefixSync,
} from './writer.ts';
export { watchPrefix, prefixRangeEnd, type WatchEvent, type WatchOptions, type WatchStatus, type PrefixWatch } from './watcher.ts';
export { LeaderElection, observeLeader, type LeaderElectionOptions } from './election.ts';
export { LeasedKeys, type LeasedKeysOptions } from './leased.ts';
export * from './records.ts';
