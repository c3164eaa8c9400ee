/**
 * The object store behind the API: one global, monotonically increasing resourceVersion (as etcd's revision), objects
 * kept as their serialized JSON (a parsed 13 KB Node costs several times that in heap; 100,000 pods would not fit),
 * per-type bounded event windows for watch resumption, snapshot-consistent paginated lists and the watch fan-out,
 * where each event is encoded once and the same bytes go to every watcher.
 */
import { randomUUID } from 'node:crypto';
import { fieldsOf, resourceByPlural, RESOURCES, supportedFields, apiVersionOf, type KubeObject, type ResourceType } from './resources.ts';
import { matchesMap, parseFieldSelector, parseLabelSelector, type FieldSelector, type LabelSelector } from './selectors.ts';
import { applyPatch, type PatchType } from './patch.ts';
import { alreadyExists, ApiError, badRequest, conflict, expired, invalid, notFound } from './status.ts';

export interface StoredObject {
  readonly key: string;
  readonly namespace: string;
  readonly name: string;
  readonly uid: string;
  readonly rv: number;
  readonly labels: Readonly<Record<string, string>>;
  readonly fields: Readonly<Record<string, string>>;
  /** The object exactly as served, resourceVersion included. */
  readonly json: string;
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
  /** Service cluster IP range for services created without spec.clusterIP. */
  serviceCIDR?: string;
}

class EventWindow {
  private events: StoreEvent[] = [];
  private head = 0;
  private bytes = 0;
  /** Every event with rv > startRV is still here. */
  startRV = 0;

  constructor(private readonly maxEvents: number, private readonly maxBytes: number) {}

  push(event: StoreEvent): void {
    this.events.push(event);
    this.bytes += event.object.json.length;
    while (this.events.length - this.head > this.maxEvents || (this.bytes > this.maxBytes && this.events.length - this.head > 1)) {
      const old = this.events[this.head]!;
      this.events[this.head] = undefined as unknown as StoreEvent;
      this.head++;
      this.bytes -= old.object.json.length;
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

  constructor(readonly resource: ResourceType, windowEvents: number, windowBytes: number) {
    this.window = new EventWindow(windowEvents, windowBytes);
  }

  index(obj: StoredObject, previous: StoredObject | undefined): void {
    if (previous) this.unindex(previous);
    this.objects.set(obj.key, obj);
    let ns = this.byNamespace.get(obj.namespace);
    if (!ns) this.byNamespace.set(obj.namespace, (ns = new Map()));
    ns.set(obj.key, obj);
    const node = obj.fields['spec.nodeName'];
    if (this.resource.plural === 'pods' && node) {
      let set = this.byNode.get(node);
      if (!set) this.byNode.set(node, (set = new Map()));
      set.set(obj.key, obj);
    }
  }

  unindex(obj: StoredObject): void {
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

export const timestamp = (date: Date) => date.toISOString().replace(/\.\d{3}Z$/, 'Z');

function ipv4ToInt(ip: string): number {
  return ip.split('.').reduce((acc, part) => acc * 256 + Number(part), 0);
}
const intToIpv4 = (n: number) => [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');

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
  private readonly usedClusterIPs = new Set<string>();
  private readonly serviceBase: number;
  private readonly serviceSize: number;
  private nextServiceOffset = 10;
  readonly counters = { droppedWatchers: 0, eventsPublished: 0, watchEventsSent: 0, watchBytesSent: 0, expiredWatches: 0 };
  readonly closedWatchers: WatcherInfo[] = [];

  constructor(options: StoreOptions = {}) {
    const windowEvents = options.windowEvents ?? 10_000;
    const windowBytes = options.windowBytes ?? 128 * 1024 * 1024;
    for (const r of RESOURCES) this.collections.set(r.plural, new Collection(r, windowEvents, windowBytes));
    this.maxBacklog = options.maxWatcherBacklogBytes ?? 64 * 1024 * 1024;
    this.snapshotTtl = options.snapshotTtlMs ?? 5 * 60_000;
    this.maxSnapshots = options.maxSnapshots ?? 256;
    this.now = options.now ?? (() => new Date());
    const [base, bits] = (options.serviceCIDR ?? '10.96.0.0/12').split('/');
    this.serviceBase = ipv4ToInt(base!);
    this.serviceSize = 2 ** (32 - Number(bits));
    for (const ns of SYSTEM_NAMESPACES) this.create('namespaces', { metadata: { name: ns } });
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
  create(plural: string, input: KubeObject, options: { dryRun?: boolean; quiet?: boolean; owned?: boolean } = {}): StoredObject {
    const c = this.coll(plural);
    const r = c.resource;
    const obj = options.owned ? input : structuredCloneJson(input);
    obj.apiVersion ??= apiVersionOf(r);
    obj.kind ??= r.kind;
    if (obj.kind !== r.kind || obj.apiVersion !== apiVersionOf(r)) {
      throw badRequest(`the API version in the data (${obj.apiVersion}) does not match the expected API version (${apiVersionOf(r)}) or kind ${obj.kind} is not ${r.kind}`);
    }
    const meta = (obj.metadata ??= {});
    if (!meta.name && meta.generateName) meta.name = `${meta.generateName}${randomSuffix()}`;
    const namespace = r.namespaced ? (meta.namespace ?? 'default') : '';
    if (r.namespaced) meta.namespace = namespace;
    else delete meta.namespace;
    this.validate(r, obj);
    const name = meta.name!;
    if (r.namespaced && !this.coll('namespaces').objects.has(namespace)) throw notFound('namespaces', namespace);
    if (c.objects.has(keyOf(r, namespace, name))) throw alreadyExists(r.plural, name, r.group);
    meta.uid ??= randomUUID();
    meta.creationTimestamp ??= timestamp(this.now());
    delete meta.deletionTimestamp;
    this.defaults(r, obj);
    if (options.dryRun) return this.encode(r, obj, this.rv);
    return this.commit(c, obj, undefined, options.quiet ?? false);
  }

  /**
   * PUT semantics: a resourceVersion that is not the current one is a 409 Conflict; an empty one is unconditional.
   * The main resource keeps the stored status and the status subresource keeps everything but status, as the real
   * server's strategies do.
   */
  update(plural: string, namespace: string, name: string, input: KubeObject, options: { subresource?: 'status'; dryRun?: boolean } = {}): StoredObject {
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
    meta.name = name;
    if (r.namespaced) meta.namespace = namespace;
    meta.uid = old.metadata?.uid;
    meta.creationTimestamp = old.metadata?.creationTimestamp;
    let next: KubeObject = obj;
    if (r.subresources.includes('status')) {
      if (options.subresource === 'status') next = { ...old, status: obj.status, metadata: { ...old.metadata, labels: meta.labels, annotations: meta.annotations } };
      else if ('status' in old) next = { ...obj, status: old.status };
      else delete next.status;
    }
    this.validate(r, next);
    this.defaults(r, next);
    if (options.dryRun) return this.encode(r, next, current.rv);
    return this.commit(c, next, current, false);
  }

  /**
   * PATCH semantics: the patch applies to the stored object; a patch that names metadata.resourceVersion is a
   * precondition (409 when stale), as kubectl label --resource-version relies on.
   */
  patch(plural: string, namespace: string, name: string, type: PatchType, patch: unknown, options: { subresource?: 'status'; dryRun?: boolean } = {}): StoredObject {
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

  delete(plural: string, namespace: string, name: string, options: { uid?: string; resourceVersion?: string; dryRun?: boolean } = {}): StoredObject {
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
    if (r.plural === 'namespaces') {
      // A simplification of namespace finalization: everything in it goes at once.
      for (const other of this.collections.values()) {
        if (!other.resource.namespaced) continue;
        for (const obj of [...(other.byNamespace.get(name)?.values() ?? [])]) this.delete(other.resource.plural, name, obj.name);
      }
    }
    const rv = ++this.rv;
    const obj = JSON.parse(current.json) as KubeObject;
    obj.metadata!.resourceVersion = String(rv);
    const deleted = this.encode(r, obj, rv);
    c.unindex(current);
    if (r.plural === 'services') this.releaseClusterIP(obj);
    this.publish(c, { type: 'DELETED', rv, object: deleted, previous: current });
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

  /** Starts every event window at the current resourceVersion (after a bulk load done with quiet creates). */
  resetWindows(): void {
    for (const c of this.collections.values()) c.window.startRV = Math.max(c.window.startRV, this.rv);
  }

  private validate(r: ResourceType, obj: KubeObject): void {
    const meta = obj.metadata!;
    const name = meta.name ?? '';
    const causes: { field: string; message: string }[] = [];
    if (!name) causes.push({ field: 'metadata.name', message: 'Required value: name or generateName is required' });
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
    if (r.plural === 'pods') {
      const spec = obj.spec as { containers?: unknown } | undefined;
      if (!Array.isArray(spec?.containers) || spec.containers.length === 0) causes.push({ field: 'spec.containers', message: 'Required value' });
    }
    if (r.plural === 'services') {
      const spec = obj.spec as { clusterIP?: unknown } | undefined;
      if (spec?.clusterIP !== undefined && typeof spec.clusterIP !== 'string') causes.push({ field: 'spec.clusterIP', message: 'Invalid value: must be a string' });
    }
    if (causes.length) throw invalid(r.kind, name, causes, r.group);
  }

  private defaults(r: ResourceType, obj: KubeObject): void {
    if (r.plural === 'pods') {
      const status = ((obj.status as Record<string, unknown> | undefined) ??= {});
      status.phase ??= 'Pending';
    } else if (r.plural === 'namespaces') {
      obj.spec ??= { finalizers: ['kubernetes'] };
      obj.status ??= { phase: 'Active' };
      const meta = obj.metadata!;
      meta.labels = { 'kubernetes.io/metadata.name': meta.name!, ...meta.labels };
    } else if (r.plural === 'services') {
      const spec = ((obj.spec as Record<string, unknown> | undefined) ??= {});
      spec.type ??= 'ClusterIP';
      if (spec.clusterIP === undefined || spec.clusterIP === '') {
        spec.clusterIP = this.allocateClusterIP();
        spec.clusterIPs = [spec.clusterIP];
      } else if (spec.clusterIP !== 'None') this.usedClusterIPs.add(String(spec.clusterIP));
      spec.clusterIPs ??= [spec.clusterIP];
    }
  }

  private allocateClusterIP(): string {
    for (let i = 0; i < this.serviceSize; i++) {
      const offset = this.nextServiceOffset;
      this.nextServiceOffset = offset + 1 >= this.serviceSize - 1 ? 10 : offset + 1;
      const ip = intToIpv4((this.serviceBase + offset) >>> 0);
      if (!this.usedClusterIPs.has(ip)) {
        this.usedClusterIPs.add(ip);
        return ip;
      }
    }
    throw new ApiError(500, 'InternalError', 'range is full: no more cluster IPs');
  }

  private releaseClusterIP(obj: KubeObject): void {
    const ip = (obj.spec as { clusterIP?: string } | undefined)?.clusterIP;
    if (ip) this.usedClusterIPs.delete(ip);
  }

  private encode(r: ResourceType, obj: KubeObject, rv: number): StoredObject {
    const meta = obj.metadata!;
    meta.resourceVersion = String(rv);
    const namespace = r.namespaced ? (meta.namespace ?? '') : '';
    const name = meta.name!;
    return {
      key: keyOf(r, namespace, name), namespace, name, uid: meta.uid ?? '', rv,
      labels: meta.labels ?? {}, fields: fieldsOf(r, obj), json: JSON.stringify(obj),
    };
  }

  private commit(c: Collection, obj: KubeObject, previous: StoredObject | undefined, quiet: boolean): StoredObject {
    const rv = ++this.rv;
    const stored = this.encode(c.resource, obj, rv);
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
    if (!bytes) bytes = encoded[type] = Buffer.from(`{"type":"${type}","object":${event.object.json}}\n`);
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
        w.send(Buffer.from(`{"type":"ADDED","object":${obj.json}}\n`));
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
      for (const event of missed) this.deliver(w, event);
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
    else source = c.objects.values();
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
