/**
 * A typed client of sluice.health.v1.ClusterHealth: requests are checked before they leave, answers are validated
 * before they are handed out, so nothing untyped crosses this boundary.
 */
import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { ClusterHealthClient } from './proto.ts';
import {
  clusterHealthSchema,
  getNodeHealthRequestSchema,
  healthChangeSchema,
  nodeHealthSchema,
  parseMessage,
  reportProbesRequestSchema,
  reportProbesResponseSchema,
  type ClusterHealth,
  type HealthChange,
  type NodeHealth,
  type ReportProbesRequest,
  type ReportProbesResponse,
} from './types.ts';
import { z } from 'zod';

export interface TlsFiles {
  /** CA bundle that signed the server's (and, for mutual TLS, the clients') certificates. */
  ca?: string;
  /** Client certificate and key, for mutual TLS. */
  cert?: string;
  key?: string;
}

/** Channel credentials: insecure without files, TLS with a CA, mutual TLS with a CA, certificate and key. */
export function clientCredentials(tls: TlsFiles | undefined): grpc.ChannelCredentials {
  if (!tls?.ca && !tls?.cert) return grpc.credentials.createInsecure();
  const read = (path: string | undefined) => (path ? readFileSync(path) : null);
  return grpc.credentials.createSsl(read(tls.ca), read(tls.key), read(tls.cert));
}

export interface HealthClientOptions {
  credentials?: grpc.ChannelCredentials;
  /** Deadline of each unary call; 5 s by default. */
  deadlineMs?: number;
  /** Extra channel options, e.g. grpc.ssl_target_name_override in tests. */
  channelOptions?: grpc.ChannelOptions;
}

export interface CallOptions {
  deadlineMs?: number;
  signal?: AbortSignal;
}

export interface HealthClient {
  getClusterHealth(request?: { summaryOnly?: boolean }, options?: CallOptions): Promise<ClusterHealth>;
  getNodeHealth(node: string, options?: CallOptions): Promise<NodeHealth>;
  /** Reachability changes until the loop is left (which cancels the call) or the signal aborts. */
  watchClusterHealth(request?: { sendInitial?: boolean }, options?: { signal?: AbortSignal }): AsyncIterable<HealthChange>;
  /** One batch on a stream of its own (tests, one-off tools); agents keep a ReportStream open instead. */
  reportProbes(request: ReportProbesRequest, options?: CallOptions): Promise<ReportProbesResponse>;
  /** A ReportProbes stream for an agent to send its batches on. */
  openReportStream(): ReportStream;
  /** The raw grpc-js client, for callers that need channel state. */
  readonly grpc: grpc.Client;
  close(): void;
}

export interface ReportStream {
  /** Sends one batch; resolves when it is handed to the transport, rejects if the stream has failed. */
  send(request: ReportProbesRequest): Promise<void>;
  /** False once the stream failed or ended: open a new one. */
  readonly open: boolean;
  /** Half-closes and resolves with the server's totals. */
  end(): Promise<ReportProbesResponse>;
  cancel(): void;
}

type UnaryMethod = (
  request: unknown,
  metadata: grpc.Metadata,
  options: grpc.CallOptions,
  callback: (err: grpc.ServiceError | null, value?: unknown) => void,
) => grpc.ClientUnaryCall;

/** The largest answer the service sends (GetClusterHealth at 25,000 nodes is ~4 MiB) and clients accept. */
export const MAX_ANSWER_BYTES = 64 * 1024 * 1024;

/**
 * Channel options the typed client starts from. A GetClusterHealth answer is ~0.8 MiB at 5,000 nodes: with HTTP/2's
 * default 64 KiB receive window it crosses in ~13 flow-control round trips between client and server (each waiting
 * for both processes to be scheduled, which shows under load), with a 4 MiB window in one go (p50 7 → 4 ms, p99
 * 29 → 17 ms idle on the benchmark machine). Other gRPC clients of the service benefit from the same setting.
 */
export const HEALTH_CHANNEL_OPTIONS: grpc.ChannelOptions = {
  'grpc-node.flow_control_window': 4 * 1024 * 1024,
  // The answer's size follows the cluster's: ~0.8 MiB at 5,000 nodes, ~4 MiB at 25,000; the service sends up to
  // 64 MiB, grpc-js would refuse anything over its default of 4 MiB.
  'grpc.max_receive_message_length': MAX_ANSWER_BYTES,
  // Keepalive on the client side: a watch stream or a report stream over a connection that died silently (a host
  // gone, a NAT entry dropped) fails within ~40 s instead of waiting forever; the service permits pings every 10 s.
  'grpc.keepalive_time_ms': 30_000,
  'grpc.keepalive_timeout_ms': 10_000,
  'grpc.keepalive_permit_without_calls': 1,
};


export function createHealthClient(address: string, options: HealthClientOptions = {}): HealthClient {
  const client = new ClusterHealthClient(address, options.credentials ?? grpc.credentials.createInsecure(), { ...HEALTH_CHANNEL_OPTIONS, ...options.channelOptions });
  const defaultDeadline = options.deadlineMs ?? 5000;

  function unary<S extends z.ZodType>(method: string, request: unknown, schema: S, what: string, call: CallOptions = {}): Promise<z.infer<S>> {
    return new Promise((resolve, reject) => {
      const fn = (client as unknown as Record<string, UnaryMethod>)[method]!.bind(client);
      const handle = fn(request, new grpc.Metadata(), { deadline: Date.now() + (call.deadlineMs ?? defaultDeadline) }, (err, value) => {
        call.signal?.removeEventListener('abort', onAbort);
        if (err) return reject(err);
        try {
          resolve(parseMessage(schema, value, what));
        } catch (parseError) {
          reject(parseError);
        }
      });
      const onAbort = () => handle.cancel();
      call.signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  function openReportStream(deadlineMs?: number): ReportStream {
    let open = true;
    let failure: Error | undefined;
    let settle!: { resolve: (r: ReportProbesResponse) => void; reject: (e: Error) => void };
    const result = new Promise<ReportProbesResponse>((resolve, reject) => (settle = { resolve, reject }));
    result.catch(() => undefined); // reported through send()/end(), not as an unhandled rejection
    const method = (client as unknown as Record<string, (m: grpc.Metadata, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null, v?: unknown) => void) => grpc.ClientWritableStream<unknown>>).ReportProbes!;
    const call = method.call(client, new grpc.Metadata(), deadlineMs ? { deadline: Date.now() + deadlineMs } : {}, (err, value) => {
      open = false;
      if (err) {
        failure = err;
        return settle.reject(err);
      }
      try {
        settle.resolve(parseMessage(reportProbesResponseSchema, value, 'ReportProbesResponse'));
      } catch (parseError) {
        settle.reject(parseError as Error);
      }
    });
    return {
      get open() {
        return open;
      },
      send(request) {
        if (!open) return Promise.reject(failure ?? new Error('the report stream is closed'));
        const message = parseMessage(reportProbesRequestSchema, request, 'ReportProbesRequest');
        return new Promise((resolve, reject) => {
          call.write(message, (err?: Error | null) => (err ? reject(err) : failure ? reject(failure) : resolve()));
        });
      },
      end() {
        if (open) call.end();
        return result;
      },
      cancel() {
        open = false;
        call.cancel();
      },
    };
  }

  return {
    grpc: client,
    getClusterHealth: (request = {}, call) =>
      unary('GetClusterHealth', { summaryOnly: request.summaryOnly ?? false }, clusterHealthSchema, 'GetClusterHealthResponse', call),
    async getNodeHealth(node, call) {
      const request = parseMessage(getNodeHealthRequestSchema, { node }, 'GetNodeHealthRequest');
      const response = await unary('GetNodeHealth', request, z.object({ node: nodeHealthSchema }), 'GetNodeHealthResponse', call);
      return response.node;
    },
    async reportProbes(request, call = {}) {
      const stream = openReportStream(call.deadlineMs ?? defaultDeadline);
      await stream.send(request);
      return stream.end();
    },
    openReportStream: () => openReportStream(),
    watchClusterHealth(request = {}, watchOptions = {}) {
      return {
        async *[Symbol.asyncIterator]() {
          const stream = (client as unknown as { WatchClusterHealth(req: unknown): grpc.ClientReadableStream<unknown> }).WatchClusterHealth({
            sendInitial: request.sendInitial ?? false,
          });
          const onAbort = () => stream.cancel();
          watchOptions.signal?.addEventListener('abort', onAbort, { once: true });
          try {
            for await (const message of stream) yield parseMessage(healthChangeSchema, message, 'HealthChange');
          } catch (err) {
            // Our own cancellation ends the loop quietly; anything else is the caller's to see.
            if ((err as grpc.ServiceError).code !== grpc.status.CANCELLED) throw err;
          } finally {
            watchOptions.signal?.removeEventListener('abort', onAbort);
            stream.cancel();
          }
        },
      };
    },
    close: () => client.close(),
  };
}
