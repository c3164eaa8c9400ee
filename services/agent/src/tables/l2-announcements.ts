/**
 * L2 announcements, desired state: which addresses this node answers ARP for on its uplink.
 *
 * Two steps, so that exactly one node answers for an address:
 * - eligible: an address of a SluiceL2AnnouncementPolicy record (etcd, written by the operator) whose nodeSelector
 *   matches this node's labels (its own slim Node record) and one of whose interface patterns matches the uplink's
 *   name (no pattern: any), while the uplink has carrier. IPv4 only (ARP; NDP is not done).
 * - held: eligible addresses whose per-address lease key this agent holds (reconcilers/l2-announcer.ts competes).
 * The desired rows are the held, eligible ones; the announcer target makes the node answer for exactly those.
 */
import { isIPv4 } from 'node:net';
import type { Logger } from '@sluice/log';
import { matchesLabelSelector, type SlimL2Announcement } from '@sluice/slim';
import type { DesiredRows } from '../reconciler.ts';
import type { RowListener } from './table.ts';

export interface L2Row {
  ip: string;
  /** `namespace/name` of the Service (the first, if several policies or Services name the address). */
  service: string;
  policy: string;
  /** The interface it is announced on (the uplink). */
  dev: string;
}

export class L2AnnouncementsTable implements DesiredRows<L2Row> {
  private readonly policies = new Map<string, SlimL2Announcement>();
  private labels: Readonly<Record<string, string>> | undefined;
  private uplinkUp = false;
  private readonly held = new Set<string>();
  private eligibleCache: Map<string, L2Row> | undefined;
  private readonly listeners: RowListener[] = [];
  private readonly badPatterns = new Set<string>();

  constructor(
    readonly uplink: string,
    private readonly log: Logger,
  ) {}

  follow(listener: RowListener): this {
    this.listeners.push(listener);
    return this;
  }

  /** Recomputes eligibility and tells the followers about every address whose desired row may have changed. */
  private recompute(revision = 0): void {
    const before = this.eligibleCache ?? new Map<string, L2Row>();
    this.eligibleCache = undefined;
    const after = this.eligible();
    for (const ip of new Set([...before.keys(), ...after.keys()])) {
      if (JSON.stringify(before.get(ip)) !== JSON.stringify(after.get(ip))) for (const l of this.listeners) l.changed(ip, revision);
    }
  }

  setPolicy(name: string, record: SlimL2Announcement | undefined, revision = 0): void {
    if (record) this.policies.set(name, record);
    else this.policies.delete(name);
    this.recompute(revision);
  }

  setNodeLabels(labels: Readonly<Record<string, string>> | undefined, revision = 0): void {
    this.labels = labels;
    this.recompute(revision);
  }

  setUplinkUp(up: boolean): void {
    if (up === this.uplinkUp) return;
    this.uplinkUp = up;
    this.recompute();
  }

  get isUplinkUp(): boolean {
    return this.uplinkUp;
  }

  setHeld(ip: string, held: boolean): void {
    if (held === this.held.has(ip)) return;
    if (held) this.held.add(ip);
    else this.held.delete(ip);
    for (const l of this.listeners) l.changed(ip, 0);
  }

  heldAddresses(): string[] {
    return [...this.held];
  }

  private matchesUplink(patterns: readonly string[]): boolean {
    if (!patterns.length) return true;
    return patterns.some((p) => {
      try {
        return new RegExp(p).test(this.uplink);
      } catch (err) {
        if (!this.badPatterns.has(p)) this.log.warn({ pattern: p, err: (err as Error).message }, 'L2 policy interface pattern is not a valid regular expression; it matches nothing');
        this.badPatterns.add(p);
        return false;
      }
    });
  }

  /** Addresses this node may announce now, with the row it would announce (policies in name order). */
  eligible(): Map<string, L2Row> {
    if (this.eligibleCache) return this.eligibleCache;
    const out = new Map<string, L2Row>();
    if (this.labels && this.uplinkUp) {
      for (const [name, p] of [...this.policies].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
        if (!matchesLabelSelector(p.nodeSelector, this.labels) || !this.matchesUplink(p.interfaces)) continue;
        for (const a of p.addresses) if (isIPv4(a.ip) && !out.has(a.ip)) out.set(a.ip, { ip: a.ip, service: a.service, policy: name, dev: this.uplink });
      }
    }
    this.eligibleCache = out;
    return out;
  }

  get(ip: string): L2Row | undefined {
    return this.held.has(ip) ? this.eligible().get(ip) : undefined;
  }

  *entries(): IterableIterator<[string, L2Row]> {
    const eligible = this.eligible();
    for (const ip of this.held) {
      const row = eligible.get(ip);
      if (row) yield [ip, row];
    }
  }

  get size(): number {
    let n = 0;
    for (const _ of this.entries()) n++;
    return n;
  }
}
