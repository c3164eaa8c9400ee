/**
 * Services as the load balancer's maps (see bpf/include/sluice_maps.h): each frontend (address, port, protocol) in
 * sl_services points at a backend set's id; the set's Maglev table (sl_lb_maglev) lists backend ids; sl_backends
 * holds their addresses; for a set with sessionAffinity ClientIP, sl_lb_affinity_match lists (set id, backend id)
 * of the table's backends, the only ones a client's affinity entry is followed to. `LbProgrammer` turns whole
 * services into those entries and keeps them in step, one service at a time, in the order that never leaves a
 * frontend pointing at something unwritten: backends, the affinity matches the service no longer has, tables, new
 * matches, frontends, then what the service no longer has (frontends, tables, backends no service uses any more).
 *
 * Ids are chosen here and never reused while the process lives; on start they are read back from the maps
 * (`seed`), because connection-tracking entries name backends and backend sets by id: an id that changed across an
 * agent restart would move established flows.
 */
import { BE_F_LOCAL, BE_F_TERMINATING, MAGLEV_M, SVC_F_AFFINITY, SVC_F_DROP, SVC_F_EXTERNAL, SVC_F_NODE_ADDR, type AffinityMatchKey, type AffinityMatchValue, type BackendValue, type L4Proto, type ServiceKey, type ServiceValue } from '@sluice/bpf';
import type { Datapath, DatapathMaps } from './datapath.ts';
import { BpfError } from './libbpf.ts';
import { maglevTable, type MaglevPool } from './maglev.ts';

export { maglevTable, MaglevPool } from './maglev.ts';

export interface LbBackend {
  ip: string;
  port: number;
  /** EndpointSlice conditions. */
  ready: boolean;
  serving: boolean;
  terminating: boolean;
  /** A pod of this node. */
  local: boolean;
}

/** The backends one group of frontends balances over (a service port, with a traffic policy applied). */
export interface LbBackendSet {
  /** Unique and stable, e.g. "default/web:http/TCP:internal". */
  name: string;
  backends: LbBackend[];
  /** sessionAffinity ClientIP timeout in seconds; 0: none. */
  affinityTimeout: number;
  /** A Local traffic policy left no backend here while the service has some elsewhere: drop (kube-proxy's rule). */
  dropWhenEmpty: boolean;
}

export interface LbFrontend {
  /** '0.0.0.0' for a NodePort (every address of the node). */
  vip: string;
  port: number;
  proto: L4Proto;
  /** NodePort, externalIP or load-balancer address. */
  external: boolean;
  /**
   * The address is one of this node's (a NodePort frontend on one of its IPs): the programs forward its replies
   * themselves, as for the primary IP, since the kernel drops a packet from one of its own addresses arriving on a
   * device.
   */
  nodeAddress?: boolean;
  /** Name of the backend set in the same service. */
  set: string;
}

export interface LbService {
  frontends: LbFrontend[];
  sets: LbBackendSet[];
}

/**
 * Which backends take new connections (Kubernetes' rule): the ready ones; when none is ready, the serving ones that
 * are terminating. Returned sorted, so every node computes the same Maglev table.
 */
export function activeBackends(backends: readonly LbBackend[]): LbBackend[] {
  let active = backends.filter((b) => b.ready && !b.terminating);
  if (!active.length) active = backends.filter((b) => b.serving && b.terminating);
  return active.sort((a, b) => (a.ip === b.ip ? a.port - b.port : a.ip < b.ip ? -1 : 1));
}

/** Backends that keep their connections: everything ready, serving or terminating (not the never-ready ones). */
function keptBackends(backends: readonly LbBackend[]): LbBackend[] {
  return backends.filter((b) => b.ready || b.serving || b.terminating);
}

const frontendId = (k: ServiceKey) => `${k.vip}:${k.port}/${k.proto}`;
const backendName = (ip: string, port: number) => `${ip}:${port}`;

/** A backend set's Maglev table, by what it is computed from: built only when it has to be written. */
interface TableSpec {
  /** The active backend ids, sorted: equal lists are equal tables. */
  ids: number[];
  members: Array<{ name: string; id: number }>;
}

interface Compiled {
  /**
   * The row this was compiled from: a full pass skips recompiling a service whose row is the same object (the
   * services table hands out one object per row until the row changes). Another object with the same content is
   * compiled again, which writes nothing new.
   */
  source: LbService;
  frontends: Map<string, [ServiceKey, ServiceValue]>;
  tables: Map<number, TableSpec>;
  backends: Map<number, BackendValue>;
  /** Ids of the sets with sessionAffinity: their tables' backends are their sl_lb_affinity_match entries. */
  affinity: Set<number>;
}

export interface LbPruneResult {
  /** Services whose entries are missing or differ in the maps (apply them again). */
  outOfDate: string[];
  /** Map entries removed because no desired service has them. */
  removed: { frontends: number; tables: number; backends: number; affinityMatches: number };
  /** The same, named: "frontend 10.96.0.10:80/tcp", "table 7", "backend 12", "affinity match 7/12". */
  removedKeys: string[];
}

function sameTable(a: TableSpec | undefined, b: TableSpec): boolean {
  if (!a || a.ids.length !== b.ids.length) return false;
  for (let i = 0; i < a.ids.length; i++) if (a.ids[i] !== b.ids[i]) return false;
  return true;
}

/**
 * Writes Maglev tables in one batch, each built straight into the batch's value buffer (no table objects, no copy:
 * 20,000 tables are 80 MB of values).
 */
function writeTables(map: DatapathMaps['maglev'], tables: ReadonlyArray<readonly [number, TableSpec]>, built?: Uint32Array): void {
  if (!tables.length) return;
  const slots = MAGLEV_M;
  const keys = Buffer.alloc(tables.length * 4);
  for (let i = 0; i < tables.length; i++) keys.writeUInt32LE(tables[i]![0], i * 4);
  if (built) {
    // Built by the pool, in this order (little-endian host, as the codec assumes).
    map.upsertEncoded({ keys, values: Buffer.from(built.buffer, built.byteOffset, tables.length * slots * 4), count: tables.length });
    return;
  }
  const values = Buffer.alloc(tables.length * slots * 4);
  // Buffer.alloc of this size is never pooled: offset 0, so the Uint32Array view is aligned.
  const ids = new Uint32Array(values.buffer, values.byteOffset, tables.length * slots);
  for (let i = 0; i < tables.length; i++) maglevTable(tables[i]![1].members, slots, ids.subarray(i * slots, (i + 1) * slots));
  map.upsertEncoded({ keys, values, count: tables.length });
}

const MATCH: AffinityMatchValue = {};
const matchId = (k: AffinityMatchKey) => `${k.serviceId}/${k.backendId}`;

/** A set's sl_lb_affinity_match entries: its Maglev table's backends when it has sessionAffinity, else none. */
function matchesOf(c: Compiled | undefined, setId: number): readonly number[] {
  return (c?.affinity.has(setId) && c.tables.get(setId)?.ids) || [];
}

/**
 * The affinity matches a set of service changes adds and removes. Set ids belong to one service each, so the
 * changes never disagree about an entry.
 */
function matchChanges(changes: ReadonlyArray<{ old: Compiled | undefined; next: Compiled | undefined }>): { added: AffinityMatchKey[]; gone: AffinityMatchKey[] } {
  const added: AffinityMatchKey[] = [];
  const gone: AffinityMatchKey[] = [];
  for (const { old, next } of changes) {
    if (!old?.affinity.size && !next?.affinity.size) continue;
    for (const serviceId of new Set([...(old?.affinity ?? []), ...(next?.affinity ?? [])])) {
      const before = matchesOf(old, serviceId);
      const after = matchesOf(next, serviceId);
      if (before === after) continue;
      const had = new Set(before);
      const has = new Set(after);
      for (const backendId of after) if (!had.has(backendId)) added.push({ serviceId, backendId });
      for (const backendId of before) if (!has.has(backendId)) gone.push({ serviceId, backendId });
    }
  }
  return { added, gone };
}

/** Batches with at least this many tables to build go to the Maglev pool (below it, starting work costs more). */
const POOL_MIN_TABLES = 256;

/** What applyMany writes for a batch of services. */
interface BatchPlan {
  plans: Array<{ key: string; old: Compiled | undefined; next: Compiled | undefined }>;
  backends: Map<number, BackendValue>;
  /** Backends' terminating counts once the batch is in. */
  terminating: Map<number, number>;
  tables: Map<number, TableSpec>;
  frontends: Map<string, [ServiceKey, ServiceValue]>;
  goneFrontends: Map<string, ServiceKey>;
  goneTables: Set<number>;
  /** sl_lb_affinity_match entries to write (after the tables) and to delete (before them). */
  matches: { added: AffinityMatchKey[]; gone: AffinityMatchKey[] };
}

/**
 * Marks per backend id for tableHolds: a slot's id is wanted when its mark is this call's stamp, and seen once it is
 * the stamp + 1 (stamps move on by two per call, so nothing is ever cleared). A full pass checks 20,000 tables of
 * 1,009 slots: one array read per slot.
 */
let marks = new Uint32Array(1024);
let stamp = 0;

/** A table in the map holds exactly the spec's backends (a full pass checks this rather than rebuilding every table). */
function tableHolds(table: Uint32Array | undefined, spec: TableSpec): boolean {
  if (!table) return false;
  const want = spec.ids;
  const top = want.length ? want[want.length - 1]! : 0; // sorted
  if (top >= marks.length) marks = new Uint32Array(Math.max(top + 1, marks.length * 2));
  if (stamp >= 0xfffffffd) {
    marks.fill(0);
    stamp = 0;
  }
  const wanted = (stamp += 2);
  const seen = wanted + 1;
  for (const id of want) marks[id] = wanted;
  let seenCount = 0;
  for (let i = 0; i < table.length; i++) {
    const id = table[i]!;
    const mark = id < marks.length ? marks[id] : 0;
    if (mark === wanted) {
      marks[id] = seen;
      seenCount++;
    } else if (mark !== seen) return false;
  }
  return seenCount === want.length;
}

/** The Maglev tables in the map, each a view into one dump (read, not kept). */
function dumpTables(map: DatapathMaps['maglev']): Map<number, Uint32Array> {
  const dump = map.timed('dump', () => map.raw.dumpRaw());
  const slots = MAGLEV_M;
  const out = new Map<number, Uint32Array>();
  const aligned = dump.values.byteOffset % 4 === 0 ? dump.values : Buffer.from(dump.values);
  const all = new Uint32Array(aligned.buffer, aligned.byteOffset, dump.count * slots);
  for (let i = 0; i < dump.count; i++) out.set(dump.keys.readUInt32LE(i * 4), all.subarray(i * slots, (i + 1) * slots));
  return out;
}
const isTerminating = (v: BackendValue | undefined) => !!v && (v.flags & BE_F_TERMINATING) !== 0;
/**
 * A backend several services share has one entry; its terminating flag is set only while every service holding it
 * says terminating. The programs do not read it (`sluice bpf lb list` shows it): each service's Maglev table leaves
 * out what that service calls terminating, and session affinity follows a client only to a backend its service
 * lists in sl_lb_affinity_match. (The flag used to gate affinity: one service's say then decided for every service
 * holding the backend.)
 */
const sharedBackend = (v: BackendValue, terminating: boolean): BackendValue => ({ ip: v.ip, port: v.port, flags: (v.flags & ~BE_F_TERMINATING) | (terminating ? BE_F_TERMINATING : 0) });
const sameBackend = (a: BackendValue | undefined, b: BackendValue) => !!a && a.ip === b.ip && a.port === b.port && a.flags === b.flags;
const sameFrontend = (a: ServiceValue | undefined, b: ServiceValue) => !!a && a.id === b.id && a.count === b.count && a.flags === b.flags && a.affinityTimeout === b.affinityTimeout;

export class LbProgrammer {
  private readonly programmed = new Map<string, Compiled>();
  /** What a full pass compiled for the services it found out of date: the update that follows reuses it. */
  private readonly prepared = new Map<string, Compiled>();
  private readonly backendRefs = new Map<number, number>();
  /**
   * Programmed services that hold a backend as terminating. One entry per backend (ip:port) serves every service
   * that has it, and two services' slices may disagree about it for a while: the entry is terminating while any of
   * them says so, whoever wrote last (otherwise each full pass would "repair" one service by breaking the other).
   */
  private readonly terminatingRefs = new Map<number, number>();
  private readonly backendIds = new Map<string, number>();
  private readonly setIds = new Map<string, number>();
  /** Frontend → set id found in the maps at seed time, claimed by the first set that has that frontend. */
  private readonly seededFrontends = new Map<string, number>();
  private readonly claimedSetIds = new Set<number>();
  private nextBackendId = 1;
  private nextSetId = 1;
  /** Test fault injection (injectFrontendWriteFailures): frontend writes still to fail. */
  private failFrontendWrites = 0;

  constructor(
    private readonly dp: Pick<Datapath, 'maps'>,
    private readonly options: { maglevPool?: MaglevPool } = {},
  ) {}

  /**
   * For tests of the retry path only: the next `count` frontend (sl_services) writes fail as a kernel write would
   * (BpfError EIO), before anything of that write reaches the map. Costs one comparison per write otherwise.
   */
  injectFrontendWriteFailures(count: number): void {
    this.failFrontendWrites = Math.max(0, Math.floor(count));
  }

  private writeFrontends(entries: ReadonlyArray<readonly [ServiceKey, ServiceValue]>): void {
    if (!entries.length) return;
    if (this.failFrontendWrites > 0) {
      this.failFrontendWrites--;
      throw new BpfError('bpf_map_update_batch', 5, `${this.dp.maps.services.name}: injected test fault, ${this.failFrontendWrites} more to come`);
    }
    this.dp.maps.services.upsertBatch(entries);
  }

  /** Reads ids back from the maps (call once, before the first apply or prune). */
  seed(): void {
    for (const [k, v] of this.dp.maps.backends.entries()) {
      this.backendIds.set(backendName(v.ip, v.port), k.id);
      this.nextBackendId = Math.max(this.nextBackendId, k.id + 1);
    }
    for (const [k, v] of this.dp.maps.services.entries()) {
      this.seededFrontends.set(frontendId(k), v.id);
      this.nextSetId = Math.max(this.nextSetId, v.id + 1);
    }
    for (const [id] of this.dp.maps.maglev.entries()) this.nextSetId = Math.max(this.nextSetId, id + 1);
    // A stale match (removed by the first full pass) must not name a set id given out before then.
    for (const [k] of this.dp.maps.affinityMatch.entries()) this.nextSetId = Math.max(this.nextSetId, k.serviceId + 1);
  }

  private backendId(name: string): number {
    let id = this.backendIds.get(name);
    if (id === undefined) {
      id = this.nextBackendId++;
      this.backendIds.set(name, id);
    }
    return id;
  }

  private setId(name: string, frontends: readonly ServiceKey[]): number {
    let id = this.setIds.get(name);
    if (id !== undefined) return id;
    for (const f of frontends) {
      const seeded = this.seededFrontends.get(frontendId(f));
      if (seeded !== undefined && !this.claimedSetIds.has(seeded)) {
        id = seeded;
        break;
      }
    }
    id ??= this.nextSetId++;
    this.claimedSetIds.add(id);
    this.setIds.set(name, id);
    return id;
  }

  /** The entries one service needs on this node. */
  compile(svc: LbService): Compiled {
    const out: Compiled = { source: svc, frontends: new Map(), tables: new Map(), backends: new Map(), affinity: new Set() };
    for (const set of svc.sets) {
      const keys: ServiceKey[] = [];
      for (const f of svc.frontends) if (f.set === set.name) keys.push({ vip: f.vip, port: f.port, proto: f.proto });
      if (!keys.length) continue;
      const id = this.setId(set.name, keys);
      if (set.affinityTimeout) out.affinity.add(id);
      // One id lookup per backend (its name is the map key of the id).
      const idOf = new Map<LbBackend, { name: string; id: number }>();
      for (const b of keptBackends(set.backends)) {
        const name = backendName(b.ip, b.port);
        const beId = this.backendId(name);
        idOf.set(b, { name, id: beId });
        const flags = (b.local ? BE_F_LOCAL : 0) | (b.terminating || !(b.ready || b.serving) ? BE_F_TERMINATING : 0);
        out.backends.set(beId, { ip: b.ip, port: b.port, flags });
      }
      const active = activeBackends(set.backends);
      if (active.length) {
        const members = active.map((b) => idOf.get(b)!);
        out.tables.set(id, { ids: members.map((x) => x.id).sort((a, b) => a - b), members });
      }
      let i = 0;
      for (const f of svc.frontends) {
        if (f.set !== set.name) continue;
        const flags = (f.external ? SVC_F_EXTERNAL : 0) | (f.nodeAddress ? SVC_F_NODE_ADDR : 0) | (set.affinityTimeout ? SVC_F_AFFINITY : 0) | (set.dropWhenEmpty && !active.length ? SVC_F_DROP : 0);
        const key = keys[i++]!;
        out.frontends.set(frontendId(key), [key, { id, count: Math.min(active.length, 0xffff), flags, affinityTimeout: set.affinityTimeout }]);
      }
    }
    return out;
  }

  private compiledFor(key: string, svc: LbService): Compiled {
    const pre = this.prepared.get(key);
    if (pre) {
      this.prepared.delete(key);
      if (pre.source === svc) return pre;
    }
    return this.compile(svc);
  }

  /** Programs one service (`undefined`: removes it). Throws when a map write fails; applying again is safe. */
  apply(key: string, svc: LbService | undefined): void {
    const old = this.programmed.get(key);
    const next = svc ? this.compiledFor(key, svc) : undefined;
    const maps = this.dp.maps;
    const shared = this.backendWrites([{ old, next }]);
    const matches = matchChanges([{ old, next }]);
    maps.backends.upsertBatch([...shared.writes].map(([id, v]) => [{ id }, v] as const));
    // A backend the set no longer has active stops being followed before its table changes; a new one once it is in.
    maps.affinityMatch.deleteBatch(matches.gone);
    if (next) {
      writeTables(maps.maglev, [...next.tables].filter(([id, t]) => !sameTable(old?.tables.get(id), t)));
      maps.affinityMatch.upsertBatch(matches.added.map((k) => [k, MATCH] as const));
      const frontends = [...next.frontends.values()].filter(([k, v]) => !sameFrontend(old?.frontends.get(frontendId(k))?.[1], v));
      this.writeFrontends(frontends);
    }
    if (old) {
      maps.services.deleteBatch([...old.frontends].filter(([id]) => !next?.frontends.has(id)).map(([, [k]]) => k));
      maps.maglev.deleteBatch([...old.tables.keys()].filter((id) => !next?.tables.has(id)));
    }
    const released = new Set<number>();
    this.settle(key, old, next, released);
    for (const [id, n] of shared.terminating) this.setTerminatingRefs(id, n);
    if (released.size) maps.backends.deleteBatch([...released].map((id) => ({ id })));
  }

  private setTerminatingRefs(id: number, n: number): void {
    if (n > 0) this.terminatingRefs.set(id, n);
    else this.terminatingRefs.delete(id);
  }

  /**
   * The backend entries a set of service changes has to write: every backend a changed service has (or had, if
   * others keep it) whose shared entry (sharedBackend) is not what the map holds once the changes are in; and the
   * new terminating counts of those backends (set after the writes landed).
   */
  private backendWrites(changes: ReadonlyArray<{ old: Compiled | undefined; next: Compiled | undefined }>): { writes: Map<number, BackendValue>; terminating: Map<number, number> } {
    const refsDelta = new Map<number, number>();
    const termDelta = new Map<number, number>();
    const value = new Map<number, BackendValue>();
    const add = (m: Map<number, number>, id: number, d: number) => m.set(id, (m.get(id) ?? 0) + d);
    for (const { old, next } of changes) {
      for (const [id, v] of old?.backends ?? []) {
        add(refsDelta, id, -1);
        if (isTerminating(v)) add(termDelta, id, -1);
        if (!value.has(id)) value.set(id, v);
      }
      for (const [id, v] of next?.backends ?? []) {
        add(refsDelta, id, 1);
        if (isTerminating(v)) add(termDelta, id, 1);
        value.set(id, v);
      }
    }
    const writes = new Map<number, BackendValue>();
    const terminating = new Map<number, number>();
    for (const [id, v] of value) {
      const refs = this.backendRefs.get(id) ?? 0;
      const terms = this.terminatingRefs.get(id) ?? 0;
      const termsAfter = terms + (termDelta.get(id) ?? 0);
      terminating.set(id, termsAfter);
      if (refs + (refsDelta.get(id) ?? 0) <= 0) continue; // released: deleted, not written
      const refsAfter = refs + (refsDelta.get(id) ?? 0);
      const after = sharedBackend(v, termsAfter >= refsAfter);
      if (refs > 0 && sameBackend(sharedBackend(v, terms >= refs), after) && !this.changedAddress(changes, id, v)) continue;
      writes.set(id, after);
    }
    return { writes, terminating };
  }

  /** A backend id whose compiled address or local flag differs between a change's old and next (never, in practice: ids are per ip:port). */
  private changedAddress(changes: ReadonlyArray<{ old: Compiled | undefined; next: Compiled | undefined }>, id: number, v: BackendValue): boolean {
    for (const { old } of changes) {
      const o = old?.backends.get(id);
      if (o && (o.ip !== v.ip || o.port !== v.port || (o.flags & BE_F_LOCAL) !== (v.flags & BE_F_LOCAL))) return true;
    }
    return false;
  }

  /**
   * Records that `key` now has `next` (written): backend reference counts follow, and the backends no service uses
   * any more are added to `released` (a backend released by one service and taken by a later one is not).
   */
  private settle(key: string, old: Compiled | undefined, next: Compiled | undefined, released: Set<number>): void {
    for (const id of next?.backends.keys() ?? []) {
      if (old?.backends.has(id)) continue;
      this.backendRefs.set(id, (this.backendRefs.get(id) ?? 0) + 1);
      released.delete(id);
    }
    for (const id of old?.backends.keys() ?? []) {
      if (next?.backends.has(id)) continue;
      const refs = (this.backendRefs.get(id) ?? 1) - 1;
      if (refs > 0) this.backendRefs.set(id, refs);
      else {
        this.backendRefs.delete(id);
        released.add(id);
      }
    }
    if (next) this.programmed.set(key, next);
    else this.programmed.delete(key);
  }

  /**
   * Programs many services at once (`undefined`: remove): one batch per map for all of them, in apply()'s order.
   * If a batch fails, each service is applied on its own so only the ones that fail are reported.
   */
  applyMany(rows: ReadonlyArray<readonly [string, LbService | undefined]>): Array<{ key: string; error: Error }> {
    if (rows.length <= 1) return rows.flatMap(([key, svc]) => this.tryApply(key, svc));
    const plan = this.planMany(rows);
    try {
      this.writeBackends(plan);
    } catch {
      return rows.flatMap(([key, svc]) => this.tryApply(key, svc));
    }
    return this.commitMany(rows, plan);
  }

  /**
   * applyMany, with a large batch's Maglev tables built by the pool (when the programmer has one) while this thread
   * writes the backends. One call at a time (the reconciler's passes are): the batch's plan is settled after the
   * build.
   */
  async applyManyAsync(rows: ReadonlyArray<readonly [string, LbService | undefined]>): Promise<Array<{ key: string; error: Error }>> {
    const pool = this.options.maglevPool;
    if (!pool || rows.length <= 1) return this.applyMany(rows);
    const plan = this.planMany(rows);
    if (plan.tables.size < POOL_MIN_TABLES) {
      try {
        this.writeBackends(plan);
      } catch {
        return rows.flatMap(([key, svc]) => this.tryApply(key, svc));
      }
      return this.commitMany(rows, plan);
    }
    const building = pool.build([...plan.tables.values()].map((t) => t.members)).catch(() => undefined);
    let backendsFailed = false;
    try {
      this.writeBackends(plan);
    } catch {
      backendsFailed = true;
    }
    // A failed build is built here instead (same function, same tables).
    const built = await building;
    if (backendsFailed) return rows.flatMap(([key, svc]) => this.tryApply(key, svc));
    return this.commitMany(rows, plan, built);
  }

  private planMany(rows: ReadonlyArray<readonly [string, LbService | undefined]>): BatchPlan {
    const plans = rows.map(([key, svc]) => ({ key, old: this.programmed.get(key), next: svc ? this.compiledFor(key, svc) : undefined }));
    const shared = this.backendWrites(plans);
    const plan: BatchPlan = { plans, backends: shared.writes, terminating: shared.terminating, tables: new Map(), frontends: new Map(), goneFrontends: new Map(), goneTables: new Set(), matches: matchChanges(plans) };
    for (const { old, next } of plans) {
      for (const [id, t] of next?.tables ?? []) if (!sameTable(old?.tables.get(id), t)) plan.tables.set(id, t);
      for (const [id, e] of next?.frontends ?? []) if (!sameFrontend(old?.frontends.get(id)?.[1], e[1])) plan.frontends.set(id, e);
      for (const [id, [k]] of old?.frontends ?? []) if (!next?.frontends.has(id)) plan.goneFrontends.set(id, k);
      for (const id of old?.tables.keys() ?? []) if (!next?.tables.has(id)) plan.goneTables.add(id);
    }
    for (const id of plan.frontends.keys()) plan.goneFrontends.delete(id);
    for (const id of plan.tables.keys()) plan.goneTables.delete(id);
    return plan;
  }

  private writeBackends(plan: BatchPlan): void {
    this.dp.maps.backends.upsertBatch([...plan.backends].map(([id, v]) => [{ id }, v] as const));
  }

  /** The rest of a batch after its backends: tables, frontends, what went; then the bookkeeping. */
  private commitMany(rows: ReadonlyArray<readonly [string, LbService | undefined]>, plan: BatchPlan, built?: Uint32Array): Array<{ key: string; error: Error }> {
    const maps = this.dp.maps;
    try {
      maps.affinityMatch.deleteBatch(plan.matches.gone);
      writeTables(maps.maglev, [...plan.tables], built);
      maps.affinityMatch.upsertBatch(plan.matches.added.map((k) => [k, MATCH] as const));
      this.writeFrontends([...plan.frontends.values()]);
      maps.services.deleteBatch([...plan.goneFrontends.values()]);
      maps.maglev.deleteBatch([...plan.goneTables]);
    } catch {
      return rows.flatMap(([key, svc]) => this.tryApply(key, svc));
    }
    const released = new Set<number>();
    for (const { key, old, next } of plan.plans) this.settle(key, old, next, released);
    for (const [id, n] of plan.terminating) this.setTerminatingRefs(id, n);
    try {
      if (released.size) maps.backends.deleteBatch([...released].map((id) => ({ id })));
    } catch {
      // Unreferenced backends left behind are harmless (nothing points at them); the next full pass removes them.
    }
    return [];
  }

  private tryApply(key: string, svc: LbService | undefined): Array<{ key: string; error: Error }> {
    try {
      this.apply(key, svc);
      return [];
    } catch (err) {
      return [{ key, error: err instanceof Error ? err : new Error(String(err)) }];
    }
  }

  /**
   * Compares the maps with every desired service: removes entries none of them has, returns the services whose
   * entries are missing or differ (to apply again). Afterwards the programmer's idea of the maps is what they hold.
   */
  prune(desired: Iterable<readonly [string, LbService]>): LbPruneResult {
    const wanted = new Map<string, Compiled>();
    for (const [key, svc] of desired) {
      const prev = this.programmed.get(key);
      wanted.set(key, prev && prev.source === svc ? prev : this.compile(svc));
    }
    const maps = this.dp.maps;
    const haveFrontends = new Map(maps.services.entries().map(([k, v]) => [frontendId(k), [k, v] as const]));
    const haveTables = dumpTables(maps.maglev);
    const haveBackends = new Map(maps.backends.entries().map(([k, v]) => [k.id, v]));
    const haveMatches = new Map(maps.affinityMatch.entries().map(([k]) => [matchId(k), k]));
    const wantFrontends = new Set<string>();
    const wantMatches = new Set<string>();
    const wantTables = new Set<number>();
    const wantBackends = new Set<number>();
    const outOfDate: string[] = [];
    this.programmed.clear();
    this.prepared.clear();
    this.backendRefs.clear();
    this.terminatingRefs.clear();
    // Each backend's shared entry over every desired service (terminating when any of them says so).
    const sharedWanted = new Map<number, BackendValue>();
    for (const c of wanted.values()) {
      for (const [id, v] of c.backends) {
        const seen = sharedWanted.get(id);
        // Terminating only while every holder says so (sharedBackend's comment says why).
        if (!seen) sharedWanted.set(id, v);
        else if (!isTerminating(v) && isTerminating(seen)) sharedWanted.set(id, sharedBackend(seen, false));
      }
    }
    for (const [key, c] of wanted) {
      let current = true;
      for (const [id, [, v]] of c.frontends) {
        wantFrontends.add(id);
        if (!sameFrontend(haveFrontends.get(id)?.[1], v)) current = false;
      }
      for (const [id, t] of c.tables) {
        wantTables.add(id);
        if (!tableHolds(haveTables.get(id), t)) current = false;
      }
      for (const id of c.backends.keys()) {
        wantBackends.add(id);
        if (!sameBackend(haveBackends.get(id), sharedWanted.get(id)!)) current = false;
      }
      for (const serviceId of c.affinity) {
        for (const backendId of matchesOf(c, serviceId)) {
          const id = matchId({ serviceId, backendId });
          wantMatches.add(id);
          if (!haveMatches.has(id)) current = false;
        }
      }
      if (!current) {
        outOfDate.push(key);
        this.prepared.set(key, c);
        continue;
      }
      this.programmed.set(key, c);
      for (const [id, v] of c.backends) {
        this.backendRefs.set(id, (this.backendRefs.get(id) ?? 0) + 1);
        if (isTerminating(v)) this.terminatingRefs.set(id, (this.terminatingRefs.get(id) ?? 0) + 1);
      }
    }
    const extraFrontends = [...haveFrontends].filter(([id]) => !wantFrontends.has(id)).map(([, [k]]) => k);
    const extraTables = [...haveTables.keys()].filter((id) => !wantTables.has(id));
    const extraBackends = [...haveBackends.keys()].filter((id) => !wantBackends.has(id));
    const extraMatches = [...haveMatches].filter(([id]) => !wantMatches.has(id));
    // A stale match first: until it goes, an affinity client may be sent to a backend its service does not have.
    maps.affinityMatch.deleteBatch(extraMatches.map(([, k]) => k));
    maps.services.deleteBatch(extraFrontends);
    maps.maglev.deleteBatch(extraTables);
    maps.backends.deleteBatch(extraBackends.map((id) => ({ id })));
    const removedKeys = [
      ...extraFrontends.map((k) => `frontend ${frontendId(k)}`),
      ...extraTables.map((id) => `table ${id}`),
      ...extraBackends.map((id) => `backend ${id}`),
      ...extraMatches.map(([id]) => `affinity match ${id}`),
    ];
    return { outOfDate, removed: { frontends: extraFrontends.length, tables: extraTables.length, backends: extraBackends.length, affinityMatches: extraMatches.length }, removedKeys };
  }

  /** Services programmed (status). */
  get size(): number {
    return this.programmed.size;
  }
}

/** A ClusterIP-only service in one call (tests, benchmarks): every backend ready and on another node. */
export function simpleService(name: string, vip: string, port: number, proto: L4Proto, backends: ReadonlyArray<{ ip: string; port: number; terminating?: boolean; local?: boolean }>): LbService {
  return {
    frontends: [{ vip, port, proto, external: false, set: name }],
    sets: [
      {
        name,
        affinityTimeout: 0,
        dropWhenEmpty: false,
        backends: backends.map((b) => ({ ip: b.ip, port: b.port, ready: !b.terminating, serving: true, terminating: !!b.terminating, local: !!b.local })),
      },
    ],
  };
}
