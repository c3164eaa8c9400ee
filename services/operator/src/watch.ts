/**
 * The operator's HTTP to the API server, for lists and watches, without client-node's typed deserialisation: a list
 * page is one JSON.parse of its body, a watch is split into lines from the raw bytes and each line parsed once. At
 * 5,000 nodes almost every watch event is a status heartbeat of a 12 KB Node that changes nothing the datapath sees;
 * with an `UnchangedEventFilter`, such an event is recognised from its text and never decoded at all (it only moves
 * the watch's resourceVersion). TLS, client certificates and bearer tokens come from the KubeConfig
 * (`applyToHTTPSOptions`), as for client-node's own requests.
 */
import { STATUS_CODES, request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { request as httpsRequest, type RequestOptions } from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';
import type { WatchDecoder } from './json-walk.ts';
import { UnchangedEventFilter, type FingerprintedObject } from './unchanged-filter.ts';

/** An object as the API server sends it: only what the operator reads is typed, the rest is unknown. */
export type KubeObject = FingerprintedObject & { metadata?: { name?: unknown; namespace?: unknown; resourceVersion?: unknown } } & object;

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';

/** An answer other than 200, as the mirror reads it: the status code and, for a 429's Retry-After, the headers. */
export class KubeHttpError extends Error {
  constructor(
    readonly statusCode: number,
    readonly headers: IncomingHttpHeaders,
    message: string,
  ) {
    super(message);
    this.name = 'KubeHttpError';
  }
}

export interface ListPage {
  items: KubeObject[];
  /** The answer's size. */
  bytes: number;
  resourceVersion: string;
  continueToken: string | undefined;
}

type Query = Record<string, string | number | boolean | undefined>;

async function requestOptions(config: KubeConfig, path: string, query: Query): Promise<{ url: URL; options: RequestOptions }> {
  const cluster = config.getCurrentCluster();
  if (!cluster) throw new Error('no current cluster in the kubeconfig');
  const url = new URL(cluster.server.replace(/\/$/, '') + path);
  for (const [key, value] of Object.entries(query)) if (value !== undefined) url.searchParams.set(key, String(value));
  const options: RequestOptions = { headers: {} };
  await config.applyToHTTPSOptions(options);
  options.headers = { ...options.headers, accept: 'application/json' };
  return { url, options };
}

const isObject = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value);

/** One page of a list (limit/continue), parsed once; a shape that is not a list is an error naming what is wrong. */
export async function listPage(config: KubeConfig, path: string, query: Query, signal: AbortSignal): Promise<ListPage> {
  const { url, options } = await requestOptions(config, path, query);
  const body = await new Promise<Buffer>((resolve, reject) => {
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
    const req = send(url, { ...options, method: 'GET', signal }, (response) => {
      const status = response.statusCode ?? 0;
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('error', reject);
      response.on('end', () => {
        if (status === 200) resolve(Buffer.concat(chunks));
        else reject(new KubeHttpError(status, response.headers, `list ${path}: ${status} ${statusMessage(Buffer.concat(chunks)) ?? (response.statusMessage || STATUS_CODES[status])}`));
      });
    });
    req.on('error', reject);
    req.end();
  });
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch (err) {
    throw new Error(`list ${path}: the answer is not JSON: ${(err as Error).message}`);
  }
  if (!isObject(parsed) || !Array.isArray(parsed.items)) throw new Error(`list ${path}: the answer has no items list`);
  const metadata = isObject(parsed.metadata) ? parsed.metadata : {};
  return {
    items: parsed.items.filter(isObject) as KubeObject[],
    bytes: body.length,
    resourceVersion: typeof metadata.resourceVersion === 'string' ? metadata.resourceVersion : '',
    continueToken: typeof metadata.continue === 'string' && metadata.continue ? metadata.continue : undefined,
  };
}

/** A Status body's message, when the answer is one. */
function statusMessage(body: Buffer): string | undefined {
  try {
    const status = JSON.parse(body.toString('utf8')) as { message?: unknown };
    return typeof status.message === 'string' ? status.message : undefined;
  } catch {
    return undefined;
  }
}

export interface WatchHandlers {
  /**
   * A decoded event. For BOOKMARK (sent, or an unchanged event skipped) only metadata.resourceVersion is there.
   * `record` is set when a selective decoder already made the slim record (or found why it cannot be made).
   */
  onEvent(type: WatchEventType, object: KubeObject, record?: { value: string } | { error: unknown }): void;
  /** Called for each event skipped without decoding (it changed nothing a slim record sees). */
  onUnchanged?(): void;
  /** Called for each line that is not a watch event (bad JSON or shape); the line is dropped. */
  onMalformed?(reason: string): void;
}

export interface WatchOptions {
  /** Recognises unchanged events from their text; only worth it for kinds that heartbeat (Nodes). */
  filter?: UnchangedEventFilter;
  /** A longer line than this ends the watch with an error instead of buffering without bound. */
  maxLineBytes?: number;
  /** Decodes events selectively (EndpointSlices); a line it does not take is decoded as usual. */
  decoder?: WatchDecoder;
}

const WATCH_TYPES = new Set<string>(['ADDED', 'MODIFIED', 'DELETED', 'BOOKMARK', 'ERROR']);

/**
 * Runs one watch request until it ends: resolves when the server closes it (or `signal` aborts it), rejects with a
 * KubeHttpError for an answer other than 200 and with the socket's error otherwise.
 */
export async function watchOnce(config: KubeConfig, path: string, query: Query, handlers: WatchHandlers, signal: AbortSignal, options: WatchOptions = {}): Promise<void> {
  const { url, options: request } = await requestOptions(config, path, { ...query, watch: true });
  signal.throwIfAborted();
  const maxLineBytes = options.maxLineBytes ?? 64 * 1024 * 1024;
  await new Promise<void>((resolve, reject) => {
    let finished = false;
    const finish = (err: unknown) => {
      if (finished) return;
      finished = true;
      if (err && !signal.aborted) reject(err);
      else resolve();
    };
    const controller = new AbortController();
    const onAbort = () => controller.abort();
    signal.addEventListener('abort', onAbort, { once: true });
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
    const req = send(url, { ...request, method: 'GET', signal: controller.signal });
    const end = (err: unknown) => {
      signal.removeEventListener('abort', onAbort);
      controller.abort();
      finish(err);
    };
    req.on('response', (response) => {
      const status = response.statusCode ?? 0;
      if (status !== 200) {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () => end(new KubeHttpError(status, response.headers, `watch ${path}: ${status} ${statusMessage(Buffer.concat(chunks)) ?? (response.statusMessage || STATUS_CODES[status])}`)));
        response.on('error', end);
        return;
      }
      response.socket.setKeepAlive(true, 30_000);
      const lines = new LineSplitter(maxLineBytes, (line) => onLine(line, handlers, options));
      response.on('data', (chunk: Buffer) => {
        if (!lines.push(chunk)) end(new Error(`a watch event longer than ${maxLineBytes} bytes`));
      });
      response.on('end', () => end(null));
      response.on('close', () => end(null));
      response.on('error', end);
    });
    // Aborting is how a watch is stopped; the abort error is not a failure.
    req.on('error', (err) => end(controller.signal.aborted ? null : err));
    req.end();
  });
}

function onLine(line: Buffer, handlers: WatchHandlers, { filter, decoder }: WatchOptions): void {
  const decoded = decoder?.decode(line);
  if (decoded) {
    handlers.onEvent(decoded.type, decoded.object, decoded.record);
    return;
  }
  const verdict = filter?.classify(line.toString('latin1'));
  if (verdict?.unchanged) {
    handlers.onUnchanged?.();
    handlers.onEvent('BOOKMARK', { metadata: { resourceVersion: verdict.resourceVersion } });
    return;
  }
  let event: unknown;
  try {
    event = JSON.parse(line.toString('utf8'));
  } catch (err) {
    handlers.onMalformed?.(`not JSON: ${(err as Error).message}`);
    return;
  }
  if (!isObject(event) || typeof event.type !== 'string' || !WATCH_TYPES.has(event.type) || !isObject(event.object)) {
    handlers.onMalformed?.('not a watch event (no known type or no object)');
    return;
  }
  const type = event.type as WatchEventType;
  const object = event.object as KubeObject;
  if (filter) {
    // The filter counts the volatile fields of the object as sent.
    if (type === 'ADDED' || type === 'MODIFIED') filter.remember(object, verdict?.fingerprint);
    else if (type === 'DELETED') filter.forget(object);
  }
  handlers.onEvent(type, object);
}

/**
 * Newline-delimited frames from a byte stream, without decoding the bytes. A line is handed over as a view that is
 * valid only during the call: one that spans chunks is joined in memory the splitter reuses (an EndpointSlice event
 * is ~20 KB, so a fresh Buffer for each one was garbage V8 reclaims only by full collections), so a handler that keeps
 * bytes copies them.
 */
export class LineSplitter {
  private parts: Buffer[] = [];
  private partBytes = 0;
  private scratch = Buffer.alloc(0);

  constructor(
    readonly maxLineBytes: number,
    private readonly onLine: (line: Buffer) => void,
  ) {}

  /** False when a line outgrew the limit. */
  push(chunk: Buffer): boolean {
    let start = 0;
    for (let newline = chunk.indexOf(10, start); newline >= 0; newline = chunk.indexOf(10, start)) {
      const piece = chunk.subarray(start, newline);
      const line = this.parts.length ? this.join(piece) : piece;
      this.parts = [];
      this.partBytes = 0;
      start = newline + 1;
      if (line.length > 0) this.onLine(line);
    }
    if (start < chunk.length) {
      this.parts.push(chunk.subarray(start));
      this.partBytes += chunk.length - start;
    }
    return this.partBytes <= this.maxLineBytes;
  }

  private join(last: Buffer): Buffer {
    const length = this.partBytes + last.length;
    // Grown to the longest line seen (with room), and given back when a line of over 1 MiB made it large.
    if (this.scratch.length < length || (this.scratch.length > 1024 * 1024 && length < this.scratch.length / 4)) {
      this.scratch = Buffer.allocUnsafeSlow(length + (length >>> 2));
    }
    let at = 0;
    for (const part of this.parts) at += part.copy(this.scratch, at);
    last.copy(this.scratch, at);
    return this.scratch.subarray(0, length);
  }
}
