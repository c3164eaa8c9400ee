/**
 * The completeness contract, reader's side (Cilium's `cilium/synced/<cluster>/<prefix>` markers): the operator writes
 * `synced/<kind>` when a term's sweep of that prefix ended (keys.ts, writer.ts) and deletes it when a new term starts.
 * A reader of a prefix
 * - waits for the prefix's marker before its first full reconcile (`watchPrefix(..., { completeness: gate })` holds
 *   back `listDone` until the marker is there and the watch has seen the prefix up to the marker's revision);
 * - never prunes on an incomplete view: after a relist (compaction, or an etcd replaced by an empty or older one)
 *   the deletes of keys missing from the new list wait until the marker is back, and are then emitted only for the
 *   keys the operator did not write again.
 *
 *   const markers = watchSyncMarkers(client, keys, { log });
 *   const pods = watchPrefix(client, keys.prefix('pods'), { ..., completeness: markers.gate('pods') });
 *   await markers.waitForSync('pods');     // or: await pods.synced
 */
import { createLogger, type Logger } from '@sluice/log';
import type { Registry } from '@sluice/metrics';
import type { Etcd3 } from 'etcd3';
import { RESOURCE_KINDS, parseSyncedMarker, type KeySchema, type ResourceKind, type SyncedMarker } from './keys.ts';
import { watchPrefix, type PrefixWatch } from './watcher.ts';

/** What a watch asks before it calls its view complete. SyncMarkers.gate(kind) makes one. */
export interface CompletenessGate {
  /** Whether a view of the prefix that has seen every change up to `revision` is complete. */
  isComplete(revision: number): boolean;
  /** The revision the view must reach once the marker is there (undefined: no marker yet). */
  requiredRevision(): number | undefined;
  /** Calls `listener` whenever the answer may have changed; returns the unsubscribe function. */
  onChange(listener: () => void): () => void;
  /** For logs and status: what is waited for. */
  readonly description: string;
}

export interface SyncMarkersOptions {
  log?: Logger;
  registry?: Registry;
  /** Number of nodes watching like this one (reconnect backoff scaling), a number or a function read on each retry. */
  clusterSize?: number | (() => number);
}

export interface SyncMarkers {
  /** The marker of `kind` as etcd holds it now, or undefined. */
  marker(kind: ResourceKind): SyncedMarker | undefined;
  /** Whether `kind`'s marker is present (and, given a revision, whether a view up to it is complete). */
  isSynced(kind: ResourceKind, revision?: number): boolean;
  /**
   * Resolves with the marker once `kind`'s is present. Logs "waiting for the operator's sync" once if it is not
   * there when the marker watch has listed (and again after it was there and went away).
   */
  waitForSync(kind: ResourceKind, signal?: AbortSignal): Promise<SyncedMarker>;
  gate(kind: ResourceKind): CompletenessGate;
  /** The kinds whose marker is missing (for status pages: "waiting for the operator's sync of pods"). */
  waiting(): ResourceKind[];
  /** Resolves once the marker prefix has been listed. */
  readonly listed: Promise<void>;
  stop(): Promise<void>;
}

export function watchSyncMarkers(client: Etcd3, keys: KeySchema, options: SyncMarkersOptions = {}): SyncMarkers {
  const log = options.log ?? createLogger({ component: 'kvstore-sync' });
  const markers = new Map<ResourceKind, SyncedMarker>();
  // Per kind: a change of one kind's marker must not wake the watches of another (see the watcher's gateDistrusted).
  const listeners = new Map<ResourceKind, Set<() => void>>(RESOURCE_KINDS.map((k) => [k, new Set()]));
  const said = new Set<ResourceKind>();
  let isListed = false;
  const notify = (kinds: readonly ResourceKind[]) => {
    for (const kind of kinds) {
      if (markers.has(kind)) said.delete(kind);
      for (const listener of [...listeners.get(kind)!]) listener();
    }
  };
  const prefix = keys.prefix('synced');
  const watch: PrefixWatch = watchPrefix<SyncedMarker>(client, prefix, {
    name: 'synced',
    log,
    registry: options.registry,
    clusterSize: options.clusterSize,
    decode: (_key, bytes) => {
      const marker = parseSyncedMarker(bytes);
      if (!marker) throw new Error('not a sync marker of this schema');
      return marker;
    },
    onEvent: (event) => {
      if (event.type === 'listDone') {
        isListed = true;
        notify(RESOURCE_KINDS);
        return;
      }
      const kind = event.key.slice(prefix.length) as ResourceKind;
      if (!(RESOURCE_KINDS as readonly string[]).includes(kind)) return;
      if (event.type === 'upsert') markers.set(kind, event.value);
      else markers.delete(kind);
      notify([kind]);
    },
  });

  const sayWaiting = (kind: ResourceKind) => {
    if (!isListed || markers.has(kind) || said.has(kind)) return;
    said.add(kind);
    log.info({ kind }, `waiting for the operator's sync of ${kind} (no synced marker in etcd): not reconciling or pruning it yet`);
  };

  const api: SyncMarkers = {
    listed: watch.synced,
    marker: (kind) => markers.get(kind),
    isSynced(kind, revision) {
      const marker = markers.get(kind);
      if (!marker) return false;
      return revision === undefined || revision >= (marker.revision ?? 0);
    },
    waitForSync(kind, signal) {
      return new Promise<SyncedMarker>((resolve, reject) => {
        const check = () => {
          const marker = markers.get(kind);
          if (marker) {
            listeners.get(kind)!.delete(check);
            resolve(marker);
            return;
          }
          sayWaiting(kind);
        };
        signal?.addEventListener('abort', () => {
          listeners.get(kind)!.delete(check);
          reject(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
        }, { once: true });
        listeners.get(kind)!.add(check);
        check();
      });
    },
    gate(kind) {
      return {
        description: `the operator's sync of ${kind}`,
        isComplete: (revision) => {
          const complete = api.isSynced(kind, revision);
          if (!markers.has(kind)) sayWaiting(kind);
          return complete;
        },
        requiredRevision: () => {
          const marker = markers.get(kind);
          return marker ? (marker.revision ?? 0) : undefined;
        },
        onChange(listener) {
          listeners.get(kind)!.add(listener);
          return () => listeners.get(kind)!.delete(listener);
        },
      };
    },
    waiting: () => RESOURCE_KINDS.filter((k) => !markers.has(k)),
    async stop() {
      for (const set of listeners.values()) set.clear();
      await watch.stop();
    },
  };
  return api;
}
