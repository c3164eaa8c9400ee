/**
 * How many keys a list asks etcd for per page. etcd (3.4 and 3.5) answers a ranged, limited request by walking its
 * index over every key from the page's start to the end of the prefix, whatever the limit (3.4 even collects all
 * their revisions before cutting), so a list of n keys in pages of p costs about n²/2p index steps: 100,000 pods in
 * pages of 1,000 walk 5 million entries per list, and a herd of agents listing at once spends etcd's CPU there. Pages
 * are therefore sized by bytes, not by a fixed count: the first page asks for `firstKeys`, and each next page for
 * as many keys as fill `targetBytes` at the average size seen so far — ~10,000 slim pods, a few hundred
 * EndpointSlices (the agent measured a 100,000-pod list: pages of 1,000 keys 4.7 s, of 10,000 1.6 s) — so that one answer stays a few MiB (etcd's memory, the client's decode in one turn of its event
 * loop) whatever the prefix holds.
 */
export interface PageSizing {
  /** Keys asked for by the first page. Default 1,000. */
  firstKeys?: number;
  /** Bytes (keys + values) one page should hold. Default 4 MiB. */
  targetBytes?: number;
  /** Never more keys than this in one page. Default 20,000. */
  maxKeys?: number;
}

export class PageSizer {
  private keys = 0;
  private bytes = 0;
  private readonly firstKeys: number;
  private readonly targetBytes: number;
  private readonly maxKeys: number;

  /** A number is a fixed page size (tests, a user's explicit choice); sizing options adapt it. */
  constructor(private readonly sizing: PageSizing | number = {}) {
    const options = typeof sizing === 'number' ? { firstKeys: sizing } : sizing;
    this.firstKeys = options.firstKeys ?? 1_000;
    this.targetBytes = options.targetBytes ?? 4 * 1024 * 1024;
    this.maxKeys = options.maxKeys ?? 20_000;
    if (!(this.firstKeys >= 1) || !(this.maxKeys >= 1) || !(this.targetBytes >= 1)) throw new RangeError('page sizing needs firstKeys, maxKeys and targetBytes >= 1');
  }

  /** The limit of the next page. */
  get limit(): number {
    if (typeof this.sizing === 'number' || this.keys === 0) return this.firstKeys;
    return Math.max(1, Math.min(this.maxKeys, Math.floor(this.targetBytes / (this.bytes / this.keys))));
  }

  /** Counts a page that arrived: its keys and their key + value bytes. */
  observe(keys: number, bytes: number): void {
    this.keys += keys;
    this.bytes += bytes;
  }
}
