/**
 * Child process: the probers of every simulated node, on the real schedule of @sluice/prober (ring of the round,
 * fanout ⌈log2 n⌉, slots every T/k), reporting to the real health service on one open ReportProbes stream per node
 * and flushing once per second, as agents do. Probes are simulated (no packets): a probe to a live node succeeds
 * at once, a probe to a dead node fails after the probe timeout. At `failAt` one node dies (stops probing and
 * answering); the time until WatchClusterHealth says it is unreachable is the detection time.
 *
 * Backpressure is honoured as the agents' sink does it: a reporter whose stream's write() returned false writes
 * nothing more until 'drain'; its results stay queued (at most MAX_QUEUED, oldest dropped, like the prober's buffer)
 * and go with its next flush. Delivered results are counted in the write callbacks (handed to HTTP/2), not when
 * queued, so the figures say what reached the service's connection.
 *
 * argv[2]: JSON { address, nodes: string[], failAfterMs, durationMs, victim }; prints one JSON line of results.
 */
import * as grpc from '@grpc/grpc-js';
import { createHealthClient, encodeReportProbesRequest, type ProbeResult } from '@sluice/health-api';
import { PLAN_DEFAULTS, probePlan, roundRing } from '@sluice/prober';

interface Args { address: string; nodes: string[]; failAfterMs: number; durationMs: number; victim: string }
const args = JSON.parse(process.argv[2] ?? '{}') as Args;
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

/** Queues the results of the probes completing in [from, to): sent at slot times, done after the RTT or the timeout. */
function collect(from: number, to: number): void {
  const T = plan.intervalMs;
  for (let r = Math.floor((from - PLAN_DEFAULTS.probeTimeoutMs) / T) - 1; r <= Math.floor(to / T); r++) {
    const ring = ringOf(r);
    for (let j = 1; j <= plan.fanout; j++) {
      const sentAt = r * T + (j - 1) * plan.slotMs;
      for (let p = 0; p < n; p++) {
        const reporter = ring[p]!;
        const target = ring[(p + j) % n]!;
        const reporterDead = dead && reporter === args.victim && sentAt >= failAt;
        if (reporterDead) continue;
        const up = !(target === args.victim && sentAt >= failAt);
        const doneAt = sentAt + (up ? 1 : PLAN_DEFAULTS.probeTimeoutMs);
        if (doneAt < from || doneAt >= to) continue;
        let q = queues.get(reporter);
        if (!q) queues.set(reporter, (q = []));
        counts.generated += KINDS.length;
        for (const kind of KINDS) {
          q.push({ target, kind, ip: '10.0.0.1', ok: up, rttUs: up ? 300 : 0, error: up ? '' : 'Connection timed out', timeUnixMs: Math.round(doneAt) });
        }
      }
    }
  }
}

let last = started;
let tick = 0;
const timer = setInterval(() => {
  const now = Date.now();
  if (now >= failAt) dead = true;
  collect(last, now);
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
const abort = new AbortController();
const watching = (async () => {
  try {
    for await (const change of client.watchClusterHealth({ sendInitial: false }, { signal: abort.signal })) {
      if (change.node === args.victim && change.current === 'REACHABILITY_UNREACHABLE' && detectedAt === undefined) detectedAt = Date.now();
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
  })}\n`);
  for (const s of streams.values()) s.call.cancel();
  client.close();
  raw.close();
  process.exit(0);
}, args.durationMs);
