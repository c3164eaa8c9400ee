import type { MapSpec } from '@sluice/bpf';
import { MapFullError } from './errors.ts';
import { BpfError } from './libbpf.ts';
import type { RawEntries, RawMap } from './backend.ts';

/**
 * Large values (Maglev tables: 4 KB each, 20,000 per agent) shared by content among every map of the process: the
 * scale harness runs dozens of agents in one process, and each builds the same tables from the same Services, which
 * a kernel would keep once per node but this stand-in would otherwise keep once per agent (~80 MB each). Counted so
 * that a value no map holds any more is dropped.
 */
const SHARED_VALUE_BYTES = 1024;
// The entry keeps the string itself: a Map hands back its values, never the key instance that would be shared.
const sharedValues = new Map<string, { value: string; refs: number }>();

function shareValue(value: string): string {
  const entry = sharedValues.get(value);
  if (entry) {
    entry.refs++;
    return entry.value;
  }
  sharedValues.set(value, { value, refs: 1 });
  return value;
}

function releaseValue(value: string): void {
  const entry = sharedValues.get(value);
  if (entry && --entry.refs === 0) sharedValues.delete(value);
}

/** Distinct large values held by the process's memory maps (tests of the sharing). */
export function sharedMemoryValues(): number {
  return sharedValues.size;
}

/**
 * A userspace stand-in for a kernel map with the same byte layout and capacity rules: hash and LPM maps refuse a
 * new key once `capacity` keys are present (E2BIG / ENOSPC, like the kernel), arrays hold every index from the
 * start and refuse deletes (EINVAL). Keys are stored by their exact bytes, as the kernel does.
 */
export class MemoryRawMap implements RawMap {
  readonly name: string;
  readonly keySize: number;
  readonly valueSize: number;
  readonly capacity: number;
  // Keys and values as latin1 strings of their exact bytes: ~3x smaller than a Buffer per entry, which matters when
  // the scale harness keeps 50 agents' maps of 100k entries in one process.
  private readonly entries = new Map<string, string>();
  private readonly array: boolean;
  private readonly fullCode: string;
  private readonly lpm: boolean;
  private readonly shared: boolean;

  constructor(spec: MapSpec<unknown, unknown>, options: { capacity?: number; cpus?: number } = {}) {
    this.name = spec.name;
    this.keySize = spec.key.size;
    const perCpu = spec.type === 'percpu_array';
    this.valueSize = perCpu ? Math.ceil(spec.value.size / 8) * 8 * (options.cpus ?? 1) : spec.value.size;
    this.capacity = options.capacity ?? spec.maxEntries;
    this.array = spec.type === 'array' || spec.type === 'percpu_array';
    this.lpm = spec.type === 'lpm_trie';
    this.shared = !this.array && this.valueSize >= SHARED_VALUE_BYTES;
    this.fullCode = this.lpm ? 'ENOSPC' : 'E2BIG';
    if (this.array) {
      for (let i = 0; i < this.capacity; i++) {
        const key = Buffer.alloc(this.keySize);
        key.writeUInt32LE(i, 0);
        this.entries.set(key.toString('latin1'), '\0'.repeat(this.valueSize));
      }
    }
  }

  updateRaw(keys: Buffer, values: Buffer, count: number): void {
    for (let i = 0; i < count; i++) {
      const id = keys.toString('latin1', i * this.keySize, (i + 1) * this.keySize);
      if (!this.entries.has(id)) {
        if (this.array || this.entries.size >= this.capacity) {
          throw new MapFullError(this.name, this.capacity, i, count, this.fullCode);
        }
      }
      const value = values.toString('latin1', i * this.valueSize, (i + 1) * this.valueSize);
      if (!this.shared) {
        this.entries.set(id, value);
        continue;
      }
      const old = this.entries.get(id);
      if (old === value) continue;
      this.entries.set(id, shareValue(value));
      if (old !== undefined) releaseValue(old);
    }
  }

  deleteRaw(keys: Buffer, count: number): void {
    if (this.array) throw new BpfError('bpf_map_delete_batch', 22, this.name);
    for (let i = 0; i < count; i++) {
      const id = keys.toString('latin1', i * this.keySize, (i + 1) * this.keySize);
      if (!this.shared) {
        this.entries.delete(id);
        continue;
      }
      const old = this.entries.get(id);
      if (old === undefined) continue;
      this.entries.delete(id);
      releaseValue(old);
    }
  }

  lookupRaw(key: Buffer): Buffer | undefined {
    if (this.lpm) return this.lookupLongestPrefix(key);
    const value = this.entries.get(key.toString('latin1', 0, this.keySize));
    return value === undefined ? undefined : Buffer.from(value, 'latin1');
  }

  /** Like the kernel's LPM trie: a lookup returns the longest stored prefix that covers the key's address. */
  private lookupLongestPrefix(key: Buffer): Buffer | undefined {
    const addr = key.readUInt32BE(4);
    const probe = Buffer.alloc(8);
    for (let len = Math.min(key.readUInt32LE(0), 32); len >= 0; len--) {
      probe.writeUInt32LE(len, 0);
      probe.writeUInt32BE(len === 0 ? 0 : (addr & ((0xffffffff << (32 - len)) >>> 0)) >>> 0, 4);
      const value = this.entries.get(probe.toString('latin1'));
      if (value !== undefined) return Buffer.from(value, 'latin1');
    }
    return undefined;
  }

  dumpRaw(): RawEntries {
    const count = this.entries.size;
    const keys = Buffer.alloc(count * this.keySize);
    const values = Buffer.alloc(count * this.valueSize);
    let i = 0;
    for (const [id, value] of this.entries) {
      keys.write(id, i * this.keySize, 'latin1');
      values.write(value, i * this.valueSize, 'latin1');
      i++;
    }
    return { keys, values, count };
  }

  close(): void {
    if (this.shared) for (const value of this.entries.values()) releaseValue(value);
    this.entries.clear();
  }
}
