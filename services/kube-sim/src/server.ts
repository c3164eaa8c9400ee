/**
 * The Kubernetes REST API over HTTP: discovery, the resource verbs, chunked watch streams and Status errors. A bad
 * request is a Status answer; nothing a client sends can throw past the handler.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Logger } from '@sluice/log';
import type { Authorizer, TokenEntry } from './auth.ts';
import { Faults, type Verb } from './faults.ts';
import { patchTypeOf } from './patch.ts';
import { apiVersionOf, keyOfResource, type KubeObject, type ResourceType } from './resources.ts';
import { ApiError, badRequest, notFound } from './status.ts';
import { timestamp, type FieldValidation, type Store, type StoredObject } from './store.ts';
import { tableFor, wantsTable } from './table.ts';

const MAX_BODY = 3 * 1024 * 1024;
const COMMA = Buffer.from(',');
const LIST_TAIL = Buffer.from(']}');

const includeOf = (req: IncomingMessage) => new URL(req.url ?? '/', 'http://kube-sim').searchParams.get('includeObject') ?? 'PartialObjectMetadata';

export interface ServerStats {
  requests: Record<string, number>;
  bytesWritten: number;
}

export interface ApiServerOptions {
  store: Store;
  faults: Faults;
  log?: Logger;
  /** How often watchers that asked for bookmarks get one. */
  bookmarkIntervalMs?: number;
  /** Extra GET routes answered with JSON (kube-sim's own /kube-sim/stats). */
  routes?: Record<string, () => unknown>;
  /** Serve HTTPS with this certificate instead of HTTP. */
  tls?: { certPem: string; keyPem: string };
  /** Require a bearer token on everything but the health endpoints; its rules decide what it may do. */
  auth?: Authorizer;
}

interface Route {
  resource: ResourceType;
  namespace: string;
  name?: string;
  subresource?: string;
  watchPath: boolean;
}

function send(res: ServerResponse, stats: ServerStats, code: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
  const bytes = Buffer.byteLength(text);
  stats.bytesWritten += bytes;
  res.writeHead(code, { 'Content-Type': 'application/json', 'Content-Length': String(bytes), ...headers });
  res.end(text);
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY) throw new ApiError(413, 'RequestEntityTooLarge', 'Request entity too large: limit is 3145728');
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function parseJson(text: string): unknown {
  if (!text.trim()) throw badRequest('the request body is empty');
  try {
    return JSON.parse(text);
  } catch (err) {
    throw badRequest(`the request body is not valid JSON: ${(err as Error).message}`);
  }
}

function asObject(value: unknown): KubeObject {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw badRequest('the request body must be a JSON object');
  const obj = value as KubeObject;
  if (obj.metadata !== undefined && (typeof obj.metadata !== 'object' || obj.metadata === null || Array.isArray(obj.metadata))) {
    throw badRequest('metadata must be an object');
  }
  return obj;
}

const VERBS = ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'];

const servedVersions = (r: ResourceType) => r.versions ?? [r.version];

function resourceList(all: ResourceType[], group: string, version: string) {
  const resources = all.filter((r) => r.group === group && servedVersions(r).includes(version)).flatMap((r) => [
    {
      name: r.plural, singularName: r.singular, namespaced: r.namespaced, kind: r.kind, verbs: VERBS,
      ...(r.shortNames.length ? { shortNames: r.shortNames } : {}), ...(r.categories ? { categories: r.categories } : {}),
    },
    ...r.subresources.map((s) => s === 'binding'
      ? { name: `${r.plural}/binding`, singularName: '', namespaced: r.namespaced, kind: 'Binding', verbs: ['create'] }
      : { name: `${r.plural}/${s}`, singularName: '', namespaced: r.namespaced, kind: r.kind, verbs: ['get', 'patch', 'update'] }),
  ]);
  return { kind: 'APIResourceList', apiVersion: 'v1', groupVersion: group ? `${group}/${version}` : version, resources };
}

function groups(all: ResourceType[]) {
  const names = [...new Set(all.map((r) => r.group).filter((g) => g !== ''))];
  return names.map((name) => {
    const inGroup = all.filter((r) => r.group === name);
    const versions = [...new Set(inGroup.flatMap(servedVersions))].map((v) => ({ groupVersion: `${name}/${v}`, version: v }));
    const preferred = inGroup[0]!.version;
    return { name, versions, preferredVersion: versions.find((v) => v.version === preferred) ?? versions[0]! };
  });
}

/**
 * Just enough OpenAPI v3 for kubectl: each kind's PATCH operation declares the fieldValidation parameter, so kubectl
 * create/apply validate on the server (which accepts what it can store) instead of needing full schemas; without a
 * schema for a kind, kubectl apply computes strategic merge patches from its compiled-in types.
 */
function openapiRoot(all: ResourceType[], generation: number) {
  const paths: Record<string, { serverRelativeURL: string }> = {};
  for (const gv of new Set(all.flatMap((r) => servedVersions(r).map((v) => (r.group ? `apis/${r.group}/${v}` : `api/${v}`))))) {
    paths[gv] = { serverRelativeURL: `/openapi/v3/${gv}?hash=kube-sim-${generation}` };
  }
  return { paths };
}

function openapiGroupVersion(all: ResourceType[], rest: string[]): unknown {
  const [kind, g, v] = rest[0] === 'api' ? ['api', '', rest[1]] : [rest[0], rest[1], rest[2]];
  const resources = all.filter((r) => r.group === g && servedVersions(r).includes(v ?? '') && (kind === 'api') === (g === ''));
  if (resources.length === 0) return null;
  const paths: Record<string, unknown> = {};
  for (const r of resources) {
    const prefix = r.group ? `/apis/${r.group}/${v}` : `/api/${v}`;
    const path = r.namespaced ? `${prefix}/namespaces/{namespace}/${r.plural}/{name}` : `${prefix}/${r.plural}/{name}`;
    paths[path] = {
      patch: {
        operationId: `patch${r.kind}`,
        'x-kubernetes-action': 'patch',
        'x-kubernetes-group-version-kind': { group: r.group, version: v, kind: r.kind },
        parameters: [
          { name: 'fieldValidation', in: 'query', schema: { type: 'string', uniqueItems: true } },
          { name: 'dryRun', in: 'query', schema: { type: 'string', uniqueItems: true } },
          { name: 'fieldManager', in: 'query', schema: { type: 'string', uniqueItems: true } },
        ],
        responses: { '200': { description: 'OK' } },
      },
    };
  }
  return { openapi: '3.0.0', info: { title: 'Kubernetes', version: 'v1.31.4' }, paths, components: { schemas: {} } };
}

export class ApiServer {
  readonly server: Server;
  readonly stats: ServerStats = { requests: {}, bytesWritten: 0 };
  private readonly bookmarkTimer: NodeJS.Timeout;
  private readonly openWatches = new Set<ServerResponse>();

  constructor(private readonly options: ApiServerOptions) {
    const handler = (req: IncomingMessage, res: ServerResponse) => {
      this.handle(req, res).catch((err: unknown) => this.fail(res, 'get', err));
    };
    this.server = options.tls ? createHttpsServer({ cert: options.tls.certPem, key: options.tls.keyPem }, handler) : createServer(handler);
    this.server.keepAliveTimeout = 65_000;
    this.bookmarkTimer = setInterval(() => options.store.sendBookmarks(), options.bookmarkIntervalMs ?? 10_000);
    this.bookmarkTimer.unref();
  }

  private count(verb: Verb | 'other', code: number): void {
    const key = `${verb} ${code}`;
    this.stats.requests[key] = (this.stats.requests[key] ?? 0) + 1;
  }

  private fail(res: ServerResponse, verb: Verb | 'other', err: unknown): void {
    const apiError = err instanceof ApiError ? err : new ApiError(500, 'InternalError', `Internal error occurred: ${(err as Error)?.message ?? String(err)}`);
    if (!(err instanceof ApiError)) this.options.log?.error({ err }, 'unexpected error');
    this.count(verb, apiError.code);
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const headers: Record<string, string> = {};
    if (apiError.details?.retryAfterSeconds !== undefined) headers['Retry-After'] = String(apiError.details.retryAfterSeconds);
    // The rest of an oversized body is still on the wire: this connection cannot carry another request.
    if (apiError.code === 413) headers.Connection = 'close';
    send(res, this.stats, apiError.code, apiError.toStatus(), headers);
  }

  private ok(res: ServerResponse, verb: Verb, code: number, body: unknown): void {
    this.count(verb, code);
    send(res, this.stats, code, body);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://kube-sim');
    const parts = url.pathname.split('/').filter(Boolean);
    const method = req.method ?? 'GET';
    const q = url.searchParams;

    if (parts.length === 1 && ['healthz', 'livez', 'readyz'].includes(parts[0]!)) {
      this.count('discovery', 200);
      res.writeHead(200, { 'Content-Type': 'text/plain' }).end('ok');
      return;
    }
    let user: TokenEntry | undefined;
    if (this.options.auth) {
      try {
        user = this.options.auth.authenticate(req.headers.authorization);
      } catch (err) {
        return this.fail(res, 'other', err);
      }
    }
    const extra = this.options.routes?.[url.pathname];
    if (extra && method === 'GET') {
      this.count('discovery', 200);
      send(res, this.stats, 200, extra());
      return;
    }
    const discovery = this.discovery(parts);
    if (discovery !== undefined) {
      const fault = this.options.faults.check('discovery', undefined);
      if (fault) return this.fail(res, 'discovery', fault);
      if (method !== 'GET') return this.fail(res, 'discovery', new ApiError(405, 'MethodNotAllowed', `the server does not allow this method on the requested resource`));
      if (discovery === null) return this.fail(res, 'discovery', new ApiError(404, 'NotFound', 'the server could not find the requested resource'));
      return this.ok(res, 'discovery', 200, discovery);
    }

    const route = this.route(parts);
    if (!route) return this.fail(res, 'other', new ApiError(404, 'NotFound', 'the server could not find the requested resource'));
    const { resource: r } = route;
    const isWatch = route.watchPath || q.get('watch') === 'true' || q.get('watch') === '1';
    const verb: Verb =
      method === 'GET' ? (isWatch ? 'watch' : route.name ? 'get' : 'list')
      : method === 'POST' ? 'create'
      : method === 'PUT' ? 'update'
      : method === 'PATCH' ? 'patch'
      : method === 'DELETE' ? (route.name ? 'delete' : 'deletecollection')
      : 'get';
    try {
      if (user) {
        this.options.auth!.authorize(user, {
          verb, group: r.group, resource: r.plural, namespace: route.namespace, ...(route.subresource ? { subresource: route.subresource } : {}),
          ...(route.name ? { name: route.name } : {}),
        });
      }
      const fault = this.options.faults.check(verb, r.plural);
      if (fault) throw fault;
      if (route.subresource && !r.subresources.includes(route.subresource)) {
        throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
      }
      const dryRun = q.getAll('dryRun').includes('All');
      const fieldValidation = (q.get('fieldValidation') ?? undefined) as FieldValidation | undefined;
      const key = keyOfResource(r);
      const store = this.options.store;
      switch (method) {
        case 'GET':
          if (isWatch) return this.watch(req, res, route, q);
          if (route.name) {
            const obj = store.get(key, route.namespace, route.name);
            if (!obj) throw notFound(r.plural, route.name, r.group);
            return this.sendObject(req, res, verb, 200, r, obj);
          }
          return await this.list(req, res, route, q);
        case 'POST': {
          const body = asObject(parseJson(await readBody(req)));
          if (route.subresource === 'binding' && route.name) return this.bind(res, route, body);
          if (route.name) throw new ApiError(405, 'MethodNotAllowed', 'POST is not allowed on a named resource');
          if (r.namespaced && !route.namespace) throw badRequest(`the server could not find the requested resource: POST needs a namespace for ${r.plural}`);
          const meta = body.metadata ?? {};
          if (r.namespaced && meta.namespace !== undefined && meta.namespace !== route.namespace) {
            throw badRequest('the namespace of the provided object does not match the namespace sent on the request');
          }
          if (r.namespaced) body.metadata = { ...meta, namespace: route.namespace };
          const created = store.create(key, body, { dryRun, fieldValidation });
          return this.sendObject(req, res, verb, 201, r, created);
        }
        case 'PUT': {
          if (!route.name) throw new ApiError(405, 'MethodNotAllowed', 'PUT needs a named resource');
          const body = asObject(parseJson(await readBody(req)));
          const updated = store.update(key, route.namespace, route.name, body, {
            dryRun, fieldValidation, ...(route.subresource === 'status' ? { subresource: 'status' as const } : {}),
          });
          return this.sendObject(req, res, verb, 200, r, updated);
        }
        case 'PATCH': {
          if (!route.name) throw new ApiError(405, 'MethodNotAllowed', 'PATCH needs a named resource');
          const contentType = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
          const sub = route.subresource === 'status' ? { subresource: 'status' as const } : {};
          if (contentType === 'application/apply-patch+yaml') {
            // kubectl apply --server-side sends JSON (which is YAML); a YAML-only body is refused rather than half-read.
            const config = asObject(parseJson(await readBody(req)));
            const applied = store.apply(key, route.namespace, route.name, config, { dryRun, fieldValidation, ...sub });
            return this.sendObject(req, res, verb, applied.created ? 201 : 200, r, applied.object);
          }
          const type = patchTypeOf(contentType);
          if (!type) {
            throw new ApiError(415, 'UnsupportedMediaType', `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json`);
          }
          const patch = parseJson(await readBody(req));
          const updated = store.patch(key, route.namespace, route.name, type, patch, { dryRun, fieldValidation, ...sub });
          return this.sendObject(req, res, verb, 200, r, updated);
        }
        case 'DELETE': {
          const text = await readBody(req);
          const options = text.trim() ? asObject(parseJson(text)) : {};
          const pre = (options as { preconditions?: { uid?: string; resourceVersion?: string } }).preconditions ?? {};
          const deleteDryRun = dryRun || ((options as { dryRun?: string[] }).dryRun ?? []).includes('All');
          const requestedGrace = gracePeriodOf(q, options);
          if (route.name) {
            const current = store.get(key, route.namespace, route.name);
            const grace = current ? gracePeriodFor(r, current, requestedGrace) : 0;
            const deleted = store.delete(key, route.namespace, route.name, { ...pre, dryRun: deleteDryRun, gracePeriodSeconds: grace });
            return this.sendObject(req, res, verb, 200, r, deleted);
          }
          const victims = store.list(key, {
            namespace: route.namespace, labelSelector: q.get('labelSelector') ?? undefined, fieldSelector: q.get('fieldSelector') ?? undefined,
          });
          const deleted = victims.items.map((o) => store.delete(key, o.namespace, o.name, { dryRun: deleteDryRun, gracePeriodSeconds: gracePeriodFor(r, o, requestedGrace) }));
          this.count(verb, 200);
          return this.writeList(res, r, this.options.store.resourceVersion, deleted, {});
        }
        default:
          throw new ApiError(405, 'MethodNotAllowed', `method ${method} is not allowed`);
      }
    } catch (err) {
      this.fail(res, verb, err);
    }
  }

  private sendObject(req: IncomingMessage, res: ServerResponse, verb: Verb, code: number, r: ResourceType, obj: StoredObject): void {
    if (wantsTable(req.headers.accept)) return this.ok(res, verb, code, tableFor(r, [obj], String(obj.rv), undefined, includeOf(req)));
    this.count(verb, code);
    send(res, this.stats, code, obj.bytes);
  }

  /** Answers discovery paths (null: a discovery path that does not exist; undefined: not a discovery path). */
  private discovery(parts: string[]): unknown {
    const [a, b, c, d] = parts;
    if (a === 'version' && parts.length === 1) {
      return {
        major: '1', minor: '31', gitVersion: 'v1.31.4-kube-sim', gitCommit: '0000000000000000000000000000000000000000', gitTreeState: 'clean',
        buildDate: '2026-01-01T00:00:00Z', goVersion: 'go1.22.10', compiler: 'gc', platform: 'linux/amd64',
      };
    }
    if (a === 'api' && parts.length === 1) return { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: '127.0.0.1' }] };
    const all = this.options.store.resources();
    if (a === 'api' && b === 'v1' && parts.length === 2) return resourceList(all, '', 'v1');
    if (a === 'apis' && parts.length === 1) return { kind: 'APIGroupList', apiVersion: 'v1', groups: groups(all) };
    if (a === 'apis' && parts.length === 2) {
      const group = groups(all).find((g) => g.name === b);
      return group ? { kind: 'APIGroup', apiVersion: 'v1', ...group } : null;
    }
    if (a === 'apis' && parts.length === 3) return all.some((r) => r.group === b && servedVersions(r).includes(c!)) ? resourceList(all, b!, c!) : null;
    if (a === 'openapi' && b === 'v3') return parts.length === 2 ? openapiRoot(all, this.options.store.typeGeneration) : openapiGroupVersion(all, parts.slice(2));
    if (a === 'openapi') return null;
    void d;
    return undefined;
  }

  private route(parts: string[]): Route | undefined {
    let group: string;
    let version: string;
    let rest: string[];
    if (parts[0] === 'api' && parts[1]) [group, version, rest] = ['', parts[1], parts.slice(2)];
    else if (parts[0] === 'apis' && parts[1] && parts[2]) [group, version, rest] = [parts[1], parts[2], parts.slice(3)];
    else return undefined;
    let watchPath = false;
    if (rest[0] === 'watch') {
      watchPath = true;
      rest = rest.slice(1);
    }
    const findResource = (g: string, v: string, plural: string) => this.options.store.findResource(g, v, plural);
    if (rest[0] === 'namespaces' && rest.length >= 3) {
      const resource = findResource(group, version, rest[2]!);
      if (resource?.namespaced && rest.length <= 5) return { resource, namespace: rest[1]!, name: rest[3], subresource: rest[4], watchPath };
      if (group === '' && rest.length === 3) {
        const ns = findResource('', version, 'namespaces');
        if (ns) return { resource: ns, namespace: '', name: rest[1], subresource: rest[2], watchPath };
      }
      return undefined;
    }
    const resource = rest[0] ? findResource(group, version, rest[0]) : undefined;
    if (!resource || rest.length > 3) return undefined;
    return { resource, namespace: '', name: rest[1], subresource: rest[2], watchPath };
  }

  private async list(req: IncomingMessage, res: ServerResponse, route: Route, q: URLSearchParams): Promise<void> {
    const limitText = q.get('limit');
    const limit = limitText ? Number(limitText) : undefined;
    if (limit !== undefined && (!Number.isInteger(limit) || limit < 0)) throw badRequest(`invalid limit: ${limitText}`);
    const result = this.options.store.list(keyOfResource(route.resource), {
      namespace: route.namespace, labelSelector: q.get('labelSelector') ?? undefined, fieldSelector: q.get('fieldSelector') ?? undefined,
      limit, continue: q.get('continue') ?? undefined, resourceVersion: q.get('resourceVersion') ?? undefined,
      resourceVersionMatch: q.get('resourceVersionMatch') ?? undefined,
    });
    if (wantsTable(req.headers.accept)) {
      return this.ok(res, 'list', 200, tableFor(route.resource, result.items, String(result.rv), result.continue, includeOf(req)));
    }
    this.count('list', 200);
    await this.writeList(res, route.resource, result.rv, result.items, { continue: result.continue, remainingItemCount: result.remainingItemCount });
  }

  /** Streams a list, respecting the socket's backpressure (100,000 pods are hundreds of MB). */
  private async writeList(res: ServerResponse, r: ResourceType, rv: number, items: StoredObject[], meta: { continue?: string; remainingItemCount?: number }): Promise<void> {
    res.writeHead(200, { 'Content-Type': 'application/json' });
    const metadata: Record<string, unknown> = { resourceVersion: String(rv) };
    if (meta.continue) metadata.continue = meta.continue;
    if (meta.remainingItemCount !== undefined) metadata.remainingItemCount = meta.remainingItemCount;
    // The stored bytes go out as they are, about 1 MB to a write: no string of the whole list (or of a chunk) is made.
    let parts: Buffer[] = [Buffer.from(`{"kind":"${r.custom?.listKind ?? `${r.kind}List`}","apiVersion":"${apiVersionOf(r)}","metadata":${JSON.stringify(metadata)},"items":[`)];
    let size = parts[0]!.length;
    for (let i = 0; i < items.length; i++) {
      if (i) {
        parts.push(COMMA);
        size++;
      }
      const bytes = items[i]!.bytes;
      parts.push(bytes);
      size += bytes.length;
      if (size > 1 << 20) {
        this.stats.bytesWritten += size;
        const more = res.write(Buffer.concat(parts, size));
        parts = [];
        size = 0;
        if (!more) {
          await new Promise<void>((resolve) => {
            const done = () => { res.off('drain', done); res.off('close', done); resolve(); };
            res.on('drain', done);
            res.on('close', done);
          });
          if (res.destroyed) return;
        }
      }
    }
    parts.push(LIST_TAIL);
    size += LIST_TAIL.length;
    this.stats.bytesWritten += size;
    res.end(Buffer.concat(parts, size));
  }

  private watch(req: IncomingMessage, res: ServerResponse, route: Route, q: URLSearchParams): void {
    const store = this.options.store;
    let fieldSelector = q.get('fieldSelector') ?? undefined;
    if (route.name) fieldSelector = [fieldSelector, `metadata.name=${route.name}`].filter(Boolean).join(',');
    const timeoutText = q.get('timeoutSeconds');
    const timeout = timeoutText ? Number(timeoutText) : undefined;
    if (timeout !== undefined && (!Number.isFinite(timeout) || timeout < 0)) throw badRequest(`invalid timeoutSeconds: ${timeoutText}`);
    let started = false;
    const start = () => {
      if (started) return;
      started = true;
      res.writeHead(200, { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked', 'Cache-Control': 'no-cache, private' });
      res.flushHeaders();
    };
    const stats = this.stats;
    // kubectl get -w asks for Table rows: translate this watcher's events (the shared bytes stay plain objects).
    const table = wantsTable(req.headers.accept);
    const include = includeOf(req);
    const toTable = (chunk: Buffer): Buffer => {
      const event = JSON.parse(chunk.toString('utf8')) as { type: string; object: KubeObject };
      if (event.type === 'BOOKMARK' || event.type === 'ERROR') return chunk;
      const t = tableFor(route.resource, [event.object], event.object.metadata?.resourceVersion ?? '', undefined, include);
      return Buffer.from(`${JSON.stringify({ type: event.type, object: t })}\n`);
    };
    const watcher = store.watch(keyOfResource(route.resource), {
      namespace: route.namespace, labelSelector: q.get('labelSelector') ?? undefined, fieldSelector,
      resourceVersion: q.get('resourceVersion') ?? undefined, allowWatchBookmarks: q.get('allowWatchBookmarks') === 'true',
      sendInitialEvents: q.get('sendInitialEvents') === 'true',
    }, {
      write(chunk) {
        if (res.destroyed || res.writableEnded) return;
        start();
        const out = table ? toTable(chunk) : chunk;
        stats.bytesWritten += out.length;
        res.write(out);
      },
      backlog: () => res.writableLength,
      end: () => {
        if (res.destroyed || res.writableEnded) return;
        start();
        res.end();
        // A client that stopped reading never drains the backlog: let it go after a grace period.
        setTimeout(() => res.destroy(), 30_000).unref();
      },
    });
    this.count('watch', 200);
    start();
    if (watcher.closed) return;
    this.openWatches.add(res);
    const timer = timeout ? setTimeout(() => watcher.close('timeoutSeconds elapsed'), timeout * 1000) : undefined;
    timer?.unref();
    const cleanup = () => {
      clearTimeout(timer);
      this.openWatches.delete(res);
      watcher.close('client went away');
    };
    req.on('close', cleanup);
    res.on('close', cleanup);
    res.on('error', cleanup);
  }

  private bind(res: ServerResponse, route: Route, body: KubeObject): void {
    const target = (body as { target?: { name?: string; kind?: string } }).target;
    if (!target?.name) throw new ApiError(422, 'Invalid', 'Binding.target.name: Required value');
    const store = this.options.store;
    const current = store.getParsed('pods', route.namespace, route.name!);
    if (!current) throw notFound('pods', route.name!);
    const nodeName = (current.spec as { nodeName?: string } | undefined)?.nodeName;
    if (nodeName) throw new ApiError(409, 'Conflict', `Operation cannot be fulfilled on pods/binding "${route.name}": pod ${route.name} is already assigned to node "${nodeName}"`);
    store.mutate('pods', route.namespace, route.name!, (obj) => {
      (obj.spec as Record<string, unknown>).nodeName = target.name;
      const status = ((obj.status as Record<string, unknown> | undefined) ??= {});
      const conditions = (status.conditions as { type: string }[] | undefined) ?? [];
      if (!conditions.some((c) => c.type === 'PodScheduled')) conditions.push({ type: 'PodScheduled', status: 'True', lastTransitionTime: timestamp(new Date()) } as { type: string });
      status.conditions = conditions;
    });
    this.ok(res, 'create', 201, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success', code: 201 });
  }

  listen(port: number, host: string): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        const address = this.server.address();
        resolve(typeof address === 'object' && address ? address.port : port);
      });
    });
  }

  async close(): Promise<void> {
    clearInterval(this.bookmarkTimer);
    this.options.store.stop();
    this.options.store.closeAllWatches('server shutting down');
    for (const res of this.openWatches) res.destroy();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** gracePeriodSeconds from the query (kubectl) or the DeleteOptions body (client libraries); the query wins. */
function gracePeriodOf(q: URLSearchParams, options: KubeObject): number | undefined {
  const text = q.get('gracePeriodSeconds');
  const raw = text !== null ? Number(text) : (options as { gracePeriodSeconds?: unknown }).gracePeriodSeconds;
  if (raw === undefined || raw === null) return undefined;
  if (typeof raw !== 'number' || !Number.isInteger(raw)) throw badRequest(`invalid gracePeriodSeconds: ${String(text ?? raw)}`);
  return Math.max(0, raw);
}

/**
 * The grace period the real server gives a delete: pods only (the requested one, else the pod's
 * terminationGracePeriodSeconds, else 30 s), and none for a pod that never ran on a node or has finished.
 */
function gracePeriodFor(r: ResourceType, current: StoredObject, requested: number | undefined): number {
  if (r.group !== '' || r.plural !== 'pods') return 0;
  const phase = current.fields['status.phase'];
  if (!current.fields['spec.nodeName'] || phase === 'Succeeded' || phase === 'Failed') return 0;
  if (requested !== undefined) return requested;
  const pod = JSON.parse(current.json) as { spec?: { terminationGracePeriodSeconds?: number } };
  return pod.spec?.terminationGracePeriodSeconds ?? 30;
}

export { Faults };
