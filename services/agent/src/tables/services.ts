/**
 * The desired load-balancer state of this node: Services and EndpointSlices from etcd (written by the operator) →
 * one row per Service ("namespace/name") saying which frontends it has and which backends each balances over, as
 * kube-proxy reads them:
 * - ClusterIP frontends on every IPv4 clusterIP; NodePort ones (type NodePort or LoadBalancer) on every address of
 *   the node: one frontend per address the node has (its record's InternalIP and ExternalIP addresses, its uplink's
 *   addresses), each marked as a node address, plus 0.0.0.0:nodePort, which the programs match for the node's
 *   primary IP; externalIPs and load-balancer ingress IPs as external frontends. TCP and UDP (SCTP
 *   is not load-balanced). Headless (no clusterIP) and ExternalName services have no row.
 * - A service port's backends come from its slices' port of the same name and protocol (that is how a named
 *   targetPort is resolved: the EndpointSlice controller already put the pod's number there).
 * - internalTrafficPolicy / externalTrafficPolicy Local keep only this node's endpoints for those frontends; when
 *   that leaves none while other nodes have some, the frontend drops (kube-proxy: other nodes do not answer).
 * - sessionAffinity ClientIP with its timeout (the API's default 10800 s).
 * Rows are computed on demand from the stored records (nothing is stored twice); every change names the service
 * whose row it may change.
 */
import type { LbBackend, LbBackendSet, LbFrontend, LbService } from '@sluice/datapath';
import type { SlimEndpointSlice, SlimService } from '@sluice/slim';
import ipaddr from 'ipaddr.js';
import type { DesiredRows } from '../reconciler.ts';
import type { RowListener } from './table.ts';
import type { Conflicts } from './conflicts.ts';

const DEFAULT_AFFINITY_TIMEOUT = 10_800;
// A regular expression, not ipaddr.js's parser: this runs for every endpoint address of every row (100,000 at scale).
const V4 = /^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;
const isV4 = (ip: string) => V4.test(ip);

/** The load-balancer row of one service on node `nodeName`; undefined when it has nothing to program. */
export function buildLbService(svc: SlimService, slices: Iterable<SlimEndpointSlice>, nodeName: string, nodeAddresses: readonly string[] = []): LbService | undefined {
  if (svc.type === 'ExternalName') return undefined;
  const clusterIPs = svc.clusterIPs.filter(isV4);
  if (!clusterIPs.length) return undefined;
  const externalIPs = [...new Set([...svc.externalIPs, ...svc.loadBalancerIPs].filter(isV4))];
  const nodePorts = svc.type === 'NodePort' || svc.type === 'LoadBalancer';
  const sliceList = [...slices].filter((s) => s.addressType === 'IPv4');
  const affinityTimeout = svc.sessionAffinity === 'ClientIP' ? (svc.sessionAffinityTimeoutSeconds ?? DEFAULT_AFFINITY_TIMEOUT) : 0;
  const out: LbService = { frontends: [], sets: [] };
  const base = `${svc.namespace}/${svc.name}`;
  for (const port of svc.ports) {
    if (port.protocol !== 'TCP' && port.protocol !== 'UDP') continue;
    const proto = port.protocol === 'TCP' ? 'tcp' : 'udp';
    const byIp = new Map<string, LbBackend>();
    for (const slice of sliceList) {
      const target = slice.ports.find((p) => p.name === port.name && p.protocol === port.protocol);
      if (!target || !target.port) continue;
      for (const ep of slice.endpoints) {
        const ip = ep.addresses[0];
        if (!ip || !isV4(ip) || byIp.has(ip)) continue;
        byIp.set(ip, { ip, port: target.port, ready: ep.ready, serving: ep.serving, terminating: ep.terminating, local: ep.nodeName === nodeName });
      }
    }
    const all = [...byIp.values()].sort((a, b) => (a.ip < b.ip ? -1 : a.ip > b.ip ? 1 : 0));
    const local = all.filter((b) => b.local);
    const setFor = (policy: 'Cluster' | 'Local', scope: string): LbBackendSet => ({
      name: `${base}:${port.name}/${port.protocol}:${scope}`,
      backends: policy === 'Local' ? local : all,
      affinityTimeout,
      dropWhenEmpty: policy === 'Local' && all.length > 0,
    });
    const shared = svc.internalTrafficPolicy === svc.externalTrafficPolicy;
    const internal = setFor(svc.internalTrafficPolicy, shared ? 'all' : 'internal');
    const external = shared ? internal : setFor(svc.externalTrafficPolicy, 'external');
    out.sets.push(internal);
    if (!shared) out.sets.push(external);
    const fe = (vip: string, p: number, isExternal: boolean): LbFrontend => ({ vip, port: p, proto, external: isExternal, set: isExternal ? external.name : internal.name });
    for (const ip of clusterIPs) out.frontends.push(fe(ip, port.port, false));
    for (const ip of externalIPs) out.frontends.push(fe(ip, port.port, true));
    if (nodePorts && port.nodePort) {
      out.frontends.push(fe('0.0.0.0', port.nodePort, true));
      for (const ip of nodeAddresses) out.frontends.push({ ...fe(ip, port.nodePort, true), nodeAddress: true });
    }
  }
  return out.frontends.length ? out : undefined;
}

/**
 * Which frontend addresses a Service record may claim on this node. A record that puts a clusterIP outside the service
 * CIDR, or an external/LoadBalancer IP inside the pod or service ranges, would capture traffic meant for pods or
 * other services (a frontend wins over the ipcache): such addresses are refused, reported once, never programmed.
 */
export interface FrontendPolicy {
  /** The service CIDR clusterIPs come from (the API server's --service-cluster-ip-range). */
  serviceCidr: string;
  /** The pods' range (the agent's --cluster-cidr). */
  clusterCidr: string;
  conflicts: Conflicts;
}

/** The record with the addresses the policy refuses taken out (reported to `conflicts`, cleared when fixed). */
export function admitFrontends(svc: SlimService, policy: FrontendPolicy): SlimService {
  const service = ipaddr.parseCIDR(policy.serviceCidr);
  const cluster = ipaddr.parseCIDR(policy.clusterCidr);
  const key = `${svc.namespace}/${svc.name}`;
  const inside = (ip: string, cidr: [ipaddr.IPv4 | ipaddr.IPv6, number]) => {
    const addr = ipaddr.parse(ip);
    return addr.kind() === cidr[0].kind() && addr.match(cidr);
  };
  const refused: string[] = [];
  const clusterIPs = svc.clusterIPs.filter((ip) => !isV4(ip) || inside(ip, service) || (refused.push(ip), false));
  if (refused.length) policy.conflicts.report('service_ip_outside_service_cidr', key, `service ${key}'s clusterIPs ${refused.join(', ')} are outside the service CIDR ${policy.serviceCidr}`);
  else policy.conflicts.clear('service_ip_outside_service_cidr', key);
  const external: string[] = [];
  const admit = (ip: string) => !isV4(ip) || !(inside(ip, service) || inside(ip, cluster)) || (external.push(ip), false);
  const externalIPs = svc.externalIPs.filter(admit);
  const loadBalancerIPs = svc.loadBalancerIPs.filter(admit);
  if (external.length) policy.conflicts.report('external_ip_in_cluster_range', key, `service ${key}'s external addresses ${external.join(', ')} lie inside the pod range ${policy.clusterCidr} or the service CIDR ${policy.serviceCidr}`);
  else policy.conflicts.clear('external_ip_in_cluster_range', key);
  return refused.length || external.length ? { ...svc, clusterIPs, externalIPs, loadBalancerIPs } : svc;
}

/**
 * Services and their slices as etcd holds them, and the rows computed from them. A row is computed when first asked
 * for and kept until one of its records changes: the reconciler asks for every row at least twice per full pass, and
 * the load-balancer programmer recognises an unchanged row by its identity (no recompiling, no comparing).
 */
export class ServicesTable implements DesiredRows<LbService> {
  private readonly services = new Map<string, SlimService>();
  /** service key → its row (null: nothing to program), until a record of it changes. */
  private readonly rows = new Map<string, LbService | null>();
  private readonly slices = new Map<string, SlimEndpointSlice>();
  /** service key → its slices' keys. */
  private readonly slicesOf = new Map<string, Set<string>>();
  private readonly listeners: RowListener[] = [];
  /** The highest etcd revision applied. */
  revision = 0;
  /** This node's IPv4 addresses (sorted): each NodePort service has a frontend on every one. */
  private addresses: string[] = [];

  constructor(private readonly nodeName: string, private readonly policy?: FrontendPolicy) {}

  follow(listener: RowListener): this {
    this.listeners.push(listener);
    return this;
  }

  private changed(key: string, revision: number): void {
    this.rows.delete(key);
    this.revision = Math.max(this.revision, revision);
    for (const l of this.listeners) l.changed(key, revision);
  }

  upsertService(svc: SlimService, revision = 0): void {
    const key = `${svc.namespace}/${svc.name}`;
    this.services.set(key, this.policy ? admitFrontends(svc, this.policy) : svc);
    this.changed(key, revision);
  }

  deleteService(key: string, revision = 0): void {
    if (!this.services.delete(key)) return;
    this.policy?.conflicts.clear('service_ip_outside_service_cidr', key);
    this.policy?.conflicts.clear('external_ip_in_cluster_range', key);
    this.changed(key, revision);
  }

  upsertSlice(slice: SlimEndpointSlice, revision = 0): void {
    const key = `${slice.namespace}/${slice.name}`;
    const old = this.slices.get(key);
    const service = `${slice.namespace}/${slice.service}`;
    if (old && old.service !== slice.service) this.unlink(key, `${old.namespace}/${old.service}`, revision);
    this.slices.set(key, slice);
    let set = this.slicesOf.get(service);
    if (!set) this.slicesOf.set(service, (set = new Set()));
    set.add(key);
    this.changed(service, revision);
  }

  deleteSlice(key: string, revision = 0): void {
    const old = this.slices.get(key);
    if (!old) return;
    this.slices.delete(key);
    this.unlink(key, `${old.namespace}/${old.service}`, revision);
  }

  private unlink(sliceKey: string, service: string, revision: number): void {
    const set = this.slicesOf.get(service);
    set?.delete(sliceKey);
    if (set && !set.size) this.slicesOf.delete(service);
    this.changed(service, revision);
  }

  /**
   * This node's addresses changed (its record's, or its uplink's): every NodePort service's row changes with them.
   * Returns whether they did.
   */
  setNodeAddresses(addresses: Iterable<string>, revision = 0): boolean {
    const next = [...new Set([...addresses].filter((ip) => isV4(ip) && ip !== '0.0.0.0' && !ip.startsWith('127.')))].sort();
    if (next.length === this.addresses.length && next.every((ip, i) => ip === this.addresses[i])) return false;
    this.addresses = next;
    for (const [key, svc] of this.services) if (svc.type === 'NodePort' || svc.type === 'LoadBalancer') this.changed(key, revision);
    return true;
  }

  get nodeAddresses(): readonly string[] {
    return this.addresses;
  }

  /** The stored Service record (status, CLI). */
  service(key: string): SlimService | undefined {
    return this.services.get(key);
  }

  get(key: string): LbService | undefined {
    const cached = this.rows.get(key);
    if (cached !== undefined) return cached ?? undefined;
    const svc = this.services.get(key);
    if (!svc) return undefined;
    const slices = [...(this.slicesOf.get(key) ?? [])].map((k) => this.slices.get(k)!);
    const row = buildLbService(svc, slices, this.nodeName, this.addresses);
    this.rows.set(key, row ?? null);
    return row;
  }

  *entries(): IterableIterator<[string, LbService]> {
    for (const key of this.services.keys()) {
      const row = this.get(key);
      if (row) yield [key, row];
    }
  }

  get size(): number {
    let n = 0;
    for (const _ of this.entries()) n++;
    return n;
  }

  get counts(): { services: number; endpointSlices: number } {
    return { services: this.services.size, endpointSlices: this.slices.size };
  }
}
