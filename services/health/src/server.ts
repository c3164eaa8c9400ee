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
  packageDefinition,
  parseMessage,
  watchClusterHealthRequestSchema,
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
}

export interface HealthServerStats {
  watchers: number;
  /** Times a watch stream's write returned false and the server waited for 'drain'. */
  backpressureWaits: number;
  /** Most changes ever queued for one watcher (bounded by the node count: changes coalesce per node). */
  maxPending: number;
  /** Batches received on ReportProbes streams. */
  reports: number;
  deniedReports: number;
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
  /** SERVING or NOT_SERVING for the ClusterHealth service in grpc.health.v1 (e.g. until the node list is loaded). */
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

function invalid(err: unknown): Partial<grpc.StatusObject> {
  return { code: grpc.status.INVALID_ARGUMENT, details: err instanceof HealthApiError ? err.message : String(err) };
}

export async function startHealthServer(options: HealthServerOptions): Promise<HealthServer> {
  const { aggregator } = options;
  const log = options.logger ?? createLogger({ component: 'health-server' });
  const mutual = !!options.tls?.ca;
  const counters = { backpressureWaits: 0, maxPending: 0, reports: 0, deniedReports: 0, encodesInRequest: 0, encodesInBackground: 0, verdictPatches: 0 };
  const watches = new Set<grpc.ServerWritableStream<unknown, HealthChange>>();
  /** Open report streams, answered at shutdown so that agents move to the next instance without waiting. */
  const reportStreams = new Set<() => void>();

  const server = new grpc.Server({ 'grpc.max_receive_message_length': 16 * 1024 * 1024 });
  const grpcHealth = new HealthImplementation({ '': 'SERVING', [SERVICE_NAME]: 'SERVING' });
  grpcHealth.addToServer(server);
  new ReflectionService(packageDefinition).addToServer(server);

  // GetClusterHealth answers with bytes from the incremental encoder (see encode.ts) and ReportProbes batches are read
  // by the hand-written decoder that validates as it reads (@sluice/health-api wire.ts); everything else goes through
  // the generic (de)serializers.
  const generic = clusterHealthService.GetClusterHealth!;
  const service: grpc.ServiceDefinition = {
    ...clusterHealthService,
    GetClusterHealth: { ...generic, responseSerialize: (value: unknown) => (Buffer.isBuffer(value) ? value : generic.responseSerialize(value)) },
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
  // Nodes are encoded when their view changed since the last answer, not on every change: under the report load of
  // 5,000 nodes every node's view (probe times, RTTs) changes several times a second, and re-encoding all of them
  // takes 15–30 ms. So an answer is reused while no verdict changed and it is younger than maxAgeMs (its summary's
  // probe time says how fresh it is), and once it is half that old a background refresh encodes the changed nodes a
  // slice per event-loop turn. While clients keep asking (a request in the last KEEP_WARM_MS), the refresh repeats on
  // its own, so a client polling every few seconds never waits for a full encode either; with nobody asking, nothing
  // is encoded. Verdict changes (a node becoming unreachable) are never served late.
  const maxAgeMs = options.clusterHealthMaxAgeMs ?? 1000;
  const ENCODE_SLICE = 200;
  const KEEP_WARM_MS = 30_000;
  let warmUntil = 0;
  // A verdict change is served at once without re-encoding the cluster: the previous answer's entries are kept and
  // only the nodes whose verdict changed are encoded again (their details are then current, the others' keep the
  // previous answer's age). A full encode of 5,000 changed views inside a request took 15–30 ms, more under load.
  let encoded: { version: number; verdicts: number; nodeList: number; at: number; bytes: Buffer; entries: Buffer[]; index: Map<string, number> } | undefined;
  let refreshing = false;
  const verdictChanged = new Set<string>();
  aggregator.subscribe((change) => verdictChanged.add(change.node));
  const encodeNow = () => {
    const version = aggregator.version;
    const health = aggregator.clusterHealth();
    const entries = encoder.entries(health.nodes);
    verdictChanged.clear();
    encoded = {
      version, verdicts: aggregator.verdictVersion, nodeList: aggregator.nodeListVersion, at: performance.now(), entries,
      bytes: encoder.assemble(health.summary, entries), index: new Map(health.nodes.map((node, i) => [node.name, i])),
    };
    return encoded.bytes;
  };
  /** The previous answer with the nodes whose verdict changed re-encoded; undefined when the node list changed. */
  const patchVerdicts = (previous: NonNullable<typeof encoded>): Buffer | undefined => {
    const health = aggregator.clusterHealth();
    if (aggregator.nodeListVersion !== previous.nodeList || health.nodes.length !== previous.entries.length) return undefined;
    const entries = previous.entries.slice();
    for (const name of verdictChanged) {
      const i = previous.index.get(name);
      if (i === undefined || health.nodes[i]?.name !== name) return undefined;
      entries[i] = encoder.entry(health.nodes[i]!);
    }
    verdictChanged.clear();
    encoded = { ...previous, version: aggregator.version, verdicts: aggregator.verdictVersion, entries, bytes: encoder.assemble(health.summary, entries) };
    counters.verdictPatches++;
    return encoded.bytes;
  };
  const refreshSoon = () => {
    // With a max age of 0 every request encodes: there is nothing to keep warm.
    if (refreshing || !encoded || closing || maxAgeMs === 0) return;
    refreshing = true;
    const startIn = Math.max(0, encoded.at + maxAgeMs / 2 - performance.now());
    setTimeout(() => {
      const nodes = aggregator.clusterHealth().nodes;
      let from = 0;
      const step = () => {
        if (closing) return;
        encoder.prepare(nodes, from, from + ENCODE_SLICE);
        from += ENCODE_SLICE;
        if (from < nodes.length) return void setImmediate(step);
        refreshing = false;
        counters.encodesInBackground++;
        encodeNow();
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
        refreshSoon();
        return patched;
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
      let request;
      try {
        request = parseMessage(getClusterHealthRequestSchema, call.request, 'GetClusterHealthRequest');
      } catch (err) {
        return callback(invalid(err));
      }
      callback(null, request.summaryOnly ? aggregator.clusterHealth(true) : clusterHealthBytes());
    },

    GetNodeHealth(call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) {
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
      let request;
      try {
        request = parseMessage(watchClusterHealthRequestSchema, call.request, 'WatchClusterHealthRequest');
      } catch (err) {
        call.emit('error', invalid(err));
        return;
      }
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
        if (queued) {
          pending.delete(change.node);
          if (queued.previous !== change.current) pending.set(change.node, { ...change, previous: queued.previous });
        } else {
          pending.set(change.node, change);
        }
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
  log.info({ address: options.address, port, tls: !!options.tls, mutualTls: mutual }, 'health service listening');

  return {
    port,
    address: options.address.startsWith('unix:') ? options.address : options.address.replace(/:0$/, `:${port}`),
    grpcHealth,
    setServing(serving) {
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
