/**
 * The watch half of the operator's informers: client-node's `Watch` contract (ListWatch drives it, relists on 410,
 * reports every other error), with a cheaper event path. client-node decodes every event with readline and JSON.parse;
 * at 5,000 nodes almost every event is a status heartbeat of a 12 KB Node that changes nothing the datapath sees.
 * Here lines are split from the raw bytes, and an event that `UnchangedEventFilter` recognises is never decoded: it
 * reaches ListWatch as a BOOKMARK, which moves the informer's resourceVersion (so a reconnect resumes after it) and
 * touches nothing else. Decoded objects pass through `transform` first, so the informer caches only what the
 * operator reads.
 */
import { STATUS_CODES, request as httpRequest } from 'node:http';
import { request as httpsRequest, type RequestOptions } from 'node:https';
import { Watch, type KubeConfig } from '@kubernetes/client-node';
import { UnchangedEventFilter, type FingerprintedObject } from './unchanged-filter.ts';

export type WatchCallback = (phase: string, apiObj: unknown, watchObj?: unknown) => void | Promise<void>;

export interface FilteringWatchOptions {
  /** Called for each event skipped without decoding (it changed nothing a slim record sees). */
  onUnchanged?: () => void;
  /** Called for each line that is not a watch event (bad JSON or shape); the line is dropped. */
  onMalformed?: (reason: string) => void;
  /** Applied to every decoded object before the informer sees it. */
  transform?: (object: object) => void;
  /** A longer line than this ends the watch with an error instead of buffering without bound. */
  maxLineBytes?: number;
}

interface WatchEvent {
  type: string;
  object: FingerprintedObject & object;
}

function isWatchEvent(value: unknown): value is WatchEvent {
  if (typeof value !== 'object' || value === null) return false;
  const { type, object } = value as Record<string, unknown>;
  return typeof type === 'string' && typeof object === 'object' && object !== null;
}

/** An HTTP error as ListWatch and the mirror read it: the status code and, for a 429's Retry-After, the headers. */
export class WatchHttpError extends Error {
  constructor(
    readonly statusCode: number,
    readonly headers: Record<string, string | string[] | undefined>,
    message: string,
  ) {
    super(message);
  }
}

export class FilteringWatch extends Watch {
  readonly filter = new UnchangedEventFilter();

  constructor(
    config: KubeConfig,
    private readonly options: FilteringWatchOptions = {},
  ) {
    super(config);
  }

  override async watch(path: string, queryParams: Record<string, string | number | boolean | undefined>, callback: WatchCallback, done: (err: unknown) => void): Promise<AbortController> {
    const cluster = this.config.getCurrentCluster();
    if (!cluster) throw new Error('No currently active cluster');
    const url = new URL(cluster.server + path);
    url.searchParams.set('watch', 'true');
    for (const [key, value] of Object.entries(queryParams ?? {})) if (value !== undefined) url.searchParams.set(key, String(value));
    const requestOptions: RequestOptions = {};
    await this.config.applyToHTTPSOptions(requestOptions);

    const controller = new AbortController();
    let finished = false;
    const finish = (err: unknown) => {
      if (finished) return;
      finished = true;
      controller.abort();
      done(err);
    };
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
    const req = send(url, { ...requestOptions, method: 'GET', signal: controller.signal });
    req.on('response', (response) => {
      const status = response.statusCode ?? 0;
      if (status !== 200) {
        response.resume();
        finish(new WatchHttpError(status, response.headers, response.statusMessage || STATUS_CODES[status] || 'watch failed'));
        return;
      }
      response.socket.setKeepAlive(true, 30_000);
      const lines = new LineSplitter(this.options.maxLineBytes ?? 64 * 1024 * 1024, (line) => this.onLine(line, callback));
      response.on('data', (chunk: Buffer) => {
        if (!lines.push(chunk)) finish(new Error(`a watch event longer than ${lines.maxLineBytes} bytes`));
      });
      response.on('end', () => finish(null));
      response.on('close', () => finish(null));
      response.on('error', (err) => finish(controller.signal.aborted ? null : err));
    });
    // Aborting is how ListWatch stops a watch; the abort error is not a failure.
    req.on('error', (err) => finish(controller.signal.aborted ? null : err));
    req.end();
    return controller;
  }

  private onLine(line: Buffer, callback: WatchCallback): void {
    const verdict = this.filter.classify(line.toString('latin1'));
    if (verdict.unchanged) {
      this.options.onUnchanged?.();
      this.deliver(callback, 'BOOKMARK', { metadata: { resourceVersion: verdict.resourceVersion } });
      return;
    }
    let event: unknown;
    try {
      event = JSON.parse(line.toString('utf8'));
    } catch (err) {
      this.options.onMalformed?.(`not JSON: ${(err as Error).message}`);
      return;
    }
    if (!isWatchEvent(event)) {
      this.options.onMalformed?.('not a watch event (no type or object)');
      return;
    }
    const { type, object } = event;
    // The filter counts the volatile fields of the object as sent, before the transform drops any.
    if (type === 'ADDED' || type === 'MODIFIED') this.filter.remember(object, verdict.fingerprint);
    else if (type === 'DELETED') this.filter.forget(object);
    if (type === 'ADDED' || type === 'MODIFIED' || type === 'DELETED') this.options.transform?.(object);
    this.deliver(callback, type, object, event);
  }

  private deliver(callback: WatchCallback, type: string, object: unknown, event?: unknown): void {
    // ListWatch's handler is async: a failure would surface as an unhandled rejection; report it as a bad event.
    const rejected = (err: unknown) => this.options.onMalformed?.(`the informer rejected a ${type} event: ${(err as Error).message}`);
    try {
      const result = callback(type, object, event);
      if (result instanceof Promise) result.catch(rejected);
    } catch (err) {
      rejected(err);
    }
  }
}

/** Newline-delimited frames from a byte stream, without decoding the bytes. */
class LineSplitter {
  private parts: Buffer[] = [];
  private partBytes = 0;

  constructor(
    readonly maxLineBytes: number,
    private readonly onLine: (line: Buffer) => void,
  ) {}

  /** False when a line outgrew the limit. */
  push(chunk: Buffer): boolean {
    let start = 0;
    for (let newline = chunk.indexOf(10, start); newline >= 0; newline = chunk.indexOf(10, start)) {
      const piece = chunk.subarray(start, newline);
      const line = this.parts.length ? Buffer.concat([...this.parts, piece]) : piece;
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
}
