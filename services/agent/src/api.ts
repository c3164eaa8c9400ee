/**
 * The agent's local API for the CNI plugin: HTTP on a unix socket (or loopback port). The plugin reports each pod's
 * veth here so that the endpoint is programmed at once; the agent persists it (LocalEndpointStore) before replying.
 *
 *   PUT    /v1/endpoints/<id>   LocalEndpointRecord → 200 {programmed}
 *   GET    /v1/endpoints/<id>   → 200 record | 404
 *   DELETE /v1/endpoints/<id>   → 200 | 404
 *   GET    /v1/endpoints        → records
 *   GET    /v1/node             → {name, ip?, podCIDRs, pinDir, netns?}
 */
import { existsSync, unlinkSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { AgentCore } from './core.ts';
import { localEndpointSchema, toCoreEndpoint, type LocalEndpointRecord, type LocalEndpointStore } from './local-store.ts';

export interface AgentApiOptions {
  core: AgentCore;
  store: LocalEndpointStore;
  /** Unix socket path; or `port` for loopback TCP. */
  socket?: string;
  port?: number;
  info: { pinDir: string; netns?: string; nodeIp?: string };
  /** Called after a local endpoint was added or removed (status, health registration). */
  onChange?: (ep: LocalEndpointRecord, op: 'put' | 'delete') => void;
}

export interface AgentApi {
  server: Server;
  /** `unix:<path>` or `http://127.0.0.1:<port>`. */
  address: string;
  close(): Promise<void>;
}

async function body(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > 64 * 1024) throw new Error('request body too large');
    chunks.push(c as Buffer);
  }
  return JSON.parse(Buffer.concat(chunks).toString('utf8'));
}

export async function startAgentApi(options: AgentApiOptions): Promise<AgentApi> {
  const { core, store } = options;
  const server = createServer((req, res) => {
    const reply = (code: number, value: unknown) => {
      res.writeHead(code, { 'content-type': 'application/json' });
      res.end(JSON.stringify(value));
    };
    void (async () => {
      try {
        const path = (req.url ?? '/').split('?')[0] ?? '/';
        if (path === '/v1/node' && req.method === 'GET') {
          const n = core.node(core.nodeName);
          return reply(200, { name: core.nodeName, ip: n?.ip ?? options.info.nodeIp, podCIDRs: n?.cidrs ?? [], pinDir: options.info.pinDir, netns: options.info.netns, synced: core.isSynced });
        }
        if (path === '/v1/endpoints' && req.method === 'GET') return reply(200, store.all());
        const m = /^\/v1\/endpoints\/([^/]+)$/.exec(path);
        if (!m) return reply(404, { error: `no route ${req.method} ${path}` });
        const id = decodeURIComponent(m[1]!);
        if (req.method === 'GET') {
          const ep = store.get(id);
          return ep ? reply(200, ep) : reply(404, { error: `no endpoint ${id}` });
        }
        if (req.method === 'DELETE') {
          const ep = store.delete(id);
          if (!ep) return reply(404, { error: `no endpoint ${id}` });
          core.removeLocal(id);
          await core.flush();
          options.onChange?.(ep, 'delete');
          return reply(200, { deleted: id });
        }
        if (req.method === 'PUT') {
          const parsed = localEndpointSchema.safeParse(await body(req));
          if (!parsed.success) {
            const issue = parsed.error.issues[0]!;
            return reply(400, { error: `bad endpoint: field ${issue.path.join('.') || '(record)'} ${issue.message}` });
          }
          if (parsed.data.id !== id) return reply(400, { error: `endpoint id ${parsed.data.id} does not match the path (${id})` });
          const clash = store.all().find((e) => e.ip === parsed.data.ip && e.id !== id);
          if (clash) return reply(409, { error: `IP ${parsed.data.ip} is already used by endpoint ${clash.id}` });
          store.put(parsed.data);
          core.upsertLocal(toCoreEndpoint(parsed.data));
          await core.flush();
          options.onChange?.(parsed.data, 'put');
          return reply(200, { programmed: core.isSynced });
        }
        return reply(405, { error: `method ${req.method} not allowed` });
      } catch (err) {
        return reply(500, { error: (err as Error).message });
      }
    })();
  });
  let address: string;
  if (options.socket) {
    if (existsSync(options.socket)) unlinkSync(options.socket); // a previous agent's socket
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.socket, () => resolve());
    });
    address = `unix:${options.socket}`;
  } else {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.port ?? 0, '127.0.0.1', () => resolve());
    });
    address = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }
  return {
    server,
    address,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
