/**
 * The agent's local API for the CNI plugin: HTTP on a unix socket (or loopback port). The plugin reports each pod's
 * veth here so that the endpoint is programmed at once; the agent persists it (LocalEndpointStore) before replying.
 *
 *   PUT    /v1/endpoints/<id>   LocalEndpointRecord → 200 {programmed}
 *   GET    /v1/endpoints/<id>   → 200 record | 404
 *   DELETE /v1/endpoints/<id>   → 200 | 404
 *   GET    /v1/endpoints        → records
 *   GET    /v1/node             → {name, ip?, podCIDRs, pinDir, netns?, mtu?} (mtu: of new pods' veths, mtu.ts)
 *
 * Who may call it: the socket is created 0600 (0660 with `allow.gids`, group-owned by the first), and every
 * connection's peer credentials (SO_PEERCRED) are checked: root, or a uid/gid in `allow`; anyone else is cut off
 * before a byte is read. The loopback port (tests, debugging) has no peer credentials: it is for trusted hosts only.
 *
 * What a registration must be: the IP inside this node's podCIDRs and not held by another endpoint or by a pod of
 * another node; the interface an existing veth in the node's namespace with the ifindex given; at most
 * `maxEndpoints` endpoints.
 */
import { execFile } from 'node:child_process';
import { chmodSync, chownSync, existsSync, lstatSync, unlinkSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { promisify } from 'node:util';
import { RepeatSuppressor, type Logger } from '@sluice/log';
import type { AgentCore } from './core.ts';
import { localEndpointSchema, toCoreEndpoint, type LocalEndpointRecord, type LocalEndpointStore } from './local-store.ts';
import { peerCredentials } from './peercred.ts';

const exec = promisify(execFile);
export const DEFAULT_MAX_ENDPOINTS = 1024;

export interface AgentApiOptions {
  core: AgentCore;
  store: LocalEndpointStore;
  /** Unix socket path; or `port` for loopback TCP. */
  socket?: string;
  port?: number;
  info: { pinDir: string; netns?: string; nodeIp?: string; podMtu?: () => Promise<{ pod: number }> };
  /** Callers allowed besides root (uid 0). */
  allow?: { uids?: number[]; gids?: number[] };
  /** Most local endpoints the node takes (default 1024). */
  maxEndpoints?: number;
  /** How long a registration waits for this node's podCIDR to be known before a 503 (default 10 s, below the plugin's 15 s). */
  nodeWaitMs?: number;
  /** Checks that `ifname` is a veth with `ifindex` in the node's namespace (default: `ip -d -j link show`). */
  checkInterface?: (ifname: string, ifindex: number) => Promise<string | undefined>;
  log?: Logger;
  /** Called after a local endpoint was added or removed (status, health registration). */
  onChange?: (ep: LocalEndpointRecord, op: 'put' | 'delete') => void;
}

export interface AgentApi {
  server: Server;
  /** `unix:<path>` or `http://127.0.0.1:<port>`. */
  address: string;
  close(): Promise<void>;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

async function body(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > 64 * 1024) throw new HttpError(413, 'request body too large');
    chunks.push(c as Buffer);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new HttpError(400, 'request body is not JSON');
  }
}

/** The default interface check: `ifname` exists in the node's namespace, is a veth, and has that ifindex. */
export function vethChecker(netns: string | undefined): (ifname: string, ifindex: number) => Promise<string | undefined> {
  return async (ifname, ifindex) => {
    let links: Array<{ ifname: string; ifindex: number; linkinfo?: { info_kind?: string } }>;
    try {
      const { stdout } = await exec('ip', [...(netns ? ['-n', netns] : []), '-d', '-j', 'link', 'show', 'dev', ifname], { timeout: 10_000 });
      links = JSON.parse(stdout || '[]') as typeof links;
    } catch {
      return `interface ${ifname} does not exist in ${netns ? `namespace ${netns}` : 'the node namespace'}`;
    }
    const link = links[0];
    if (!link) return `interface ${ifname} does not exist`;
    if (link.linkinfo?.info_kind !== 'veth') return `interface ${ifname} is not a veth (${link.linkinfo?.info_kind ?? 'no kind'})`;
    if (link.ifindex !== ifindex) return `interface ${ifname} has ifindex ${link.ifindex}, not ${ifindex}`;
    return undefined;
  };
}

export async function startAgentApi(options: AgentApiOptions): Promise<AgentApi> {
  const { core, store } = options;
  const log = options.log;
  const repeats = new RepeatSuppressor(60_000);
  const maxEndpoints = options.maxEndpoints ?? DEFAULT_MAX_ENDPOINTS;
  const nodeWaitMs = options.nodeWaitMs ?? 10_000;
  const checkInterface = options.checkInterface ?? vethChecker(options.info.netns);
  const allowedUids = new Set([0, ...(options.allow?.uids ?? [])]);
  const allowedGids = new Set(options.allow?.gids ?? []);

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
          // Without an MTU the plugin keeps the kernel's default: better than failing every ADD on a bad uplink read.
          const mtu = await options.info.podMtu?.().then((m) => m.pod, (err: unknown) => {
            log?.warn({ error: (err as Error).message }, 'local API: the pod MTU could not be derived');
            return undefined;
          });
          return reply(200, { name: core.nodeName, ip: n?.ip ?? options.info.nodeIp, podCIDRs: n?.validCidrs ?? [], pinDir: options.info.pinDir, netns: options.info.netns, synced: core.isSynced, ...(mtu ? { mtu } : {}) });
        }
        if (path === '/v1/endpoints' && req.method === 'GET') return reply(200, store.all());
        const m = /^\/v1\/endpoints\/([^/]+)$/.exec(path);
        if (!m) return reply(404, { error: `no route ${req.method} ${path}` });
        const id = decodeURIComponent(m[1]!);
        const refuse = (code: number, error: string) => {
          const suppressed = repeats.shouldLog(`refused:${id}`);
          if (suppressed !== undefined) log?.warn({ endpoint: id, status: code, error, suppressed }, 'local API: registration refused');
          return reply(code, { error });
        };
        if (req.method === 'GET') {
          const ep = store.get(id);
          return ep ? reply(200, ep) : reply(404, { error: `no endpoint ${id}` });
        }
        if (req.method === 'DELETE') {
          const ep = store.delete(id);
          if (!ep) return reply(404, { error: `no endpoint ${id}` });
          core.removeLocal(id);
          await store.saved();
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
          const ep = parsed.data;
          if (ep.id !== id) return reply(400, { error: `endpoint id ${ep.id} does not match the path (${id})` });
          const existing = store.get(id);
          if (!existing && store.size >= maxEndpoints) return refuse(429, `this node already has ${store.size} endpoints (at most ${maxEndpoints})`);
          const clash = store.all().find((e) => e.ip === ep.ip && e.id !== id);
          if (clash) return refuse(409, `IP ${ep.ip} is already used by endpoint ${clash.id}`);
          await core.whenOwnCidrKnown(nodeWaitMs);
          const ipProblem = core.checkLocalIp(ep.ip, id);
          if (ipProblem) return refuse(core.node(core.nodeName) ? 409 : 503, ipProblem);
          const ifProblem = await checkInterface(ep.hostIfname, ep.hostIfindex);
          if (ifProblem) return refuse(400, ifProblem);
          store.put(ep);
          core.upsertLocal(toCoreEndpoint(ep));
          await store.saved();
          await core.flush();
          options.onChange?.(ep, 'put');
          return reply(200, { programmed: core.isSynced });
        }
        return reply(405, { error: `method ${req.method} not allowed` });
      } catch (err) {
        return reply(err instanceof HttpError ? err.status : 500, { error: (err as Error).message });
      }
    })();
  });

  if (options.socket) {
    server.on('connection', (socket: Socket) => {
      const peer = peerCredentials(socket);
      if (peer && (allowedUids.has(peer.uid) || allowedGids.has(peer.gid))) return;
      const who = peer ? `uid ${peer.uid} gid ${peer.gid} pid ${peer.pid}` : 'unknown peer';
      const suppressed = repeats.shouldLog(`peer:${peer?.uid ?? '?'}`);
      if (suppressed !== undefined) log?.warn({ peer: who, suppressed }, 'local API: refused a caller that is not root or allowed');
      socket.destroy();
    });
  }

  let address: string;
  if (options.socket) {
    const path = options.socket;
    if (existsSync(path)) {
      if (!lstatSync(path).isSocket()) throw new Error(`${path} exists and is not a socket; refusing to replace it`);
      unlinkSync(path); // a previous agent's socket
    }
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      // bind() creates the socket file: with this umask it is never reachable by others, not even for an instant.
      const umask = process.umask(0o177);
      try {
        server.listen(path, () => resolve());
      } finally {
        process.umask(umask);
      }
    });
    const gid = options.allow?.gids?.[0];
    if (gid !== undefined) {
      chownSync(path, 0, gid);
      chmodSync(path, 0o660);
    } else chmodSync(path, 0o600);
    address = `unix:${path}`;
  } else {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.port ?? 0, '127.0.0.1', () => resolve());
    });
    address = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    log?.warn({ address }, 'local API on a loopback port: callers are not authenticated (use the unix socket on real nodes)');
  }
  return {
    server,
    address,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
