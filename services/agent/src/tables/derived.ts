/**
 * Derived tables: what each target should hold, computed from the nodes, pods and local-endpoint tables on demand
 * (nothing is stored twice, which matters at 100,000 pods × 50 agents in the scale harness). One rule per fact:
 * - ipcache /32: a local endpoint (this node's CNI registration) first, then the pod that owns the IP, then a
 *   node's health IP; a pod or health IP outside its node's owned podCIDR, or a local one outside this node's,
 *   is a conflict and not programmed.
 * - ipcache prefixes, tunnel and routes: the podCIDRs each node owns (tunnel and routes only for other nodes).
 * - endpoints: the local endpoints (valid ones).
 */
import { IPCACHE_F_LOCAL, type EndpointValue, type IpcacheValue, type TunnelValue } from '@sluice/bpf';
import type { DesiredRows } from '../reconciler.ts';
import type { Conflicts } from './conflicts.ts';
import type { NodeTable } from './nodes.ts';
import type { PodTable } from './pods.ts';

/** A pod on this node, as the CNI plugin reported it (only the node knows ifindexes and MACs). */
export interface LocalEndpoint {
  /** The CNI container id. */
  id: string;
  ip: string;
  /** Host-side veth, in the node's namespace. */
  hostIfname: string;
  hostIfindex: number;
  hostMac: string;
  /** The pod's eth0 MAC. */
  mac: string;
  podNamespace?: string;
  podName?: string;
}

/** A kernel route to another node's podCIDR. */
export interface RouteRow {
  nodeIp: string;
}

export class LocalTable {
  readonly byId = new Map<string, LocalEndpoint>();
  readonly byIp = new Map<string, LocalEndpoint>();

  get size(): number {
    return this.byId.size;
  }

  set(ep: LocalEndpoint): LocalEndpoint | undefined {
    const old = this.byId.get(ep.id);
    if (old && this.byIp.get(old.ip) === old) this.byIp.delete(old.ip);
    this.byId.set(ep.id, ep);
    this.byIp.set(ep.ip, ep);
    return old;
  }

  delete(id: string): LocalEndpoint | undefined {
    const ep = this.byId.get(id);
    if (!ep) return undefined;
    this.byId.delete(id);
    if (this.byIp.get(ep.ip) === ep) {
      this.byIp.delete(ep.ip);
      // Another registration of the same IP (the API refuses that; a restored state file might not).
      for (const other of this.byId.values()) if (other.ip === ep.ip) this.byIp.set(ep.ip, other);
    }
    return ep;
  }
}

export class ClusterView {
  constructor(
    readonly nodeName: string,
    readonly nodes: NodeTable,
    readonly pods: PodTable,
    readonly local: LocalTable,
    readonly conflicts: Conflicts,
    private readonly fallbackIp: () => string | undefined,
  ) {}

  selfIp(): string | undefined {
    return this.nodes.get(this.nodeName)?.ip ?? this.fallbackIp();
  }

  /** A local endpoint may be programmed: inside a podCIDR this node's record claims (none known yet: trusted). */
  localValid(ep: LocalEndpoint): boolean {
    if (!this.nodes.claimsAny(this.nodeName)) return true;
    if (this.nodes.inClaimedCidr(this.nodeName, ep.ip)) {
      this.conflicts.clear('local_ip_outside_node_cidr', ep.ip);
      return true;
    }
    this.conflicts.report('local_ip_outside_node_cidr', ep.ip, `local endpoint ${ep.id}'s IP ${ep.ip} is outside this node's podCIDRs`);
    return false;
  }

  host(ip: string): IpcacheValue | undefined {
    const local = this.local.byIp.get(ip);
    if (local) {
      const self = this.selfIp();
      return self && this.localValid(local) ? { nodeIp: self, flags: IPCACHE_F_LOCAL } : undefined;
    }
    const pod = this.pods.ownerOf(ip);
    if (pod) return this.onNode(pod.node, ip, 'pod_ip_outside_node_cidr', 'pod IP');
    const health = this.nodes.healthIps().get(ip);
    if (health !== undefined) return this.onNode(health, ip, 'health_ip_outside_node_cidr', 'health IP');
    return undefined;
  }

  private onNode(name: string, ip: string, reason: 'pod_ip_outside_node_cidr' | 'health_ip_outside_node_cidr', what: string): IpcacheValue | undefined {
    const node = this.nodes.get(name);
    if (!node) return undefined; // its node is not known (yet): nothing to point at
    if (!this.nodes.inOwnedCidr(name, ip)) {
      this.conflicts.report(reason, ip, `${what} ${ip} is outside node ${name}'s podCIDRs (${node.cidrs.join(', ') || 'none'})`);
      return undefined;
    }
    this.conflicts.clear(reason, ip);
    const isSelf = name === this.nodeName;
    const nodeIp = isSelf ? this.selfIp() : node.ip;
    return nodeIp ? { nodeIp, flags: isSelf ? IPCACHE_F_LOCAL : 0 } : undefined;
  }

  prefix(cidr: string): IpcacheValue | undefined {
    const owner = this.nodes.ownerOf(cidr);
    const node = owner === undefined ? undefined : this.nodes.get(owner);
    return node ? { nodeIp: node.ip, flags: owner === this.nodeName ? IPCACHE_F_LOCAL : 0 } : undefined;
  }

  remote(cidr: string): string | undefined {
    const owner = this.nodes.ownerOf(cidr);
    if (owner === undefined || owner === this.nodeName) return undefined;
    return this.nodes.get(owner)?.ip;
  }

  endpoint(ip: string): EndpointValue | undefined {
    const ep = this.local.byIp.get(ip);
    return ep && this.localValid(ep) ? { ifindex: ep.hostIfindex, flags: 0, mac: ep.mac, nodeMac: ep.hostMac } : undefined;
  }
}

const isHost = (key: string) => key.endsWith('/32');

export function ipcacheRows(view: ClusterView): DesiredRows<IpcacheValue> {
  return {
    get: (key) => (isHost(key) ? view.host(key.slice(0, -3)) : view.prefix(key)),
    *entries() {
      const local = view.local.byIp;
      for (const ip of local.keys()) {
        const v = view.host(ip);
        if (v) yield [`${ip}/32`, v];
      }
      for (const ip of view.pods.ips()) {
        if (local.has(ip)) continue;
        const v = view.host(ip);
        if (v) yield [`${ip}/32`, v];
      }
      for (const ip of view.nodes.healthIps().keys()) {
        if (local.has(ip) || view.pods.ownerOf(ip)) continue;
        const v = view.host(ip);
        if (v) yield [`${ip}/32`, v];
      }
      for (const cidr of view.nodes.ownedCidrs().keys()) {
        const v = view.prefix(cidr);
        if (v) yield [cidr, v];
      }
    },
    get size() {
      let n = 0;
      for (const ip of view.local.byIp.keys()) if (!view.pods.ownerOf(ip)) n++;
      for (const ip of view.nodes.healthIps().keys()) if (!view.pods.ownerOf(ip) && !view.local.byIp.has(ip)) n++;
      return n + view.pods.ipCount + view.nodes.ownedCidrs().size;
    },
  };
}

export function tunnelRows(view: ClusterView): DesiredRows<TunnelValue> {
  return {
    get: (cidr) => {
      const nodeIp = view.remote(cidr);
      return nodeIp ? { nodeIp, vni: 0 } : undefined;
    },
    *entries() {
      for (const cidr of view.nodes.ownedCidrs().keys()) {
        const nodeIp = view.remote(cidr);
        if (nodeIp) yield [cidr, { nodeIp, vni: 0 }];
      }
    },
    get size() {
      let n = 0;
      for (const owner of view.nodes.ownedCidrs().values()) if (owner !== view.nodeName) n++;
      return n;
    },
  };
}

export function routeRows(view: ClusterView): DesiredRows<RouteRow> {
  return {
    get: (cidr) => {
      const nodeIp = view.remote(cidr);
      return nodeIp ? { nodeIp } : undefined;
    },
    *entries() {
      for (const cidr of view.nodes.ownedCidrs().keys()) {
        const nodeIp = view.remote(cidr);
        if (nodeIp) yield [cidr, { nodeIp }];
      }
    },
    get size() {
      let n = 0;
      for (const owner of view.nodes.ownedCidrs().values()) if (owner !== view.nodeName) n++;
      return n;
    },
  };
}

export function endpointRows(view: ClusterView): DesiredRows<EndpointValue> {
  return {
    get: (ip) => view.endpoint(ip),
    *entries() {
      for (const ip of view.local.byIp.keys()) {
        const v = view.endpoint(ip);
        if (v) yield [ip, v];
      }
    },
    get size() {
      return view.local.byIp.size;
    },
  };
}
