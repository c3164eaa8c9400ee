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
  reportProbes(request: ReportProbesRequest, options?: CallOptions): Promise<ReportProbesResponse>;
  /** The raw grpc-js client, for callers that need channel state. */
  readonly grpc: grpc.Client;
  close(): void;
}

type UnaryMethod = (
  request: unknown,
  metadata: grpc.Metadata,
  options: grpc.CallOptions,
  callback: (err: grpc.ServiceError | null, value?: unknown) => void,
) => grpc.ClientUnaryCall;

export function createHealthClient(address: string, options: HealthClientOptions = {}): HealthClient {
  const client = new ClusterHealthClient(address, options.credentials ?? grpc.credentials.createInsecure(), options.channelOptions);
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

  return {
    grpc: client,
    getClusterHealth: (request = {}, call) =>
      unary('GetClusterHealth', { summaryOnly: request.summaryOnly ?? false }, clusterHealthSchema, 'GetClusterHealthResponse', call),
    async getNodeHealth(node, call) {
      const request = parseMessage(getNodeHealthRequestSchema, { node }, 'GetNodeHealthRequest');
      const response = await unary('GetNodeHealth', request, z.object({ node: nodeHealthSchema }), 'GetNodeHealthResponse', call);
      return response.node;
    },
    reportProbes(request, call) {
      return unary('ReportProbes', parseMessage(reportProbesRequestSchema, request, 'ReportProbesRequest'), reportProbesResponseSchema, 'ReportProbesResponse', call);
    },
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
