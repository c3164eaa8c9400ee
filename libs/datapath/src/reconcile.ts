/**
 * Desired state against a map's actual contents → the smallest set of writes: only keys that are missing or whose
 * value bytes differ are updated, only keys that should not be there are deleted; equal entries are not touched.
 * Deletes go first so that a map near capacity frees room before new keys go in.
 */
import type { CodecMap } from './backend.ts';
import { MapFullError } from './errors.ts';
import type { MapMetrics } from './metrics.ts';

export interface ReconcilePlan {
  /** Entries to write, in bpf_map_update_batch layout. */
  updates: { keys: Buffer; values: Buffer; count: number };
  /** Keys to delete. */
  deletes: { keys: Buffer; count: number };
  unchanged: number;
  /** Entries the map would hold afterwards. */
  finalCount: number;
}

export interface ReconcileResult {
  map: string;
  updated: number;
  deleted: number;
  unchanged: number;
  /** Set when the map had no room for every desired entry: the datapath is partially programmed, not crashed. */
  error?: MapFullError;
}

export function planReconcile<K, V>(map: CodecMap<K, V>, desired: Iterable<readonly [K, V]>): ReconcilePlan {
  const ks = map.raw.keySize;
  const vs = map.raw.valueSize;
  const actual = map.timed('dump', () => map.raw.dumpRaw());
  const actualIndex = new Map<string, number>();
  for (let i = 0; i < actual.count; i++) actualIndex.set(actual.keys.toString('latin1', i * ks, (i + 1) * ks), i);

  const desiredList = Array.isArray(desired) ? (desired as ReadonlyArray<readonly [K, V]>) : [...desired];
  const enc = map.encodeEntries(desiredList);
  const seen = new Set<string>();
  const updateIdx: number[] = [];
  let unchanged = 0;
  for (let i = 0; i < enc.count; i++) {
    const id = enc.keys.toString('latin1', i * ks, (i + 1) * ks);
    if (seen.has(id)) continue; // a later duplicate of the same key: the first one wins
    seen.add(id);
    const j = actualIndex.get(id);
    if (j !== undefined && enc.values.compare(actual.values, j * vs, (j + 1) * vs, i * vs, (i + 1) * vs) === 0) unchanged++;
    else updateIdx.push(i);
  }
  const deleteIdx: number[] = [];
  for (const [id, j] of actualIndex) if (!seen.has(id)) deleteIdx.push(j);

  const updates = { keys: Buffer.alloc(updateIdx.length * ks), values: Buffer.alloc(updateIdx.length * vs), count: updateIdx.length };
  updateIdx.forEach((i, n) => {
    enc.keys.copy(updates.keys, n * ks, i * ks, (i + 1) * ks);
    enc.values.copy(updates.values, n * vs, i * vs, (i + 1) * vs);
  });
  const deletes = { keys: Buffer.alloc(deleteIdx.length * ks), count: deleteIdx.length };
  deleteIdx.forEach((j, n) => actual.keys.copy(deletes.keys, n * ks, j * ks, (j + 1) * ks));
  return { updates, deletes, unchanged, finalCount: seen.size };
}

/**
 * Brings `map` to exactly `desired`. Never throws for a full map: it writes what fits, returns the MapFullError in
 * `error` and counts it in `sluice_bpf_map_full_total`; other kernel errors (bad fd, EPERM) do throw.
 */
export function reconcile<K, V>(map: CodecMap<K, V>, desired: Iterable<readonly [K, V]>, metrics?: MapMetrics): ReconcileResult {
  const plan = planReconcile(map, desired);
  const result: ReconcileResult = { map: map.name, updated: 0, deleted: 0, unchanged: plan.unchanged };
  map.timed('delete_batch', () => map.raw.deleteRaw(plan.deletes.keys, plan.deletes.count));
  result.deleted = plan.deletes.count;
  try {
    map.timed('update_batch', () => map.raw.updateRaw(plan.updates.keys, plan.updates.values, plan.updates.count));
    result.updated = plan.updates.count;
  } catch (err) {
    if (!(err instanceof MapFullError)) throw err;
    result.updated = err.applied;
    result.error = err;
  }
  metrics?.entries.set({ map: map.name }, plan.finalCount - plan.updates.count + result.updated);
  metrics?.capacity.set({ map: map.name }, map.capacity);
  return result;
}

export interface MapDiff<K> {
  /** Ids of desired entries that the map lacks or holds with other value bytes. */
  outOfDate: string[];
  /** Keys the map holds that are not desired. */
  extra: K[];
}

/**
 * Compares a map with desired entries named by the caller's ids (the agent's reconcilers key rows by strings):
 * one dump, byte comparison of keys and values. Writes nothing; the caller updates `outOfDate` and removes `extra`.
 * When two desired ids encode to the same key, the first one counts (as in planReconcile).
 */
export function diffMap<K, V>(map: CodecMap<K, V>, desired: Iterable<readonly [string, V]>, key: (id: string) => K): MapDiff<K> {
  const ks = map.raw.keySize;
  const vs = map.raw.valueSize;
  const actual = map.timed('dump', () => map.raw.dumpRaw());
  const actualIndex = new Map<string, number>();
  for (let i = 0; i < actual.count; i++) actualIndex.set(actual.keys.toString('latin1', i * ks, (i + 1) * ks), i);
  const kbuf = Buffer.alloc(ks);
  const vbuf = Buffer.alloc(vs);
  const seen = new Set<string>();
  const outOfDate: string[] = [];
  for (const [id, value] of desired) {
    kbuf.fill(0);
    map.spec.key.encode(key(id), kbuf, 0);
    const bytes = kbuf.toString('latin1');
    if (seen.has(bytes)) continue;
    seen.add(bytes);
    const j = actualIndex.get(bytes);
    if (j === undefined) {
      outOfDate.push(id);
      continue;
    }
    vbuf.fill(0);
    map.spec.value.encode(value, vbuf, 0);
    if (vbuf.compare(actual.values, j * vs, (j + 1) * vs) !== 0) outOfDate.push(id);
  }
  const extra: K[] = [];
  for (const [bytes, j] of actualIndex) if (!seen.has(bytes)) extra.push(map.spec.key.decode(actual.keys, j * ks));
  return { outOfDate, extra };
}
