/**
 * The pods table: each endpoint pod's IPv4 address and node, and who owns each IP. Two pod records claiming one IP
 * (a bug elsewhere, or an address reused while a stale record lingers) resolve the same way on every agent: the
 * record whose key sorts first owns it; when the owner goes, the next claim takes over — its ipcache entry is
 * rewritten, not deleted. The conflict is reported while it lasts.
 *
 * Memory: per pod one record {ip, node, key} (node: the interned name string) in two maps, by key and by IP; the
 * rare second claims live in a side map.
 */
import type { Conflicts } from './conflicts.ts';

export interface PodEntry {
  ip: string;
  /** The node record's name string (shared). */
  node: string;
}

/** A pod as stored: the entry and its key (the owners map points at the same object). */
interface PodRow extends PodEntry {
  key: string;
}

export class PodTable {
  private readonly pods = new Map<string, PodRow>();
  /** ip → the owning pod. */
  private readonly owners = new Map<string, PodRow>();
  /** ip → the other claimants, sorted. */
  private readonly others = new Map<string, string[]>();

  constructor(
    private readonly conflicts: Conflicts,
    /** An IP's owner or owning record changed. */
    private readonly changed: (ip: string) => void,
  ) {}

  get size(): number {
    return this.pods.size;
  }

  get(key: string): PodEntry | undefined {
    return this.pods.get(key);
  }

  values(): IterableIterator<PodEntry> {
    return this.pods.values();
  }

  /** The pod that owns `ip`. */
  ownerOf(ip: string): PodEntry | undefined {
    return this.owners.get(ip);
  }

  /** Distinct IPs claimed. */
  get ipCount(): number {
    return this.owners.size;
  }

  /** [ip, owning pod's node] for every claimed IP. */
  *entriesByIp(): Generator<[string, string]> {
    for (const [ip, row] of this.owners) yield [ip, row.node];
  }

  ips(): IterableIterator<string> {
    return this.owners.keys();
  }

  /** Sets or removes (null) a pod's entry; returns false when nothing changed. */
  set(key: string, entry: PodEntry | null): boolean {
    const old = this.pods.get(key);
    if (old && entry && old.ip === entry.ip && old.node === entry.node) return false;
    if (!old && !entry) return false;
    if (old) {
      this.pods.delete(key);
      this.unclaim(old.ip, key);
    }
    if (entry) {
      const row: PodRow = { ip: entry.ip, node: entry.node, key };
      this.pods.set(key, row);
      this.claim(row);
    }
    if (old) this.changed(old.ip);
    if (entry && entry.ip !== old?.ip) this.changed(entry.ip);
    return true;
  }

  private claim(row: PodRow): void {
    const { ip, key } = row;
    const owner = this.owners.get(ip);
    if (owner === undefined) {
      this.owners.set(ip, row);
      return;
    }
    const all = [owner.key, ...(this.others.get(ip) ?? []), key].sort();
    this.owners.set(ip, this.pods.get(all[0]!)!);
    this.others.set(ip, all.slice(1));
    this.conflicts.report('pod_ip_claimed_twice', ip, `IP ${ip} is claimed by ${all.length} pod records; ${all[0]} owns it`, { claims: all });
  }

  private unclaim(ip: string, key: string): void {
    const rest = this.others.get(ip);
    if (this.owners.get(ip)?.key === key) {
      if (!rest) {
        this.owners.delete(ip);
        return;
      }
      this.owners.set(ip, this.pods.get(rest.shift()!)!);
    } else if (rest) {
      const i = rest.indexOf(key);
      if (i >= 0) rest.splice(i, 1);
    }
    if (rest && !rest.length) {
      this.others.delete(ip);
      this.conflicts.clear('pod_ip_claimed_twice', ip);
    }
  }
}
