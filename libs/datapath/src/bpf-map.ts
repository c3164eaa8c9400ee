import { MapFullError } from './errors.ts';
import { BpfError, bpf, check, closeFd, errnoName } from './libbpf.ts';
import type { RawEntries, RawMap } from './backend.ts';

export interface MapInfo {
  type: number;
  id: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
  name: string;
}

const MAP_TYPE_PERCPU_HASH = 5;
const MAP_TYPE_PERCPU_ARRAY = 6;
const MAP_TYPE_LRU_PERCPU_HASH = 10;
const MAP_TYPE_ARRAY = 2;

export function mapInfo(fd: number): MapInfo {
  const buf = Buffer.alloc(128);
  const len = [buf.length];
  check('bpf_obj_get_info_by_fd', bpf.objGetInfoByFd(fd, buf, len));
  const nameEnd = buf.indexOf(0, 24);
  return {
    type: buf.readUInt32LE(0),
    id: buf.readUInt32LE(4),
    keySize: buf.readUInt32LE(8),
    valueSize: buf.readUInt32LE(12),
    maxEntries: buf.readUInt32LE(16),
    flags: buf.readUInt32LE(20),
    name: buf.toString('latin1', 24, nameEnd < 0 || nameEnd > 40 ? 40 : nameEnd),
  };
}

let cpus: number | undefined;
export function possibleCpus(): number {
  cpus ??= check('libbpf_num_possible_cpus', bpf.numPossibleCpus());
  return cpus;
}

const FULL = new Set(['E2BIG', 'ENOSPC']);
// ENOTSUPP (524) is the kernel-internal "not supported" some map types return for batch operations.
const UNSUPPORTED = new Set([22, 95, 524]);

/** A kernel BPF map by fd. Owns the fd: close() releases it (the map lives on while pinned or used by programs). */
export class BpfRawMap implements RawMap {
  readonly name: string;
  readonly keySize: number;
  readonly valueSize: number;
  readonly capacity: number;
  readonly perCpu: boolean;
  readonly type: number;
  private batchLookup = true;
  private batchUpdate = true;
  private batchDelete = true;

  constructor(
    readonly fd: number,
    name?: string,
  ) {
    const info = mapInfo(fd);
    this.name = name ?? info.name;
    this.type = info.type;
    this.keySize = info.keySize;
    this.perCpu = [MAP_TYPE_PERCPU_ARRAY, MAP_TYPE_PERCPU_HASH, MAP_TYPE_LRU_PERCPU_HASH].includes(info.type);
    this.valueSize = this.perCpu ? Math.ceil(info.valueSize / 8) * 8 * possibleCpus() : info.valueSize;
    this.capacity = info.maxEntries;
  }

  /** Opens a pinned map (a reused map after a restart). */
  static openPinned(path: string, name?: string): BpfRawMap {
    const fd = check('bpf_obj_get', bpf.objGet(path), path);
    return new BpfRawMap(fd, name);
  }

  updateRaw(keys: Buffer, values: Buffer, count: number): void {
    if (count === 0) return;
    if (this.batchUpdate) {
      const n = [count];
      const ret = bpf.mapUpdateBatch(this.fd, keys, values, n, null);
      if (ret === 0) return;
      const applied = n[0] ?? 0;
      if (FULL.has(errnoName(-ret))) throw new MapFullError(this.name, this.capacity, applied, count, errnoName(-ret));
      if (!(UNSUPPORTED.has(-ret) && applied === 0)) throw new BpfError('bpf_map_update_batch', -ret, this.name);
      this.batchUpdate = false;
    }
    for (let i = 0; i < count; i++) {
      const ret = bpf.mapUpdateElem(this.fd, keys.subarray(i * this.keySize, (i + 1) * this.keySize), values.subarray(i * this.valueSize, (i + 1) * this.valueSize), 0);
      if (ret < 0) {
        if (FULL.has(errnoName(-ret))) throw new MapFullError(this.name, this.capacity, i, count, errnoName(-ret));
        throw new BpfError('bpf_map_update_elem', -ret, this.name);
      }
    }
  }

  deleteRaw(keys: Buffer, count: number): void {
    if (count === 0) return;
    let start = 0;
    if (this.batchDelete) {
      // delete_batch stops at the first missing key (ENOENT); skip it and carry on with the rest.
      while (start < count) {
        const n = [count - start];
        const ret = bpf.mapDeleteBatch(this.fd, keys.subarray(start * this.keySize), n, null);
        if (ret === 0) return;
        const done = n[0] ?? 0;
        if (-ret === 2) {
          start += done + 1;
          continue;
        }
        if (UNSUPPORTED.has(-ret) && done === 0) {
          this.batchDelete = false;
          break;
        }
        throw new BpfError('bpf_map_delete_batch', -ret, this.name);
      }
      if (start >= count) return;
    }
    for (let i = start; i < count; i++) {
      const ret = bpf.mapDeleteElem(this.fd, keys.subarray(i * this.keySize, (i + 1) * this.keySize));
      if (ret < 0 && ret !== -2) throw new BpfError('bpf_map_delete_elem', -ret, this.name);
    }
  }

  lookupRaw(key: Buffer): Buffer | undefined {
    const value = Buffer.alloc(this.valueSize);
    const ret = bpf.mapLookupElem(this.fd, key, value);
    if (ret === -2) return undefined;
    check('bpf_map_lookup_elem', ret, this.name);
    return value;
  }

  dumpRaw(): RawEntries {
    if (this.batchLookup) {
      try {
        return this.dumpBatched();
      } catch (err) {
        if (!(err instanceof BpfError && UNSUPPORTED.has(err.errno))) throw err;
        this.batchLookup = false;
      }
    }
    return this.dumpIterating();
  }

  private dumpBatched(): RawEntries {
    const chunk = Math.max(64, Math.min(this.capacity, 16_384));
    const keyChunks: Buffer[] = [];
    const valueChunks: Buffer[] = [];
    let total = 0;
    let inBatch: Buffer | null = null;
    const tokenSize = Math.max(this.keySize, 8);
    let size = chunk;
    for (;;) {
      const outBatch = Buffer.alloc(tokenSize);
      const keys = Buffer.alloc(size * this.keySize);
      const values = Buffer.alloc(size * this.valueSize);
      const n = [size];
      const ret = bpf.mapLookupBatch(this.fd, inBatch, outBatch, keys, values, n, null);
      const got = n[0] ?? 0;
      if (ret < 0 && -ret === 28 && got === 0) {
        // ENOSPC: one hash bucket holds more entries than `size`; ask again with more room.
        size *= 2;
        continue;
      }
      if (ret < 0 && -ret !== 2) throw new BpfError('bpf_map_lookup_batch', -ret, this.name);
      if (got) {
        keyChunks.push(keys.subarray(0, got * this.keySize));
        valueChunks.push(values.subarray(0, got * this.valueSize));
        total += got;
      }
      if (ret < 0) break; // ENOENT: no more entries
      inBatch = outBatch;
    }
    return { keys: Buffer.concat(keyChunks), values: Buffer.concat(valueChunks), count: total };
  }

  private dumpIterating(): RawEntries {
    const keyChunks: Buffer[] = [];
    const valueChunks: Buffer[] = [];
    let prev: Buffer | null = null;
    for (;;) {
      const next = Buffer.alloc(this.keySize);
      const ret = bpf.mapGetNextKey(this.fd, prev, next);
      if (ret === -2) break;
      check('bpf_map_get_next_key', ret, this.name);
      const value = this.lookupRaw(next);
      if (value) {
        keyChunks.push(next);
        valueChunks.push(value);
      }
      prev = next;
    }
    return { keys: Buffer.concat(keyChunks), values: Buffer.concat(valueChunks), count: keyChunks.length };
  }

  private closed = false;

  /** Idempotent: a second close must not close an fd number the process has since reused. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeFd(this.fd);
  }

  get isArray(): boolean {
    return this.type === MAP_TYPE_ARRAY || this.type === MAP_TYPE_PERCPU_ARRAY;
  }
}
