/**
 * @sluice/kvstore: Sluice's etcd layer. One client per process; everything else shares it.
 *
 * Client
 *   createKvClient({ endpoints, callTimeoutMs?, dialTimeoutMs? }): Etcd3
 *
 * Writer (operator)
 *   const writer = new KvWriter({ client, guard?: election, registry?, log?, maxTxnOps? = 128,
 *                                 maxRequestBytes? = 1.5 MiB, maxInFlight? = 4, qps? = 400, burst? = 40, backoff? })
 *   Transactions are cut by operations and bytes; one etcd refuses for good (too large, too many operations) is split
 *   until the refused key is isolated: it is dropped and reported (getStats().rejectedKeys, log once, metric), the
 *   others land; a lower --max-txn-ops in etcd is learned. flush() never waits on a refused key.
 *   writer.upsert(key, value: string | Uint8Array): void   // queued; skipped if etcd holds the same bytes
 *   writer.delete(key): void                                // queued; skipped if etcd is known not to hold it
 *   await writer.beginSync(prefix): { prefix, existing }    // mark: loads the prefix, records upserts under it
 *   await writer.finishSync(prefix, { key: keys.synced(kind), value: syncedMarkerValue(kind) }): { deleted }
 *                                                           // sweep un-asserted keys, flush, write the marker
 *   await writer.flush()                                    // everything queued so far has landed
 *   writer.getStats(): { writes, skipped, deletes, retries, transactions, fenced, rejected, rejectedKeys, maxTxnOps,
 *                        pending, inFlight }
 *   writer.close()
 *   Metrics: sluice_kv_writes_total, _writes_skipped_total, _deletes_total, _write_retries_total,
 *   _writes_fenced_total, _writes_rejected_total, sluice_kv_rejected_keys, sluice_kv_txn_ops (histogram),
 *   sluice_kv_txn_duration_seconds (histogram).
 *
 * Watcher (agents, health service, scale harness)
 *   const watch = watchPrefix<T>(client, prefix, { decode: (key, bytes: Buffer) => T, onEvent: (e: WatchEvent<T>) => void,
 *                                                 clusterSize?, backoff?, pageSize?, name?, log?, registry? })
 *   pageSize: a fixed number of keys, or PageSizing (default: pages of ~4 MiB; etcd walks the rest of the prefix
 *   for every page, so fewer, fuller pages cost it less: pages.ts)
 *   WatchEvent<T> = { type: 'upsert', key, value: T, modRevision } | { type: 'delete', key, modRevision }
 *                 | { type: 'listDone', revision }   // exactly once, after the first full list
 *   await watch.synced; watch.status(): WatchStatus; await watch.stop()
 *   Metrics: sluice_kv_watch_events_total{watch,type}, _watch_decode_errors_total{watch}, _watch_retries_total{watch},
 *   _watch_relists_total{watch}, sluice_kv_watches{watch}.
 *
 * Completeness (agents, health service): the operator's sync markers, synced/<kind> = { kind, schema, term, revision }
 *   writer.beginSync(prefix, { marker: keys.synced(kind) })        // a new term deletes the old term's marker
 *   writer.finishSync(prefix, { key, value: (stamp) => syncedMarkerValue(kind, stamp) })
 *   const markers = watchSyncMarkers(client, keys, { log?, registry?, clusterSize? })
 *   await markers.waitForSync(kind); markers.isSynced(kind, revision?); markers.waiting()
 *   watchPrefix(client, prefix, { ..., completeness: markers.gate(kind) })
 *     // listDone only once the marker is there and the watch has seen its revision; a relist (compaction, an etcd
 *     // replaced or restored) never deletes without it: status().waitingForSync / staleKeys
 *
 * Leader election (operator)
 *   const election = new LeaderElection({ client, prefix: keys.operatorElection(), identity, ttlSeconds? = 15, log?,
 *                                        registry? }).start()
 *   election.isLeader; election.fence(); await election.whenLeader(signal?); election.onChange((leading) => …);
 *   election.leaseId(); await election.resign()   // on shutdown: the next candidate leads at once
 *   observeLeader(client, keys.operatorElection(), (identity | undefined) => …): PrefixWatch
 *
 * Keys bound to this process's lease (heartbeat, agent status/health registration)
 *   const leased = new LeasedKeys({ client, ttlSeconds? = 15 }); await leased.put(key, value); await leased.delete(key);
 *   await leased.close()   // revokes the lease: the keys vanish at once
 *
 * Least privilege (etcd auth)
 *   await setupAuth(rootClient, keys, { nodes, password?, enable? = true }); authPlan(keys, nodes); ETCD_USERS
 *   bin sluice-etcd-auth (src/etcd-auth-main.ts): the same from the command line.
 *
 * Records
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
export { PageSizer, type PageSizing } from './pages.ts';
export { watchSyncMarkers, type CompletenessGate, type SyncMarkers, type SyncMarkersOptions } from './sync.ts';
export { LeaderElection, observeLeader, type LeaderElectionOptions } from './election.ts';
export { LeasedKeys, type LeasedKeysOptions } from './leased.ts';
export * from './records.ts';
export { authPlan, setupAuth, ETCD_USERS, ETCD_ROLES, type AuthPlan, type Grant, type SetupAuthOptions, type SetupAuthReport } from './auth.ts';
