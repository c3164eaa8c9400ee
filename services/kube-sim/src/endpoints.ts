/**
 * A small EndpointSlice controller: keeps each selector-bearing Service's slices (at most 100 endpoints each, as the
 * real controller's default) in step with its pods, touching only the slice a changed pod lives in, so that pod churn
 * produces the same slice traffic a real cluster does.
 */
import { realisticEndpointSlice } from '@sluice/kube-objects';
import type { KubeObject, ResourceType } from './resources.ts';
import { matchesMap } from './selectors.ts';
import type { Store, StoreEvent, StoredObject } from './store.ts';

const MAX_PER_SLICE = 100;

interface Endpoint {
  ip: string;
  nodeName?: string;
  /** Serving and not terminating. */
  ready: boolean;
  /** The pod is Running and its Ready condition holds (terminating or not), as the real controller reports it. */
  serving: boolean;
  /** The pod has a deletionTimestamp: it stays an endpoint (not ready) for its grace period. */
  terminating: boolean;
  podName: string;
  /** This endpoint's JSON in a slice, made once: a slice rewrite joins its endpoints' fragments. */
  json?: string;
}

/**
 * A slice's bytes around its resourceVersion and endpoints, taken from the stored version `from`: the next version of
 * that slice is `pre` + rv + `mid` + endpoints + `post`, with no parse or stringify of the whole slice.
 */
interface SliceTemplate {
  from: StoredObject;
  pre: string;
  mid: string;
  post: string;
}

const RV_MARK = '\u0000sluice-rv';
const ENDPOINTS_MARK = '\u0000sluice-endpoints';

interface ServiceState {
  namespace: string;
  name: string;
  selector: Record<string, string>;
  ports: { name?: string; port: number; protocol?: string }[];
  slices: Map<string, Map<string, Endpoint>>;
  podSlice: Map<string, string>;
  templates: Map<string, SliceTemplate>;
}

type PodLike = {
  metadata?: { name?: string; namespace?: string; labels?: Record<string, string>; deletionTimestamp?: string };
  spec?: { nodeName?: string; hostNetwork?: boolean };
  status?: { phase?: string; podIP?: string; conditions?: { type?: string; status?: string }[] };
};

export function endpointOf(pod: PodLike): Endpoint | undefined {
  const ip = pod.status?.podIP;
  const phase = pod.status?.phase;
  if (!ip || phase === 'Succeeded' || phase === 'Failed') return undefined;
  const readyCondition = pod.status?.conditions?.find((c) => c.type === 'Ready');
  const serving = phase === 'Running' && (readyCondition ? readyCondition.status === 'True' : true);
  const terminating = !!pod.metadata?.deletionTimestamp;
  return { ip, ready: serving && !terminating, serving, terminating, podName: pod.metadata?.name ?? '', ...(pod.spec?.nodeName ? { nodeName: pod.spec.nodeName } : {}) };
}

const sameEndpoint = (a: Endpoint, b: Endpoint) =>
  a.ip === b.ip && a.nodeName === b.nodeName && a.ready === b.ready && a.serving === b.serving && a.terminating === b.terminating;

export class EndpointSliceController {
  private readonly services = new Map<string, ServiceState>();
  /** "namespace/key=value" of a service's first selector pair → service keys: a pod finds its services by its labels. */
  private readonly bySelectorPair = new Map<string, Set<string>>();
  private random: () => number;
  /** Slice names handed out (a deleted slice's name is not reused, as generateName would not). */
  private readonly reserved = new Set<string>();
  private unsubscribe?: () => void;
  /** Slice rewrites: from a template (the common case), or the slow way (a slice's first write, or after another writer). */
  readonly counters = { templated: 0, reencoded: 0 };

  constructor(private readonly store: Store, random: () => number) {
    this.random = random;
  }

  start(): void {
    this.unsubscribe ??= this.store.onChange((r, e) => this.onEvent(r, e));
  }

  stop(): void {
    this.unsubscribe?.();
    this.unsubscribe = undefined;
  }

  /** Builds every service's slices from scratch (after a bulk load; `quiet` writes make no watch events). */
  resyncAll(quiet: boolean): void {
    for (const svc of this.store.objectsIn('services')) this.syncService(JSON.parse(svc.json) as KubeObject, quiet);
  }

  private onEvent(r: ResourceType, event: StoreEvent): void {
    if (r.plural === 'pods') this.onPod(event);
    else if (r.plural === 'services') {
      if (event.type === 'DELETED') this.removeService(event.object.namespace, event.object.name);
      else this.syncService(JSON.parse(event.object.json) as KubeObject, false);
    }
  }

  private servicesFor(namespace: string, labels: Readonly<Record<string, string>>): ServiceState[] {
    const out: ServiceState[] = [];
    for (const key in labels) {
      const keys = this.bySelectorPair.get(`${namespace}/${key}=${labels[key]}`);
      if (!keys) continue;
      for (const k of keys) {
        const s = this.services.get(k);
        if (s && matchesMap(s.selector, labels)) out.push(s);
      }
    }
    return out;
  }

  private onPod(event: StoreEvent): void {
    const obj = event.object;
    const before = event.previous;
    const pod = event.type === 'DELETED' ? undefined : (JSON.parse(obj.json) as PodLike);
    const endpoint = pod ? endpointOf(pod) : undefined;
    const candidates = new Set<ServiceState>(this.servicesFor(obj.namespace, obj.labels));
    if (before) for (const s of this.servicesFor(before.namespace, before.labels)) candidates.add(s);
    for (const s of candidates) {
      const member = endpoint && event.type !== 'DELETED' && matchesMap(s.selector, obj.labels);
      if (member) this.upsert(s, obj.key, endpoint, false);
      else this.remove(s, obj.key, false);
    }
  }

  private syncService(svc: KubeObject, quiet: boolean): void {
    const namespace = svc.metadata?.namespace ?? 'default';
    const name = svc.metadata?.name ?? '';
    const spec = (svc.spec ?? {}) as { selector?: Record<string, string>; ports?: { name?: string; port: number; protocol?: string; targetPort?: number | string }[] };
    const key = `${namespace}/${name}`;
    const existing = this.services.get(key);
    if (existing && JSON.stringify(existing.selector) === JSON.stringify(spec.selector ?? {})) return;
    if (existing) this.removeService(namespace, name);
    if (!spec.selector || Object.keys(spec.selector).length === 0) return;
    const state: ServiceState = {
      namespace, name, selector: spec.selector, slices: new Map(), podSlice: new Map(), templates: new Map(),
      ports: (spec.ports ?? []).map((p) => ({ ...(p.name ? { name: p.name } : {}), port: typeof p.targetPort === 'number' ? p.targetPort : p.port, protocol: p.protocol ?? 'TCP' })),
    };
    this.services.set(key, state);
    const [firstKey, firstValue] = Object.entries(spec.selector)[0]!;
    const pairKey = `${namespace}/${firstKey}=${firstValue}`;
    let set = this.bySelectorPair.get(pairKey);
    if (!set) this.bySelectorPair.set(pairKey, (set = new Set()));
    set.add(key);
    const members: [string, Endpoint][] = [];
    for (const pod of this.store.objectsIn('pods', namespace)) {
      if (!matchesMap(state.selector, pod.labels)) continue;
      const ep = endpointOf(JSON.parse(pod.json) as PodLike);
      if (ep) members.push([pod.key, ep]);
    }
    members.sort((a, b) => (a[0] < b[0] ? -1 : 1));
    for (let i = 0; i < Math.max(1, members.length); i += MAX_PER_SLICE) {
      const sliceName = this.sliceName(namespace, name);
      const eps = new Map(members.slice(i, i + MAX_PER_SLICE));
      state.slices.set(sliceName, eps);
      for (const podKey of eps.keys()) state.podSlice.set(podKey, sliceName);
      this.store.create('endpointslices', this.sliceObject(state, sliceName, eps) as unknown as KubeObject, { quiet, owned: true });
    }
  }

  private removeService(namespace: string, name: string): void {
    const key = `${namespace}/${name}`;
    const state = this.services.get(key);
    if (!state) return;
    this.services.delete(key);
    const [firstKey, firstValue] = Object.entries(state.selector)[0]!;
    this.bySelectorPair.get(`${namespace}/${firstKey}=${firstValue}`)?.delete(key);
    for (const sliceName of state.slices.keys()) {
      if (this.store.get('endpointslices', namespace, sliceName)) this.store.delete('endpointslices', namespace, sliceName);
    }
  }

  private sliceName(namespace: string, service: string): string {
    const chars = 'bcdfghjklmnpqrstvwxz2456789';
    for (;;) {
      let suffix = '';
      for (let i = 0; i < 5; i++) suffix += chars[Math.floor(this.random() * chars.length)];
      const name = `${service}-${suffix}`;
      if (!this.store.get('endpointslices', namespace, name) && !this.reserved.has(`${namespace}/${name}`)) {
        this.reserved.add(`${namespace}/${name}`);
        return name;
      }
    }
  }

  private sliceObject(state: ServiceState, sliceName: string, eps: Map<string, Endpoint>) {
    const list = [...eps.values()];
    const slice = realisticEndpointSlice({
      namespace: state.namespace, service: state.name, name: sliceName, endpoints: list, ports: state.ports,
      now: new Date(),
    });
    // The conditions as the real controller writes them (a terminating pod: ready false, serving as its readiness).
    slice.endpoints.forEach((e, i) => {
      const ep = list[i]!;
      e.conditions = { ready: ep.ready, serving: ep.serving, terminating: ep.terminating };
    });
    return slice;
  }

  /** The endpoints array of a slice, as JSON.stringify writes sliceObject's, from each endpoint's fragment. */
  private endpointsJson(state: ServiceState, eps: Map<string, Endpoint>): string {
    let out = '[';
    for (const ep of eps.values()) {
      if (ep.json === undefined) {
        // sliceObject's endpoint for this one alone: the same fields in the same order.
        const [made] = this.sliceObject(state, '', new Map([['', ep]])).endpoints;
        ep.json = JSON.stringify(made);
      }
      out += out.length === 1 ? ep.json : `,${ep.json}`;
    }
    return `${out}]`;
  }

  private writeSlice(state: ServiceState, sliceName: string, quiet: boolean): void {
    const eps = state.slices.get(sliceName)!;
    const template = state.templates.get(sliceName);
    let fast = false;
    let learnt: Omit<SliceTemplate, 'from'> | undefined;
    const updated = this.store.rewrite('endpointslices', state.namespace, sliceName, (current, rv, alloc) => {
      fast = template?.from === current;
      const t = fast ? template : (learnt = this.templateOf(state, current));
      if (t) return writeText(`${t.pre}"${rv}"${t.mid}${this.endpointsJson(state, eps)}${t.post}`, alloc);
      // A slice holding a marker (no template can be cut from it): written whole.
      const fresh = this.sliceObject(state, sliceName, eps);
      const obj = JSON.parse(current.json) as KubeObject;
      obj.endpoints = fresh.endpoints as unknown;
      obj.ports = fresh.ports as unknown;
      obj.metadata = { ...obj.metadata, resourceVersion: String(rv) };
      return writeText(JSON.stringify(obj), alloc);
    });
    if (!updated) {
      state.templates.delete(sliceName);
      this.store.create('endpointslices', this.sliceObject(state, sliceName, eps) as unknown as KubeObject, { quiet, owned: true });
    } else if (fast) {
      template!.from = updated;
      this.counters.templated++;
    } else {
      this.counters.reencoded++;
      if (learnt) state.templates.set(sliceName, { from: updated, ...learnt });
      else state.templates.delete(sliceName);
    }
  }

  /**
   * The stored version's bytes around its resourceVersion and endpoints (its ports as this service's now), from one
   * parse and one stringify; undefined when the slice holds a marker.
   */
  private templateOf(state: ServiceState, current: StoredObject): Omit<SliceTemplate, 'from'> | undefined {
    const obj = JSON.parse(current.json) as KubeObject;
    obj.ports = this.sliceObject(state, '', new Map()).ports as unknown;
    obj.metadata = { ...obj.metadata, resourceVersion: RV_MARK };
    obj.endpoints = ENDPOINTS_MARK;
    const [pre, rest, ...more] = JSON.stringify(obj).split(JSON.stringify(RV_MARK));
    if (pre === undefined || rest === undefined || more.length) return undefined;
    const [mid, post, ...others] = rest.split(JSON.stringify(ENDPOINTS_MARK));
    if (mid === undefined || post === undefined || others.length) return undefined;
    return { pre, mid, post };
  }

  private upsert(state: ServiceState, podKey: string, endpoint: Endpoint, quiet: boolean): void {
    const current = state.podSlice.get(podKey);
    if (current) {
      const eps = state.slices.get(current)!;
      const old = eps.get(podKey);
      if (old && sameEndpoint(old, endpoint)) return;
      eps.set(podKey, endpoint);
      this.writeSlice(state, current, quiet);
      return;
    }
    let target: string | undefined;
    for (const [name, eps] of state.slices) if (eps.size < MAX_PER_SLICE) { target = name; break; }
    if (!target) {
      target = this.sliceName(state.namespace, state.name);
      state.slices.set(target, new Map());
    }
    state.slices.get(target)!.set(podKey, endpoint);
    state.podSlice.set(podKey, target);
    this.writeSlice(state, target, quiet);
  }

  private remove(state: ServiceState, podKey: string, quiet: boolean): void {
    const sliceName = state.podSlice.get(podKey);
    if (!sliceName) return;
    state.podSlice.delete(podKey);
    const eps = state.slices.get(sliceName)!;
    eps.delete(podKey);
    if (eps.size === 0 && state.slices.size > 1) {
      state.slices.delete(sliceName);
      state.templates.delete(sliceName);
      if (this.store.get('endpointslices', state.namespace, sliceName)) this.store.delete('endpointslices', state.namespace, sliceName);
    } else this.writeSlice(state, sliceName, quiet);
  }

  /** The endpoints of a service as the controller holds them (for tests and the harness). */
  endpointsOf(namespace: string, name: string): Endpoint[] {
    const state = this.services.get(`${namespace}/${name}`);
    return state ? [...state.slices.values()].flatMap((m) => [...m.values()]) : [];
  }
}

function writeText(text: string, alloc: (size: number) => Buffer): Buffer {
  const bytes = alloc(Buffer.byteLength(text));
  bytes.write(text);
  return bytes;
}

export type { StoredObject };
