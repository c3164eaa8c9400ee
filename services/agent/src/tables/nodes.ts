/**
 * The nodes table: each node's IP, podCIDRs and health IPs from etcd, validated against the cluster CIDR, and which
 * node owns each podCIDR. A podCIDR is used only when it lies inside the cluster CIDR with a prefix length between
 * max(cluster prefix, 16) and 30, and no other node claims an overlapping one; when two nodes' CIDRs overlap, the
 * node whose name sorts first keeps its CIDR and the other's is refused (the same answer on every agent, whatever
 * order the records arrived in). A node whose IP lies inside the cluster CIDR is refused as a whole.
 */
import { ancestor, cidrContains, cidrsOverlap, ipv4ToInt, parseV4Cidr, type V4Cidr } from './cidr.ts';
import type { Conflicts } from './conflicts.ts';

export const MIN_POD_CIDR_PREFIX = 16;
export const MAX_POD_CIDR_PREFIX = 30;

/** What the agent keeps of a node record. */
export interface NodeEntry {
  name: string;
  ip: string;
  /** Claimed IPv4 podCIDRs, canonical. */
  cidrs: string[];
  healthIPs: string[];
}

interface NodeRow extends NodeEntry {
  /** The claims that passed validation (owned or not). */
  valid: V4Cidr[];
  /** The ones it owns (kept in step with `owners`: every pod and health IP is checked against them). */
  owned: V4Cidr[];
}

interface Claim {
  cidr: V4Cidr;
  nodes: Set<string>;
}

export interface NodeTableEvents {
  /** A CIDR's owner changed (undefined: no owner). */
  cidrChanged(cidr: string): void;
  /** Something that decides a node's rows changed: its IP, its owned CIDRs, its presence. */
  nodeChanged(name: string): void;
  /** A node's health IP set changed. */
  healthChanged(ip: string): void;
}

export class NodeTable {
  private readonly rows = new Map<string, NodeRow>();
  private readonly claims = new Map<string, Claim>();
  private readonly byLength = new Map<number, Set<string>>();
  /** podCIDR → the node that owns it. */
  private readonly owners = new Map<string, string>();
  /** Health IP → node (the first node, by name, that lists it). */
  private readonly healthOwners = new Map<string, string>();
  private readonly healthClaims = new Map<string, Set<string>>();

  constructor(
    readonly cluster: V4Cidr,
    private readonly conflicts: Conflicts,
    private readonly events: NodeTableEvents,
  ) {}

  get size(): number {
    return this.rows.size;
  }

  get(name: string): NodeEntry | undefined {
    return this.rows.get(name);
  }

  values(): IterableIterator<NodeEntry> {
    return this.rows.values();
  }

  /** podCIDR → owner, for every owned podCIDR. */
  ownedCidrs(): ReadonlyMap<string, string> {
    return this.owners;
  }

  ownerOf(cidr: string): string | undefined {
    return this.owners.get(cidr);
  }

  healthIps(): ReadonlyMap<string, string> {
    return this.healthOwners;
  }

  /** True when the node owns at least one podCIDR. */
  ownsAny(node: string): boolean {
    return (this.rows.get(node)?.owned.length ?? 0) > 0;
  }

  /** The podCIDRs the node claims that passed validation (owned or lost to an overlap). */
  validCidrs(node: string): string[] {
    return this.rows.get(node)?.valid.map((c) => c.text) ?? [];
  }

  /** True when the node claims a podCIDR that passed validation (owned or lost to an overlap). */
  claimsAny(node: string): boolean {
    return (this.rows.get(node)?.valid.length ?? 0) > 0;
  }

  /**
   * True when `ip` lies in a podCIDR the node claims and that passed validation, owned or not: what this node's own
   * local endpoints are checked against (its record is what it was assigned; an overlap decides what others route).
   */
  inClaimedCidr(node: string, ip: string): boolean {
    const row = this.rows.get(node);
    const n = ipv4ToInt(ip);
    if (!row || n === undefined) return false;
    for (const c of row.valid) if (cidrContains(c, n)) return true;
    return false;
  }

  /** True when `ip` lies in one of the podCIDRs `node` owns. */
  inOwnedCidr(node: string, ip: string): boolean {
    const row = this.rows.get(node);
    if (!row) return false;
    const n = ipv4ToInt(ip);
    if (n === undefined) return false;
    for (const c of row.owned) if (cidrContains(c, n)) return true;
    return false;
  }

  upsert(entry: NodeEntry): void {
    const old = this.rows.get(entry.name);
    const nodeIp = ipv4ToInt(entry.ip);
    if (nodeIp !== undefined && cidrContains(this.cluster, nodeIp)) {
      this.conflicts.report('node_ip_in_cluster_cidr', entry.name, `node ${entry.name}'s IP ${entry.ip} lies inside the cluster CIDR ${this.cluster.text}`, { ip: entry.ip });
      if (old) this.delete(entry.name);
      return;
    }
    this.conflicts.clear('node_ip_in_cluster_cidr', entry.name);
    const valid: V4Cidr[] = [];
    const minLen = Math.max(this.cluster.len, MIN_POD_CIDR_PREFIX);
    const claimed = new Set<string>();
    for (const text of entry.cidrs) {
      const c = parseV4Cidr(text);
      if (!c) continue;
      claimed.add(c.text);
      const subject = `${entry.name} ${c.text}`;
      if (c.len < minLen || c.len > MAX_POD_CIDR_PREFIX) {
        this.conflicts.report('pod_cidr_prefix_length', subject, `node ${entry.name}'s podCIDR ${c.text} has prefix length /${c.len}, outside /${minLen}…/${MAX_POD_CIDR_PREFIX}`);
        continue;
      }
      this.conflicts.clear('pod_cidr_prefix_length', subject);
      if (c.len < this.cluster.len || !cidrContains(this.cluster, c.net)) {
        this.conflicts.report('pod_cidr_outside_cluster', subject, `node ${entry.name}'s podCIDR ${c.text} is not inside the cluster CIDR ${this.cluster.text}`);
        continue;
      }
      this.conflicts.clear('pod_cidr_outside_cluster', subject);
      if (!valid.some((v) => v.text === c.text)) valid.push(c);
    }
    for (const c of old?.cidrs ?? []) {
      if (!claimed.has(c)) for (const r of ['pod_cidr_prefix_length', 'pod_cidr_outside_cluster', 'pod_cidr_overlap'] as const) this.conflicts.clear(r, `${entry.name} ${c}`);
    }
    const row: NodeRow = { ...entry, cidrs: [...claimed], valid, owned: [] };
    this.rows.set(entry.name, row);
    const before = old ? this.ownedBy(old) : '';
    const touched = new Set<string>();
    for (const c of old?.valid ?? []) if (!valid.some((v) => v.text === c.text)) (this.unclaim(c, entry.name), touched.add(c.text));
    for (const c of valid) if (!old?.valid.some((v) => v.text === c.text)) (this.claim(c, entry.name), touched.add(c.text));
    this.settleOwners(touched);
    this.refreshOwned(row);
    this.settleHealth(entry.name, old?.healthIPs ?? [], entry.healthIPs);
    if (!old || old.ip !== entry.ip || before !== this.ownedBy(row)) this.events.nodeChanged(entry.name);
  }

  delete(name: string): void {
    const old = this.rows.get(name);
    if (!old) return;
    this.rows.delete(name);
    const touched = new Set<string>();
    for (const c of old.valid) (this.unclaim(c, name), touched.add(c.text));
    for (const c of old.cidrs) for (const r of ['pod_cidr_prefix_length', 'pod_cidr_outside_cluster', 'pod_cidr_overlap'] as const) this.conflicts.clear(r, `${name} ${c}`);
    this.settleOwners(touched);
    this.settleHealth(name, old.healthIPs, []);
    this.events.nodeChanged(name);
  }

  private refreshOwned(row: NodeRow): void {
    row.owned = row.valid.filter((c) => this.owners.get(c.text) === row.name);
  }

  private ownedBy(row: NodeRow): string {
    return row.valid.filter((c) => this.owners.get(c.text) === row.name).map((c) => c.text).join(',');
  }

  private claim(c: V4Cidr, node: string): void {
    let claim = this.claims.get(c.text);
    if (!claim) {
      claim = { cidr: c, nodes: new Set() };
      this.claims.set(c.text, claim);
      let set = this.byLength.get(c.len);
      if (!set) this.byLength.set(c.len, (set = new Set()));
      set.add(c.text);
    }
    claim.nodes.add(node);
  }

  private unclaim(c: V4Cidr, node: string): void {
    const claim = this.claims.get(c.text);
    if (!claim) return;
    claim.nodes.delete(node);
    this.conflicts.clear('pod_cidr_overlap', `${node} ${c.text}`);
    if (claim.nodes.size) return;
    this.claims.delete(c.text);
    const set = this.byLength.get(c.len);
    set?.delete(c.text);
    if (set && !set.size) this.byLength.delete(c.len);
  }

  /** Claims overlapping `c` (itself included, if claimed). */
  private overlapping(c: V4Cidr): Claim[] {
    const out: Claim[] = [];
    for (const [len, texts] of this.byLength) {
      if (len <= c.len) {
        const claim = this.claims.get(ancestor(c, len));
        if (claim) out.push(claim);
      } else {
        for (const t of texts) {
          const claim = this.claims.get(t)!;
          if (cidrsOverlap(claim.cidr, c)) out.push(claim);
        }
      }
    }
    return out;
  }

  /** Recomputes the owner of every claim that overlaps one of `touched` (and of `touched` themselves). */
  private settleOwners(touched: Set<string>): void {
    const todo = new Map<string, V4Cidr>();
    for (const t of touched) {
      const c = parseV4Cidr(t)!;
      todo.set(t, c);
      for (const claim of this.overlapping(c)) todo.set(claim.cidr.text, claim.cidr);
    }
    const changedNodes = new Set<string>();
    for (const [text, c] of todo) {
      const claim = this.claims.get(text);
      let owner: string | undefined;
      if (claim) {
        const rivals = this.overlapping(c);
        let first: string | undefined;
        for (const r of rivals) for (const n of r.nodes) if (first === undefined || n < first) first = n;
        owner = first !== undefined && claim.nodes.has(first) ? first : undefined;
        for (const n of claim.nodes) {
          if (n === owner) this.conflicts.clear('pod_cidr_overlap', `${n} ${text}`);
          else this.conflicts.report('pod_cidr_overlap', `${n} ${text}`, `node ${n}'s podCIDR ${text} overlaps node ${first}'s`, { owner: first });
        }
      }
      const before = this.owners.get(text);
      if (before === owner) continue;
      if (owner === undefined) this.owners.delete(text);
      else this.owners.set(text, owner);
      if (before) changedNodes.add(before);
      if (owner) changedNodes.add(owner);
      this.events.cidrChanged(text);
    }
    for (const n of changedNodes) {
      const row = this.rows.get(n);
      if (row) this.refreshOwned(row);
    }
    for (const n of changedNodes) this.events.nodeChanged(n);
  }

  private settleHealth(node: string, before: readonly string[], after: readonly string[]): void {
    for (const ip of before) if (!after.includes(ip)) this.healthClaims.get(ip)?.delete(node);
    for (const ip of after) {
      let set = this.healthClaims.get(ip);
      if (!set) this.healthClaims.set(ip, (set = new Set()));
      set.add(node);
    }
    for (const ip of new Set([...before, ...after])) {
      const set = this.healthClaims.get(ip);
      let owner: string | undefined;
      for (const n of set ?? []) if (owner === undefined || n < owner) owner = n;
      if (set && !set.size) this.healthClaims.delete(ip);
      if (this.healthOwners.get(ip) === owner) continue;
      if (owner === undefined) this.healthOwners.delete(ip);
      else this.healthOwners.set(ip, owner);
      this.events.healthChanged(ip);
    }
  }
}
