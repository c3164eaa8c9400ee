/**
 * The gRPC face of the aggregator: sluice.health.v1.ClusterHealth, the standard grpc.health.v1.Health and server
 * reflection, all from the one package definition in @sluice/health-api.
 */
import type { PeerCertificate } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation } from 'grpc-health-check';
import {
  GRPC_HEALTH_SERVICE,
  SERVICE_NAME,
  clusterHealthService,
  decodeReportProbesRequest,
  getClusterHealthRequestSchema,
  getNodeHealthRequestSchema,
  HealthApiError,
  MAX_ANSWER_BYTES,
  packageDefinition,
  parseMessage,
  watchClusterHealthRequestSchema,
  type ClusterHealth,
  type HealthChange,
  type ReportBatch,
} from '@sluice/health-api';
import { createLogger, type Logger } from '@sluice/log';
import type { Aggregator } from './aggregator.ts';
import { ClusterHealthEncoder } from './encode.ts';

export interface ServerTls {
  cert: Buffer;
  key: Buffer;
  /** With a CA, clients must present a certificate it signed (mutual TLS), and reporters are held to its name. */
  ca?: Buffer;
}

export interface HealthServerOptions {
  aggregator: Aggregator;
  /** host:port (port 0 picks one) or unix:///path. */
  address: string;
  tls?: ServerTls;
  logger?: Logger;
  /** How often verdicts are re-evaluated without new reports (staleness). */
  sweepMs?: number;
  /**
   * How far behind the reports GetClusterHealth's per-node details (probe times, RTTs, reporters) may be: the encoded
   * answer is reused for up to this long unless a verdict or the node list changed, and refreshed in the background
   * (spread over event-loop turns) once it is half that old. 0: always current. Default 1000 ms.
   */
  clusterHealthMaxAgeMs?: number;
  /**
   * Take ReportProbes without mutual TLS (anyone who reaches the port can then report for any node). Without it and
   * without mutual TLS, reports are refused with UNAUTHENTICATED.
   */
  insecure?: boolean;
  /** Open WatchClusterHealth streams allowed in total and per client (peer IP, or certificate name with mTLS). */
  maxWatchers?: number;
  maxWatchersPerClient?: number;
}

/** Largest request of the unary and server-streaming methods: their requests hold a flag or a node name. */
export const MAX_SMALL_REQUEST_BYTES = 4 * 1024;
/** Largest ReportProbes message: 10,000 results (MAX_RESULTS_PER_REPORT) of ~100 bytes with room to spare. */
export const MAX_REPORT_BYTES = 4 * 1024 * 1024;

/**
 * Keepalive on the server side: it pings idle connections (every 30 s, giving up after 10 s), so that a watcher or a
 * reporter whose host vanished is noticed and its stream freed; clients may ping every 10 s even without calls.
 */
export const SERVER_KEEPALIVE: grpc.ServerOptions = {
  'grpc.keepalive_time_ms': 30_000,
  'grpc.keepalive_timeout_ms': 10_000,
  'grpc.keepalive_permit_without_calls': 1,
  'grpc.http2.min_ping_interval_without_data_ms': 10_000,
};

export interface HealthServerStats {
  watchers: number;
  /** Times a watch stream's write returned false and the server waited for 'drain'. */
  backpressureWaits: number;
  /** Most changes ever queued for one watcher (bounded by the node count: changes coalesce per node). */
  maxPending: number;
  /** Batches received on ReportProbes streams. */
  reports: number;
  deniedReports: number;
  /** WatchClusterHealth streams refused by the caps (total or per client). */
  refusedWatchers: number;
  /** Requests refused for their size. */
  oversizedRequests: number;
  /** Full GetClusterHealth encodes done while a request waited: the first, after a verdict changed, or after a lull. */
  encodesInRequest: number;
  /** Encodes done by the background refresh, a slice per event-loop turn. */
  encodesInBackground: number;
  /** Answers after a verdict change built by re-encoding only the nodes whose verdict changed. */
  verdictPatches: number;
}

export interface HealthServer {
  readonly port: number;
  readonly address: string;
  readonly grpcHealth: HealthImplementation;
  /**
   * SERVING or NOT_SERVING in grpc.health.v1, for the whole server ('') and the ClusterHealth service: both start
   * NOT_SERVING, until the owner has loaded the node list.
   */
  setServing(serving: boolean): void;
  stats(): HealthServerStats;
  stop(graceMs?: number): Promise<void>;
}

/** The names a client certificate vouches for: its subject CN and its DNS subject alternative names. */
export function certificateNames(cert: PeerCertificate | undefined): string[] {
  if (!cert || Object.keys(cert).length === 0) return [];
  const names = new Set<string>();
  const cn = cert.subject?.CN;
  if (typeof cn === 'string') names.add(cn);
  else if (Array.isArray(cn)) for (const c of cn as string[]) names.add(c);
  for (const entry of (cert.subjectaltname ?? '').split(',')) {
    const match = /^\s*DNS:(.+)$/.exec(entry);
    if (match) names.add(match[1]!.trim());
  }
  return [...names];
}

/** A request over its method's size limit, handed to the handler in place of the message. */
class OversizedRequest {
  constructor(readonly bytes: number, readonly limit: number) {}
}

const tooLarge = (r: OversizedRequest): Partial<grpc.StatusObject> => ({
  code: grpc.status.RESOURCE_EXHAUSTED,
  details: `request of ${r.bytes} bytes exceeds this method's limit of ${r.limit}`,
});

function invalid(err: unknown): Partial<grpc.StatusObject> {
  return { code: grpc.status.INVALID_ARGUMENT, details: err instanceof HealthApiError ? err.message : String(err) };
}

/** Who a watcher is, for the per-client cap: the certificate's first name with mutual TLS, else the peer's IP. */
function clientOf(call: grpc.ServerWritableStream<unknown, unknown>): string {
  const names = certificateNames(call.getAuthContext()?.sslPeerCertificate);
  if (names.length) return `cert:${names[0]}`;
  const peer = call.getPeer();
  const ip = /^(?:ipv[46]:)?\[?([^\]]*?)\]?:\d+$/.exec(peer)?.[1];
  return ip ?? peer;
}

export async function startHealthServer(options: HealthServerOptions): Promise<HealthServer> {
  const { aggregator } = options;
  const log = options.logger ?? createLogger({ component: 'health-server' });
  const mutual = !!options.tls?.ca;
  const counters = { backpressureWaits: 0, maxPending: 0, reports: 0, deniedReports: 0, refusedWatchers: 0, oversizedRequests: 0, encodesInRequest: 0, encodesInBackground: 0, verdictPatches: 0 };
  const acceptReports = mutual || !!options.insecure;
  const maxWatchers = options.maxWatchers ?? 1024;
  const maxWatchersPerClient = options.maxWatchersPerClient ?? 16;
  const watches = new Set<grpc.ServerWritableStream<unknown, HealthChange>>();
  const watchersByClient = new Map<string, number>();
  /** Open report streams, answered at shutdown so that agents move to the next instance without waiting. */
  const reportStreams = new Set<() => void>();

  const server = new grpc.Server({
    ...SERVER_KEEPALIVE,
    'grpc.max_receive_message_length': MAX_REPORT_BYTES,
    'grpc.max_send_message_length': MAX_ANSWER_BYTES,
  });
  // NOT_SERVING (the whole server, '', and the service) until the owner says the node list is loaded.
  const grpcHealth = new HealthImplementation({ '': 'NOT_SERVING', [SERVICE_NAME]: 'NOT_SERVING' });
  grpcHealth.addToServer(server);
  new ReflectionService(packageDefinition).addToServer(server);

  // GetClusterHealth answers with bytes from the incremental encoder (see encode.ts) and ReportProbes batches are read
  // by the hand-written decoder that validates as it reads (@sluice/health-api wire.ts); everything else goes through
  // the generic (de)serializers.
  const generic = clusterHealthService.GetClusterHealth!;
  // The small requests are held to MAX_SMALL_REQUEST_BYTES before they are decoded.
  const limited = (method: grpc.MethodDefinition<unknown, unknown>): grpc.MethodDefinition<unknown, unknown> => ({
    ...method,
    requestDeserialize: (bytes: Buffer) => (bytes.length > MAX_SMALL_REQUEST_BYTES ? new OversizedRequest(bytes.length, MAX_SMALL_REQUEST_BYTES) : method.requestDeserialize(bytes)),
  });
  const service: grpc.ServiceDefinition = {
    ...clusterHealthService,
    GetClusterHealth: limited({ ...generic, responseSerialize: (value: unknown) => (Buffer.isBuffer(value) ? value : generic.responseSerialize(value)) }),
    GetNodeHealth: limited(clusterHealthService.GetNodeHealth!),
    WatchClusterHealth: limited(clusterHealthService.WatchClusterHealth!),
    ReportProbes: { ...clusterHealthService.ReportProbes!, requestDeserialize: decodeReportProbesRequest },
  };
  // Batches are ingested as they arrive and the verdicts settled once per event-loop turn: under load one turn
  // carries many batches, which often touch the same nodes.
  let settleScheduled = false;
  const settleSoon = () => {
    if (settleScheduled) return;
    settleScheduled = true;
    setImmediate(() => {
      settleScheduled = false;
      aggregator.settle();
    });
  };
  const encoder = new ClusterHealthEncoder();
  // Under the report load of 5,000 nodes every node's view (probe times, RTTs) changes several times a second, and
  // re-encoding all of them takes 15–30 ms, so an answer is not rebuilt per request:
  // - it is reused while no verdict changed and it is younger than maxAgeMs (its summary's probe time says how fresh
  //   it is);
  // - a verdict change (a node becoming unreachable) is served at once by re-encoding only the nodes whose verdict
  //   changed on top of the previous answer;
  // - once an answer is half the max age old, a background refresh encodes a snapshot of every node a slice per
  //   event-loop turn, and repeats while clients keep asking (a request in the last KEEP_WARM_MS), so a poller never
  //   waits for a full encode. With nobody asking, nothing is encoded.
  const maxAgeMs = options.clusterHealthMaxAgeMs ?? 1000;
  const ENCODE_SLICE = 200;
  const KEEP_WARM_MS = 30_000;
  let warmUntil = 0;
  interface Answer {
    version: number;
    verdicts: number;
    nodeList: number;
    /** The verdict-change sequence number the answer includes. */
    seq: number;
    /** When its oldest details were taken. */
    at: number;
    entries: Buffer[];
    index: Map<string, number>;
    bytes: Buffer;
  }
  let encoded: Answer | undefined;
  let refreshing = false;
  // Node → sequence number of its latest verdict change: at most one entry per node.
  let changeSeq = 0;
  const verdictChangedAt = new Map<string, number>();
  aggregator.subscribe((change) => verdictChangedAt.set(change.node, ++changeSeq));
  type Versions = Pick<Answer, 'version' | 'verdicts' | 'nodeList' | 'seq'>;
  const versionsNow = (): Versions => ({ version: aggregator.version, verdicts: aggregator.verdictVersion, nodeList: aggregator.nodeListVersion, seq: changeSeq });
  const answer = (versions: Versions, health: ClusterHealth, entries: Buffer[], at: number, index?: Map<string, number>): Answer => ({
    ...versions, at, entries, index: index ?? new Map(health.nodes.map((node, i) => [node.name, i])), bytes: encoder.assemble(health.summary, entries),
  });
  const encodeNow = () => {
    const health = aggregator.clusterHealth();
    encoded = answer(versionsNow(), health, encoder.entries(health.nodes), performance.now());
    return encoded.bytes;
  };
  /** `base` with the nodes whose verdict changed since it re-encoded; undefined when the node list changed. */
  const patchVerdicts = (base: Answer): Answer | undefined => {
    const health = aggregator.clusterHealth();
    if (aggregator.nodeListVersion !== base.nodeList || health.nodes.length !== base.entries.length) return undefined;
    const entries = base.entries.slice();
    for (const [name, seq] of verdictChangedAt) {
      if (seq <= base.seq) continue;
      const i = base.index.get(name);
      if (i === undefined || health.nodes[i]?.name !== name) return undefined;
      entries[i] = encoder.entry(health.nodes[i]!);
    }
    counters.verdictPatches++;
    return answer(versionsNow(), health, entries, base.at, base.index);
  };
  const refreshSoon = () => {
    // With a max age of 0 every request encodes: there is nothing to keep warm.
    if (refreshing || !encoded || closing || maxAgeMs === 0) return;
    refreshing = true;
    const startIn = Math.max(0, encoded.at + maxAgeMs / 2 - performance.now());
    setTimeout(() => {
      // A snapshot of every view, encoded in slices; the last slice does no more than the others.
      const health = aggregator.clusterHealth();
      const versions = versionsNow();
      const at = performance.now();
      const entries: Buffer[] = new Array<Buffer>(health.nodes.length);
      let from = 0;
      const step = () => {
        if (closing) return;
        const to = Math.min(from + ENCODE_SLICE, health.nodes.length);
        for (let i = from; i < to; i++) entries[i] = encoder.entry(health.nodes[i]!);
        from = to;
        if (from < health.nodes.length) return void setImmediate(step);
        refreshing = false;
        counters.encodesInBackground++;
        // A request may have encoded a newer answer meanwhile; otherwise verdicts that changed since the snapshot
        // are patched in.
        if (!encoded || at > encoded.at) {
          const fresh = answer(versions, health, entries, at);
          // A node list that changed meanwhile makes the snapshot useless: the next request encodes afresh.
          const current = fresh.verdicts === aggregator.verdictVersion ? fresh : patchVerdicts(fresh);
          if (current) encoded = current;
        }
        if (performance.now() < warmUntil) refreshSoon();
      };
      step();
    }, startIn).unref();
  };
  const clusterHealthBytes = (): Buffer => {
    warmUntil = performance.now() + KEEP_WARM_MS;
    if (encoded?.version === aggregator.version) return encoded.bytes;
    if (encoded && encoded.verdicts !== aggregator.verdictVersion && performance.now() - encoded.at < maxAgeMs) {
      const patched = patchVerdicts(encoded);
      if (patched) {
        encoded = patched;
        refreshSoon();
        return patched.bytes;
      }
    }
    if (!encoded || encoded.verdicts !== aggregator.verdictVersion || performance.now() - encoded.at >= maxAgeMs) {
      counters.encodesInRequest++;
      const bytes = encodeNow();
      refreshSoon();
      return bytes;
    }
    refreshSoon();
    return encoded.bytes;
  };
  let closing = false;

  server.addService(service, {
    GetClusterHealth(call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) {
      if (call.request instanceof OversizedRequest) return (counters.oversizedRequests++, callback(tooLarge(call.request)));
      let request;
      try {
        request = parseMessage(getClusterHealthRequestSchema, call.request, 'GetClusterHealthRequest');
      } catch (err) {
        return callback(invalid(err));
      }
      callback(null, request.summaryOnly ? aggregator.clusterHealth(true) : clusterHealthBytes());
    },

    GetNodeHealth(call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) {
      if (call.request instanceof OversizedRequest) return (counters.oversizedRequests++, callback(tooLarge(call.request)));
      let request;
      try {
        request = parseMessage(getNodeHealthRequestSchema, call.request, 'GetNodeHealthRequest');
      } catch (err) {
        return callback(invalid(err));
      }
      const node = aggregator.nodeHealth(request.node);
      if (!node) return callback({ code: grpc.status.NOT_FOUND, details: `node ${request.node} is not known` });
      callback(null, { node });
    },

    ReportProbes(call: grpc.ServerReadableStream<ReportBatch | HealthApiError, unknown>, callback: grpc.sendUnaryData<unknown>) {
      if (!acceptReports) {
        counters.deniedReports++;
        call.on('data', () => undefined);
        return callback({ code: grpc.status.UNAUTHENTICATED, details: 'this health service takes probe reports only over mutual TLS (it was not started with --insecure)' });
      }
      // The certificate cannot change within a call: its names are read once per stream.
      const names = mutual ? certificateNames(call.getAuthContext()?.sslPeerCertificate) : [];
      const totals = { accepted: 0, ignored: 0 };
      let done = false;
      const finish = () => {
        if (done) return;
        done = true;
        reportStreams.delete(finish);
        callback(null, totals);
      };
      reportStreams.add(finish);
      const fail = (error: Partial<grpc.StatusObject>) => {
        if (done) return;
        done = true;
        reportStreams.delete(finish);
        callback(error);
      };
      call.on('data', (request: ReportBatch | HealthApiError) => {
        if (done) return;
        if (request instanceof HealthApiError) return fail(invalid(request));
        if (mutual && !names.includes(request.reporter)) {
          counters.deniedReports++;
          return fail({
            code: grpc.status.PERMISSION_DENIED,
            details: `the client certificate names ${names.join(', ') || 'no node'}, not reporter ${request.reporter}`,
          });
        }
        counters.reports++;
        const result = aggregator.ingest(request.reporter, request.results, false);
        totals.accepted += result.accepted;
        totals.ignored += result.ignored;
        if (result.accepted) settleSoon();
      });
      call.on('end', finish);
      call.on('error', () => {
        done = true;
        reportStreams.delete(finish);
      });
      call.on('cancelled', () => {
        done = true;
        reportStreams.delete(finish);
      });
    },

    WatchClusterHealth(call: grpc.ServerWritableStream<unknown, HealthChange>) {
      if (call.request instanceof OversizedRequest) {
        counters.oversizedRequests++;
        call.emit('error', tooLarge(call.request));
        return;
      }
      let request;
      try {
        request = parseMessage(watchClusterHealthRequestSchema, call.request, 'WatchClusterHealthRequest');
      } catch (err) {
        call.emit('error', invalid(err));
        return;
      }
      // Each stream holds a subscription and up to one queued change per node: capped per client and in total.
      const client = clientOf(call);
      const mine = watchersByClient.get(client) ?? 0;
      if (watches.size >= maxWatchers || mine >= maxWatchersPerClient) {
        counters.refusedWatchers++;
        const which = watches.size >= maxWatchers ? `${maxWatchers} watch streams in total` : `${maxWatchersPerClient} watch streams per client (${client})`;
        call.emit('error', { code: grpc.status.RESOURCE_EXHAUSTED, details: `this health service allows at most ${which}` });
        return;
      }
      watchersByClient.set(client, mine + 1);
      // Changes queue per node while the client is slow: a node that flapped while the client was not reading shows
      // up once with its end state, so a slow client costs at most one entry per node, never an unbounded backlog.
      const pending = new Map<string, HealthChange>();
      let waiting = false;
      let closed = false;
      const pump = () => {
        while (!closed && !waiting && pending.size > 0) {
          const [node, change] = pending.entries().next().value as [string, HealthChange];
          pending.delete(node);
          if (!call.write(change)) {
            waiting = true;
            counters.backpressureWaits++;
            call.once('drain', () => {
              waiting = false;
              pump();
            });
          }
        }
      };
      const enqueue = (change: HealthChange) => {
        if (closed) return;
        const queued = pending.get(change.node);
        // The newest state wins, from the reachability the client saw last: a flap it did not read shows as one
        // change (possibly to the same reachability, with the other fields current); a removal is never lost.
        if (queued) pending.delete(change.node);
        pending.set(change.node, queued ? { ...change, previous: queued.previous } : change);
        if (pending.size > counters.maxPending) counters.maxPending = pending.size;
        pump();
      };
      const unsubscribe = aggregator.subscribe(enqueue);
      const finish = () => {
        if (closed) return;
        closed = true;
        unsubscribe();
        pending.clear();
        watches.delete(call);
        const left = (watchersByClient.get(client) ?? 1) - 1;
        if (left > 0) watchersByClient.set(client, left);
        else watchersByClient.delete(client);
      };
      watches.add(call);
      call.on('cancelled', finish);
      call.on('error', finish);
      call.on('close', finish);
      call.on('finish', finish);
      if (request.sendInitial) for (const change of aggregator.snapshot()) enqueue(change);
    },
  });

  const credentials = options.tls
    ? grpc.ServerCredentials.createSsl(options.tls.ca ?? null, [{ cert_chain: options.tls.cert, private_key: options.tls.key }], mutual)
    : grpc.ServerCredentials.createInsecure();
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(options.address, credentials, (err, bound) => (err ? reject(err) : resolve(bound))),
  );
  // A sweep under load re-evaluates every node: a slice per event-loop turn, so that no request waits for all of it.
  const SWEEP_SLICE = 200;
  const sweepStep = () => {
    if (!closing && aggregator.sweep(SWEEP_SLICE) > 0) setImmediate(sweepStep);
  };
  const sweeper = setInterval(sweepStep, options.sweepMs ?? 1000);
  sweeper.unref();
  log.info({ address: options.address, port, tls: !!options.tls, mutualTls: mutual, reports: mutual ? 'mutual TLS' : acceptReports ? 'insecure' : 'refused' }, 'health service listening');
  if (!mutual && acceptReports) log.warn('INSECURE: probe reports are taken without mutual TLS: anyone who reaches this port can report probe results for any node');
  else if (!mutual) log.warn('probe reports are refused: without mutual TLS (--tls-ca) the service takes them only when started with --insecure');

  return {
    port,
    address: options.address.startsWith('unix:') ? options.address : options.address.replace(/:0$/, `:${port}`),
    grpcHealth,
    setServing(serving) {
      grpcHealth.setStatus('', serving ? 'SERVING' : 'NOT_SERVING');
      grpcHealth.setStatus(SERVICE_NAME, serving ? 'SERVING' : 'NOT_SERVING');
    },
    stats: () => ({ watchers: watches.size, ...counters }),
    async stop(graceMs = 2000) {
      closing = true;
      clearInterval(sweeper);
      grpcHealth.setStatus('', 'NOT_SERVING');
      grpcHealth.setStatus(SERVICE_NAME, 'NOT_SERVING');
      // Watch streams never end on their own; end them so that a graceful shutdown can finish.
      for (const call of watches) call.end();
      for (const finish of [...reportStreams]) finish();
      await new Promise<void>((resolve) => {
        const force = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, graceMs);
        server.tryShutdown(() => {
          clearTimeout(force);
          resolve();
        });
      });
    },
  };
}

export { GRPC_HEALTH_SERVICE, SERVICE_NAME };
