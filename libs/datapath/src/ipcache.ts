/**
 * The ipcache as one CIDR-keyed table over its two maps: /32s go to sl_ipcache_host (hash, flat per-packet cost),
 * shorter prefixes to sl_ipcache (LPM trie). The programs look in the hash first.
 */
import { hostAddress, type EndpointKey, type IpcacheValue, type LpmKey } from '@sluice/bpf';
import type { Datapath } from './datapath.ts';
import type { MapMetrics } from './metrics.ts';
import { reconcile, type ReconcileResult } from './reconcile.ts';

export interface SplitIpcache {
  hosts: Array<[EndpointKey, IpcacheValue]>;
  prefixes: Array<[LpmKey, IpcacheValue]>;
}

export function splitIpcache(entries: Iterable<readonly [LpmKey, IpcacheValue]>): SplitIpcache {
  const out: SplitIpcache = { hosts: [], prefixes: [] };
  for (const [key, value] of entries) {
    const host = hostAddress(key.cidr);
    if (host !== undefined) out.hosts.push([{ ip: host }, value]);
    else out.prefixes.push([key, value]);
  }
  return out;
}

export function upsertIpcache(dp: Pick<Datapath, 'maps'>, entries: Iterable<readonly [LpmKey, IpcacheValue]>): void {
  const split = splitIpcache(entries);
  dp.maps.ipcacheHost.upsertBatch(split.hosts);
  dp.maps.ipcache.upsertBatch(split.prefixes);
}

export function deleteIpcache(dp: Pick<Datapath, 'maps'>, keys: Iterable<LpmKey>): void {
  const hosts: EndpointKey[] = [];
  const prefixes: LpmKey[] = [];
  for (const key of keys) {
    const host = hostAddress(key.cidr);
    if (host !== undefined) hosts.push({ ip: host });
    else prefixes.push(key);
  }
  dp.maps.ipcacheHost.deleteBatch(hosts);
  dp.maps.ipcache.deleteBatch(prefixes);
}

export function lookupIpcache(dp: Pick<Datapath, 'maps'>, key: LpmKey): IpcacheValue | undefined {
  const host = hostAddress(key.cidr);
  return host !== undefined ? dp.maps.ipcacheHost.lookup({ ip: host }) : dp.maps.ipcache.lookup(key);
}

/** Reconciles both halves; two results (sl_ipcache_host, sl_ipcache), each with its own error if full. */
export function reconcileIpcache(dp: Pick<Datapath, 'maps'>, desired: Iterable<readonly [LpmKey, IpcacheValue]>, metrics?: MapMetrics): [ReconcileResult, ReconcileResult] {
  const split = splitIpcache(desired);
  return [reconcile(dp.maps.ipcacheHost, split.hosts, metrics), reconcile(dp.maps.ipcache, split.prefixes, metrics)];
}
