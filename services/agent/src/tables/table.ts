/**
 * A materialized desired-state table: rows by string key, each change passed to the reconcilers that follow it
 * (with the etcd revision it came from). Writing a row equal to the one held is not a change. Derived tables that
 * compute their rows from others implement DesiredRows themselves instead (nothing stored twice).
 */
import type { DesiredRows } from '../reconciler.ts';

export interface RowListener {
  changed(key: string, revision?: number): void;
}

export class Table<V> implements DesiredRows<V> {
  private readonly rows = new Map<string, V>();
  private readonly listeners: RowListener[] = [];

  constructor(private readonly equals: (a: V, b: V) => boolean = (a, b) => JSON.stringify(a) === JSON.stringify(b)) {}

  /** Reconcilers (or derived tables) to tell about every changed key. */
  follow(listener: RowListener): this {
    this.listeners.push(listener);
    return this;
  }

  get(key: string): V | undefined {
    return this.rows.get(key);
  }

  entries(): IterableIterator<[string, V]> {
    return this.rows.entries();
  }

  keys(): IterableIterator<string> {
    return this.rows.keys();
  }

  get size(): number {
    return this.rows.size;
  }

  set(key: string, value: V, revision = 0): void {
    const old = this.rows.get(key);
    if (old !== undefined && this.equals(old, value)) return;
    this.rows.set(key, value);
    for (const l of this.listeners) l.changed(key, revision);
  }

  delete(key: string, revision = 0): boolean {
    if (!this.rows.delete(key)) return false;
    for (const l of this.listeners) l.changed(key, revision);
    return true;
  }
}
