/**
 * The prober each agent runs: every slot of every round it probes one peer (its next successor on the round's ring)
 * over ICMP and HTTP, host and health endpoint, and hands the results to a sink (the health service's ReportProbes).
 */
import type { HealthClient, ProbeKind, ProbeResult, ReportProbesRequest, ReportStream } from '@sluice/health-api';
import { createLogger, RepeatSuppressor, type Logger } from '@sluice/log';
import { PLAN_DEFAULTS, probePlan, roundOf, roundRing, successors, type PlanOptions, type ProbePlan } from './plan.ts';
import { httpProbe, ping, type ProbeOutcome } from './probes.ts';

export interface Peer {
  name: string;
  /** The node's own IP (InternalIP). */
  hostIP: string;
  /** The agent's health HTTP port on hostIP; no HTTP probe without it. */
  agentPort?: number;
  /** The node's health endpoint IP; no endpoint probes without it. */
  endpointIP?: string;
  endpointPort?: number;
}

export type ProbeSink = (report: ReportProbesRequest) => Promise<void>;

export interface ProberOptions extends PlanOptions {
  /** This node's name; it must be one of peers() (it is added if missing) and is never probed. */
  node: string;
  /** The current view of the cluster's nodes, read at each slot. */
  peers: () => readonly Peer[];
  sink: ProbeSink;
  /** Replaceable probes, e.g. for a simulation; the real ones by default. */
  icmp?: (ip: string, timeoutMs: number) => Promise<ProbeOutcome>;
  http?: (ip: string, port: number, timeoutMs: number) => Promise<ProbeOutcome>;
  now?: () => number;
  logger?: Logger;
  /** Results kept while the sink is failing; older ones are dropped first (fresh rounds replace them anyway). */
  maxBuffered?: number;
}

/**
 * A sink that reports through the health service's ReportProbes stream, kept open across flushes and reopened on
 * the next flush after any error (a restarted service, a lost connection). A batch written into a stream that fails
 * right after may be lost: the next round's probes replace it.
 */
export function healthServiceSink(client: HealthClient): ProbeSink & { close(): void } {
  let stream: ReportStream | undefined;
  const sink = async (report: ReportProbesRequest) => {
    if (!stream?.open) stream = client.openReportStream();
    await stream.send(report);
  };
  return Object.assign(sink, { close: () => void stream?.end().catch(() => undefined) });
}

export class Prober {
  private readonly options: ProberOptions & Required<Pick<ProberOptions, 'now' | 'maxBuffered'>>;
  private readonly log: Logger;
  private readonly sinkErrors = new RepeatSuppressor(60_000);
  private timer: NodeJS.Timeout | undefined;
  private flushTimer: NodeJS.Timeout | undefined;
  private running = false;
  private lastSlot = '';
  private ringCache: { round: number; signature: string; ring: string[] } | undefined;
  private buffer: ProbeResult[] = [];
  private flushing: Promise<void> | undefined;
  /** When the sink started failing (undefined while it works). */
  private failingSince: number | undefined;
  private inFlight = new Set<Promise<void>>();
  /**
   * Peers whose last round failed on every host probe, or reached the host but not the agent, oldest first:
   * re-probed in the rounds' re-probe slots.
   */
  private readonly rechecks = new Set<string>();
  currentPlan: ProbePlan;

  constructor(options: ProberOptions) {
    this.options = { now: Date.now, maxBuffered: 10_000, ...options };
    this.log = options.logger ?? createLogger({ component: 'prober', node: options.node });
    this.currentPlan = probePlan(1, options);
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.tick();
  }

  /** Stops probing, waits for probes in flight and sends what is buffered. */
  async stop(): Promise<void> {
    this.running = false;
    clearTimeout(this.timer);
    clearTimeout(this.flushTimer);
    await Promise.allSettled([...this.inFlight]);
    await this.flush();
  }

  /** The peers this node probes in the round containing `nowMs`, in slot order. */
  peersAt(nowMs = this.options.now()): { plan: ProbePlan; round: number; peers: Peer[] } {
    const byName = new Map<string, Peer>();
    for (const peer of this.options.peers()) byName.set(peer.name, peer);
    const names = [...new Set([...byName.keys(), this.options.node])].sort();
    const plan = probePlan(names.length, this.options);
    const round = roundOf(nowMs, plan.intervalMs);
    const signature = names.join('\n');
    if (this.ringCache?.round !== round || this.ringCache.signature !== signature) {
      this.ringCache = { round, signature, ring: roundRing(names, round) };
    }
    const peers = successors(this.ringCache.ring, this.options.node, plan.fanout)
      .map((name) => byName.get(name))
      .filter((p): p is Peer => p !== undefined);
    return { plan, round, peers };
  }

  private tick(): void {
    if (!this.running) return;
    const now = this.options.now();
    const { plan, round, peers } = this.peersAt(now);
    this.currentPlan = plan;
    const roundStart = round * plan.intervalMs;
    const slots = plan.fanout + plan.recheckSlots;
    const slot = Math.min(slots - 1, Math.floor((now - roundStart) / plan.slotMs));
    const key = `${plan.intervalMs}:${round}:${slot}`;
    const peer = slot < 0 ? undefined : slot < plan.fanout ? peers[slot] : this.nextRecheck(peers);
    if (peer && key !== this.lastSlot) {
      this.lastSlot = key;
      this.track(this.probePeer(peer).then((results) => this.enqueue(results)));
    }
    const next = slot + 1 < slots ? roundStart + (slot + 1) * plan.slotMs : roundStart + plan.intervalMs;
    this.timer = setTimeout(() => this.tick(), Math.max(1, next - this.options.now()));
  }

  /** The peer waiting longest for a re-probe, not already probed in this round's own slots; moved to the back. */
  private nextRecheck(roundPeers: readonly Peer[]): Peer | undefined {
    const current = new Map(this.options.peers().map((p) => [p.name, p]));
    for (const name of this.rechecks) {
      const peer = current.get(name);
      if (!peer) {
        this.rechecks.delete(name);
        continue;
      }
      if (roundPeers.some((p) => p.name === name)) continue;
      this.rechecks.delete(name);
      this.rechecks.add(name);
      return peer;
    }
    return undefined;
  }

  private track(work: Promise<void>): void {
    const tracked = work.catch((err: Error) => this.log.warn({ err: err.message }, 'probe failed unexpectedly')).finally(() => this.inFlight.delete(tracked));
    this.inFlight.add(tracked);
  }

  /** Probes one peer on every path it advertises, in parallel. */
  async probePeer(peer: Peer): Promise<ProbeResult[]> {
    const timeoutMs = this.options.probeTimeoutMs ?? 1000;
    const icmp = this.options.icmp ?? ((ip, t) => ping(ip, { timeoutMs: t }));
    const http = this.options.http ?? ((ip, port, t) => httpProbe(ip, port, { timeoutMs: t }));
    const time = this.options.now();
    const probes: Array<[ProbeKind, string, Promise<ProbeOutcome>]> = [['PROBE_KIND_HOST_ICMP', peer.hostIP, icmp(peer.hostIP, timeoutMs)]];
    if (peer.agentPort) probes.push(['PROBE_KIND_HOST_HTTP', peer.hostIP, http(peer.hostIP, peer.agentPort, timeoutMs)]);
    if (peer.endpointIP) {
      probes.push(['PROBE_KIND_ENDPOINT_ICMP', peer.endpointIP, icmp(peer.endpointIP, timeoutMs)]);
      if (peer.endpointPort) probes.push(['PROBE_KIND_ENDPOINT_HTTP', peer.endpointIP, http(peer.endpointIP, peer.endpointPort, timeoutMs)]);
    }
    const outcomes = await Promise.all(probes.map(([, , outcome]) => outcome));
    const ok = (which: ProbeKind) => probes.some(([kind], i) => kind === which && outcomes[i]!.ok);
    const hostOk = ok('PROBE_KIND_HOST_ICMP') || ok('PROBE_KIND_HOST_HTTP');
    // The host answers but its agent does not: re-probed too, so that the service sees two rounds in a row.
    const agentDown = !!peer.agentPort && ok('PROBE_KIND_HOST_ICMP') && !ok('PROBE_KIND_HOST_HTTP');
    if (hostOk && !agentDown) this.rechecks.delete(peer.name);
    else if (!this.rechecks.has(peer.name)) this.rechecks.add(peer.name);
    return probes.map(([kind, ip], i) => ({ target: peer.name, kind, ip, timeUnixMs: time, ...outcomes[i]! }));
  }

  private enqueue(results: ProbeResult[]): void {
    this.buffer.push(...results);
    if (this.buffer.length > this.options.maxBuffered) this.buffer.splice(0, this.buffer.length - this.options.maxBuffered);
    if (!this.flushTimer && this.running) {
      this.flushTimer = setTimeout(() => {
        this.flushTimer = undefined;
        void this.flush();
      }, this.options.flushMs ?? PLAN_DEFAULTS.flushMs);
    }
  }

  /** Sends what is buffered; on failure the results go back to the buffer for the next flush. */
  async flush(): Promise<void> {
    while (this.flushing) await this.flushing;
    if (this.buffer.length === 0) return;
    const results = this.buffer;
    this.buffer = [];
    this.flushing = this.options
      .sink({ reporter: this.options.node, results })
      .then(
        () => {
          // Only a success ends the failure: clearing after every attempt made each failed flush (one a second while
          // the health service is down) log again.
          if (this.failingSince !== undefined) {
            this.log.info({ failedForMs: this.options.now() - this.failingSince }, 'reporting probes works again');
            this.failingSince = undefined;
            this.sinkErrors.clear('sink');
          }
        },
        (err: Error) => {
          this.buffer = [...results, ...this.buffer].slice(-this.options.maxBuffered);
          this.failingSince ??= this.options.now();
          this.sinkErrors.warn(this.log, 'sink', { err: err.message }, 'reporting probes failed; keeping results for the next flush');
        },
      )
      .finally(() => (this.flushing = undefined));
    await this.flushing;
  }
}
