import { ConstantBackoff, handleWhen, noop, retry } from 'cockatiel';
import { Etcd3, isRecoverableError } from 'etcd3';

export type { Etcd3 } from 'etcd3';

export interface KvClientOptions {
  /** etcd client URLs, e.g. `http://127.0.0.1:2379`. */
  endpoints: string[];
  /** Deadline of each unary call (get, put, txn…), in ms; streams (watch, lease keep-alive) have none. Default 10 s. */
  callTimeoutMs?: number;
  /** How long to wait for a connection before a call fails, in ms. Default 5 s. */
  dialTimeoutMs?: number;
  /**
   * TLS towards https endpoints: the CA of etcd's server certificates (system roots without it) and, for mutual TLS,
   * a client certificate and key. Under etcd's --client-cert-auth the certificate's CN is the etcd user.
   */
  tls?: { ca?: Buffer; cert?: Buffer; key?: Buffer };
  /** etcd user and password (password authentication; etcd hands out a token per connection). */
  auth?: { username: string; password: string };
}

/**
 * The one etcd client of a process: every writer, watcher and election of the process shares it, so that 1,000
 * watchers ride one HTTP/2 connection and one watch stream instead of opening 1,000 of each.
 *
 * Defaults, and why:
 * - No circuit breaker per host: with one endpoint it only delays recovery by its half-open time after etcd comes
 *   back; the writer and the watcher have their own jittered backoff, which is what must spread retries.
 * - The global retry only moves a failed call to another endpoint (one try per extra endpoint), never hammers one.
 * - gRPC keep-alive pings every 10 s with a 5 s timeout detect a dead connection that TCP would not report for
 *   minutes; etcd's server rejects pings more frequent than 5 s (--grpc-keepalive-min-time), so we stay above.
 */
let sniWarningFiltered = false;

/**
 * gRPC sends the endpoint's host as the TLS server name even when it is an IP address, and Node warns about that
 * (DEP0123: SNI carries names only) on stderr, once per process — in every CLI answer against an https://<ip>
 * endpoint. The certificate is still verified against the IP (its SAN); only that one warning is dropped.
 */
function filterIpServerNameWarning(): void {
  if (sniWarningFiltered) return;
  sniWarningFiltered = true;
  const emit = process.emitWarning.bind(process) as (...args: unknown[]) => void;
  process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
    const first = rest[0];
    const code = typeof first === 'object' && first !== null ? (first as { code?: string }).code : rest[1];
    if (code === 'DEP0123') return;
    emit(warning, ...rest);
  }) as typeof process.emitWarning;
}

export function createKvClient(options: KvClientOptions): Etcd3 {
  if (options.endpoints.length === 0) throw new Error('createKvClient needs at least one etcd endpoint');
  const callTimeoutMs = options.callTimeoutMs ?? 10_000;
  const extraHosts = options.endpoints.length - 1;
  const https = options.endpoints.some((e) => e.startsWith('https://'));
  if (options.tls && !https) throw new Error('createKvClient: TLS options need https:// endpoints');
  if (https && options.endpoints.some((e) => /^https:\/\/(\d+\.\d+\.\d+\.\d+|\[[0-9a-fA-F:]+\])(:\d+)?/.test(e))) filterIpServerNameWarning();
  return new Etcd3({
    hosts: options.endpoints,
    ...(options.tls && (options.tls.ca || options.tls.cert)
      ? { credentials: { rootCertificate: options.tls.ca as Buffer, privateKey: options.tls.key, certChain: options.tls.cert } }
      : {}),
    ...(options.auth ? { auth: { username: options.auth.username, password: options.auth.password } } : {}),
    dialTimeout: options.dialTimeoutMs ?? 5_000,
    defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + callTimeoutMs }),
    grpcOptions: {
      'grpc.keepalive_time_ms': 10_000,
      'grpc.keepalive_timeout_ms': 5_000,
      // Large lists (100,000 pods in pages) and 128-op transactions exceed gRPC's 4 MiB default on receive.
      'grpc.max_receive_message_length': 64 * 1024 * 1024,
    },
    faultHandling: {
      host: () => noop,
      global:
        extraHosts > 0
          ? retry(handleWhen(isRecoverableError), { maxAttempts: extraHosts, backoff: new ConstantBackoff(0) })
          : noop,
    },
  });
}
