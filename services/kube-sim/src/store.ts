/**
 * The object store behind the API: one global, monotonically increasing resourceVersion (as etcd's revision), objects
 * kept as their serialized JSON (a parsed 13 KB Node costs several times that in heap; 100,000 pods would not fit),
 * per-type bounded event windows for watch resumption, snapshot-consistent paginated lists and the watch fan-out,
 * where each event is encoded once and the same bytes go to every watcher.
 */
import { randomUUID } from 'node:crypto';
import { checkCRD, crdStatus, resourceOfCRD } from './crds.ts';
import { KindRules, type AdmitContext } from './kinds.ts';
import { fieldsOf, keyOfResource, resourceByPlural, RESOURCES, supportedFields, apiVersionOf, type KubeObject, type ResourceType } from './resources.ts';
import { matchesMap, parseFieldSelector, parseLabelSelector, type FieldSelector, type LabelSelector } from './selectors.ts';
import { applyPatch, type PatchType } from './patch.ts';
import { validateCustomObject, type StructuralSchema } from './schema.ts';
import type { ServiceRangeOptions } from './services.ts';
import { alreadyExists, ApiError, badRequest, conflict, expired, invalid, notFound, type Cause } from './status.ts';
import { timestamp } from './time.ts';

export interface StoredObject {
  readonly key: string;
  readonly namespace: string;
  readonly name: string;
  readonly uid: string;
  readonly rv: number;
  readonly labels: Readonly<Record<string, string>>;
  readonly fields: Readonly<Record<string, string>>;
  /**
   * The object exactly as served, resourceVersion included, as UTF-8 bytes. Outside the JS heap on purpose: 100,000
   * pods and a 12 KB Node rewritten 500 times a second were ~700 MB of strings that every major GC marked and its
   * compaction copied (450–900 ms pauses every ~30 s at 5,000 nodes); a Buffer's bytes are neither marked nor moved.
   */
  readonly bytes: Buffer;
  /** The same as a string, decoded on each read (lists and watches use the bytes). */
  readonly json: string;
  /** The write that made this version: ADDED (created), MODIFIED or DELETED. */
  readonly type: EventType;
  /**
   * That write's watch event, `{"type":…,"object":<bytes>}` and a newline: `bytes` is a view into it, so a watcher that
   * sees the event as it happened gets these very bytes, and an event costs no copy of its object.
   */
  readonly line: Buffer;
}

/** A stored version of an object; `json` is decoded from its bytes when asked for. */
class Stored implements StoredObject {
  readonly bytes: Buffer;

  constructor(
    readonly key: string,
    readonly namespace: string,
    readonly name: string,
    readonly uid: string,
    readonly rv: number,
    readonly labels: Readonly<Record<string, string>>,
    readonly fields: Readonly<Record<string, string>>,
    readonly type: EventType,
    readonly line: Buffer,
  ) {
    this.bytes = line.subarray(EVENT_HEAD[type].length, line.length - EVENT_TAIL.length);
  }

  get json(): string {
    return this.bytes.toString('utf8');
  }
}

const EVENT_HEAD: Record<EventType, Buffer> = {
  ADDED: Buffer.from('{"type":"ADDED","object":'), MODIFIED: Buffer.from('{"type":"MODIFIED","object":'), DELETED: Buffer.from('{"type":"DELETED","object":'),
};
const EVENT_TAIL = Buffer.from('}\n');

/**
 * A Buffer of its own (not a slice of Buffer's shared 8 KB pool, which a long-lived slice would keep whole) for an
 * event line with `size` bytes of object: `body` is where they go.
 */
function newLine(type: EventType, size: number): { line: Buffer; body: Buffer } {
  const head = EVENT_HEAD[type];
  const line = Buffer.allocUnsafeSlow(head.length + size + EVENT_TAIL.length);
  head.copy(line, 0);
  EVENT_TAIL.copy(line, head.length + size);
  return { line, body: line.subarray(head.length, head.length + size) };
}

function lineOf(type: EventType, json: string): Buffer {
  const { line, body } = newLine(type, Buffer.byteLength(json));
  body.write(json);
  return line;
}

/** What a replayed event needs of the version before it (selectors: namespace, labels, fields), without its bytes. */
function selectorView(obj: StoredObject): StoredObject {
  return new Stored(obj.key, obj.namespace, obj.name, obj.uid, obj.rv, obj.labels, obj.fields, obj.type, NO_OBJECT[obj.type]);
}

const NO_OBJECT: Record<EventType, Buffer> = { ADDED: lineOf('ADDED', 'null'), MODIFIED: lineOf('MODIFIED', 'null'), DELETED: lineOf('DELETED', 'null') };

/** One watch event's line for an object: its own line when the type is the write's, else a copy under another head. */
export function eventBytes(type: EventType, obj: StoredObject): Buffer {
  if (type === obj.type) return obj.line;
  return Buffer.concat([EVENT_HEAD[type], obj.bytes, EVENT_TAIL], EVENT_HEAD[type].length + obj.bytes.length + EVENT_TAIL.length);
}

export type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface StoreEvent {
  readonly type: EventType;
  readonly rv: number;
  readonly object: StoredObject;
  /** The version before a MODIFIED event, to tell when an object enters or leaves a watcher's selection. */
  readonly previous?: StoredObject;
  encoded?: Partial<Record<EventType, Buffer>>;
}

export type ChangeListener = (resource: ResourceType, event: StoreEvent) => void;

/** Where a watch's bytes go (an HTTP response in the server; anything in tests). */
export interface WatchSink {
  write(chunk: Buffer): void;
  /** Bytes written but not yet taken by the client. */
  backlog(): number;
  end(): void;
}

export interface StoreOptions {
  /** Events kept per resource type for watch resumption; older resourceVersions get 410 Gone. */
  windowEvents?: number;
  /** Bytes of event payload kept per resource type (whichever bound is hit first). */
  windowBytes?: number;
  /** A watcher whose unsent backlog exceeds this is closed (the client re-watches or relists), never buffered without bound. */
  maxWatcherBacklogBytes?: number;
  /** How long a paginated list's snapshot stays usable by its continue token. */
  snapshotTtlMs?: number;
  maxSnapshots?: number;
  now?: () => Date;
  /** Service cluster IP ranges and the node port range. */
  services?: ServiceRangeOptions;
  /** How long a deleted namespace stays Terminating before it and its content go (default 500 ms). */
  namespaceCleanupMs?: number;
}

/** How a write treats fields a custom resource's schema does not declare (the `fieldValidation` query parameter). */
export type FieldValidation = 'Ignore' | 'Warn' | 'Strict';

export interface WriteOptions {
  dryRun?: boolean;
  subresource?: 'status';
  fieldValidation?: FieldValidation;
}

export interface DeleteOptions {
  uid?: string;
  resourceVersion?: string;
  dryRun?: boolean;
  /**
   * Seconds until the object goes (default 0: at once). Above 0, it gets metadata.deletionTimestamp and
   * deletionGracePeriodSeconds, stays (a MODIFIED event) and goes when the period ends. Finalizers keep any object until
   * they are removed, whatever the grace period.
   */
  gracePeriodSeconds?: number;
}

class EventWindow {
  private events: StoreEvent[] = [];
  private head = 0;
  private bytes = 0;
  /** Every event with rv > startRV is still here. */
  startRV = 0;

  constructor(private readonly maxEvents: number, private readonly maxBytes: number) {}

  push(event: StoreEvent): void {
    // The version before is kept for its selector fields only: its bytes would double what the window holds.
    this.events.push(event.previous ? { type: event.type, rv: event.rv, object: event.object, previous: selectorView(event.previous) } : event);
    this.bytes += event.object.bytes.length;
    while (this.events.length - this.head > this.maxEvents || (this.bytes > this.maxBytes && this.events.length - this.head > 1)) {
      const old = this.events[this.head]!;
      this.events[this.head] = undefined as unknown as StoreEvent;
      this.head++;
      this.bytes -= old.object.bytes.length;
      this.startRV = old.rv;
    }
    if (this.head > 4096 && this.head * 2 > this.events.length) {
      this.events = this.events.slice(this.head);
      this.head = 0;
    }
  }

  /** Events after rv, or undefined when some of them have already been dropped. */
  since(rv: number): StoreEvent[] | undefined {
    if (rv < this.startRV) return undefined;
    let lo = this.head;
    let hi = this.events.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.events[mid]!.rv <= rv) lo = mid + 1;
      else hi = mid;
    }
    return this.events.slice(lo);
  }

  get size(): number {
    return this.events.length - this.head;
  }

  get byteSize(): number {
    return this.bytes;
  }
}

export interface WatcherInfo {
  id: number;
  resource: string;
  namespace: string;
  labelSelector: string;
  fieldSelector: string;
  events: number;
  bytes: number;
  startedAt: string;
  closed: boolean;
  closeReason?: string;
}

export class Watcher {
  events = 0;
  bytes = 0;
  closed = false;
  closeReason?: string;
  private readonly startedAt = new Date().toISOString();

  constructor(
    readonly id: number,
    readonly resource: ResourceType,
    readonly namespace: string,
    readonly label: LabelSelector | undefined,
    readonly field: FieldSelector | undefined,
    readonly bookmarks: boolean,
    private readonly sink: WatchSink,
    private readonly raw: { labelSelector: string; fieldSelector: string },
    private readonly onClose: (w: Watcher) => void,
  ) {}

  matches(obj: StoredObject): boolean {
    if (this.namespace && obj.namespace !== this.namespace) return false;
    if (this.label && !this.label.matches(obj.labels)) return false;
    if (this.field && !this.field.matches((f) => fieldValue(obj, f))) return false;
    return true;
  }

  send(chunk: Buffer): void {
    if (this.closed) return;
    this.sink.write(chunk);
    this.events++;
    this.bytes += chunk.length;
  }

  backlog(): number {
    return this.sink.backlog();
  }

  close(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.closeReason = reason;
    this.onClose(this);
    this.sink.end();
  }

  info(): WatcherInfo {
    return {
      id: this.id, resource: this.resource.plural, namespace: this.namespace, labelSelector: this.raw.labelSelector,
      fieldSelector: this.raw.fieldSelector, events: this.events, bytes: this.bytes, startedAt: this.startedAt, closed: this.closed,
      ...(this.closeReason ? { closeReason: this.closeReason } : {}),
    };
  }
}

export function fieldValue(obj: StoredObject, field: string): string {
  if (field === 'metadata.name') return obj.name;
  if (field === 'metadata.namespace') return obj.namespace;
  return obj.fields[field] ?? '';
}

class Collection {
  readonly objects = new Map<string, StoredObject>();
  readonly byNamespace = new Map<string, Map<string, StoredObject>>();
  /** Pods by spec.nodeName: kubelets and `describe node` list a node's pods. */
  readonly byNode = new Map<string, Map<string, StoredObject>>();
  readonly watchers = new Set<Watcher>();
  readonly window: EventWindow;
  published = 0;

  constructor(public resource: ResourceType, windowEvents: number, windowBytes: number) {
    this.window = new EventWindow(windowEvents, windowBytes);
  }

  /**
   * Every key in list order, kept once a list asked for it: changes since are folded in at the next list (a merge)
   * instead of sorting 100,000 keys for every first page of a paginated list.
   */
  private sorted?: string[];
  /** Keys created since `sorted` was made (none of them in it), and keys of it deleted since. */
  private readonly added = new Set<string>();
  private readonly removed = new Set<string>();

  sortedKeys(): string[] {
    if (!this.sorted) {
      this.sorted = [...this.objects.keys()].sort();
      this.added.clear();
      this.removed.clear();
    } else if (this.added.size || this.removed.size) {
      const base = this.removed.size ? this.sorted.filter((k) => !this.removed.has(k)) : this.sorted;
      const adds = [...this.added].sort();
      const merged: string[] = new Array<string>(base.length + adds.length);
      let i = 0;
      let j = 0;
      let o = 0;
      while (i < base.length && j < adds.length) merged[o++] = base[i]! < adds[j]! ? base[i++]! : adds[j++]!;
      while (i < base.length) merged[o++] = base[i++]!;
      while (j < adds.length) merged[o++] = adds[j++]!;
      this.sorted = merged;
      this.added.clear();
      this.removed.clear();
    }
    return this.sorted;
  }

  index(obj: StoredObject, previous: StoredObject | undefined): void {
    if (previous) this.unindex(previous);
    if (this.sorted && !this.removed.delete(obj.key)) this.added.add(obj.key);
    this.objects.set(obj.key, obj);
    let ns = this.byNamespace.get(obj.namespace);
    if (!ns) this.byNamespace.set(obj.namespace, (ns = new Map()));
    ns.set(obj.key, obj);
    const node = obj.fields['spec.nodeName'];
    if (this.resource.plural === 'pods' && this.resource.group === '' && node) {
      let set = this.byNode.get(node);
      if (!set) this.byNode.set(node, (set = new Map()));
      set.set(obj.key, obj);
    }
  }

  unindex(obj: StoredObject): void {
    if (this.sorted && this.objects.has(obj.key) && !this.added.delete(obj.key)) this.removed.add(obj.key);
    this.objects.delete(obj.key);
    const ns = this.byNamespace.get(obj.namespace);
    ns?.delete(obj.key);
    if (ns && ns.size === 0) this.byNamespace.delete(obj.namespace);
    const node = obj.fields['spec.nodeName'];
    if (node) {
      const set = this.byNode.get(node);
      set?.delete(obj.key);
      if (set && set.size === 0) this.byNode.delete(node);
    }
  }
}

export interface ListQuery {
  namespace?: string;
  labelSelector?: string;
  fieldSelector?: string;
  limit?: number;
  continue?: string;
  resourceVersion?: string;
  resourceVersionMatch?: string;
}

export interface ListResult {
  rv: number;
  items: StoredObject[];
  continue?: string;
  remainingItemCount?: number;
}

export interface WatchQuery {
  namespace?: string;
  labelSelector?: string;
  fieldSelector?: string;
  resourceVersion?: string;
  allowWatchBookmarks?: boolean;
  sendInitialEvents?: boolean;
}

interface Snapshot {
  rv: number;
  items: StoredObject[];
  expires: number;
}

const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
const LABEL_KEY = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
const SYSTEM_NAMESPACES = ['default', 'kube-system', 'kube-public', 'kube-node-lease'];

export { timestamp };

export class Store {
  private rv = 1;
  private readonly collections = new Map<string, Collection>();
  private readonly listeners: ChangeListener[] = [];
  private readonly snapshots = new Map<number, Snapshot>();
  private snapshotSeq = 0;
  private watcherSeq = 0;
  private readonly maxBacklog: number;
  private readonly snapshotTtl: number;
  private readonly maxSnapshots: number;
  private readonly now: () => Date;
  private readonly windowEvents: number;
  private readonly windowBytes: number;
  /** "group/version/plural" → collection, every served version of every type. */
  private readonly routes = new Map<string, Collection>();
  /** Pending ends of grace periods, by collection and object key. */
  private readonly graceTimers = new Map<string, NodeJS.Timeout>();
  readonly kinds: KindRules;
  private readonly namespaceCleanupMs: number;
  readonly counters = { droppedWatchers: 0, eventsPublished: 0, watchEventsSent: 0, watchBytesSent: 0, expiredWatches: 0 };
  readonly closedWatchers: WatcherInfo[] = [];
  /** Bumped whenever the set of served types changes (discovery and OpenAPI hashes follow it). */
  typeGeneration = 0;

  constructor(options: StoreOptions = {}) {
    this.windowEvents = options.windowEvents ?? 10_000;
    this.windowBytes = options.windowBytes ?? 128 * 1024 * 1024;
    for (const r of RESOURCES) this.registerResource(r);
    this.maxBacklog = options.maxWatcherBacklogBytes ?? 64 * 1024 * 1024;
    this.snapshotTtl = options.snapshotTtlMs ?? 5 * 60_000;
    this.maxSnapshots = options.maxSnapshots ?? 256;
    this.now = options.now ?? (() => new Date());
    this.kinds = new KindRules(options.services);
    this.namespaceCleanupMs = options.namespaceCleanupMs ?? 500;
    for (const ns of SYSTEM_NAMESPACES) this.create('namespaces', { metadata: { name: ns } });
  }

  // ---------------------------------------------------------------- types

  /** Serves a type (a built-in one, or a custom resource once its CRD is accepted); re-registering updates it. */
  registerResource(r: ResourceType): void {
    const key = keyOfResource(r);
    let c = this.collections.get(key);
    if (c) {
      for (const v of c.resource.versions ?? [c.resource.version]) this.routes.delete(`${c.resource.group}/${v}/${c.resource.plural}`);
      c.resource = r;
    } else this.collections.set(key, (c = new Collection(r, this.windowEvents, this.windowBytes)));
    for (const v of r.versions ?? [r.version]) this.routes.set(`${r.group}/${v}/${r.plural}`, c);
    this.typeGeneration++;
  }

  /** Stops serving a custom type: its objects are deleted (watchers see DELETED), then its watches end. */
  private unregisterResource(key: string): void {
    const c = this.collections.get(key);
    if (!c) return;
    for (const obj of [...c.objects.values()]) this.remove(c, obj);
    for (const w of [...c.watchers]) w.close('resource type removed');
    for (const v of c.resource.versions ?? [c.resource.version]) this.routes.delete(`${c.resource.group}/${v}/${c.resource.plural}`);
    this.collections.delete(key);
    this.typeGeneration++;
  }

  findResource(group: string, version: string, plural: string): ResourceType | undefined {
    return this.routes.get(`${group}/${version}/${plural}`)?.resource;
  }

  /** Every type served now (discovery). */
  resources(): ResourceType[] {
    return [...this.collections.values()].map((c) => c.resource);
  }

  /** Ends pending grace-period timers (the server is shutting down). */
  stop(): void {
    for (const t of this.graceTimers.values()) clearTimeout(t);
    this.graceTimers.clear();
  }

  get resourceVersion(): number {
    return this.rv;
  }

  private coll(plural: string): Collection {
    const c = this.collections.get(plural);
    if (!c) throw new Error(`unknown resource ${plural}`);
    return c;
  }

  onChange(listener: ChangeListener): () => void {
    this.listeners.push(listener);
    return () => {
      const i = this.listeners.indexOf(listener);
      if (i >= 0) this.listeners.splice(i, 1);
    };
  }

  count(plural: string): number {
    return this.coll(plural).objects.size;
  }

  get(plural: string, namespace: string, name: string): StoredObject | undefined {
    return this.coll(plural).objects.get(keyOf(this.coll(plural).resource, namespace, name));
  }

  getParsed(plural: string, namespace: string, name: string): KubeObject | undefined {
    const o = this.get(plural, namespace, name);
    return o ? (JSON.parse(o.json) as KubeObject) : undefined;
  }

  /** Pods bound to a node (index lookup). */
  podsOnNode(node: string): StoredObject[] {
    return [...(this.coll('pods').byNode.get(node)?.values() ?? [])];
  }

  objectsIn(plural: string, namespace?: string): StoredObject[] {
    const c = this.coll(plural);
    if (namespace === undefined) return [...c.objects.values()];
    return [...(c.byNamespace.get(namespace)?.values() ?? [])];
  }

  namespacesOf(plural: string): string[] {
    return [...this.coll(plural).byNamespace.keys()];
  }

  // ---------------------------------------------------------------- writes

  /**
   * `owned`: the caller hands the object over (no defensive copy; the simulation's bulk loads). `quiet`: no watch
   * event (bulk load before anyone watches; call resetWindows() after).
   */
  create(plural: string, input: KubeObject, options: WriteOptions & { quiet?: boolean; owned?: boolean } = {}): StoredObject {
    const c = this.coll(plural);
    const r = c.resource;
    const obj = options.owned ? input : structuredCloneJson(input);
    obj.apiVersion ??= apiVersionOf(r);
    obj.kind ??= r.kind;
    const versions = (r.versions ?? [r.version]).map((v) => (r.group ? `${r.group}/${v}` : v));
    if (obj.kind !== r.kind || !versions.includes(obj.apiVersion)) {
      throw badRequest(`the API version in the data (${obj.apiVersion}) does not match the expected API version (${apiVersionOf(r)}) or kind ${obj.kind} is not ${r.kind}`);
    }
    const meta = (obj.metadata ??= {});
    if (!meta.name && meta.generateName) meta.name = `${meta.generateName}${randomSuffix()}`;
    const namespace = r.namespaced ? (meta.namespace ?? 'default') : '';
    if (r.namespaced) meta.namespace = namespace;
    else delete meta.namespace;
    const name = meta.name ?? '';
    const ns = r.namespaced ? this.coll('namespaces').objects.get(namespace) : undefined;
    if (r.namespaced && !ns) throw notFound('namespaces', namespace);
    if (ns?.bytes.includes('"deletionTimestamp"')) {
      throw new ApiError(403, 'Forbidden', `${r.plural} "${meta.name ?? ''}" is forbidden: unable to create new content in namespace ${namespace} because it is being terminated`, { name: meta.name ?? '', group: r.group, kind: r.plural });
    }
    if (name && c.objects.has(keyOf(r, namespace, name))) throw alreadyExists(r.plural, name, r.group);
    meta.uid ??= randomUUID();
    meta.creationTimestamp ??= timestamp(this.now());
    delete meta.deletionTimestamp;
    delete meta.deletionGracePeriodSeconds;
    if (r.generation) meta.generation = 1;
    const ctx: AdmitContext = { dryRun: options.dryRun ?? false, now: this.now() };
    this.admit(r, obj, ctx, options.fieldValidation);
    if (options.dryRun) return this.encode(r, obj, this.rv, 'ADDED');
    const stored = this.commit(c, obj, undefined, options.quiet ?? false);
    if (isCRDType(r)) this.serveCRD(obj);
    return stored;
  }

  /**
   * PUT semantics: a resourceVersion that is not the current one is a 409 Conflict; an empty one is unconditional.
   * The main resource keeps the stored status and the status subresource keeps everything but status, as the real
   * server's strategies do.
   */
  update(plural: string, namespace: string, name: string, input: KubeObject, options: WriteOptions = {}): StoredObject {
    const c = this.coll(plural);
    const r = c.resource;
    const current = c.objects.get(keyOf(r, namespace, name));
    if (!current) throw notFound(r.plural, name, r.group);
    const obj = structuredCloneJson(input);
    obj.apiVersion ??= apiVersionOf(r);
    obj.kind ??= r.kind;
    if (obj.kind !== r.kind) throw badRequest(`kind ${obj.kind} does not match ${r.kind}`);
    const meta = (obj.metadata ??= {});
    if (meta.name !== undefined && meta.name !== name) throw badRequest(`the name of the object (${meta.name}) does not match the name on the URL (${name})`);
    if (r.namespaced && meta.namespace !== undefined && meta.namespace !== namespace) {
      throw badRequest(`the namespace of the provided object does not match the namespace sent on the request`);
    }
    if (meta.resourceVersion !== undefined && meta.resourceVersion !== '' && meta.resourceVersion !== String(current.rv)) {
      throw conflict(r.plural, name, r.group);
    }
    const old = JSON.parse(current.json) as KubeObject;
    const oldMeta = old.metadata!;
    meta.name = name;
    if (r.namespaced) meta.namespace = namespace;
    meta.uid = oldMeta.uid;
    meta.creationTimestamp = oldMeta.creationTimestamp;
    // Deletion is the server's to record: a client can neither set nor clear it.
    if (oldMeta.deletionTimestamp) {
      meta.deletionTimestamp = oldMeta.deletionTimestamp;
      meta.deletionGracePeriodSeconds = oldMeta.deletionGracePeriodSeconds;
    } else {
      delete meta.deletionTimestamp;
      delete meta.deletionGracePeriodSeconds;
    }
    let next: KubeObject = obj;
    if (r.subresources.includes('status')) {
      if (options.subresource === 'status') next = { ...old, status: obj.status, metadata: { ...oldMeta, labels: meta.labels, annotations: meta.annotations } };
      else if ('status' in old) next = { ...obj, status: old.status };
      else delete next.status;
    }
    if (r.generation) {
      const specOf = (o: KubeObject) => JSON.stringify({ ...o, metadata: undefined, status: undefined, apiVersion: undefined });
      const generation = Number(oldMeta.generation ?? 1);
      next.metadata!.generation = options.subresource !== 'status' && specOf(next) !== specOf(old) ? generation + 1 : generation;
    }
    if (oldMeta.deletionTimestamp) {
      const added = (next.metadata!.finalizers as string[] | undefined ?? []).filter((f) => !((oldMeta.finalizers as string[] | undefined) ?? []).includes(f));
      if (added.length) throw invalid(r.kind, name, [{ field: 'metadata.finalizers', message: `Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers ${JSON.stringify(added)}`, reason: 'FieldValueForbidden' }], r.group);
    }
    const ctx: AdmitContext = { old, dryRun: options.dryRun ?? false, now: this.now(), ...(options.subresource ? { subresource: options.subresource } : {}) };
    this.admit(r, next, ctx, options.fieldValidation);
    if (options.dryRun) return this.encode(r, next, current.rv, 'MODIFIED');
    const stored = this.commit(c, next, current, false);
    if (isCRDType(r)) this.serveCRD(next);
    return this.maybeFinalize(c, stored);
  }

  /**
   * PATCH semantics: the patch applies to the stored object; a patch that names metadata.resourceVersion is a
   * precondition (409 when stale), as kubectl label --resource-version relies on.
   */
  patch(plural: string, namespace: string, name: string, type: PatchType, patch: unknown, options: WriteOptions = {}): StoredObject {
    const c = this.coll(plural);
    const r = c.resource;
    const current = c.objects.get(keyOf(r, namespace, name));
    if (!current) throw notFound(r.plural, name, r.group);
    const patched = applyPatch(type, JSON.parse(current.json), patch, r.atomicLists ?? false);
    if (typeof patched !== 'object' || patched === null || Array.isArray(patched)) throw badRequest('the patched object is not a JSON object');
    const obj = patched as KubeObject;
    if (obj.metadata !== undefined && (typeof obj.metadata !== 'object' || obj.metadata === null || Array.isArray(obj.metadata))) throw badRequest('metadata must be an object');
    const rv = obj.metadata?.resourceVersion;
    if (rv !== undefined && rv !== String(current.rv)) throw conflict(r.plural, name, r.group);
    return this.update(plural, namespace, name, obj, options);
  }

  /**
   * Server-side apply, simplified: the applied configuration is merged into the live object (strategic merge for the
   * built-in kinds, JSON merge for custom resources) or created when there is none. Field ownership is not tracked.
   */
  apply(plural: string, namespace: string, name: string, config: KubeObject, options: WriteOptions = {}): { object: StoredObject; created: boolean } {
    const c = this.coll(plural);
    const r = c.resource;
    const current = c.objects.get(keyOf(r, namespace, name));
    const meta = config.metadata ?? {};
    if (meta.name !== undefined && meta.name !== name) throw badRequest(`the name of the object (${meta.name}) does not match the name on the URL (${name})`);
    if (!current) {
      const obj = { ...config, metadata: { ...meta, name, ...(r.namespaced ? { namespace } : {}) } };
      return { object: this.create(plural, obj, options), created: true };
    }
    return { object: this.patch(plural, namespace, name, r.custom || r.atomicLists ? 'merge' : 'strategic', config, options), created: false };
  }

  delete(plural: string, namespace: string, name: string, options: DeleteOptions = {}): StoredObject {
    const c = this.coll(plural);
    const r = c.resource;
    const current = c.objects.get(keyOf(r, namespace, name));
    if (!current) throw notFound(r.plural, name, r.group);
    if (options.uid && options.uid !== current.uid) {
      throw new ApiError(409, 'Conflict', `Precondition failed: UID in precondition: ${options.uid}, UID in object meta: ${current.uid}`, { name, kind: r.plural });
    }
    if (options.resourceVersion && options.resourceVersion !== String(current.rv)) {
      throw new ApiError(409, 'Conflict', `Precondition failed: ResourceVersion in precondition: ${options.resourceVersion}, ResourceVersion in object meta: ${current.rv}`, { name, kind: r.plural });
    }
    if (options.dryRun) return current;
    const grace = Math.max(0, Math.floor(options.gracePeriodSeconds ?? 0));
    const obj = JSON.parse(current.json) as KubeObject;
    const meta = obj.metadata!;
    const finalizers = (meta.finalizers as string[] | undefined) ?? [];
    const now = this.now().getTime();
    const timerKey = `${keyOfResource(r)}\0${current.key}`;
    if (meta.deletionTimestamp) {
      // Already terminating: a shorter grace period brings the end forward, a longer one changes nothing.
      const end = Date.parse(meta.deletionTimestamp);
      if (now + grace * 1000 < end) {
        if (grace === 0 && finalizers.length === 0) return this.remove(c, current);
        meta.deletionTimestamp = timestamp(new Date(now + grace * 1000));
        meta.deletionGracePeriodSeconds = grace;
        const stored = this.commit(c, obj, current, false);
        this.scheduleEnd(c, stored, timerKey, grace * 1000);
        return stored;
      }
      return current;
    }
    if (r.plural === 'namespaces' && r.group === '') {
      // The namespace controller's part: Terminating first, its content deleted shortly after, then the namespace.
      meta.deletionTimestamp = timestamp(new Date(now));
      meta.deletionGracePeriodSeconds = 0;
      obj.status = { ...(obj.status as object), phase: 'Terminating' };
      const stored = this.commit(c, obj, current, false);
      this.scheduleEnd(c, stored, timerKey, this.namespaceCleanupMs);
      return stored;
    }
    if (grace === 0 && finalizers.length === 0) return this.remove(c, current);
    meta.deletionTimestamp = timestamp(new Date(now + grace * 1000));
    meta.deletionGracePeriodSeconds = grace;
    const stored = this.commit(c, obj, current, false);
    if (grace > 0) this.scheduleEnd(c, stored, timerKey, grace * 1000);
    return stored;
  }

  private scheduleEnd(c: Collection, stored: StoredObject, timerKey: string, ms: number): void {
    clearTimeout(this.graceTimers.get(timerKey));
    const uid = stored.uid;
    const key = stored.key;
    const timer = setTimeout(() => {
      this.graceTimers.delete(timerKey);
      const now = this.collections.get(keyOfResource(c.resource)) === c ? c.objects.get(key) : undefined;
      if (now && now.uid === uid) this.maybeFinalize(c, now, true);
    }, ms);
    timer.unref();
    this.graceTimers.set(timerKey, timer);
  }

  /** Removes a terminating object whose grace period is over and whose finalizers are gone. */
  private maybeFinalize(c: Collection, stored: StoredObject, graceOver = false): StoredObject {
    if (!stored.bytes.includes('"deletionTimestamp"')) return stored;
    const obj = JSON.parse(stored.json) as KubeObject;
    const meta = obj.metadata!;
    if (!meta.deletionTimestamp || ((meta.finalizers as string[] | undefined) ?? []).length > 0) return stored;
    const pending = this.graceTimers.has(`${keyOfResource(c.resource)}\0${stored.key}`);
    if (!graceOver && pending) return stored;
    return this.remove(c, stored);
  }

  /** The object goes: a DELETED event, its allocations released, its contents (namespace, CRD) with it. */
  private remove(c: Collection, current: StoredObject): StoredObject {
    const r = c.resource;
    const timerKey = `${keyOfResource(r)}\0${current.key}`;
    clearTimeout(this.graceTimers.get(timerKey));
    this.graceTimers.delete(timerKey);
    if (r.plural === 'namespaces' && r.group === '') {
      // A simplification of namespace finalization: everything in it goes at once.
      for (const other of this.collections.values()) {
        if (!other.resource.namespaced) continue;
        for (const obj of [...(other.byNamespace.get(current.name)?.values() ?? [])]) this.remove(other, obj);
      }
    }
    const rv = ++this.rv;
    const obj = JSON.parse(current.json) as KubeObject;
    obj.metadata!.resourceVersion = String(rv);
    const deleted = this.encode(r, obj, rv, 'DELETED');
    c.unindex(current);
    this.kinds.released(r, obj);
    this.publish(c, { type: 'DELETED', rv, object: deleted, previous: current });
    if (isCRDType(r)) {
      const served = this.collections.get(current.name);
      if (served?.resource.custom?.crd === current.name) this.unregisterResource(current.name);
    }
    return deleted;
  }

  /** A change made by the simulation itself (kubelet heartbeat, churn, controller): no preconditions. */
  mutate(plural: string, namespace: string, name: string, change: (obj: KubeObject) => KubeObject | void): StoredObject | undefined {
    const c = this.coll(plural);
    const current = c.objects.get(keyOf(c.resource, namespace, name));
    if (!current) return undefined;
    const obj = JSON.parse(current.json) as KubeObject;
    const next = change(obj) ?? obj;
    return this.commit(c, next, current, false);
  }

  /**
   * A change made by the simulation that no selector can see (a kubelet heartbeat's times): `render(rv)` gives the
   * new version's bytes, resourceVersion `rv` included, from the current version (handed to it); labels and fields
   * stay the current version's. Spares a parse and a stringify of the whole object per write. No preconditions, as
   * mutate; undefined when the object is gone.
   */
  rewrite(plural: string, namespace: string, name: string, render: (current: StoredObject, rv: number, alloc: (size: number) => Buffer) => Buffer): StoredObject | undefined {
    const c = this.coll(plural);
    const current = c.objects.get(keyOf(c.resource, namespace, name));
    if (!current) return undefined;
    const rv = ++this.rv;
    // Bytes rendered into `alloc`'s buffer are already in place in their event line; any others are copied there.
    let made: { line: Buffer; body: Buffer } | undefined;
    const rendered = render(current, rv, (size) => (made = newLine('MODIFIED', size)).body);
    let line: Buffer;
    if (made && rendered === made.body) line = made.line;
    else {
      const copy = newLine('MODIFIED', rendered.length);
      rendered.copy(copy.body);
      line = copy.line;
    }
    const stored = new Stored(current.key, current.namespace, current.name, current.uid, rv, current.labels, current.fields, 'MODIFIED', line);
    c.index(stored, current);
    this.publish(c, { type: 'MODIFIED', rv, object: stored, previous: current });
    return stored;
  }

  /** Starts every event window at the current resourceVersion (after a bulk load done with quiet creates). */
  resetWindows(): void {
    for (const c of this.collections.values()) c.window.startRV = Math.max(c.window.startRV, this.rv);
  }

  /** Every check and default of a write, in the real server's order: metadata, the kind's rules or the CRD's schema, defaults. */
  private admit(r: ResourceType, obj: KubeObject, ctx: AdmitContext, fieldValidation: FieldValidation | undefined): void {
    const name = obj.metadata?.name ?? '';
    const causes = [...this.validateMeta(obj), ...this.kinds.validate(r, obj)];
    if (r.custom) {
      const version = String(obj.apiVersion).split('/')[1] ?? r.version;
      const result = validateCustomObject(obj as Record<string, unknown>, r.custom.schemas[version] as StructuralSchema | undefined);
      if (result.pruned.length && fieldValidation === 'Strict') {
        throw badRequest(`${r.kind} in version "${version}" cannot be handled as a ${r.kind}: strict decoding error: ${result.pruned.map((f) => `unknown field "${f}"`).join(', ')}`);
      }
      causes.push(...result.causes);
    }
    if (isCRDType(r)) {
      causes.push(...checkCRD(obj));
      const oldScope = (ctx.old?.spec as { scope?: string } | undefined)?.scope;
      const scope = (obj.spec as { scope?: string }).scope;
      if (oldScope && oldScope !== scope) causes.push({ field: 'spec.scope', message: `Invalid value: "${scope}": field is immutable` });
    }
    if (causes.length) throw invalid(r.kind, name, causes, r.group);
    this.kinds.prepare(r, obj, ctx);
    this.kinds.workloadStatus(r, obj, ctx, this.count('nodes'));
    if (isCRDType(r)) obj.status = crdStatus(obj, ctx.now, this.crdConflict(obj));
  }

  /** Why a CRD's names cannot be served (another type holds them), or undefined. */
  private crdConflict(obj: KubeObject): string | undefined {
    const resource = resourceOfCRD(obj);
    if (!resource) return undefined;
    const holder = this.collections.get(keyOfResource(resource));
    if (holder && holder.resource.custom?.crd !== obj.metadata?.name) return `"${resource.plural}" is already in use`;
    return undefined;
  }

  /** Serves (or stops serving, or re-serves) the type a stored CRD defines. */
  private serveCRD(obj: KubeObject): void {
    if (this.crdConflict(obj)) return;
    const resource = resourceOfCRD(obj);
    const name = obj.metadata!.name!;
    if (resource) this.registerResource(resource);
    else if (this.collections.get(name)?.resource.custom?.crd === name) this.unregisterResource(name);
  }

  private validateMeta(obj: KubeObject): Cause[] {
    const meta = obj.metadata!;
    const name = meta.name ?? '';
    const causes: Cause[] = [];
    if (!name) causes.push({ field: 'metadata.name', message: 'Required value: name or generateName is required', reason: 'FieldValueRequired' });
    else if (name.length > 253 || !DNS_SUBDOMAIN.test(name)) {
      causes.push({ field: 'metadata.name', message: `Invalid value: "${name}": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character` });
    }
    for (const [k, v] of Object.entries(meta.labels ?? {})) {
      if (!LABEL_KEY.test(k) || k.length > 317) causes.push({ field: 'metadata.labels', message: `Invalid value: "${k}": name part must consist of alphanumeric characters, '-', '_' or '.'` });
      if (typeof v !== 'string' || v.length > 63 || !LABEL_VALUE.test(v)) causes.push({ field: 'metadata.labels', message: `Invalid value: "${String(v)}": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.'` });
    }
    for (const [k, v] of Object.entries(meta.annotations ?? {})) {
      if (typeof v !== 'string') causes.push({ field: `metadata.annotations.${k}`, message: 'Invalid value: must be a string' });
    }
    const finalizers = meta.finalizers;
    if (finalizers !== undefined && (!Array.isArray(finalizers) || finalizers.some((f) => typeof f !== 'string'))) {
      causes.push({ field: 'metadata.finalizers', message: 'Invalid value: must be a list of strings' });
    }
    return causes;
  }

  private encode(r: ResourceType, obj: KubeObject, rv: number, type: EventType): StoredObject {
    const meta = obj.metadata!;
    meta.resourceVersion = String(rv);
    const namespace = r.namespaced ? (meta.namespace ?? '') : '';
    const name = meta.name!;
    return new Stored(keyOf(r, namespace, name), namespace, name, meta.uid ?? '', rv, meta.labels ?? {}, fieldsOf(r, obj), type, lineOf(type, JSON.stringify(obj)));
  }

  private commit(c: Collection, obj: KubeObject, previous: StoredObject | undefined, quiet: boolean): StoredObject {
    const rv = ++this.rv;
    const stored = this.encode(c.resource, obj, rv, previous ? 'MODIFIED' : 'ADDED');
    c.index(stored, previous);
    if (!quiet) this.publish(c, { type: previous ? 'MODIFIED' : 'ADDED', rv, object: stored, ...(previous ? { previous } : {}) });
    return stored;
  }

  // ---------------------------------------------------------------- watch fan-out

  private publish(c: Collection, event: StoreEvent): void {
    c.window.push(event);
    c.published++;
    this.counters.eventsPublished++;
    for (const w of c.watchers) this.deliver(w, event);
    // The window keeps the object, not its encodings: a replay re-encodes, and the window's memory stays one copy.
    event.encoded = undefined;
    for (const l of this.listeners) l(c.resource, event);
  }

  /** Sends one event to one watcher, translating it when the object moved into or out of the watcher's selection. */
  private deliver(w: Watcher, event: StoreEvent): void {
    const now = w.matches(event.object);
    let type: EventType | undefined;
    if (event.type === 'MODIFIED') {
      const before = event.previous ? w.matches(event.previous) : false;
      type = now ? (before ? 'MODIFIED' : 'ADDED') : before ? 'DELETED' : undefined;
    } else {
      const relevant = event.type === 'DELETED' ? now || (event.previous !== undefined && w.matches(event.previous)) : now;
      type = relevant ? event.type : undefined;
    }
    if (!type) return;
    const encoded = (event.encoded ??= {});
    let bytes = encoded[type];
    if (!bytes) bytes = encoded[type] = eventBytes(type, event.object);
    w.send(bytes);
    this.counters.watchEventsSent++;
    this.counters.watchBytesSent += bytes.length;
    if (w.backlog() > this.maxBacklog) {
      this.counters.droppedWatchers++;
      w.close('too slow: backlog over limit');
    }
  }

  watch(plural: string, query: WatchQuery, sink: WatchSink): Watcher {
    const c = this.coll(plural);
    const r = c.resource;
    const label = parseLabelSelector(query.labelSelector);
    const field = parseFieldSelector(query.fieldSelector, supportedFields(r));
    const w = new Watcher(
      ++this.watcherSeq, r, r.namespaced ? (query.namespace ?? '') : '', label, field, query.allowWatchBookmarks ?? false, sink,
      { labelSelector: query.labelSelector ?? '', fieldSelector: query.fieldSelector ?? '' },
      (closed) => {
        c.watchers.delete(closed);
        this.closedWatchers.push(closed.info());
        if (this.closedWatchers.length > 1000) this.closedWatchers.shift();
      },
    );
    const rvText = query.resourceVersion ?? '';
    if (rvText !== '' && !/^\d+$/.test(rvText)) throw badRequest(`invalid resource version: ${rvText}`);
    const from = Number(rvText || '0');
    if (from === 0 || query.sendInitialEvents) {
      // "Any" (or explicitly requested initial events): the current state as ADDED, then changes.
      for (const obj of this.selectCurrent(c, w.namespace, label, field)) {
        w.send(eventBytes('ADDED', obj));
      }
      if (query.sendInitialEvents && query.allowWatchBookmarks) {
        w.send(Buffer.from(`{"type":"BOOKMARK","object":{"kind":"${r.kind}","apiVersion":"${apiVersionOf(r)}","metadata":{"resourceVersion":"${this.rv}","annotations":{"k8s.io/initial-events-end":"true"}}}}\n`));
      }
    } else {
      const missed = c.window.since(from);
      if (!missed) {
        this.counters.expiredWatches++;
        const status = expired(`too old resource version: ${from} (${c.window.startRV + 1})`).toStatus();
        status.reason = 'Expired';
        status.code = 410;
        w.send(Buffer.from(`{"type":"ERROR","object":${JSON.stringify(status)}}\n`));
        w.close('expired resourceVersion');
        return w;
      }
      for (const event of missed) {
        this.deliver(w, event);
        // A replay's encoding is this watcher's alone: the window keeps no bytes for it.
        event.encoded = undefined;
      }
    }
    if (!w.closed) c.watchers.add(w);
    return w;
  }

  /** Writes a BOOKMARK carrying the current resourceVersion to every watcher that asked for them. */
  sendBookmarks(): void {
    for (const c of this.collections.values()) {
      if (c.watchers.size === 0) continue;
      const r = c.resource;
      const bytes = Buffer.from(`{"type":"BOOKMARK","object":{"kind":"${r.kind}","apiVersion":"${apiVersionOf(r)}","metadata":{"resourceVersion":"${this.rv}"}}}\n`);
      for (const w of c.watchers) if (w.bookmarks) w.send(bytes);
    }
  }

  /** Ends every open watch (fault injection: clients must re-watch from their last resourceVersion). */
  closeAllWatches(reason = 'closed by fault injection'): number {
    let n = 0;
    for (const c of this.collections.values()) for (const w of [...c.watchers]) {
      w.close(reason);
      n++;
    }
    return n;
  }

  watchers(): WatcherInfo[] {
    return [...this.collections.values()].flatMap((c) => [...c.watchers].map((w) => w.info()));
  }

  windowStats(): Record<string, { events: number; bytes: number; startRV: number; published: number }> {
    const out: Record<string, { events: number; bytes: number; startRV: number; published: number }> = {};
    for (const [plural, c] of this.collections) out[plural] = { events: c.window.size, bytes: c.window.byteSize, startRV: c.window.startRV, published: c.published };
    return out;
  }

  // ---------------------------------------------------------------- lists

  private selectCurrent(c: Collection, namespace: string, label: LabelSelector | undefined, field: FieldSelector | undefined): StoredObject[] {
    let source: Iterable<StoredObject>;
    const node = field?.exact('spec.nodeName');
    const name = field?.exact('metadata.name');
    if (name !== undefined && (namespace || !c.resource.namespaced)) {
      const one = c.objects.get(keyOf(c.resource, namespace, name));
      source = one ? [one] : [];
    } else if (node !== undefined && c.resource.plural === 'pods') source = c.byNode.get(node)?.values() ?? [];
    else if (namespace) source = c.byNamespace.get(namespace)?.values() ?? [];
    else {
      // The whole collection: in key order already.
      const out: StoredObject[] = [];
      for (const key of c.sortedKeys()) {
        const obj = c.objects.get(key)!;
        if (label && !label.matches(obj.labels)) continue;
        if (field && !field.matches((f) => fieldValue(obj, f))) continue;
        out.push(obj);
      }
      return out;
    }
    const out: StoredObject[] = [];
    for (const obj of source) {
      if (namespace && obj.namespace !== namespace) continue;
      if (label && !label.matches(obj.labels)) continue;
      if (field && !field.matches((f) => fieldValue(obj, f))) continue;
      out.push(obj);
    }
    out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    return out;
  }

  list(plural: string, query: ListQuery): ListResult {
    const c = this.coll(plural);
    const r = c.resource;
    const limit = query.limit && query.limit > 0 ? query.limit : undefined;
    if (query.continue) {
      const token = decodeContinue(query.continue);
      const snap = this.snapshots.get(token.id);
      if (!snap || snap.expires < Date.now()) {
        this.snapshots.delete(token.id);
        throw expired('The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.');
      }
      return this.page(snap, token.id, token.offset, limit);
    }
    const rvText = query.resourceVersion ?? '';
    if (rvText !== '' && !/^\d+$/.test(rvText)) throw badRequest(`invalid resource version: ${rvText}`);
    if (query.resourceVersionMatch === 'Exact' && Number(rvText) !== this.rv) {
      throw expired(`too old resource version: ${rvText} (${this.rv})`);
    }
    const label = parseLabelSelector(query.labelSelector);
    const field = parseFieldSelector(query.fieldSelector, supportedFields(r));
    const items = this.selectCurrent(c, r.namespaced ? (query.namespace ?? '') : '', label, field);
    if (!limit || items.length <= limit) return { rv: this.rv, items };
    const id = ++this.snapshotSeq;
    const snap = { rv: this.rv, items, expires: Date.now() + this.snapshotTtl };
    this.snapshots.set(id, snap);
    this.pruneSnapshots();
    return this.page(snap, id, 0, limit);
  }

  private page(snap: Snapshot, id: number, offset: number, limit: number | undefined): ListResult {
    const end = limit ? Math.min(snap.items.length, offset + limit) : snap.items.length;
    const items = snap.items.slice(offset, end);
    if (end >= snap.items.length) {
      this.snapshots.delete(id);
      return { rv: snap.rv, items };
    }
    return { rv: snap.rv, items, continue: encodeContinue(snap.rv, id, end), remainingItemCount: snap.items.length - end };
  }

  private pruneSnapshots(): void {
    const now = Date.now();
    for (const [id, s] of this.snapshots) if (s.expires < now) this.snapshots.delete(id);
    while (this.snapshots.size > this.maxSnapshots) this.snapshots.delete(this.snapshots.keys().next().value!);
  }

  /** Services whose selector matches these labels, in a namespace. */
  servicesSelecting(namespace: string, labels: Readonly<Record<string, string>>): KubeObject[] {
    return this.objectsIn('services', namespace)
      .map((s) => JSON.parse(s.json) as KubeObject)
      .filter((s) => matchesMap((s.spec as { selector?: Record<string, string> } | undefined)?.selector, labels));
  }
}

const isCRDType = (r: ResourceType) => r.plural === 'customresourcedefinitions' && r.group === 'apiextensions.k8s.io';

export function keyOf(r: ResourceType, namespace: string, name: string): string {
  return r.namespaced ? `${namespace}/${name}` : name;
}

function structuredCloneJson(obj: KubeObject): KubeObject {
  return JSON.parse(JSON.stringify(obj)) as KubeObject;
}

function randomSuffix(): string {
  const chars = 'bcdfghjklmnpqrstvwxz2456789';
  let out = '';
  for (let i = 0; i < 5; i++) out += chars[Math.floor(Math.random() * chars.length)];
  return out;
}

function encodeContinue(rv: number, id: number, offset: number): string {
  return Buffer.from(JSON.stringify({ v: 'meta.k8s.io/v1', rv, id, offset })).toString('base64url');
}

function decodeContinue(token: string): { rv: number; id: number; offset: number } {
  try {
    const parsed = JSON.parse(Buffer.from(token, 'base64url').toString()) as { rv?: unknown; id?: unknown; offset?: unknown };
    if (typeof parsed.rv === 'number' && typeof parsed.id === 'number' && typeof parsed.offset === 'number') {
      return { rv: parsed.rv, id: parsed.id, offset: parsed.offset };
    }
  } catch {
    // fall through to the error below
  }
  throw badRequest('continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)');
}

export { resourceByPlural };
