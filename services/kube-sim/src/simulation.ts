/**
 * The simulated cluster: nodes with podCIDRs carved from a cluster CIDR, pods with IPs from their node's podCIDR,
 * services, kubelet-like heartbeats and pod churn, all reproducible from a seed. It writes through the Store like
 * any client, so every change is a watch event with a fresh resourceVersion.
 */
import { seededRandom } from '@sluice/backoff';
import { heartbeat, realisticNode, realisticPod, realisticService } from '@sluice/kube-objects';
import type { V1Node } from '@kubernetes/client-node';
import { EndpointSliceController } from './endpoints.ts';
import type { KubeObject } from './resources.ts';
import type { Store, StoreEvent, StoredObject } from './store.ts';
import { microTime, timestamp } from './time.ts';

/**
 * How simulated kubelets report they are alive. `node-status`: a Node status PATCH every heartbeat interval (the
 * pre-NodeLease cluster). `lease`: KEP-589 — a coordination.k8s.io/v1 Lease per node in kube-node-lease renewed every
 * heartbeat interval, the Node status written only every nodeStatusReportInterval or when a condition changes.
 */
export type HeartbeatMode = 'node-status' | 'lease';

export const NODE_LEASE_NAMESPACE = 'kube-node-lease';

export interface SimulationOptions {
  nodes: number;
  podsPerNode: number;
  services: number;
  namespaces: number;
  /** Nodes registered without pods, for an external kubelet (the datapath lab) to bind pods to. */
  emptyNodes: number;
  /** Where node podCIDRs come from. */
  clusterCIDR: string;
  /** Prefix length of each node's podCIDR. */
  nodeCIDRMaskSize: number;
  /** Where node InternalIPs come from. */
  nodeIPCIDR: string;
  heartbeatIntervalMs: number;
  /** Each heartbeat interval is drawn uniformly from interval·[1-jitter, 1+jitter]. */
  heartbeatJitter: number;
  /** Pod creates plus deletes per second. */
  churnPerSecond: number;
  seed: number;
  heartbeatMode: HeartbeatMode;
  /** Lease mode: the Node status is rewritten this often without a condition change (the kubelet's 5 min default). */
  nodeStatusReportIntervalMs: number;
  /**
   * Above 0, pods the simulation creates (churn, bursts, createPod without a phase) and pods bound to simulated nodes
   * through the API start Pending (scheduled, no IP) and run with an IP this long after, as a kubelet would. 0: the
   * simulation's pods are created Running (and API pods are left as written).
   */
  podStartDelayMs: number;
}

export const DEFAULT_SIMULATION: SimulationOptions = {
  nodes: 10, podsPerNode: 5, services: 5, namespaces: 3, emptyNodes: 0, clusterCIDR: '10.128.0.0/9', nodeCIDRMaskSize: 24,
  nodeIPCIDR: '172.20.0.0/16', heartbeatIntervalMs: 10_000, heartbeatJitter: 0.1, churnPerSecond: 0, seed: 1,
  heartbeatMode: 'node-status', nodeStatusReportIntervalMs: 300_000, podStartDelayMs: 0,
};

export function ipv4ToInt(ip: string): number {
  const parts = ip.split('.');
  if (parts.length !== 4 || parts.some((p) => !/^\d{1,3}$/.test(p) || Number(p) > 255)) throw new Error(`not an IPv4 address: ${ip}`);
  return parts.reduce((acc, part) => acc * 256 + Number(part), 0);
}

export const intToIpv4 = (n: number) => [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');

export function parseCIDR(cidr: string): { base: number; bits: number } {
  const [ip, bits] = cidr.split('/');
  const prefix = Number(bits);
  if (!ip || !Number.isInteger(prefix) || prefix < 0 || prefix > 32) throw new Error(`not an IPv4 CIDR: ${cidr}`);
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  return { base: (ipv4ToInt(ip) & mask) >>> 0, bits: prefix };
}

/** A min-heap of (due time, node name): a heartbeat schedule for thousands of nodes, each on its own jittered clock. */
class Schedule {
  private heap: { due: number; name: string }[] = [];

  push(due: number, name: string): void {
    const h = this.heap;
    h.push({ due, name });
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (h[p]!.due <= h[i]!.due) break;
      [h[p], h[i]] = [h[i]!, h[p]!];
      i = p;
    }
  }

  peek(): { due: number; name: string } | undefined {
    return this.heap[0];
  }

  pop(): { due: number; name: string } | undefined {
    const h = this.heap;
    const top = h[0];
    const last = h.pop();
    if (h.length > 0 && last) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && h[l]!.due < h[m]!.due) m = l;
        if (r < h.length && h[r]!.due < h[m]!.due) m = r;
        if (m === i) break;
        [h[m], h[i]] = [h[i]!, h[m]!];
        i = m;
      }
    }
    return top;
  }

  get size(): number {
    return this.heap.length;
  }
}

/**
 * Kubelet-like node status updates: each node beats every interval ± jitter. Driven by tick(now) so that tests can
 * run it on an injected clock; the Simulation ticks it from a timer.
 */
export class HeartbeatGenerator {
  private readonly schedule = new Schedule();
  private readonly members = new Set<string>();
  beats = 0;

  constructor(
    private readonly options: { intervalMs: number; jitter: number; random: () => number },
    private readonly beat: (name: string, now: number) => boolean,
  ) {}

  private nextInterval(): number {
    const { intervalMs, jitter } = this.options;
    return intervalMs * (1 - jitter + 2 * jitter * this.options.random());
  }

  /** Adds a node; its first beat falls somewhere in the first interval, so that nodes do not beat in lockstep. */
  add(name: string, now: number): void {
    if (this.members.has(name)) return;
    this.members.add(name);
    this.schedule.push(now + this.options.intervalMs * this.options.random(), name);
  }

  remove(name: string): void {
    this.members.delete(name);
  }

  /**
   * Performs every beat due by `now` (with `budgetMs`, only as many as fit in that much real time: the rest stay due
   * for the next tick, so that a backlog — every node overdue when heartbeats start after a long bulk load — is
   * spread over event-loop turns instead of stalling one); returns how many.
   */
  tick(now: number, budgetMs = Infinity): number {
    let n = 0;
    const stopAt = performance.now() + budgetMs;
    let steps = 0;
    for (let top = this.schedule.peek(); top && top.due <= now; top = this.schedule.peek()) {
      if ((++steps & 15) === 0 && performance.now() > stopAt) break;
      this.schedule.pop();
      if (!this.members.has(top.name)) continue;
      if (!this.beat(top.name, now)) {
        this.members.delete(top.name);
        continue;
      }
      n++;
      // Scheduled from the due time, not from now, so that tick granularity does not slow the rate down; after a
      // stall (a late tick) a node beats once and is spread again rather than firing its whole backlog.
      let next = top.due + this.nextInterval();
      if (next <= now) next = now + this.options.intervalMs * this.options.random();
      this.schedule.push(next, top.name);
    }
    this.beats += n;
    return n;
  }

  get size(): number {
    return this.members.size;
  }
}

interface NodeState {
  name: string;
  internalIP: string;
  podCIDR: string;
  podBase: number;
  podSize: number;
  used: Set<number>;
  cursor: number;
  /** Nodes registered empty, for an external kubelet: the churn leaves them alone. */
  external: boolean;
  slot: number;
}

export interface AddNodeOptions {
  name?: string;
  labels?: Record<string, string>;
  /** Pods to place on it (default: none). */
  pods?: number;
  /** Whether the simulator beats for it (default true). */
  heartbeat?: boolean;
}

export interface CreatePodOptions {
  namespace?: string;
  name?: string;
  nodeName?: string;
  labels?: Record<string, string>;
  phase?: 'Pending' | 'Running' | 'Succeeded' | 'Failed' | 'Unknown';
  /** Give it an IP from its node's podCIDR (default: when it is Running on a known node). */
  assignIP?: boolean;
}

/** How much of one event-loop turn a timer-driven batch (heartbeats, pod starts) may take before it yields. */
const TURN_BUDGET_MS = 20;

const TIME_MARK = '\u0000kube-sim heartbeat time\u0000';
const RV_MARK = '\u0000kube-sim resourceVersion\u0000';

/**
 * A Node's heartbeat as a byte template: the lengths of the runs that a heartbeat leaves alone, and between them the
 * slots it rewrites (every condition's lastHeartbeatTime and the kubelet's managedFields times, which heartbeat() in
 * @sluice/kube-objects sets, and resourceVersion). Valid for the version it was made from or last wrote (`from`): a
 * heartbeat is then a copy of that version's bytes with the slots filled, instead of a parse, a copy and a stringify
 * of 12 KB; any other write replaces the version and the next heartbeat makes a new template.
 */
interface BeatTemplate {
  from: StoredObject;
  runs: number[];
  /** Per slot: true for a time, false for the resourceVersion. */
  times: boolean[];
  /** Byte lengths of the slots' values in `from`. */
  timeLength: number;
  rvLength: number;
}

/** The template of heartbeat(node) (markers where it writes), or undefined when the markers cannot be told apart. */
function beatLayout(node: V1Node): { runs: number[]; times: boolean[] } | undefined {
  // heartbeat() writes the Date it is given as is; a marker string in its place shows where the times go.
  const marked = heartbeat(node, TIME_MARK as unknown as Date);
  marked.metadata = { ...marked.metadata, resourceVersion: RV_MARK };
  const bytes = Buffer.from(JSON.stringify(marked));
  const time = Buffer.from(JSON.stringify(TIME_MARK));
  const rv = Buffer.from(JSON.stringify(RV_MARK));
  const runs: number[] = [];
  const times: boolean[] = [];
  let at = 0;
  for (;;) {
    const t = bytes.indexOf(time, at);
    const r = bytes.indexOf(rv, at);
    if (t < 0 && r < 0) break;
    const isTime = t >= 0 && (r < 0 || t < r);
    const next = isTime ? t : r;
    runs.push(next - at);
    times.push(isTime);
    at = next + (isTime ? time.length : rv.length);
  }
  runs.push(bytes.length - at);
  return times.filter((x) => !x).length === 1 ? { runs, times } : undefined;
}

/** `from`'s bytes with the template's slots filled: this heartbeat's time and resourceVersion. */
function renderBeat(t: BeatTemplate, from: Buffer, now: Date, rv: number, alloc: (size: number) => Buffer = Buffer.allocUnsafe): Buffer {
  const time = Buffer.from(JSON.stringify(now));
  const version = Buffer.from(`"${rv}"`);
  let size = 0;
  for (const run of t.runs) size += run;
  for (const isTime of t.times) size += isTime ? time.length : version.length;
  const out = alloc(size);
  let src = 0;
  let dst = 0;
  for (let i = 0; i < t.times.length; i++) {
    dst += from.copy(out, dst, src, src + t.runs[i]!);
    src += t.runs[i]!;
    dst += (t.times[i] ? time : version).copy(out, dst);
    src += t.times[i] ? t.timeLength : t.rvLength;
  }
  from.copy(out, dst, src, src + t.runs[t.runs.length - 1]!);
  t.timeLength = time.length;
  t.rvLength = version.length;
  return out;
}

export class Simulation {
  readonly options: SimulationOptions;
  readonly heartbeats: HeartbeatGenerator;
  readonly endpoints: EndpointSliceController;
  private readonly random: () => number;
  private readonly nodes = new Map<string, NodeState>();
  private nodeSeq = 0;
  private podSeq = 0;
  private readonly cluster: { base: number; bits: number };
  private readonly nodeNet: { base: number; bits: number };
  /** Pods the churn may delete: an array for O(1) random choice plus positions for O(1) removal. */
  private readonly churnable: string[] = [];
  private readonly churnIndex = new Map<string, number>();
  private readonly apps: { namespace: string; app: string }[] = [];
  private heartbeatTimer?: NodeJS.Timeout;
  private churnTimer?: NodeJS.Timeout;
  private flipTimer?: NodeJS.Timeout;
  private churnCarry = 0;
  private churnLast = 0;
  private unsubscribe?: () => void;
  /** Lease mode: when each node's status was last written. */
  private readonly lastNodeStatus = new Map<string, number>();
  /** Pods waiting to run (FIFO: one fixed delay), with the uid that was scheduled. */
  private starting: { key: string; uid: string; due: number }[] = [];
  private startingHead = 0;
  private startTimer?: NodeJS.Timeout;
  /** Each node's heartbeat template (see BeatTemplate). */
  private readonly beatTemplates = new Map<string, BeatTemplate>();
  /** The nodes the churn places pods on (not the external ones), as an array for a random pick. */
  private churnNodes?: string[];
  readonly counters = { podsCreated: 0, podsDeleted: 0, podsStarted: 0, leaseRenewals: 0, nodeStatusWrites: 0 };

  constructor(readonly store: Store, options: Partial<SimulationOptions> = {}) {
    this.options = { ...DEFAULT_SIMULATION, ...options };
    this.random = seededRandom(this.options.seed);
    this.cluster = parseCIDR(this.options.clusterCIDR);
    this.nodeNet = parseCIDR(this.options.nodeIPCIDR);
    if (this.options.nodeCIDRMaskSize < this.cluster.bits || this.options.nodeCIDRMaskSize > 30) {
      throw new Error(`node CIDR mask size /${this.options.nodeCIDRMaskSize} does not fit in cluster CIDR ${this.options.clusterCIDR}`);
    }
    this.heartbeats = new HeartbeatGenerator(
      { intervalMs: this.options.heartbeatIntervalMs, jitter: this.options.heartbeatJitter, random: seededRandom(this.options.seed + 1) },
      (name, now) => this.beat(name, now),
    );
    this.endpoints = new EndpointSliceController(store, seededRandom(this.options.seed + 2));
  }

  /** Builds the initial cluster without watch events (nobody is watching yet), then starts the slice controller. */
  populate(now = new Date()): void {
    const o = this.options;
    for (let i = 0; i < Math.max(1, o.namespaces); i++) {
      const name = `ns-${i}`;
      if (!this.store.get('namespaces', '', name)) this.store.create('namespaces', { metadata: { name } }, { quiet: true });
    }
    for (let i = 0; i < o.services; i++) {
      const namespace = `ns-${i % Math.max(1, o.namespaces)}`;
      const name = `svc-${i}`;
      this.apps.push({ namespace, app: name });
      const svc = realisticService({ namespace, name, clusterIP: this.serviceIP(i), selector: { app: name }, now, seed: o.seed * 7919 + i });
      this.store.create('services', svc as KubeObject, { quiet: true, owned: true });
    }
    if (this.apps.length === 0) for (let i = 0; i < Math.max(1, o.namespaces); i++) this.apps.push({ namespace: `ns-${i}`, app: `app-${i}` });
    const t = now.getTime();
    for (let i = 0; i < o.nodes; i++) this.addNode({ pods: o.podsPerNode }, { quiet: true, now: t });
    for (let i = 0; i < o.emptyNodes; i++) this.addNode({ pods: 0 }, { quiet: true, now: t });
    this.endpoints.resyncAll(true);
    this.endpoints.start();
    this.store.resetWindows();
    this.unsubscribe ??= this.store.onChange((r, e) => {
      if (r.group !== '') return;
      if (r.plural === 'pods' && e.type === 'DELETED') this.forgetPod(e.object);
      else if (r.plural === 'pods') this.maybeSchedulePodStart(e);
      if (r.plural === 'nodes' && e.type === 'DELETED') {
        this.heartbeats.remove(e.object.name);
        const n = this.nodes.get(e.object.name);
        if (n) this.usedSlots.delete(n.slot);
        this.nodes.delete(e.object.name);
        this.lastNodeStatus.delete(e.object.name);
        this.beatTemplates.delete(e.object.name);
        this.churnNodes = undefined;
        // The node lifecycle controller's garbage collection: a node's Lease goes with it.
        if (this.store.get('leases', NODE_LEASE_NAMESPACE, e.object.name)) this.store.delete('leases', NODE_LEASE_NAMESPACE, e.object.name);
      }
    });
  }

  private serviceIP(i: number): string {
    return intToIpv4((ipv4ToInt('10.96.0.0') + 1000 + i) >>> 0);
  }

  private nodeName(): string {
    for (;;) {
      const name = `node-${String(++this.nodeSeq).padStart(5, '0')}`;
      if (!this.store.get('nodes', '', name)) return name;
    }
  }

  /** Registers a node (podCIDR from the cluster CIDR, InternalIP from the node range) with optional pods. */
  addNode(options: AddNodeOptions = {}, internal: { quiet?: boolean; now?: number } = {}): string {
    const name = options.name ?? this.nodeName();
    const index = this.nodes.size;
    const podBits = this.options.nodeCIDRMaskSize;
    const capacity = 2 ** (podBits - this.cluster.bits);
    const slot = this.freeSlot(capacity, index);
    const podBase = (this.cluster.base + slot * 2 ** (32 - podBits)) >>> 0;
    const podCIDR = `${intToIpv4(podBase)}/${podBits}`;
    const internalIP = intToIpv4((this.nodeNet.base + 10 + slot) >>> 0);
    const state: NodeState = { name, internalIP, podCIDR, podBase, podSize: 2 ** (32 - podBits), used: new Set(), cursor: 2, slot, external: (options.pods ?? 0) === 0 };
    this.nodes.set(name, state);
    this.churnNodes = undefined;
    const now = new Date(internal.now ?? Date.now());
    const node = realisticNode({ name, internalIP, podCIDR, labels: options.labels, seed: this.options.seed * 1_000_003 + slot, now });
    const stored = this.store.create('nodes', node as KubeObject, { quiet: internal.quiet ?? false, owned: true });
    const t = internal.now ?? Date.now();
    if (this.options.heartbeatMode === 'lease') {
      this.createLease(stored, t, internal.quiet ?? false);
      // Spread the 5-minute status writes over the interval instead of every node writing at the same moment.
      this.lastNodeStatus.set(name, t - this.random() * this.options.nodeStatusReportIntervalMs);
    }
    if (options.heartbeat ?? true) this.heartbeats.add(name, t);
    for (let i = 0; i < (options.pods ?? 0); i++) this.createPod({ nodeName: name }, internal.quiet ?? false);
    return name;
  }

  private usedSlots = new Set<number>();

  private freeSlot(capacity: number, hint: number): number {
    for (let i = 0; i < capacity; i++) {
      const slot = (hint + i) % capacity;
      if (!this.usedSlots.has(slot)) {
        this.usedSlots.add(slot);
        return slot;
      }
    }
    throw new Error(`cluster CIDR ${this.options.clusterCIDR} has no free /${this.options.nodeCIDRMaskSize} left`);
  }

  nodeInfo(name: string): { name: string; internalIP: string; podCIDR: string } | undefined {
    const n = this.nodes.get(name);
    return n ? { name: n.name, internalIP: n.internalIP, podCIDR: n.podCIDR } : undefined;
  }

  /** The next free address of a node's podCIDR (skipping network, gateway and broadcast). */
  allocatePodIP(nodeName: string): string | undefined {
    const n = this.nodes.get(nodeName);
    if (!n) return undefined;
    for (let i = 0; i < n.podSize - 3; i++) {
      const offset = n.cursor;
      n.cursor = offset + 1 >= n.podSize - 1 ? 2 : offset + 1;
      if (!n.used.has(offset)) {
        n.used.add(offset);
        return intToIpv4((n.podBase + offset) >>> 0);
      }
    }
    return undefined;
  }

  private releasePodIP(nodeName: string, ip: string): void {
    const n = this.nodes.get(nodeName);
    if (!n || !ip) return;
    // A pod written through the API may carry any IP, even a malformed one; it must still be deletable.
    let address: number;
    try {
      address = ipv4ToInt(ip);
    } catch {
      return;
    }
    n.used.delete(address - n.podBase);
  }

  private randomName(length: number): string {
    const chars = 'bcdfghjklmnpqrstvwxz2456789';
    let out = '';
    for (let i = 0; i < length; i++) out += chars[Math.floor(this.random() * chars.length)];
    return out;
  }

  /** Creates a pod (by default Running, with an IP from its node's podCIDR, labelled for one of the services). */
  createPod(options: CreatePodOptions = {}, quiet = false): StoredObject {
    const app = this.apps[this.podSeq++ % this.apps.length]!;
    const namespace = options.namespace ?? app.namespace;
    const labelApp = options.labels?.app ?? app.app;
    const name = options.name ?? `${labelApp}-${this.randomName(10)}-${this.randomName(5)}`;
    const node = options.nodeName ? this.nodes.get(options.nodeName) : undefined;
    // With a start delay the simulated kubelet runs the pod later (maybeSchedulePodStart); a bulk load starts Running.
    const kubeletStarts = this.options.podStartDelayMs > 0 && !quiet && !!node && !node.external;
    const phase = options.phase ?? (options.nodeName && !kubeletStarts ? 'Running' : 'Pending');
    const assign = options.assignIP ?? (phase === 'Running' && !!node);
    const podIP = assign && options.nodeName ? this.allocatePodIP(options.nodeName) : undefined;
    const pod = realisticPod({
      namespace, name, nodeName: options.nodeName, hostIP: node?.internalIP, podIP, phase,
      labels: { app: labelApp, ...options.labels }, seed: this.options.seed * 31 + this.podSeq, now: new Date(),
    });
    try {
      const stored = this.store.create('pods', pod as KubeObject, { quiet, owned: true });
      this.counters.podsCreated++;
      if (options.name === undefined) {
        this.churnIndex.set(stored.key, this.churnable.length);
        this.churnable.push(stored.key);
      }
      return stored;
    } catch (err) {
      if (podIP && options.nodeName) this.releasePodIP(options.nodeName, podIP);
      throw err;
    }
  }

  /** Deletes a pod: at once by default, or gracefully (deletionTimestamp set, gone when the period ends). */
  deletePod(namespace: string, name: string, options: { gracePeriodSeconds?: number } = {}): boolean {
    if (!this.store.get('pods', namespace, name)) return false;
    this.store.delete('pods', namespace, name, options);
    return true;
  }

  // ---------------------------------------------------------------- the simulated kubelet's pod start

  /** Queues a pod for its start when it is bound to a simulated node and waits for an IP. */
  private maybeSchedulePodStart(e: StoreEvent): void {
    if (this.options.podStartDelayMs <= 0) return;
    const f = e.object.fields;
    const nodeName = f['spec.nodeName'];
    if (!nodeName || f['status.podIP'] || f['status.phase'] !== 'Pending') return;
    if (e.type === 'MODIFIED' && e.previous?.fields['spec.nodeName'] === nodeName) return;
    const node = this.nodes.get(nodeName);
    if (!node || node.external) return;
    this.starting.push({ key: e.object.key, uid: e.object.uid, due: Date.now() + this.options.podStartDelayMs });
    if (!this.startTimer) {
      this.startTimer = setInterval(() => this.startDuePods(Date.now(), TURN_BUDGET_MS), Math.min(50, this.options.podStartDelayMs));
      this.startTimer.unref();
    }
  }

  /**
   * Runs every queued pod whose delay is over (exposed for tests driving their own clock); with `budgetMs`, only as
   * many as fit in that much real time (a burst of 2,000 pods created at once is due at once), the rest next turn.
   */
  startDuePods(now: number, budgetMs = Infinity): number {
    let n = 0;
    const stopAt = performance.now() + budgetMs;
    let steps = 0;
    while (this.startingHead < this.starting.length && this.starting[this.startingHead]!.due <= now) {
      if ((++steps & 15) === 0 && performance.now() > stopAt) break;
      const { key, uid } = this.starting[this.startingHead++]!;
      const [namespace, name] = key.split('/') as [string, string];
      if (this.startPod(namespace, name, uid, now)) n++;
    }
    if (this.startingHead > 1024 && this.startingHead * 2 > this.starting.length) {
      this.starting = this.starting.slice(this.startingHead);
      this.startingHead = 0;
    }
    if (this.startingHead >= this.starting.length && this.startTimer) {
      clearInterval(this.startTimer);
      this.startTimer = undefined;
    }
    return n;
  }

  /** What a kubelet reports once the sandbox and containers are up: Running, an IP from the node's podCIDR, ready. */
  private startPod(namespace: string, name: string, uid: string, now: number): boolean {
    const current = this.store.get('pods', namespace, name);
    if (!current || current.uid !== uid || current.fields['status.podIP'] || current.fields['status.phase'] !== 'Pending') return false;
    if (current.bytes.includes('"deletionTimestamp"')) return false;
    const nodeName = current.fields['spec.nodeName']!;
    const ip = this.allocatePodIP(nodeName);
    if (!ip) return false;
    const t = timestamp(new Date(now));
    this.store.mutate('pods', namespace, name, (obj) => {
      const status = ((obj.status as Record<string, unknown> | undefined) ??= {});
      const hostIP = this.nodes.get(nodeName)?.internalIP;
      Object.assign(status, { phase: 'Running', podIP: ip, podIPs: [{ ip }], startTime: status.startTime ?? t });
      if (hostIP) Object.assign(status, { hostIP, hostIPs: [{ ip: hostIP }] });
      const conditions = (status.conditions as { type: string; status: string; lastTransitionTime?: string }[] | undefined) ?? [];
      for (const type of ['PodReadyToStartContainers', 'Initialized', 'Ready', 'ContainersReady', 'PodScheduled']) {
        const c = conditions.find((x) => x.type === type);
        if (!c) conditions.push({ type, status: 'True', lastTransitionTime: t });
        else if (c.status !== 'True') Object.assign(c, { status: 'True', lastTransitionTime: t });
      }
      status.conditions = conditions;
      const containers = ((obj.spec as { containers?: { name: string; image?: string }[] } | undefined)?.containers ?? []);
      status.containerStatuses = containers.map((c) => ({
        name: c.name, image: c.image ?? '', imageID: '', containerID: `containerd://${uid.replace(/-/g, '')}`, ready: true, restartCount: 0, started: true,
        state: { running: { startedAt: t } },
      }));
    });
    this.counters.podsStarted++;
    return true;
  }

  // ---------------------------------------------------------------- node leases and conditions

  private createLease(node: StoredObject, now: number, quiet: boolean): void {
    if (this.store.get('leases', NODE_LEASE_NAMESPACE, node.name)) return;
    const lease = {
      apiVersion: 'coordination.k8s.io/v1', kind: 'Lease',
      metadata: {
        name: node.name, namespace: NODE_LEASE_NAMESPACE,
        ownerReferences: [{ apiVersion: 'v1', kind: 'Node', name: node.name, uid: node.uid }],
      },
      spec: { holderIdentity: node.name, leaseDurationSeconds: 40, renewTime: microTime(new Date(now)) },
    };
    this.store.create('leases', lease as KubeObject, { quiet, owned: true });
  }

  /**
   * Sets a node condition the way a kubelet reports a change: the Node status is written at once (lease mode's
   * exception to the 5-minute rule), with a new lastTransitionTime when the status changed.
   */
  setNodeCondition(name: string, type: string, status: 'True' | 'False' | 'Unknown', reason = type, message = ''): StoredObject | undefined {
    const now = Date.now();
    const updated = this.store.mutate('nodes', '', name, (obj) => {
      const node = heartbeat(obj as V1Node, new Date(now)) as KubeObject;
      const st = ((node.status as { conditions?: Record<string, unknown>[] } | undefined) ?? {});
      const conditions = (st.conditions ??= []);
      const t = timestamp(new Date(now));
      let c = conditions.find((x) => x.type === type);
      if (!c) conditions.push((c = { type, lastTransitionTime: t }));
      if (c.status !== status) c.lastTransitionTime = t;
      Object.assign(c, { status, reason, message, lastHeartbeatTime: t });
      node.status = st;
      return node;
    });
    if (updated) {
      this.lastNodeStatus.set(name, now);
      this.counters.nodeStatusWrites++;
    }
    return updated;
  }

  private forgetPod(obj: StoredObject): void {
    const i = this.churnIndex.get(obj.key);
    if (i !== undefined) {
      const last = this.churnable.pop()!;
      if (last !== obj.key) {
        this.churnable[i] = last;
        this.churnIndex.set(last, i);
      }
      this.churnIndex.delete(obj.key);
    }
    this.counters.podsDeleted++;
    const pod = JSON.parse(obj.json) as { spec?: { nodeName?: string }; status?: { podIP?: string } };
    if (pod.spec?.nodeName && pod.status?.podIP) this.releasePodIP(pod.spec.nodeName, pod.status.podIP);
  }

  /** Sets a pod's phase through the status subresource path (Running gets an IP when it has none). */
  setPodPhase(namespace: string, name: string, phase: string): StoredObject | undefined {
    return this.store.mutate('pods', namespace, name, (obj) => {
      const status = ((obj.status as Record<string, unknown> | undefined) ??= {});
      status.phase = phase;
      const nodeName = (obj.spec as { nodeName?: string } | undefined)?.nodeName;
      if (phase === 'Running' && !status.podIP && nodeName) {
        const ip = this.allocatePodIP(nodeName);
        if (ip) {
          status.podIP = ip;
          status.podIPs = [{ ip }];
        }
      }
      const ready = phase === 'Running' ? 'True' : 'False';
      const conditions = status.conditions as { type: string; status: string }[] | undefined;
      for (const c of conditions ?? []) if (c.type === 'Ready' || c.type === 'ContainersReady') c.status = ready;
    });
  }

  labelNode(name: string, labels: Record<string, string | null>): StoredObject | undefined {
    return this.store.mutate('nodes', '', name, (obj) => {
      const meta = obj.metadata!;
      const next = { ...meta.labels };
      for (const [k, v] of Object.entries(labels)) {
        if (v === null) delete next[k];
        else next[k] = v;
      }
      meta.labels = next;
    });
  }

  createService(input: { namespace?: string; name: string; selector?: Record<string, string>; ports?: { name?: string; port: number; targetPort?: number }[]; clusterIP?: string }): StoredObject {
    const svc = realisticService({
      namespace: input.namespace ?? 'default', name: input.name, clusterIP: input.clusterIP ?? '', selector: input.selector, ports: input.ports,
    });
    if (!input.clusterIP) delete svc.spec!.clusterIP, delete svc.spec!.clusterIPs;
    return this.store.create('services', svc as KubeObject, { owned: true });
  }

  private beat(name: string, now: number): boolean {
    if (this.options.heartbeatMode === 'lease') {
      const renewed = this.store.mutate('leases', NODE_LEASE_NAMESPACE, name, (obj) => {
        (obj.spec as Record<string, unknown>).renewTime = microTime(new Date(now));
      });
      if (!renewed) {
        const node = this.store.get('nodes', '', name);
        if (!node) return false;
        this.createLease(node, now, false);
      }
      this.counters.leaseRenewals++;
      if (now - (this.lastNodeStatus.get(name) ?? 0) < this.options.nodeStatusReportIntervalMs) return true;
      this.lastNodeStatus.set(name, now);
    }
    const updated = this.store.rewrite('nodes', '', name, (current, rv, alloc) => this.beatBytes(name, current, new Date(now), rv, alloc));
    if (updated) {
      this.counters.nodeStatusWrites++;
      const t = this.beatTemplates.get(name);
      if (t) t.from = updated;
    }
    return updated !== undefined;
  }

  /** A Node's next version after heartbeat(): from its template when the current version is the template's. */
  private beatBytes(name: string, current: StoredObject, now: Date, rv: number, alloc: (size: number) => Buffer): Buffer {
    let t = this.beatTemplates.get(name);
    if (t?.from === current) return renderBeat(t, current.bytes, now, rv, alloc);
    // Another write came between (or the first heartbeat): the slow way once, and a template for the next ones.
    const node = JSON.parse(current.json) as V1Node;
    const layout = beatLayout(node);
    const beat = heartbeat(node, now);
    beat.metadata = { ...beat.metadata, resourceVersion: String(rv) };
    const text = JSON.stringify(beat);
    const bytes = alloc(Buffer.byteLength(text));
    bytes.write(text);
    this.beatTemplates.delete(name);
    if (layout) {
      t = { from: current, ...layout, timeLength: Buffer.byteLength(JSON.stringify(now)), rvLength: Buffer.byteLength(`"${rv}"`) };
      // The template must give back the very bytes the slow way gave (it does unless the object holds a marker).
      if (renderBeat({ ...t }, bytes, now, rv).equals(bytes)) this.beatTemplates.set(name, t);
    }
    return bytes;
  }

  startHeartbeats(tickMs = 20): void {
    if (this.heartbeatTimer) return;
    this.heartbeatTimer = setInterval(() => this.heartbeats.tick(Date.now(), TURN_BUDGET_MS), tickMs);
    this.heartbeatTimer.unref();
  }

  stopHeartbeats(): void {
    clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = undefined;
  }

  /** One churn step: alternately creates a pod on a random node and deletes a random simulated pod. */
  churnOnce(): void {
    const nodeNames = (this.churnNodes ??= [...this.nodes.values()].filter((n) => !n.external).map((n) => n.name));
    const create = this.churnable.length === 0 || (this.counters.podsCreated + this.counters.podsDeleted) % 2 === 0;
    if (create && nodeNames.length > 0) {
      this.createPod({ nodeName: nodeNames[Math.floor(this.random() * nodeNames.length)]! });
    } else if (this.churnable.length > 0) {
      const key = this.churnable[Math.floor(this.random() * this.churnable.length)]!;
      const [namespace, name] = key.split('/') as [string, string];
      this.deletePod(namespace, name);
    }
  }

  /** Pod creates plus deletes per second (0 stops). */
  startChurn(perSecond = this.options.churnPerSecond, tickMs = 50): void {
    this.stopChurn();
    if (perSecond <= 0) return;
    this.churnLast = Date.now();
    this.churnTimer = setInterval(() => {
      const now = Date.now();
      this.churnCarry += ((now - this.churnLast) / 1000) * perSecond;
      this.churnLast = now;
      for (; this.churnCarry >= 1; this.churnCarry--) this.churnOnce();
    }, tickMs);
    this.churnTimer.unref();
  }

  stopChurn(): void {
    clearInterval(this.churnTimer);
    this.churnTimer = undefined;
    this.churnCarry = 0;
  }

  /**
   * Readiness flips per second (0 stops): a random running pod of the simulation's own turns its Ready condition over,
   * which is one EndpointSlice change (its endpoint's `ready`) and no change a slim pod record sees — EndpointSlice
   * churn beyond the pods' own, as the scale harness and the benchmarks make it.
   */
  startReadinessFlips(perSecond: number, tickMs = 100): void {
    this.stopReadinessFlips();
    if (perSecond <= 0) return;
    let carry = 0;
    let last = Date.now();
    this.flipTimer = setInterval(() => {
      const now = Date.now();
      carry += ((now - last) / 1000) * perSecond;
      last = now;
      for (; carry >= 1 && this.churnable.length > 0; carry--) {
        const [namespace, name] = this.churnable[Math.floor(this.random() * this.churnable.length)]!.split('/') as [string, string];
        this.flipReadiness(namespace, name);
      }
    }, tickMs);
    this.flipTimer.unref();
  }

  stopReadinessFlips(): void {
    clearInterval(this.flipTimer);
    this.flipTimer = undefined;
  }

  /** Turns a running pod's Ready condition over (a pod without an IP is left alone); returns the new version. */
  flipReadiness(namespace: string, name: string): StoredObject | undefined {
    if (!this.store.get('pods', namespace, name)?.fields['status.podIP']) return undefined;
    return this.store.mutate('pods', namespace, name, (obj) => {
      const conditions = (obj.status as { conditions?: Array<{ type: string; status: string }> } | undefined)?.conditions ?? [];
      const ready = conditions.find((c) => c.type === 'Ready');
      if (ready) ready.status = ready.status === 'True' ? 'False' : 'True';
    });
  }

  stop(): void {
    this.stopHeartbeats();
    this.stopChurn();
    this.stopReadinessFlips();
    clearInterval(this.startTimer);
    this.startTimer = undefined;
    this.endpoints.stop();
    this.unsubscribe?.();
  }
}
