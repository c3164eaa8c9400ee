/**
 * EndpointSlice watch events, decoded selectively. A slice holds up to 100 endpoints (~22 KB of JSON) and a pod
 * created or deleted changes one of them, yet decoding the event with JSON.parse, slimming, encoding and validating
 * it costs the whole slice every time: most of the operator's CPU under pod churn. Here the endpoints array is split
 * into each endpoint's bytes without reading them: the API server writes an endpoint's fields in struct order, so
 * each element starts with `{"addresses":`, which cannot occur inside a JSON string (its quotes would be escaped) nor
 * as the key of anything nested in an endpoint. An endpoint whose bytes the slice had at its previous event reuses
 * the canonical, validated encoding made then; only new endpoints are parsed (which also proves the split: each piece
 * is a complete JSON object, now or when it was first seen), slimmed and validated. The slice's few other fields
 * (metadata, addressType, ports) are parsed as usual.
 *
 * The result is byte for byte what `JSON.stringify(buildSlimEndpointSlice(JSON.parse(...)))` gives (a test checks
 * it); anything the walk does not recognise (an unexpected shape) is left to the ordinary decoding.
 */
import type { V1Endpoint, V1EndpointSlice } from '@kubernetes/client-node';
import {
  buildSlimEndpoint,
  buildSlimEndpointSlice,
  endpointSortKey,
  joinSlimEndpointSlice,
  validateSlim,
  validateSlimEndpoint,
  type SlimEndpointSlice,
} from '@sluice/slim';
import type { KubeObject, WatchEventType } from './watch.ts';

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const LBRACE = 0x7b;
const RBRACE = 0x7d;
const LBRACKET = 0x5b;
const RBRACKET = 0x5d;
const COMMA = 0x2c;
const COLON = 0x3a;

function isSpace(c: number | undefined): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
}

function bySortKey(a: Endpoint, b: Endpoint): number {
  return a.sortKey < b.sortKey ? -1 : a.sortKey > b.sortKey ? 1 : 0;
}

function skipSpace(b: Buffer, i: number): number {
  while (isSpace(b[i])) i++;
  return i;
}

/** The index after the string that starts at b[i] (a quote), or -1. */
function skipString(b: Buffer, i: number): number {
  let from = i + 1;
  for (;;) {
    const quote = b.indexOf(QUOTE, from);
    if (quote < 0) return -1;
    let backslashes = 0;
    for (let k = quote - 1; b[k] === BACKSLASH; k--) backslashes++;
    if (backslashes % 2 === 0) return quote + 1;
    from = quote + 1;
  }
}

/** The index after the JSON value that starts at b[i], or -1. */
function skipValue(b: Buffer, i: number): number {
  const first = b[i];
  if (first === QUOTE) return skipString(b, i);
  if (first === LBRACE || first === LBRACKET) {
    let depth = 0;
    while (i < b.length) {
      const c = b[i];
      if (c === QUOTE) {
        i = skipString(b, i);
        if (i < 0) return -1;
        continue;
      }
      if (c === LBRACE || c === LBRACKET) depth++;
      else if (c === RBRACE || c === RBRACKET) {
        if (--depth === 0) return i + 1;
      }
      i++;
    }
    return -1;
  }
  const start = i;
  while (i < b.length && b[i] !== COMMA && b[i] !== RBRACE && b[i] !== RBRACKET && !isSpace(b[i])) i++;
  return i > start ? i : -1;
}

/**
 * Calls `member` with each key and its value's byte range; returns the index after the object, or -1. `skip` may
 * find a value's end itself (returning -1 for a value it cannot read).
 */
function walkObject(b: Buffer, i: number, member: (key: string, start: number, end: number) => void, skip?: (key: string, start: number) => number | undefined): number {
  if (b[i] !== LBRACE) return -1;
  i = skipSpace(b, i + 1);
  if (b[i] === RBRACE) return i + 1;
  for (;;) {
    if (b[i] !== QUOTE) return -1;
    const keyEnd = skipString(b, i);
    if (keyEnd < 0) return -1;
    const key = b.toString('latin1', i + 1, keyEnd - 1);
    i = skipSpace(b, keyEnd);
    if (b[i] !== COLON) return -1;
    i = skipSpace(b, i + 1);
    const end = skip?.(key, i) ?? skipValue(b, i);
    if (end < 0) return -1;
    member(key, i, end);
    i = skipSpace(b, end);
    if (b[i] === COMMA) i = skipSpace(b, i + 1);
    else return b[i] === RBRACE ? i + 1 : -1;
  }
}

const ENDPOINT_START = Buffer.from('{"addresses":');

/**
 * Splits the endpoints array at b[i] into each element's bytes (see the header comment); returns the index after the
 * array, or -1 when its elements do not all start with `{"addresses":` (then the line is decoded as usual).
 */
function splitEndpoints(b: Buffer, i: number, out: string[]): number {
  if (b[i] !== LBRACKET) return -1;
  i = skipSpace(b, i + 1);
  if (b[i] === RBRACKET) return i + 1;
  for (;;) {
    if (b.compare(ENDPOINT_START, 0, ENDPOINT_START.length, i, i + ENDPOINT_START.length) !== 0) return -1;
    const next = b.indexOf(ENDPOINT_START, i + 1);
    if (next > 0 && b[next - 1] === COMMA && b[next - 2] === RBRACE) {
      out.push(b.toString('latin1', i, next - 1));
      i = next;
      continue;
    }
    // The last element: the only one read through.
    const end = skipValue(b, i);
    if (end < 0) return -1;
    out.push(b.toString('latin1', i, end));
    const close = skipSpace(b, end);
    return b[close] === RBRACKET ? close + 1 : -1;
  }
}

const TYPE_PREFIX = Buffer.from('{"type":"');
const OBJECT_MARK = Buffer.from('","object":');

interface Endpoint {
  /** Canonical bytes of the slim endpoint, validated for the slice's address type. */
  json: string;
  sortKey: string;
}

interface SliceState {
  addressType: string;
  /** The endpoints' bytes as the API server sent them at the slice's last event, and their slim encodings. */
  raw: string[];
  endpoints: Endpoint[];
}

export interface DecodedEvent {
  type: WatchEventType;
  /** metadata, addressType and ports only (the endpoints are in `value`). */
  object: KubeObject;
  /** The canonical slim record (ADDED/MODIFIED), or why the slice cannot be slimmed. */
  record?: { value: string } | { error: unknown };
}

export interface SliceDecoderStats {
  /** Endpoints whose encoding was reused from the slice's previous event. */
  reused: number;
  /** Endpoints parsed, slimmed and validated. */
  decoded: number;
}

export class EndpointSliceDecoder {
  private readonly slices = new Map<string, SliceState>();
  readonly stats: SliceDecoderStats = { reused: 0, decoded: 0 };

  /** Slices whose endpoints are remembered. */
  get size(): number {
    return this.slices.size;
  }

  /** Forgets everything (after a relist, states may have moved without events). */
  clear(): void {
    this.slices.clear();
  }

  /** Decodes one watch line, or returns undefined to leave it to the ordinary decoding. */
  decode(line: Buffer): DecodedEvent | undefined {
    // The API server's framing, `{"type":"…","object":{…}}`; anything else is decoded as usual.
    if (line.compare(TYPE_PREFIX, 0, TYPE_PREFIX.length, 0, TYPE_PREFIX.length) !== 0) return undefined;
    const typeEnd = line.indexOf(OBJECT_MARK, TYPE_PREFIX.length);
    if (typeEnd < 0 || typeEnd > TYPE_PREFIX.length + 10) return undefined;
    const type = line.toString('latin1', TYPE_PREFIX.length, typeEnd);
    if (type !== 'ADDED' && type !== 'MODIFIED' && type !== 'DELETED') return undefined;
    const objectAt = typeEnd + OBJECT_MARK.length;

    const header: string[] = [];
    const raw: string[] = [];
    const objectEnd = walkObject(
      line,
      objectAt,
      function member(key: string, start: number, stop: number) {
        if (key === 'metadata' || key === 'addressType' || key === 'ports') header.push(`"${key}":${line.toString('utf8', start, stop)}`);
      },
      function endpointsEnd(key: string, start: number): number | undefined {
        return key === 'endpoints' && line[start] === LBRACKET ? splitEndpoints(line, start, raw) : undefined;
      },
    );
    if (objectEnd < 0 || line[skipSpace(line, objectEnd)] !== RBRACE) return undefined;
    let object: V1EndpointSlice;
    try {
      object = JSON.parse(`{${header.join(',')}}`) as V1EndpointSlice;
    } catch {
      return undefined;
    }
    const name = object.metadata?.name;
    if (typeof name !== 'string' || !name) return undefined;
    const id = `${object.metadata?.namespace ?? ''}/${name}`;
    if (type === 'DELETED') {
      this.slices.delete(id);
      return { type, object: object as KubeObject };
    }

    return { type, object: object as KubeObject, record: this.encode(id, object, raw) };
  }

  private decodeEndpoint(bytes: string, type: SlimEndpointSlice['addressType'], index: number): Endpoint {
    this.stats.decoded++;
    const slim = buildSlimEndpoint(JSON.parse(Buffer.from(bytes, 'latin1').toString('utf8')) as V1Endpoint);
    validateSlimEndpoint(type, slim, index);
    return { json: JSON.stringify(slim), sortKey: endpointSortKey(slim) };
  }

  private encode(id: string, object: V1EndpointSlice, raw: string[]): { value: string } | { error: unknown } {
    try {
      const headerRecord = buildSlimEndpointSlice({ ...object, endpoints: [] });
      validateSlim('endpointSlice', headerRecord);
      const previous = this.slices.get(id);
      const old = previous?.addressType === headerRecord.addressType ? previous : { raw: [] as string[], endpoints: [] as Endpoint[] };
      // The controller keeps its endpoints in order and changes a few: walk both lists side by side, comparing bytes
      // (no hashing); only when they lose step is a lookup table built.
      let byBytes: Map<string, Endpoint> | undefined;
      const list: Endpoint[] = [];
      for (let index = 0, j = 0; index < raw.length; index++) {
        const bytes = raw[index]!;
        let endpoint: Endpoint | undefined;
        if (old.raw[j] === bytes) endpoint = old.endpoints[j++];
        else if (old.raw[j + 1] === bytes) {
          endpoint = old.endpoints[j + 1];
          j += 2;
        } else if (raw[index + 1] !== old.raw[j]) {
          byBytes ??= new Map(old.raw.map((r, i) => [r, old.endpoints[i]!]));
          endpoint = byBytes.get(bytes);
        }
        if (endpoint) this.stats.reused++;
        else endpoint = this.decodeEndpoint(bytes, headerRecord.addressType, index);
        list.push(endpoint);
      }
      // A stable sort by the same key as buildSlimEndpointSlice's, so ties keep the API's order there as here.
      const sorted = list.slice().sort(bySortKey);
      const value = joinSlimEndpointSlice(headerRecord, sorted.map((e) => e.json));
      this.slices.set(id, { addressType: headerRecord.addressType, raw, endpoints: list });
      return { value };
    } catch (error) {
      return { error };
    }
  }
}
