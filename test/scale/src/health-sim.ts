/**
 * Child process: the probers of every simulated node, on the real schedule of @sluice/prober (ring of the round,
 * fanout ⌈log2 n⌉, slots every T/(k+1), the last one re-probing a peer whose round failed), reporting to the real
 * health service on one open ReportProbes stream per node and flushing once per second, as agents do. Probes are
 * simulated (no packets): a probe to a live node succeeds at once, a probe to a dead node (or across the broken
 * pair) fails after the probe timeout, and with `lossRate` every probe is independently lost (fails after the
 * timeout) with that probability.
 *
 * The timeline: at `pairAfterMs` one pair of nodes A, B stops reaching each other (a one-way drop breaks round
 * trips both ways), everyone else still reaches both; at `failAfterMs` one node dies (stops probing and answering).
 * Measured through WatchClusterHealth: when the dead node is declared unreachable, when the broken pair is shown
 * (B unreachable from A, or A from B), and every verdict that is false (another node unreachable, an endpoint or agent
 * declared down, a pair other than A–B): with random loss there must be none.
 *
 * A given pair is probed only when the ring brings it round, on average every (n−1)/(2k) rounds counting both
 * directions (≈ 12 minutes at 5,000 nodes): no plan within 15 probes per node per second covers every pair within
 * a minute (that takes n/2 probed peers per node per minute). `pair: "next"` picks A and B among the pairs the ring
 * brings round soon after the block, so that a short run measures the part the service controls (from the pair's
 * first failed probe to the pair shown); `pair: "random"` picks any pair (shown only if the ring brings it round in
 * time); the result says which, and the expected coverage time.
 *
 * Backpressure is honoured as the agents' sink does it: a reporter whose stream's write() returned false writes
 * nothing more until 'drain'; its results stay queued (at most MAX_QUEUED, oldest dropped, like the prober's buffer)
 * and go with its next flush. Delivered results are counted in the write callbacks (handed to HTTP/2), not when
 * queued, so the figures say what reached the service's connection.
 *
 * argv[2]: JSON { address, nodes: string[], failAfterMs, durationMs, victim, lossRate?, pairAfterMs?, pair?, seed? };
 * prints one JSON line of results.
 */
import * as grpc from '@grpc/grpc-js';
import { createHealthClient, encodeReportProbesRequest, type ProbeResult } from '@sluice/health-api';
import { seededRandom } from '@sluice/backoff';
import { PLAN_DEFAULTS, probePlan, roundRing } from '@sluice/prober';

interface Args {
  address: string; nodes: string[]; failAfterMs: number; durationMs: number; victim: string;
  lossRate?: number; pairAfterMs?: number; pair?: 'next' | 'random' | 'none'; seed?: number;
}
const args = JSON.parse(process.argv[2] ?? '{}') as Args;
const lossRate = args.lossRate ?? 0;
const random = seededRandom(args.seed ?? 1);
const names = [...args.nodes].sort();
const n = names.length;
const plan = probePlan(n);
const KINDS = ['PROBE_KIND_HOST_ICMP', 'PROBE_KIND_HOST_HTTP', 'PROBE_KIND_ENDPOINT_ICMP', 'PROBE_KIND_ENDPOINT_HTTP'] as const;
const client = createHealthClient(args.address, { deadlineMs: 30_000 });
// Reports go through a raw client stream with the hand-written encoder of @sluice/health-api: the typed client
// validates every message with zod and the generic serializer builds protobufjs messages, which at 75,000 results/s
// cost this process more than the service spends taking them.
type Report = { reporter: string; results: ProbeResult[] };
const raw = new grpc.Client(args.address, grpc.credentials.createInsecure());
interface RawStream { call: grpc.ClientWritableStream<Report>; open: boolean; blocked: boolean }
const openStream = (): RawStream => {
  const s: RawStream = { call: undefined as unknown as grpc.ClientWritableStream<Report>, open: true, blocked: false };
  s.call = raw.makeClientStreamRequest<Report, Buffer>('/sluice.health.v1.ClusterHealth/ReportProbes', encodeReportProbesRequest, (b) => b,
    new grpc.Metadata(), {}, (err) => {
      s.open = false;
      if (err) sendErrors++;
    });
  return s;
};
const streams = new Map<string, RawStream>();
const queues = new Map<string, ProbeResult[]>();
/** Results handed to HTTP/2, per reporter. */
const delivered = new Map<string, number>();
const MAX_QUEUED = 10_000;
const counts = { generated: 0, delivered: 0, dropped: 0, blockedFlushes: 0, writes: 0 };
const index = new Map(names.map((name, i) => [name, i]));
const ringCache = new Map<number, string[]>();
const ringOf = (round: number) => {
  let ring = ringCache.get(round);
  if (!ring) {
    ring = roundRing(names, round);
    ringCache.set(round, ring);
    for (const r of ringCache.keys()) if (r < round - 2) ringCache.delete(r);
  }
  return ring;
};

const started = Date.now();
const failAt = started + args.failAfterMs;
let dead = false;
let sendErrors = 0;

// --- the broken pair ---
const T = plan.intervalMs;
const pairAt = started + (args.pairAfterMs ?? Math.min(args.durationMs * 0.1, 10_000));
let pairA: string | undefined;
let pairB: string | undefined;
if ((args.pair ?? 'next') !== 'none' && n > 3) {
  const pick = () => names[Math.floor(random() * n)]!;
  if (args.pair === 'random') {
    do {
      pairA = pick();
      pairB = pick();
    } while (pairA === pairB || pairA === args.victim || pairB === args.victim);
  } else {
    // A reporter and the peer it probes in slot 1 of the round two after the block.
    const ring = roundRing(names, Math.floor(pairAt / T) + 2);
    let p = Math.floor(random() * n);
    while (ring[p] === args.victim || ring[(p + 1) % n] === args.victim) p = (p + 1) % n;
    pairA = ring[p]!;
    pairB = ring[(p + 1) % n]!;
  }
}
const pairBroken = (reporter: string, target: string, sentAt: number) =>
  sentAt >= pairAt && ((reporter === pairA && target === pairB) || (reporter === pairB && target === pairA));
let pairFirstFailAt: number | undefined;

/** Results done but not yet "known" to the reporter: they join its queue (and its re-probe list) at doneAt. */
/** `hostOk`: nothing to re-probe (the host and its agent answered). */
interface Done { reporter: string; target: string; doneAt: number; hostOk: boolean; results: ProbeResult[] }
let inFlight: Done[] = [];
/** Per reporter, peers whose last round failed on every host probe (insertion order = oldest first). */
const rechecks = new Map<string, Set<string>>();

function recheckTarget(reporter: string, ring: readonly string[], p: number): string | undefined {
  const set = rechecks.get(reporter);
  if (!set?.size) return undefined;
  const inRound = new Set<string>();
  for (let j = 1; j <= plan.fanout; j++) inRound.add(ring[(p + j) % n]!);
  for (const name of set) {
    if (inRound.has(name)) continue;
    set.delete(name);
    set.add(name);
    return name;
  }
  return undefined;
}

/** Sends the probes of slots starting in [from, to): their results are known at doneAt (after the RTT or the timeout). */
function send(from: number, to: number): void {
  const slots = plan.fanout + plan.recheckSlots;
  for (let r = Math.floor(from / T) - 1; r <= Math.floor(to / T); r++) {
    const ring = ringOf(r);
    for (let j = 1; j <= slots; j++) {
      const sentAt = r * T + (j - 1) * plan.slotMs;
      if (sentAt < from || sentAt >= to) continue;
      for (let p = 0; p < n; p++) {
        const reporter = ring[p]!;
        if (dead && reporter === args.victim && sentAt >= failAt) continue;
        const target = j <= plan.fanout ? ring[(p + j) % n]! : recheckTarget(reporter, ring, p);
        if (!target) continue;
        const down = (target === args.victim && sentAt >= failAt) || pairBroken(reporter, target, sentAt);
        if (pairBroken(reporter, target, sentAt)) pairFirstFailAt ??= sentAt;
        const results: ProbeResult[] = [];
        let doneAt = sentAt + 1;
        const okBy = new Map<string, boolean>();
        for (const kind of KINDS) {
          const ok = !down && !(lossRate > 0 && random() < lossRate);
          if (!ok) doneAt = sentAt + PLAN_DEFAULTS.probeTimeoutMs;
          okBy.set(kind, ok);
          results.push({ target, kind, ip: '10.0.0.1', ok, rttUs: ok ? 300 : 0, error: ok ? '' : 'Connection timed out', timeUnixMs: Math.round(sentAt) });
        }
        // As the prober: re-probed next round after a failed host round, or a host that answered without its agent.
        const recheck = !(okBy.get('PROBE_KIND_HOST_ICMP') || okBy.get('PROBE_KIND_HOST_HTTP')) || (okBy.get('PROBE_KIND_HOST_ICMP')! && !okBy.get('PROBE_KIND_HOST_HTTP'));
        inFlight.push({ reporter, target, doneAt, hostOk: !recheck, results });
      }
    }
  }
}

/** Results whose probes finished by `now` join their reporters' queues; failed rounds join the re-probe lists. */
function complete(now: number): void {
  const still: Done[] = [];
  for (const d of inFlight) {
    if (d.doneAt > now) {
      still.push(d);
      continue;
    }
    let q = queues.get(d.reporter);
    if (!q) queues.set(d.reporter, (q = []));
    q.push(...d.results);
    counts.generated += d.results.length;
    let set = rechecks.get(d.reporter);
    if (d.hostOk) set?.delete(d.target);
    else {
      if (!set) rechecks.set(d.reporter, (set = new Set()));
      set.add(d.target);
    }
  }
  inFlight = still;
}

let last = started;
let tick = 0;
const timer = setInterval(() => {
  const now = Date.now();
  if (now >= failAt) dead = true;
  send(last, now);
  complete(now);
  last = now;
  tick++;
  // Each reporter flushes once per second, a quarter of them on each 250 ms tick.
  for (const [reporter, results] of queues) {
    if (results.length > MAX_QUEUED) counts.dropped += results.splice(0, results.length - MAX_QUEUED).length;
    if (results.length === 0 || (index.get(reporter)! % 4) !== tick % 4) continue;
    let stream = streams.get(reporter);
    if (!stream || !stream.open) streams.set(reporter, (stream = openStream()));
    if (stream.blocked) {
      counts.blockedFlushes++;
      continue;
    }
    for (let i = 0; i < results.length; i += 500) {
      const batch = results.slice(i, i + 500);
      const s = stream;
      counts.writes++;
      const more = s.call.write({ reporter, results: batch }, (err?: Error | null) => {
        if (err) return;
        counts.delivered += batch.length;
        delivered.set(reporter, (delivered.get(reporter) ?? 0) + batch.length);
      });
      if (!more && !s.blocked) {
        s.blocked = true;
        s.call.once('drain', () => (s.blocked = false));
      }
    }
    queues.set(reporter, []);
  }
}, 250);

let detectedAt: number | undefined;
let pairShownAt: number | undefined;
const falseVerdicts: string[] = [];
let falseVerdictCount = 0;
const isPair = (a: string, b: string) => (a === pairA && b === pairB) || (a === pairB && b === pairA);
const abort = new AbortController();
const watching = (async () => {
  try {
    for await (const change of client.watchClusterHealth({ sendInitial: false }, { signal: abort.signal })) {
      const h = change.health;
      if (change.node === args.victim) {
        if (change.current === 'REACHABILITY_UNREACHABLE' && detectedAt === undefined) detectedAt = Date.now();
        continue;
      }
      const wrong: string[] = [];
      if (change.current === 'REACHABILITY_UNREACHABLE') wrong.push('unreachable');
      if (h.endpointReachability === 'REACHABILITY_UNREACHABLE') wrong.push('endpoint unreachable');
      if (h.agent === 'AGENT_STATE_NOT_RUNNING') wrong.push('agent not running');
      for (const from of h.unreachableFrom) {
        if (isPair(from, change.node)) pairShownAt ??= Date.now();
        else if (from !== args.victim) wrong.push(`unreachable from ${from}`);
      }
      if (wrong.length) {
        falseVerdictCount++;
        if (falseVerdicts.length < 10) falseVerdicts.push(`${change.node}: ${wrong.join(', ')}`);
      }
    }
  } catch {
    // aborted at the end
  }
})();

setTimeout(async () => {
  clearInterval(timer);
  const elapsed = (Date.now() - started) / 1000;
  const health = await client.getClusterHealth({ summaryOnly: true }).catch(() => undefined);
  abort.abort();
  await Promise.race([watching, new Promise((r) => setTimeout(r, 1000))]);
  const live = names.filter((name) => name !== args.victim);
  const perNode = live.map((name) => (delivered.get(name) ?? 0) / elapsed);
  process.stdout.write(`${JSON.stringify({
    n, fanout: plan.fanout, roundMs: plan.intervalMs, slotMs: plan.slotMs, quorum: plan.quorum, documentedDetectionMs: plan.detectionMs,
    victim: args.victim, failAt, detectedAt, detectionMs: detectedAt === undefined ? null : detectedAt - failAt,
    probesPerNodePerSecondMean: perNode.reduce((a, b) => a + b, 0) / Math.max(1, perNode.length),
    probesPerNodePerSecondMax: Math.max(...perNode), sendErrors,
    resultsGenerated: counts.generated, resultsDelivered: counts.delivered, deliveredShare: counts.generated ? counts.delivered / counts.generated : 0,
    cpuPercent: ((process.cpuUsage().user + process.cpuUsage().system) / 1e6 / ((Date.now() - started) / 1000)) * 100,
    resultsDropped: counts.dropped, flushesHeldByBackpressure: counts.blockedFlushes, writes: counts.writes,
    summary: health ? { reachable: (health as { summary?: unknown }).summary } : null,
    lossRate,
    pair: pairA && pairB ? {
      a: pairA, b: pairB, choice: args.pair ?? 'next', blockedAt: pairAt,
      firstFailedProbeAfterMs: pairFirstFailAt === undefined ? null : Math.round(pairFirstFailAt - pairAt),
      shownAfterMs: pairShownAt === undefined ? null : pairShownAt - pairAt,
      shownAfterFirstFailedProbeMs: pairShownAt === undefined || pairFirstFailAt === undefined ? null : Math.round(pairShownAt - pairFirstFailAt),
      expectedCoverageMs: Math.round(((n - 1) / (2 * plan.fanout)) * T),
    } : null,
    falseVerdicts: falseVerdictCount, falseVerdictExamples: falseVerdicts,
  })}\n`);
  for (const s of streams.values()) s.call.cancel();
  client.close();
  raw.close();
  process.exit(0);
}, args.durationMs);
