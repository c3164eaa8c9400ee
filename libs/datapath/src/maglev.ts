/**
 * Maglev lookup tables (Eisenbud et al., NSDI '16) and a pool of worker threads that builds many at once. Building
 * is most of a cold start's CPU (m·ln m probes per table: 20,000 tables take ~0.7 CPU-s), so a full pass hands large
 * batches to the pool, one contiguous share per worker, written straight into one SharedArrayBuffer; the workers run
 * this module's own maglevTable (its source), so every table is the one the main thread would build.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { MAGLEV_M } from '@sluice/bpf';

function fnv1a(text: string, seed: number): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  return h >>> 0;
}

/**
 * Maglev's lookup table (Eisenbud et al., NSDI '16): each backend walks its own permutation of the m slots (offset
 * and skip from two hashes of its name) and takes turns claiming the next free slot, so every backend gets m/n
 * slots ±1 and removing one backend moves only (about) its own slots. `backends`: names and the ids to store.
 */
export function maglevTable(backends: ReadonlyArray<{ name: string; id: number }>, m = MAGLEV_M, out?: Uint32Array): Uint32Array {
  const table = out ?? new Uint32Array(m);
  const n = backends.length;
  if (!n) {
    table.fill(0);
    return table;
  }
  const sorted = n === 1 ? backends : [...backends].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  // Each backend's next position in its permutation (offset + j·skip mod m), advanced by adding skip.
  const pos = new Uint32Array(n);
  const skip = new Uint32Array(n);
  const ids = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    pos[i] = fnv1a(sorted[i]!.name, 0) % m;
    skip[i] = (fnv1a(sorted[i]!.name, 0x9e3779b9) % (m - 1)) + 1;
    ids[i] = sorted[i]!.id;
  }
  // Backend ids are never 0, so a 0 slot is a free one: the table is its own "filled" array (one less to allocate
  // and to keep in cache: this loop is most of a cold start's CPU, m·ln m probes per table).
  const zero = ids.includes(0);
  const filled = zero ? new Uint8Array(m) : undefined;
  table.fill(0);
  let count = 0;
  for (;;) {
    for (let i = 0; i < n; i++) {
      let c = pos[i]!;
      const step = skip[i]!;
      if (filled) {
        while (filled[c]) {
          c += step;
          if (c >= m) c -= m;
        }
        filled[c] = 1;
      } else {
        while (table[c] !== 0) {
          c += step;
          if (c >= m) c -= m;
        }
      }
      table[c] = ids[i]!;
      c += step;
      pos[i] = c >= m ? c - m : c;
      if (++count === m) return table;
    }
  }
}

/** What one worker builds: tables [offsets[t], offsets[t+1]) of the flat member lists, into its share of `sab`. */
interface Job {
  sab: SharedArrayBuffer;
  /** Index of the job's first table in `sab`. */
  first: number;
  m: number;
  names: string[];
  ids: Uint32Array;
  offsets: Uint32Array;
}

const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
${fnv1a.toString()}
${maglevTable.toString()}
parentPort.on('message', (job) => {
  try {
    const count = job.offsets.length - 1;
    const out = new Uint32Array(job.sab, job.first * job.m * 4, count * job.m);
    for (let t = 0; t < count; t++) {
      const members = [];
      for (let k = job.offsets[t]; k < job.offsets[t + 1]; k++) members.push({ name: job.names[k], id: job.ids[k] });
      maglevTable(members, job.m, out.subarray(t * job.m, (t + 1) * job.m));
    }
    parentPort.postMessage({ ok: true });
  } catch (err) {
    parentPort.postMessage({ ok: false, error: String((err && err.message) || err) });
  }
});
`;

/**
 * Worker threads that build Maglev tables in parallel. Started on the first build and ended after `idleMs` without
 * one (a node needs them at start and on a resync, rarely otherwise); they never keep the process alive.
 */
export class MaglevPool {
  private workers: Worker[] = [];
  private idleTimer: NodeJS.Timeout | undefined;
  /** Tables built by the workers so far (status, tests). */
  built = 0;

  constructor(
    readonly size = Math.max(1, Math.min(4, availableParallelism())),
    private readonly idleMs = 10_000,
  ) {}

  /** The tables of these member lists, in order, in one array of `tables.length × m` ids. */
  async build(tables: ReadonlyArray<ReadonlyArray<{ name: string; id: number }>>, m = MAGLEV_M): Promise<Uint32Array> {
    clearTimeout(this.idleTimer);
    const sab = new SharedArrayBuffer(tables.length * m * 4);
    const shares = Math.min(this.size, tables.length);
    while (this.workers.length < shares) this.workers.push(this.spawn());
    const per = Math.ceil(tables.length / shares);
    try {
      await Promise.all(
        Array.from({ length: shares }, (_, w) => {
          const first = w * per;
          const part = tables.slice(first, first + per);
          const offsets = new Uint32Array(part.length + 1);
          const names: string[] = [];
          const ids: number[] = [];
          part.forEach((members, t) => {
            for (const b of members) {
              names.push(b.name);
              ids.push(b.id);
            }
            offsets[t + 1] = names.length;
          });
          return this.run(this.workers[w]!, { sab, first, m, names, ids: Uint32Array.from(ids), offsets });
        }),
      );
    } finally {
      this.armIdleTimer();
    }
    this.built += tables.length;
    return new Uint32Array(sab);
  }

  /**
   * Made apart from build() so that the timer's closure is not build()'s: one made there would keep its whole scope,
   * the batch's SharedArrayBuffer (80 MB at 20,000 tables) included, until the pool ends.
   */
  private armIdleTimer(): void {
    this.idleTimer = setTimeout(() => this.close(), this.idleMs);
    this.idleTimer.unref();
  }

  close(): void {
    clearTimeout(this.idleTimer);
    for (const w of this.workers) void w.terminate();
    this.workers = [];
  }

  private spawn(): Worker {
    // No loader flags: the source is plain JavaScript, and a worker that loaded the TypeScript loader would start slower.
    const worker = new Worker(WORKER_SOURCE, { eval: true, execArgv: [] });
    worker.unref();
    // A worker that fails is dropped; its build rejects (run) and the caller builds on the main thread.
    worker.on('error', () => (this.workers = this.workers.filter((w) => w !== worker)));
    return worker;
  }

  private run(worker: Worker, job: Job): Promise<void> {
    return new Promise((resolve, reject) => {
      const onExit = (code: number) => reject(new Error(`Maglev worker exited (${code})`));
      const onError = (err: Error) => reject(err);
      worker.once('exit', onExit);
      worker.once('error', onError);
      worker.once('message', (msg: { ok: boolean; error?: string }) => {
        worker.off('exit', onExit);
        worker.off('error', onError);
        if (msg.ok) resolve();
        else reject(new Error(`Maglev worker: ${msg.error}`));
      });
      worker.postMessage(job);
    });
  }
}
