/**
 * A BPF map as a reconciler target (kernel maps and the in-memory backend alike): rows named by string ids, encoded
 * with the map's codecs. A batch that stops part way (a full map) reports the rows after the last one that landed;
 * any other error fails the whole batch (writes are idempotent, so re-writing the ones that did land is harmless).
 * `splitTarget` puts one table over several targets (the ipcache's hash of /32s and trie of prefixes).
 */
import { diffMap, MapFullError, type CodecMap } from '@sluice/datapath';
import type { DesiredRows, PruneResult, ReconcileTarget, RowFailure } from '../reconciler.ts';

export interface MapTargetOptions<K, V> {
  /** The reconciler's name (metrics, logs, status). */
  name: string;
  map: CodecMap<K, V>;
  /** A row id → the map key. */
  key: (id: string) => K;
  /** A map key → the row id (to name what prune removes). */
  id: (key: K) => string;
}

function errorOf(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

export function mapTarget<K, V>(options: MapTargetOptions<K, V>): ReconcileTarget<V> {
  const { map, key, id } = options;
  return {
    name: options.name,
    update(rows) {
      if (!rows.length) return [];
      try {
        map.upsertBatch(rows.map(([k, v]) => [key(k), v] as const));
        return [];
      } catch (err) {
        const landed = err instanceof MapFullError ? err.applied : 0;
        return rows.slice(landed).map(([k]): RowFailure => ({ key: k, error: errorOf(err) }));
      }
    },
    delete(ids) {
      if (!ids.length) return [];
      try {
        map.deleteBatch(ids.map(key));
        return [];
      } catch (err) {
        return ids.map((k): RowFailure => ({ key: k, error: errorOf(err) }));
      }
    },
    prune(desired): PruneResult {
      const diff = diffMap(map, desired.entries(), key);
      const pruned = diff.extra.map(id);
      const failures: RowFailure[] = [];
      if (diff.extra.length) {
        try {
          map.deleteBatch(diff.extra);
        } catch (err) {
          for (const k of pruned) failures.push({ key: k, error: errorOf(err) });
          return { outOfDate: diff.outOfDate, pruned: [], failures };
        }
      }
      return { outOfDate: diff.outOfDate, pruned, failures };
    },
  };
}

/** The rows of `desired` that `owns` accepts, as a table of their own. */
export function filteredRows<V>(desired: DesiredRows<V>, owns: (key: string) => boolean): DesiredRows<V> {
  return {
    get: (key) => (owns(key) ? desired.get(key) : undefined),
    *entries() {
      for (const row of desired.entries()) if (owns(row[0])) yield row;
    },
    get size() {
      let n = 0;
      for (const [k] of desired.entries()) if (owns(k)) n++;
      return n;
    },
  };
}

/** One target over several: each row goes to the first part that owns its key. */
export function splitTarget<V>(name: string, parts: ReadonlyArray<{ owns: (key: string) => boolean; target: ReconcileTarget<V> }>): ReconcileTarget<V> {
  const partOf = (key: string) => parts.find((p) => p.owns(key));
  const group = <T>(items: readonly T[], keyOf: (item: T) => string) => {
    const out = new Map<(typeof parts)[number], T[]>();
    const orphans: T[] = [];
    for (const item of items) {
      const p = partOf(keyOf(item));
      if (!p) orphans.push(item);
      else {
        const list = out.get(p);
        if (list) list.push(item);
        else out.set(p, [item]);
      }
    }
    return { out, orphans };
  };
  return {
    name,
    async update(rows) {
      const { out, orphans } = group(rows, (r) => r[0]);
      const failures: RowFailure[] = orphans.map(([k]) => ({ key: k, error: new Error(`no target part owns ${k}`) }));
      for (const [p, batch] of out) failures.push(...(await p.target.update(batch)));
      return failures;
    },
    async delete(keys) {
      const { out } = group(keys, (k) => k);
      const failures: RowFailure[] = [];
      for (const [p, batch] of out) failures.push(...(await p.target.delete(batch)));
      return failures;
    },
    async prune(desired) {
      // One walk over the table, rows bucketed by part (a derived table computes each row as it is read).
      const buckets = parts.map(() => [] as Array<readonly [string, V]>);
      for (const row of desired.entries()) {
        const i = parts.findIndex((p) => p.owns(row[0]));
        if (i >= 0) buckets[i]!.push(row);
      }
      const result: PruneResult = { outOfDate: [], pruned: [], failures: [] };
      for (const [i, p] of parts.entries()) {
        const rows = buckets[i]!;
        const view: DesiredRows<V> = { get: (key) => (p.owns(key) ? desired.get(key) : undefined), entries: () => rows, size: rows.length };
        const r = await p.target.prune(view);
        result.outOfDate.push(...r.outOfDate);
        result.pruned.push(...r.pruned);
        result.failures.push(...r.failures);
      }
      return result;
    },
  };
}
