import type { MapSpec } from '@sluice/bpf';
import { MapFullError } from './errors.ts';
import { BpfError } from './libbpf.ts';
import type { RawEntries, RawMap } from './backend.ts';

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

  constructor(spec: MapSpec<unknown, unknown>, options: { capacity?: number; cpus?: number } = {}) {
    this.name = spec.name;
    this.keySize = spec.key.size;
    const perCpu = spec.type === 'percpu_array';
    this.valueSize = perCpu ? Math.ceil(spec.value.size / 8) * 8 * (options.cpus ?? 1) : spec.value.size;
    this.capacity = options.capacity ?? spec.maxEntries;
    this.array = spec.type === 'array' || spec.type === 'percpu_array';
    this.lpm = spec.type === 'lpm_trie';
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
      this.entries.set(id, values.toString('latin1', i * this.valueSize, (i + 1) * this.valueSize));
    }
  }

  deleteRaw(keys: Buffer, count: number): void {
    if (this.array) throw new BpfError('bpf_map_delete_batch', 22, this.name);
    for (let i = 0; i < count; i++) this.entries.delete(keys.toString('latin1', i * this.keySize, (i + 1) * this.keySize));
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

  close(): void {}
}
