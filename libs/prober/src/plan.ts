/**
 * The probing plan: how many peers each node probes, how often, and how fast a failure is confirmed, as functions of
 * the cluster size n. See the package README for the reasoning; the numbers here are the ones it documents.
 */
import { seededRandom } from '@sluice/backoff';

export interface PlanOptions {
  /** Probes one node may send per second, all kinds together (the scale goal: 15 at 5,000 nodes). */
  maxProbeRate?: number;
  /** Shortest round; small clusters probe every peer this often. */
  minIntervalMs?: number;
  /** Probes per peer per round: host ICMP + host HTTP + endpoint ICMP + endpoint HTTP. */
  probesPerPeer?: number;
  /** Distinct reporters that must fail to reach a node before it is declared unreachable. */
  confirmations?: number;
  /** Timeout of one probe. */
  probeTimeoutMs?: number;
  /** How long results wait in the reporter before they are sent. */
  flushMs?: number;
  /**
   * Slots per round kept for re-probing a peer whose last round failed (every host probe): it tells a lost probe
   * from a broken path within a round instead of waiting for the ring to bring the pair round again (at 5,000 nodes
   * a given pair is probed about once every 20 minutes). Counted in the rate budget, used only after a failure.
   */
  recheckSlots?: number;
}

export const PLAN_DEFAULTS: Required<PlanOptions> = {
  maxProbeRate: 15,
  minIntervalMs: 1000,
  probesPerPeer: 4,
  confirmations: 3,
  probeTimeoutMs: 1000,
  flushMs: 1000,
  recheckSlots: 1,
};

/** Timers, spawning ping, the gRPC report and the aggregator's work, end to end. */
export const PROCESSING_MARGIN_MS = 250;

export interface ProbePlan {
  n: number;
  /** Peers probed by each node per round, and (by construction) probers of each node per round: ⌈log2 n⌉, ≤ n−1. */
  fanout: number;
  /** Length of one round. */
  intervalMs: number;
  /** Gap between two slots: intervalMs / (fanout + recheckSlots); the probes of one target are that far apart. */
  slotMs: number;
  /** Re-probe slots at the end of each round (after the fanout's). */
  recheckSlots: number;
  /** Distinct failing reporters needed to declare a node unreachable: min(confirmations, fanout). */
  quorum: number;
  /** Probes a node sends per second at most (re-probe slots used). */
  probesPerSecond: number;
  /** Worst-case time from a node failing to the quorum's failures reaching the aggregator. */
  detectionMs: number;
  /** Expected rounds before a given pair of nodes has been probed: (n−1)/fanout. */
  pairCoverageRounds: number;
}

export function fanout(n: number): number {
  if (n <= 1) return 0;
  return Math.min(n - 1, Math.max(1, Math.ceil(Math.log2(n))));
}

export function probePlan(n: number, options: PlanOptions = {}): ProbePlan {
  const o = { ...PLAN_DEFAULTS, ...options };
  const k = fanout(n);
  const recheck = k > 0 ? o.recheckSlots : 0;
  const slots = k + recheck;
  const intervalMs = Math.max(o.minIntervalMs, Math.ceil((slots * o.probesPerPeer * 1000) / o.maxProbeRate));
  const quorum = Math.max(1, Math.min(o.confirmations, k));
  const slotMs = slots > 0 ? intervalMs / slots : intervalMs;
  return {
    n,
    fanout: k,
    intervalMs,
    slotMs,
    recheckSlots: recheck,
    quorum,
    probesPerSecond: slots > 0 ? (slots * o.probesPerPeer * 1000) / intervalMs : 0,
    // The probes of one target are spaced slotMs apart (a round's re-probe slots at its end add at most that many
    // slots) and, within a round, come from distinct probers (see README). A round boundary may repeat up to
    // quorum−1 probers, so quorum distinct failures arrive within 2·quorum−1+recheck slots of the failure; then the probe's timeout, the reporter's flush and a margin for timers,
    // process spawning and transport.
    detectionMs: Math.ceil((2 * quorum - 1 + recheck) * slotMs + o.probeTimeoutMs + o.flushMs + PROCESSING_MARGIN_MS),
    pairCoverageRounds: k > 0 ? (n - 1) / k : 0,
  };
}

/** The round a moment falls in; every node computes the same number from its (NTP-synchronised) clock. */
export const roundOf = (nowMs: number, intervalMs: number): number => Math.floor(nowMs / intervalMs);

function hash32(value: number): number {
  let h = (value ^ 0x9e3779b9) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/**
 * The ring of a round: the sorted node names shuffled by a generator seeded with the round number, so that every
 * node that knows the same names computes the same ring without talking to anyone.
 */
export function roundRing(sortedNames: readonly string[], round: number): string[] {
  const ring = [...sortedNames];
  const random = seededRandom(hash32(round));
  for (let i = ring.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [ring[i], ring[j]] = [ring[j]!, ring[i]!];
  }
  return ring;
}

/** The peers `self` probes in `round`, in slot order: its `fanout` successors on the round's ring. */
export function peersForRound(sortedNames: readonly string[], self: string, round: number, k = fanout(sortedNames.length)): string[] {
  return successors(roundRing(sortedNames, round), self, k);
}

export function successors(ring: readonly string[], self: string, k: number): string[] {
  const position = ring.indexOf(self);
  if (position < 0) return [];
  const out: string[] = [];
  for (let j = 1; j <= Math.min(k, ring.length - 1); j++) out.push(ring[(position + j) % ring.length]!);
  return out;
}
