/**
 * The cluster view: merges the agents' probe reports into one reachability verdict per node.
 *
 * A node is UNREACHABLE only on confirmed evidence: at least `quorum` distinct reporters failed to reach its host
 * (every host probe they sent failed) after the newest success anyone reported. Fewer failing reporters make it
 * SUSPECT; a fresh success makes it REACHABLE; nothing fresher than the staleness window makes it UNKNOWN.
 *
 * The health endpoint gets its own verdict by the same rule over the endpoint probes, and the agent one over rounds in
 * which the host answered ICMP: a quorum of reporters whose HTTP probe of the agent failed in two such rounds in a row
 * (or no health record at all while the host answers) makes it "not running". Per pair, a reporter whose last
 * `pairConfirmations` rounds of a target all failed while others reached the target is listed in `unreachableFrom`:
 * a one-way or pair failure, invisible to the quorum.
 *
 * Members are the nodes of the node list (the operator's node records), with or without an agent: a node whose agent
 * is gone stays, unreachable or "agent not running"; a node removed from the list is a change watchers receive.
 *
 * Everything here is derived from reports younger than the staleness window plus the node list, so a restarted
 * service rebuilds the same view within one probing round; nothing is persisted.
 */
import { probePlan, type PlanOptions } from '@sluice/prober';
import {
  emptyProbeStatus,
  type AgentState,
  type ClusterHealth,
  type ClusterSummary,
  type HealthChange,
  type NodeHealth,
  type ProbeKind,
  type ProbeStatus,
  type Reachability,
  type ReportedProbe,
} from '@sluice/health-api';

export interface NodeInfo {
  name: string;
  /** The node's IP as the probers use it (InternalIP), or '' if unknown. */
  hostIP: string;
  endpointIP: string;
  /** The node's agent published its health record (keys.health); undefined counts as yes (no such source). */
  agent?: boolean;
}

export interface AggregatorOptions {
  /** Reports older than this are forgotten. */
  staleMs?: number;
  /** Distinct failing reporters needed (capped at the fanout at the current cluster size). */
  confirmations?: number;
  /** The probing plan's parameters, so the quorum matches what the agents do. */
  plan?: PlanOptions;
  /** Consecutive failed rounds of one reporter needed to list a pair failure (a re-probe confirms each). */
  pairConfirmations?: number;
  /**
   * How old a failed HTTP probe of an agent must be before it counts against the agent. One lost HTTP probe is
   * common (1 % loss makes thousands a minute at 5,000 nodes) and is refuted by the next success — but reports arrive
   * out of time order (each reporter flushes once a second), so a success sent after a run of failures may arrive
   * after them; waiting this long lets it. A dead agent is reported that much later; a dead node is not (its host
   * verdict needs every probe of a round to fail, and is not delayed).
   */
  agentSettleMs?: number;
  now?: () => number;
}

/**
 * Quorum evidence about one path of a target (its host, its endpoint, its agent): the newest success by anyone, and
 * the reporters whose newest failure is newer than that.
 */
interface Evidence {
  newestOk: number;
  failers: Map<string, number>;
}

/** One reporter's run of failed rounds against a target, ended by its next success. */
interface PairRun {
  rounds: number;
  since: number;
  last: number;
}

/** Probe outcomes of one round (one reporter, one target, one time), folded before they count. */
interface Round {
  reporter: string;
  time: number;
  hostSeen: boolean;
  hostOk: boolean;
  icmpOk: boolean;
  httpSeen: boolean;
  httpOk: boolean;
  endpointSeen: boolean;
  endpointOk: boolean;
}

/** Counters for /metrics, read on scrape. */
export interface AggregatorCounters {
  /** Results taken, by kind and outcome. */
  results: Record<ProbeKind, { ok: number; failed: number }>;
  /** Verdict changes by what changed. */
  changes: { reachability: number; endpoint: number; agent: number; paths: number; joined: number; removed: number };
}

interface TargetState {
  /**
   * Every reporter with a host-probe result → the time of its newest one, for the reporter count. An update moves the
   * reporter to the end, so the map's order is the order of the reporters' newest evidence as it arrived (close to
   * time order: reports arrive within a flush and a timeout of their probes) and expiry only looks at its front.
   */
  witnesses: Map<string, number>;
  /** Host probes: newestOk is the newest host success by anyone (if it goes stale, every success has). */
  host: Evidence;
  endpoint: Evidence;
  /** "ok": an HTTP success to the agent; "failure": a round whose ICMP answered and whose HTTP did not. */
  agentEvidence: Evidence;
  /** Since when the host has answered without a gap of a staleness window (0: not answering). */
  answeringSince: number;
  /** Reporters whose latest rounds of this target failed (sparse: deleted at their next success). */
  pairs: Map<string, PairRun>;
  /** Reporters whose latest rounds reached the host but not the agent (sparse: deleted at their next HTTP success). */
  agentRuns: Map<string, PairRun>;
  latest: Map<ProbeKind, ProbeStatus>;
  reachability: Reachability;
  endpointReachability: Reachability;
  agent: AgentState;
  unreachableFrom: string[];
  failing: number;
  reporters: number;
  lastProbe: number;
  /** When the oldest fresh piece of evidence goes stale: the sweep skips the target until then. */
  expiresAt: number;
  /** The NodeHealth handed out, replaced only when something changed. */
  view: NodeHealth | undefined;
}

/** One shared status for the paths nobody probed (views are read-only for everyone). */
const NOT_PROBED: ProbeStatus = Object.freeze(emptyProbeStatus());

export type ChangeListener = (change: HealthChange) => void;

export class Aggregator {
  readonly staleMs: number;
  private readonly confirmations: number;
  private readonly pairConfirmations: number;
  private readonly agentSettleMs: number;
  readonly counters: AggregatorCounters = {
    results: {
      PROBE_KIND_HOST_ICMP: { ok: 0, failed: 0 },
      PROBE_KIND_HOST_HTTP: { ok: 0, failed: 0 },
      PROBE_KIND_ENDPOINT_ICMP: { ok: 0, failed: 0 },
      PROBE_KIND_ENDPOINT_HTTP: { ok: 0, failed: 0 },
    },
    changes: { reachability: 0, endpoint: 0, agent: 0, paths: 0, joined: 0, removed: 0 },
  };
  private readonly planOptions: PlanOptions;
  private readonly now: () => number;
  private nodes = new Map<string, NodeInfo>();
  private sortedNames: string[] = [];
  private readonly targets = new Map<string, TargetState>();
  /** Targets with new evidence: their verdict is updated incrementally. */
  private readonly dirty = new Set<string>();
  /** Targets holding evidence that went stale: recomputed from what is still fresh. */
  private readonly expired = new Set<string>();
  private sweepQueue: string[] = [];
  private sweepAt = 0;
  private readonly listeners = new Set<ChangeListener>();
  private newestProbe = 0;
  private nodesKnown = false;
  private summaryCache: ClusterSummary | undefined;
  private changeCount = 0;
  private verdictCount = 0;
  private nodeListCount = 0;

  constructor(options: AggregatorOptions = {}) {
    this.staleMs = options.staleMs ?? 20_000;
    this.confirmations = options.confirmations ?? 3;
    this.pairConfirmations = Math.max(1, options.pairConfirmations ?? 2);
    this.agentSettleMs = options.agentSettleMs ?? 3000;
    this.planOptions = { ...options.plan, confirmations: options.confirmations ?? options.plan?.confirmations ?? 3 };
    this.now = options.now ?? Date.now;
  }

  /** The failing reporters needed at the current cluster size. */
  get quorum(): number {
    return Math.max(1, Math.min(this.confirmations, probePlan(this.nodes.size, this.planOptions).quorum));
  }

  /**
   * Replaces the node list (from etcd). Nodes that left are forgotten with everything reported about them, and
   * watchers are told (removed); nodes that joined are announced as a change from UNSPECIFIED.
   */
  setNodes(nodes: Iterable<NodeInfo>): void {
    const next = new Map<string, NodeInfo>();
    for (const node of nodes) next.set(node.name, node);
    const announce: HealthChange[] = [];
    const now = this.now();
    for (const name of this.nodes.keys()) {
      if (next.has(name)) continue;
      const state = this.targets.get(name);
      const health = state?.view ?? this.buildView(name, state);
      this.targets.delete(name);
      this.counters.changes.removed++;
      announce.push({ node: name, previous: health.reachability, current: 'REACHABILITY_UNSPECIFIED', timeUnixMs: now, health, removed: true });
    }
    for (const name of this.targets.keys()) if (!next.has(name)) this.targets.delete(name);
    for (const [name, info] of next) {
      const before = this.nodes.get(name);
      if (!before || before.hostIP !== info.hostIP || before.endpointIP !== info.endpointIP || before.agent !== info.agent) this.dirty.add(name);
    }
    const joined = this.nodesKnown ? [...next.keys()].filter((n) => !this.nodes.has(n)) : [];
    const membershipChanged = next.size !== this.nodes.size || [...next.keys()].some((n) => !this.nodes.has(n));
    this.nodes = next;
    this.nodesKnown = true;
    this.verdictCount++;
    this.nodeListCount++;
    if (membershipChanged) {
      this.sortedNames = [...next.keys()].sort();
      // The quorum depends on the cluster size: every verdict may move.
      for (const name of next.keys()) this.dirty.add(name);
    }
    this.bump();
    for (const change of announce) for (const listener of this.listeners) listener(change);
    this.settle();
    for (const name of joined) {
      const health = this.nodeHealth(name)!;
      this.counters.changes.joined++;
      const change: HealthChange = { node: name, previous: 'REACHABILITY_UNSPECIFIED', current: health.reachability, timeUnixMs: now, health, removed: false };
      for (const listener of this.listeners) listener(change);
    }
  }

  hasNode(name: string): boolean {
    return this.nodes.has(name);
  }

  /** Bumped on every change to anything GetClusterHealth returns; lets the server reuse an encoded answer. */
  get version(): number {
    this.settle();
    return this.changeCount;
  }

  /**
   * Bumped when the node list or any node's reachability changes: what a reader must never see late, unlike the probe
   * times and RTTs that change with every report.
   */
  get verdictVersion(): number {
    this.settle();
    return this.verdictCount;
  }

  /** Bumped by every setNodes (membership, IPs): an answer built for another node list cannot be patched. */
  get nodeListVersion(): number {
    return this.nodeListCount;
  }

  /**
   * Takes one batch from `reporter`. Results about unknown nodes are ignored once the node list is known; times in
   * the future (a skewed reporter clock) count as now, results older than the staleness window are dropped.
   *
   * With `settleNow` false the verdicts are brought up to date by the next `settle()` (or by any read), so that a
   * server taking many batches in one event-loop turn evaluates each touched node once, not once per batch.
   */
  ingest(reporter: string, results: readonly ReportedProbe[], settleNow = true): { accepted: number; ignored: number } {
    const now = this.now();
    const fresh = now - this.staleMs;
    let accepted = 0;
    let ignored = 0;
    // A reporter sends its results about one target together (one per probe kind, with the round's time): the
    // target's lookups are done once per run of results about it, and a round's outcomes are folded before they
    // count (a round succeeded on a path if any probe of it did).
    let runTarget = '';
    let state: TargetState | undefined;
    const round: Round = { reporter, time: -1, hostSeen: false, hostOk: false, icmpOk: false, httpSeen: false, httpOk: false, endpointSeen: false, endpointOk: false };
    const counts = this.counters.results;
    for (const r of results) {
      if (r.target !== runTarget) {
        if (state) this.closeRound(state, round);
        runTarget = r.target;
        state = (this.nodesKnown && !this.nodes.has(r.target)) || r.target === reporter ? undefined : this.target(r.target);
        if (state) this.dirty.add(r.target);
      }
      if (!state) {
        ignored++;
        continue;
      }
      const time = Math.min(r.timeUnixMs, now);
      if (time < fresh) {
        ignored++;
        continue;
      }
      if (time !== round.time) {
        this.closeRound(state, round);
        round.time = time;
      }
      accepted++;
      const count = counts[r.kind];
      if (r.ok) count.ok++;
      else count.failed++;
      const previous = state.latest.get(r.kind);
      if (!previous || previous.timeUnixMs <= time) {
        state.latest.set(r.kind, { probed: true, ok: r.ok, rttUs: r.rttUs, error: r.error, timeUnixMs: time, reporter });
      }
      switch (r.kind) {
        case 'PROBE_KIND_HOST_ICMP':
          round.hostSeen = true;
          if (r.ok) round.hostOk = round.icmpOk = true;
          break;
        case 'PROBE_KIND_HOST_HTTP':
          round.hostSeen = round.httpSeen = true;
          if (r.ok) round.hostOk = round.httpOk = true;
          break;
        default:
          round.endpointSeen = true;
          if (r.ok) round.endpointOk = true;
      }
      if (time + this.staleMs < state.expiresAt) state.expiresAt = time + this.staleMs;
      if (time > state.lastProbe) state.lastProbe = time;
      if (time > this.newestProbe) this.newestProbe = time;
    }
    if (state) this.closeRound(state, round);
    if (accepted && settleNow) this.settle();
    return { accepted, ignored };
  }

  /** Counts one folded round as evidence and resets the fold. */
  private closeRound(state: TargetState, round: Round): void {
    if (round.time < 0) return;
    const { reporter, time } = round;
    if (round.hostSeen) {
      const seen = state.witnesses.get(reporter);
      // An older round arriving late says nothing about the pair's current state.
      const inOrder = seen === undefined || time >= seen;
      if (seen === undefined || time > seen) {
        state.witnesses.delete(reporter);
        state.witnesses.set(reporter, time);
      }
      // A host answering again after a staleness window of silence (not pruned yet) starts afresh.
      if (round.hostOk && (state.answeringSince === 0 || state.host.newestOk < time - this.staleMs || time < state.answeringSince)) state.answeringSince = time;
      record(state.host, reporter, time, round.hostOk);
      if (inOrder) {
        if (round.hostOk) state.pairs.delete(reporter);
        else {
          const run = state.pairs.get(reporter);
          if (!run) state.pairs.set(reporter, { rounds: 1, since: time, last: time });
          else if (time > run.last) {
            run.rounds++;
            run.last = time;
          }
        }
      }
    }
    if (round.httpOk) {
      record(state.agentEvidence, reporter, time, true);
      state.agentRuns.delete(reporter);
    } else if (round.httpSeen && round.icmpOk) {
      // A reporter counts against the agent after two such rounds in a row (the prober re-probes after the first):
      // one lost HTTP probe is common, two in a row from one reporter, times the quorum, is not.
      const run = state.agentRuns.get(reporter);
      if (!run) state.agentRuns.set(reporter, { rounds: 1, since: time, last: time });
      else if (time > run.last) {
        run.rounds++;
        run.last = time;
      }
      const current = state.agentRuns.get(reporter)!;
      if (current.rounds >= this.pairConfirmations) {
        record(state.agentEvidence, reporter, time, false);
        // Re-evaluated once the run has settled (see agentFailers).
        const at = current.since + this.agentSettleMs;
        if (at < state.expiresAt) state.expiresAt = at;
      }
    }
    if (round.endpointSeen) record(state.endpoint, reporter, time, round.endpointOk);
    round.time = -1;
    round.hostSeen = round.hostOk = round.icmpOk = round.httpSeen = round.httpOk = round.endpointSeen = round.endpointOk = false;
  }

  /**
   * Re-evaluates the nodes holding evidence that went stale, so that verdicts age out without new reports; the server
   * calls it every second. Under a steady report load every node has some evidence expiring every second, so a sweep
   * touches all of them: with `max`, it takes at most that many now and returns how many are left for the next call
   * (which finishes them before looking for more), so that a caller can spread the work over event-loop turns.
   */
  sweep(max = Number.POSITIVE_INFINITY): number {
    if (this.sweepAt >= this.sweepQueue.length) {
      const now = this.now();
      this.sweepQueue = [];
      this.sweepAt = 0;
      for (const [name, state] of this.targets) if (state.expiresAt <= now) this.sweepQueue.push(name);
    }
    const stop = Math.min(this.sweepQueue.length, this.sweepAt + max);
    for (; this.sweepAt < stop; this.sweepAt++) this.expired.add(this.sweepQueue[this.sweepAt]!);
    this.settle();
    return this.sweepQueue.length - this.sweepAt;
  }

  private target(name: string): TargetState {
    let state = this.targets.get(name);
    if (!state) {
      state = {
        witnesses: new Map(), host: evidence(), endpoint: evidence(), agentEvidence: evidence(), answeringSince: 0, pairs: new Map(), agentRuns: new Map(), latest: new Map(),
        reachability: 'REACHABILITY_UNKNOWN', endpointReachability: 'REACHABILITY_UNKNOWN', agent: 'AGENT_STATE_UNKNOWN', unreachableFrom: [],
        failing: 0, reporters: 0, lastProbe: 0, expiresAt: Number.POSITIVE_INFINITY, view: undefined,
      };
      this.targets.set(name, state);
    }
    return state;
  }

  private bump(): void {
    this.changeCount++;
    this.summaryCache = undefined;
  }

  /** Re-evaluates the nodes with new or expired evidence and tells the listeners about changed verdicts. */
  settle(): void {
    if (this.dirty.size === 0 && this.expired.size === 0) return;
    const now = this.now();
    const fresh = now - this.staleMs;
    const quorum = this.quorum;
    const changes: HealthChange[] = [];
    for (const name of this.expired) {
      const state = this.targets.get(name);
      if (state) this.prune(state, fresh);
      else this.expired.delete(name);
    }
    for (const name of this.expired) this.dirty.add(name);
    for (const name of this.dirty) {
      if (!this.nodes.has(name) && this.nodesKnown) continue;
      const state = this.target(name);
      const failing = countFailers(state.host, fresh);
      const reachability = verdict(state.host, failing, quorum, fresh);
      const endpointReachability = verdict(state.endpoint, countFailers(state.endpoint, fresh), quorum, fresh);
      const agentFailing = this.agentFailers(state, fresh, now);
      const info = this.nodes.get(name);
      const hostAnswers = reachability === 'REACHABILITY_REACHABLE' || reachability === 'REACHABILITY_SUSPECT';
      const agent: AgentState =
        !hostAnswers ? 'AGENT_STATE_UNKNOWN'
        : agentFailing >= quorum ? 'AGENT_STATE_NOT_RUNNING'
        : state.agentEvidence.newestOk >= fresh ? 'AGENT_STATE_RUNNING'
        // No health record (its lease expired): not running once its host has answered for half a staleness window
        // without its health port answering (a service behind its reports sees both age together, and a node just
        // seen may not have had its HTTP probe yet: neither is a verdict).
        : info?.agent === false && state.host.newestOk - Math.max(state.agentEvidence.newestOk >= fresh ? state.agentEvidence.newestOk : 0, state.answeringSince) >= this.staleMs / 2 ? 'AGENT_STATE_NOT_RUNNING'
        : 'AGENT_STATE_UNKNOWN';
      const unreachableFrom: string[] = [];
      for (const [reporter, run] of state.pairs) {
        if (run.last < fresh) state.pairs.delete(reporter);
        // Others reached the node after this reporter began failing: not a node failure, a path failure — unless the
        // reporter is itself cut off (confirmed unreachable): then its failures say nothing about this path.
        else if (run.rounds >= this.pairConfirmations && hostAnswers && state.host.newestOk > run.since && this.targets.get(reporter)?.reachability !== 'REACHABILITY_UNREACHABLE') unreachableFrom.push(reporter);
      }
      if (unreachableFrom.length > 1) unreachableFrom.sort();
      const previous = state.reachability;
      const pathsChanged = unreachableFrom.length !== state.unreachableFrom.length || unreachableFrom.some((r, i) => r !== state.unreachableFrom[i]);
      const changed = { endpoint: endpointReachability !== state.endpointReachability, agent: agent !== state.agent, paths: pathsChanged };
      state.failing = failing;
      state.reporters = state.witnesses.size;
      state.reachability = reachability;
      state.endpointReachability = endpointReachability;
      state.agent = agent;
      if (pathsChanged) state.unreachableFrom = unreachableFrom;
      const view = this.buildView(name, state);
      if (!state.view || !sameView(state.view, view)) {
        state.view = view;
        this.bump();
      }
      const c = this.counters.changes;
      if (previous !== reachability) c.reachability++;
      if (changed.endpoint) c.endpoint++;
      if (changed.agent) c.agent++;
      if (changed.paths) c.paths++;
      if (previous !== reachability || changed.endpoint || changed.agent || changed.paths) {
        this.verdictCount++;
        changes.push({ node: name, previous, current: reachability, timeUnixMs: now, health: state.view, removed: false });
      }
    }
    this.dirty.clear();
    this.expired.clear();
    for (const change of changes) for (const listener of this.listeners) listener(change);
  }

  /**
   * Reporters whose agent-down rounds (two in a row at least) are newer than any HTTP success of the agent, and whose
   * run began at least agentSettleMs ago — by the reports' clock when the service is behind them, so that a success
   * still queued behind the failures (reporters flush once a second) can refute them first. A dead agent keeps
   * failing round after round: its run's start, not its newest failure, is what ages.
   */
  private agentFailers(state: TargetState, fresh: number, now: number): number {
    const e = state.agentEvidence;
    const settledBy = Math.min(now, this.newestProbe) - this.agentSettleMs;
    let failing = 0;
    for (const [reporter, lastFail] of e.failers) {
      if (lastFail <= e.newestOk || lastFail < fresh) e.failers.delete(reporter);
      else if ((state.agentRuns.get(reporter)?.since ?? Number.POSITIVE_INFINITY) <= settledBy) failing++;
    }
    return failing;
  }

  /**
   * Drops what went stale from a target and finds when it next has to: O(what expired), not O(reporters), because a
   * sweep under load visits every node every second. A reporter whose evidence arrived out of time order (behind a
   * fresher one) is counted until the ones ahead of it expire: at most the spread of arrival delays, ~2 s.
   */
  private prune(state: TargetState, fresh: number): void {
    let oldest = Number.POSITIVE_INFINITY;
    for (const [reporter, time] of state.witnesses) {
      if (time >= fresh) {
        oldest = time;
        break;
      }
      state.witnesses.delete(reporter);
    }
    if (state.host.newestOk < fresh) state.answeringSince = 0;
    for (const e of [state.host, state.endpoint, state.agentEvidence]) {
      if (e.newestOk < fresh) e.newestOk = 0;
      else if (e.newestOk < oldest) oldest = e.newestOk;
      for (const time of e.failers.values()) if (time >= fresh && time < oldest) oldest = time;
    }
    for (const run of state.pairs.values()) if (run.last >= fresh && run.last < oldest) oldest = run.last;
    for (const [reporter, run] of state.agentRuns) {
      if (run.last < fresh) state.agentRuns.delete(reporter);
      else if (run.last < oldest) oldest = run.last;
    }
    let settles = Number.POSITIVE_INFINITY;
    const now = fresh + this.staleMs;
    for (const reporter of state.agentEvidence.failers.keys()) {
      const at = (state.agentRuns.get(reporter)?.since ?? Number.POSITIVE_INFINITY) + this.agentSettleMs;
      if (at > now && at < settles) settles = at;
    }
    for (const [kind, status] of state.latest) {
      if (status.timeUnixMs < fresh) state.latest.delete(kind);
      else if (status.timeUnixMs < oldest) oldest = status.timeUnixMs;
    }
    if (state.lastProbe < fresh) state.lastProbe = 0;
    state.expiresAt = Math.min(oldest + this.staleMs, settles);
  }

  private buildView(name: string, state: TargetState | undefined): NodeHealth {
    const info = this.nodes.get(name);
    const latest = state?.latest;
    return {
      name,
      reachability: state?.reachability ?? 'REACHABILITY_UNKNOWN',
      host: { ip: info?.hostIP ?? '', icmp: latest?.get('PROBE_KIND_HOST_ICMP') ?? NOT_PROBED, http: latest?.get('PROBE_KIND_HOST_HTTP') ?? NOT_PROBED },
      endpoint: { ip: info?.endpointIP ?? '', icmp: latest?.get('PROBE_KIND_ENDPOINT_ICMP') ?? NOT_PROBED, http: latest?.get('PROBE_KIND_ENDPOINT_HTTP') ?? NOT_PROBED },
      lastProbeUnixMs: state?.lastProbe ?? 0,
      failingReporters: state?.failing ?? 0,
      reporters: state?.reporters ?? 0,
      agent: state?.agent ?? 'AGENT_STATE_UNKNOWN',
      endpointReachability: state?.endpointReachability ?? 'REACHABILITY_UNKNOWN',
      unreachableFrom: state?.unreachableFrom ?? [],
    };
  }

  nodeHealth(name: string): NodeHealth | undefined {
    if (!this.nodes.has(name)) return undefined;
    this.settle();
    const state = this.targets.get(name);
    return state?.view ?? this.buildView(name, state);
  }

  summary(): ClusterSummary {
    this.settle();
    if (this.summaryCache) return this.summaryCache;
    let reachable = 0;
    const unreachable: string[] = [];
    const unknown: string[] = [];
    const endpointUnreachable: string[] = [];
    const agentNotRunning: string[] = [];
    const brokenPaths: string[] = [];
    for (const name of this.sortedNames) {
      const state = this.targets.get(name);
      const r = state?.reachability ?? 'REACHABILITY_UNKNOWN';
      if (r === 'REACHABILITY_REACHABLE' || r === 'REACHABILITY_SUSPECT') reachable++;
      else if (r === 'REACHABILITY_UNREACHABLE') unreachable.push(name);
      else unknown.push(name);
      if (!state) continue;
      if (state.endpointReachability === 'REACHABILITY_UNREACHABLE') endpointUnreachable.push(name);
      if (state.agent === 'AGENT_STATE_NOT_RUNNING') agentNotRunning.push(name);
      for (const reporter of state.unreachableFrom) brokenPaths.push(`${reporter}->${name}`);
    }
    brokenPaths.sort();
    this.summaryCache = {
      reachable, total: this.sortedNames.length, probeTimeUnixMs: this.newestProbe, unreachable, unknown, quorum: this.quorum,
      endpointUnreachable, agentNotRunning, brokenPaths,
    };
    return this.summaryCache;
  }

  clusterHealth(summaryOnly = false): ClusterHealth {
    this.settle();
    return { summary: this.summary(), nodes: summaryOnly ? [] : this.sortedNames.map((name) => this.nodeHealth(name)!) };
  }

  /** Every node's current state as a change from UNSPECIFIED (for a watcher's initial snapshot). */
  snapshot(): HealthChange[] {
    this.settle();
    const now = this.now();
    return this.sortedNames.map((name) => {
      const health = this.nodeHealth(name)!;
      return { node: name, previous: 'REACHABILITY_UNSPECIFIED', current: health.reachability, timeUnixMs: now, health, removed: false };
    });
  }

  subscribe(listener: ChangeListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  get watcherCount(): number {
    return this.listeners.size;
  }
}

const evidence = (): Evidence => ({ newestOk: 0, failers: new Map() });

/** A reporter's round as evidence: a success moves newestOk, a failure newer than it makes the reporter a failer. */
function record(e: Evidence, reporter: string, time: number, ok: boolean): void {
  if (ok) {
    if (time > e.newestOk) e.newestOk = time;
  } else if (time > e.newestOk && time > (e.failers.get(reporter) ?? 0)) {
    e.failers.set(reporter, time);
  }
}

/** Drops failures refuted by a newer success or gone stale; the reporters still failing. */
function countFailers(e: Evidence, fresh: number): number {
  let failing = 0;
  for (const [reporter, lastFail] of e.failers) {
    // A failure older than the newest success is refuted for good (newestOk only drops by expiring, and then this
    // failure, older still, has expired too).
    if (lastFail <= e.newestOk || lastFail < fresh) e.failers.delete(reporter);
    else failing++;
  }
  return failing;
}

function verdict(e: Evidence, failing: number, quorum: number, fresh: number): Reachability {
  return failing >= quorum ? 'REACHABILITY_UNREACHABLE'
    : failing > 0 ? 'REACHABILITY_SUSPECT'
    : e.newestOk >= fresh ? 'REACHABILITY_REACHABLE'
    : 'REACHABILITY_UNKNOWN';
}

function sameStatus(a: ProbeStatus, b: ProbeStatus): boolean {
  return a.probed === b.probed && a.ok === b.ok && a.rttUs === b.rttUs && a.error === b.error && a.timeUnixMs === b.timeUnixMs && a.reporter === b.reporter;
}

function sameView(a: NodeHealth, b: NodeHealth): boolean {
  return (
    a.reachability === b.reachability &&
    a.lastProbeUnixMs === b.lastProbeUnixMs &&
    a.failingReporters === b.failingReporters &&
    a.reporters === b.reporters &&
    a.agent === b.agent &&
    a.endpointReachability === b.endpointReachability &&
    a.unreachableFrom === b.unreachableFrom &&
    a.host.ip === b.host.ip &&
    a.endpoint.ip === b.endpoint.ip &&
    sameStatus(a.host.icmp, b.host.icmp) &&
    sameStatus(a.host.http, b.host.http) &&
    sameStatus(a.endpoint.icmp, b.endpoint.icmp) &&
    sameStatus(a.endpoint.http, b.endpoint.http)
  );
}
