/**
 * MapBackend: what the agent programs. Two implementations share everything above the raw byte layer:
 * `BpfRawMap` (a real kernel map through libbpf) and `MemoryRawMap` (a userspace Map with the same key/value
 * sizes and capacity rules, for the 50-agent scale harness). `CodecMap` puts the @sluice/bpf codecs on either.
 */
import type { MapSpec } from '@sluice/bpf';
import { MapFullError } from './errors.ts';
import { BpfError } from './libbpf.ts';
import type { MapMetrics } from './metrics.ts';

/** Entries as contiguous key and value bytes, the layout bpf_map_*_batch takes. */
export interface RawEntries {
  keys: Buffer;
  values: Buffer;
  count: number;
}

export interface RawMap {
  readonly name: string;
  readonly keySize: number;
  /** Bytes per entry in `values` (for per-CPU maps: every CPU's slot, each rounded up to 8 bytes). */
  readonly valueSize: number;
  readonly capacity: number;
  /** Writes `count` entries; on a full map writes what fits, then throws MapFullError. */
  updateRaw(keys: Buffer, values: Buffer, count: number): void;
  /** Deletes `count` keys; keys that are already gone are not an error. */
  deleteRaw(keys: Buffer, count: number): void;
  lookupRaw(key: Buffer): Buffer | undefined;
  dumpRaw(): RawEntries;
  close(): void;
}

export interface MapBackend<K, V> {
  readonly name: string;
  readonly capacity: number;
  readonly spec: MapSpec<K, V>;
  readonly raw: RawMap;
  upsertBatch(entries: ReadonlyArray<readonly [K, V]>): void;
  deleteBatch(keys: readonly K[]): void;
  lookup(key: K): V | undefined;
  entries(): Array<[K, V]>;
  count(): number;
  close(): void;
}

export class CodecMap<K, V> implements MapBackend<K, V> {
  constructor(
    readonly spec: MapSpec<K, V>,
    readonly raw: RawMap,
    private readonly metrics?: MapMetrics,
  ) {
    if (raw.keySize !== spec.key.size) throw new Error(`${spec.name}: key size ${raw.keySize}, codec says ${spec.key.size}`);
    if (spec.type !== 'percpu_array' && raw.valueSize !== spec.value.size) {
      throw new Error(`${spec.name}: value size ${raw.valueSize}, codec says ${spec.value.size}`);
    }
  }

  get name(): string {
    return this.spec.name;
  }
  get capacity(): number {
    return this.raw.capacity;
  }

  encodeKeys(keys: readonly K[]): Buffer {
    const ks = this.spec.key.size;
    const buf = Buffer.alloc(keys.length * ks);
    for (let i = 0; i < keys.length; i++) this.spec.key.encode(keys[i] as K, buf, i * ks);
    return buf;
  }

  encodeEntries(entries: ReadonlyArray<readonly [K, V]>): RawEntries {
    const ks = this.spec.key.size;
    const vs = this.raw.valueSize;
    const keys = Buffer.alloc(entries.length * ks);
    const values = Buffer.alloc(entries.length * vs);
    for (let i = 0; i < entries.length; i++) {
      const [k, v] = entries[i] as readonly [K, V];
      this.spec.key.encode(k, keys, i * ks);
      this.spec.value.encode(v, values, i * vs);
    }
    return { keys, values, count: entries.length };
  }

  upsertBatch(entries: ReadonlyArray<readonly [K, V]>): void {
    if (!entries.length) return;
    const raw = this.encodeEntries(entries);
    this.timed('update_batch', () => this.raw.updateRaw(raw.keys, raw.values, raw.count));
  }

  /** Writes entries already in the map's byte layout (a caller that builds large values in place). */
  upsertEncoded(raw: RawEntries): void {
    if (!raw.count) return;
    this.timed('update_batch', () => this.raw.updateRaw(raw.keys, raw.values, raw.count));
  }

  deleteBatch(keys: readonly K[]): void {
    if (!keys.length) return;
    const buf = this.encodeKeys(keys);
    this.timed('delete_batch', () => this.raw.deleteRaw(buf, keys.length));
  }

  lookup(key: K): V | undefined {
    const buf = Buffer.alloc(this.spec.key.size);
    this.spec.key.encode(key, buf, 0);
    const value = this.timed('lookup', () => this.raw.lookupRaw(buf));
    return value ? this.spec.value.decode(value, 0) : undefined;
  }

  entries(): Array<[K, V]> {
    const dump = this.timed('dump', () => this.raw.dumpRaw());
    const out: Array<[K, V]> = [];
    for (let i = 0; i < dump.count; i++) {
      out.push([this.spec.key.decode(dump.keys, i * this.raw.keySize), this.spec.value.decode(dump.values, i * this.raw.valueSize)]);
    }
    return out;
  }

  count(): number {
    return this.raw.dumpRaw().count;
  }

  close(): void {
    this.raw.close();
  }

  /** Runs a map operation under the duration histogram; full maps and errors are counted. */
  timed<T>(op: string, fn: () => T): T {
    if (!this.metrics) return fn();
    const end = this.metrics.duration.startTimer({ map: this.spec.name, operation: op });
    try {
      return fn();
    } catch (err) {
      if (err instanceof MapFullError) this.metrics.full.inc({ map: this.spec.name });
      const code = err instanceof MapFullError ? err.code : err instanceof BpfError ? err.code : 'other';
      this.metrics.errors.inc({ map: this.spec.name, operation: op, errno: code });
      throw err;
    } finally {
      end();
    }
  }
}
