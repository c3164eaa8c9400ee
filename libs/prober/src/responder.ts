/**
 * The HTTP side of being probed: the agent's health port (and the health endpoint's) answer GET with 200 and the
 * node's name. Anything else is 404, so a stray service on the port cannot pass for a healthy agent by accident.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface HealthResponder {
  readonly port: number;
  close(): Promise<void>;
}

export async function startHealthResponder(options: { node: string; host?: string; port?: number }): Promise<HealthResponder> {
  const body = JSON.stringify({ node: options.node, status: 'ok' });
  const server: Server = createServer((req, res) => {
    if (req.method === 'GET' && (req.url === '/hello' || req.url === '/healthz')) {
      res.writeHead(200, { 'content-type': 'application/json', connection: 'close' }).end(body);
    } else {
      res.writeHead(404, { connection: 'close' }).end();
    }
  });
  server.keepAliveTimeout = 1000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, options.host ?? '0.0.0.0', () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () => new Promise((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}
