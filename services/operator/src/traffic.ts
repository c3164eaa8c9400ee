/**
 * Bytes and responses from the API server, counted where they cross the wire. client-node's watches go through
 * node-fetch and plain http, so Node's diagnostics channels see every socket and response without patching anything.
 */
import diagnosticsChannel from 'node:diagnostics_channel';
import type { ClientRequest, IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { Counter, type Registry } from '@sluice/metrics';

export interface ApiTraffic {
  bytesIn(): number;
  close(): void;
}

export function trackApiTraffic(origin: URL, registry: Registry): ApiTraffic {
  const port = Number(origin.port || (origin.protocol === 'https:' ? 443 : 80));
  const sockets = new Set<Socket>();
  let closedBytes = 0;
  const bytesIn = () => closedBytes + [...sockets].reduce((sum, s) => sum + s.bytesRead, 0);

  new Counter({
    name: 'sluice_operator_kube_received_bytes_total',
    help: 'Bytes read from the Kubernetes API server',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(bytesIn());
    },
  });
  const responses = new Counter({
    name: 'sluice_operator_kube_api_responses_total',
    help: 'Responses from the Kubernetes API server by status code',
    labelNames: ['code'],
    registers: [registry],
  });

  const isApiServer = (host: string | undefined, remotePort: number | undefined) =>
    remotePort === port && (host === undefined || host === origin.hostname || host === `::ffff:${origin.hostname}`);

  const onSocket = (message: unknown) => {
    const socket = (message as { socket: Socket }).socket;
    socket.once('connect', () => {
      if (!isApiServer(socket.remoteAddress, socket.remotePort)) return;
      sockets.add(socket);
      socket.once('close', () => {
        sockets.delete(socket);
        closedBytes += socket.bytesRead;
      });
    });
  };
  const onResponse = (message: unknown) => {
    const { request, response } = message as { request: ClientRequest; response: IncomingMessage };
    if (request.host === origin.hostname && request.socket?.remotePort === port) {
      responses.inc({ code: String(response.statusCode ?? 0) });
    }
  };
  diagnosticsChannel.subscribe('net.client.socket', onSocket);
  diagnosticsChannel.subscribe('http.client.response.finish', onResponse);
  return {
    bytesIn,
    close() {
      diagnosticsChannel.unsubscribe('net.client.socket', onSocket);
      diagnosticsChannel.unsubscribe('http.client.response.finish', onResponse);
    },
  };
}
