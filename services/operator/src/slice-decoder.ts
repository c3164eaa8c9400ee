/**
 * EndpointSlice watch events, decoded selectively. A slice holds up to 100 endpoints (~22 KB of JSON) and a pod
 * created or deleted changes one of them, yet decoding the event with JSON.parse, slimming, encoding and validating
 * it costs the whole slice every time: most of the operator's CPU under pod churn. Here the endpoints array is split
 * into each endpoint's bytes without reading them: the API server writes an endpoint's fields in struct order, so
 * each element starts with `{"addresses":`, which cannot occur inside a JSON string (its quotes would be escaped) nor
 * as the key of anything nested in an endpoint. Knowing the slice's previous event, the split searches only the
 * bytes between what the two events share at their start and their end (a few native comparisons find those), since
 * the elements there lie at the same offsets. An endpoint whose bytes the slice had at its previous event reuses
 * the canonical, validated encoding made then (found in the record made then, which the mirror keeps anyway) and
 * its place in the canonical order made then, into which only new endpoints are placed; only new endpoints are
 * parsed (which also proves the split: each piece is a complete JSON object, now or when it was first seen), slimmed
 * and validated. The slice's few other fields (metadata, addressType, ports) are parsed as usual.
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
import { COMMA, LBRACKET, RBRACE, RBRACKET, endsEvent, eventFrame, skipSpace, skipValue, walkObject, type DecodedEvent, type WatchDecoder } from './json-walk.ts';
import type { KubeObject } from './watch.ts';

/** The canonical order: by sort key, ties in the API's order (buildSlimEndpointSlice's stable sort). */
function inOrder(list: readonly Endpoint[], a: number, b: number): number {
  const x = list[a]!.sortKey;
  const y = list[b]!.sortKey;
  return x < y ? -1 : x > y ? 1 : a - b;
}

/** Whether element n of the new event (its ranges in `bounds`) has the bytes element j of the slice's last event had. */
function sameBytes(raw: Buffer, bounds: readonly number[], n: number, old: SliceState | undefined, j: number): boolean {
  return old !== undefined && j < old.endpoints.length && 2 * n < bounds.length && raw.compare(old.raw, old.bounds[2 * j]!, old.bounds[2 * j + 1]!, bounds[2 * n]!, bounds[2 * n + 1]!) === 0;
}

const ENDPOINT_START = Buffer.from('{"addresses":');
const SLICE_KEYS = ['metadata', 'addressType', 'endpoints', 'ports'];
const ENDPOINTS_KEY = '"endpoints":[';

/**
 * Splits the endpoints array at b[i] into each element's byte range (see the header comment), pushed to `bounds` as
 * start, end pairs; returns the index after the array, or -1 when its elements do not all start with
 * `{"addresses":` (then the line is decoded as usual).
 */
function splitEndpoints(b: Buffer, i: number, bounds: number[]): number {
  if (b[i] !== LBRACKET) return -1;
  i = skipSpace(b, i + 1);
  if (b[i] === RBRACKET) return i + 1;
  for (;;) {
    if (b.compare(ENDPOINT_START, 0, ENDPOINT_START.length, i, i + ENDPOINT_START.length) !== 0) return -1;
    const next = b.indexOf(ENDPOINT_START, i + 1);
    if (next > 0 && b[next - 1] === COMMA && b[next - 2] === RBRACE) {
      bounds.push(i, next - 1);
      i = next;
      continue;
    }
    // The last element: the only one read through.
    const end = skipValue(b, i);
    if (end < 0) return -1;
    bounds.push(i, end);
    const close = skipSpace(b, end);
    return b[close] === RBRACKET ? close + 1 : -1;
  }
}

/**
 * The length of the longest common prefix (or, with `fromEnd`, suffix) of a[aStart, aStart + la) and b[0, lb), at most
 * `limit`. A binary search whose probes compare only the bytes not yet known equal: about `limit` bytes compared in
 * all, where probes from the start each time compared half the slice per probe (most of the decoder's native time).
 */
function common(a: Buffer, aStart: number, la: number, b: Buffer, lb: number, limit: number, fromEnd: boolean): number {
  let low = 0;
  let high = limit;
  while (low < high) {
    const m = (low + high + 1) >>> 1;
    const equal = fromEnd
      ? a.compare(b, lb - m, lb - low, aStart + la - m, aStart + la - low) === 0
      : a.compare(b, low, m, aStart + low, aStart + m) === 0;
    if (equal) low = m;
    else high = m - 1;
  }
  return low;
}

/**
 * Splits the endpoints array at line[start] like `splitEndpoints`, knowing the slice's previous event: the bytes
 * that the two events share at the start and at the end (found by a few native comparisons) hold the same elements
 * at the same offsets, so only the elements between them are looked for. Gives the ranges (relative to `start`), the
 * previous element each one is known to repeat (-1: not known) and the array's end (relative); undefined when the
 * shortcut does not apply (then the array is split in full). Both lists are allocated at their size, once.
 */
function splitAfter(line: Buffer, start: number, previous: SliceState): { bounds: number[]; hint: number[]; arrayEnd: number } | undefined {
  const old = previous.raw;
  const oldBounds = previous.bounds;
  const count = oldBounds.length / 2;
  const length = line.length - start;
  const tail = old.length - previous.arrayEnd;
  const limit = Math.min(length, old.length);
  const prefix = common(line, start, length, old, old.length, limit, false);
  const suffix = common(line, start, length, old, old.length, limit - prefix, true);
  // What follows the array (ports, the closing braces) changed too, or there is nothing to reuse: split in full.
  if (suffix < tail || count === 0) return undefined;
  const arrayEnd = length - tail;
  const shift = length - old.length;
  // Elements whose bytes and following separator lie in the shared prefix: the full split would cut them the same.
  let first = 0;
  while (first < count - 1 && oldBounds[2 * (first + 1)]! + ENDPOINT_START.length <= prefix) first++;
  // Elements that, with the `},` before them, lie in the shared suffix.
  let last = count;
  while (last - 1 > first && last - 1 > 0 && oldBounds[2 * (last - 1)]! - 2 >= old.length - suffix) last--;
  if (line[start] !== LBRACKET) return undefined;
  // The elements between, found as the full split finds them.
  const middle: number[] = [];
  const stop = last < count ? oldBounds[2 * last]! + shift : -1;
  let i = first > 0 ? oldBounds[2 * first]! : skipSpace(line, start + 1) - start;
  if (first === 0 && line[start + i] === RBRACKET) {
    if (last < count || i + 1 !== arrayEnd) return undefined;
    return { bounds: [], hint: [], arrayEnd };
  }
  while (stop < 0 || i < stop) {
    const at = start + i;
    if (line.compare(ENDPOINT_START, 0, ENDPOINT_START.length, at, at + ENDPOINT_START.length) !== 0) return undefined;
    const next = line.indexOf(ENDPOINT_START, at + 1);
    if (next > 0 && line[next - 1] === COMMA && line[next - 2] === RBRACE && (stop < 0 || next - start <= stop)) {
      middle.push(i, next - 1 - start);
      i = next - start;
      continue;
    }
    if (stop >= 0) return undefined;
    const end = skipValue(line, at);
    if (end < 0) return undefined;
    middle.push(i, end - start);
    const close = skipSpace(line, end);
    if (line[close] !== RBRACKET || close + 1 - start !== arrayEnd) return undefined;
    break;
  }
  if (stop >= 0 && line[start + arrayEnd - 1] !== RBRACKET) return undefined;
  const total = first + middle.length / 2 + (count - last);
  const bounds = new Array<number>(2 * total);
  const hint = new Array<number>(total);
  let n = 0;
  for (let k = 0; k < first; k++, n++) {
    bounds[2 * n] = oldBounds[2 * k]!;
    bounds[2 * n + 1] = oldBounds[2 * k + 1]!;
    hint[n] = k;
  }
  for (let m = 0; m < middle.length; m += 2, n++) {
    bounds[2 * n] = middle[m]!;
    bounds[2 * n + 1] = middle[m + 1]!;
    hint[n] = -1;
  }
  for (let k = last; k < count; k++, n++) {
    bounds[2 * n] = oldBounds[2 * k]! + shift;
    bounds[2 * n + 1] = oldBounds[2 * k + 1]! + shift;
    hint[n] = k;
  }
  return { bounds, hint, arrayEnd };
}

interface Endpoint {
  sortKey: string;
}

interface SliceState {
  addressType: string;
  /** The slim record without endpoints, as validated. */
  headerJson: string;
  /**
   * The slice's last event from its endpoints array to the end of the line (a copy, so that the socket's buffers are
   * not kept), where the array ends in it, each element's range in it, and their slim encodings.
   */
  raw: Buffer;
  /** The memory `raw` lies in, reused by the slice's next event while it fits (see `keep`). */
  store: Buffer;
  arrayEnd: number;
  bounds: number[];
  endpoints: Endpoint[];
  /** The canonical order of `endpoints` (indices), to be reused while no endpoint moves in it. */
  order: number[];
  /**
   * The slim record made then (the string the mirror keeps too) and where each endpoint's canonical, validated
   * encoding lies in it: reused from there rather than kept a second time.
   */
  value: string;
  spans: number[];
}

export interface SliceDecoderStats {
  /** Endpoints whose encoding was reused from the slice's previous event. */
  reused: number;
  /** Endpoints parsed, slimmed and validated. */
  decoded: number;
  /** Events whose endpoints were split knowing the slice's previous event (only the changed part searched). */
  shortcuts: number;
  /**
   * Events whose endpoints lost step with the previous event's (an endpoint moved, or changes side by side), so
   * that a lookup table of the old endpoints' bytes was built: the costly case, which the usual changes avoid.
   */
  realigned: number;
}

const EMPTY = Buffer.alloc(0);

function sliceId(metadata: unknown): string | undefined {
  const { name, namespace } = (metadata ?? {}) as { name?: unknown; namespace?: unknown };
  return typeof name === 'string' ? `${typeof namespace === 'string' ? namespace : ''}/${name}` : undefined;
}

/**
 * Copies `raw` (a view of the socket's bytes) into memory the slice keeps: its previous event's while the new one fits,
 * else a new allocation (with room to grow when large). A slice changes by an endpoint at a time, so in the steady state no
 * event allocates: a fresh 20 KB Buffer per EndpointSlice change was the operator's main source of external memory,
 * which with few JavaScript allocations (a calm cluster) V8 reclaims only by full collections, several a second.
 */
function keep(store: Buffer | undefined, raw: Buffer): Buffer {
  if (raw.length === 0) return EMPTY;
  // A slice that shrank for good (scaled down) gives its large memory back.
  const fits = store !== undefined && store.length >= raw.length && store.length <= 2 * raw.length + 4096;
  // A small slice (the common case at scale: 20,000 of a few endpoints) takes exactly its size from Node's shared pool,
  // as a copy did before: room to grow, and an allocation of its own, would cost more than the garbage it saves.
  const target = fits ? store : raw.length < 4096 ? Buffer.allocUnsafe(raw.length) : Buffer.allocUnsafeSlow(raw.length + Math.min(2048, raw.length >>> 3));
  raw.copy(target, 0);
  return target;
}

export class EndpointSliceDecoder implements WatchDecoder {
  private readonly slices = new Map<string, SliceState>();
  readonly stats: SliceDecoderStats = { reused: 0, decoded: 0, shortcuts: 0, realigned: 0 };

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
    const frame = eventFrame(line);
    if (!frame) return undefined;
    const { type } = frame;
    const object: Record<string, unknown> = {};
    let bounds: number[] = [];
    let hint: number[] = [];
    let arrayStart = -1;
    let arrayEnd = -1;
    let unreadable = false;
    /** The slice whose previous event `hint` refers to. */
    let hinted: string | undefined;
    const { slices, stats } = this;
    const objectEnd = walkObject(
      line,
      frame.objectAt,
      SLICE_KEYS,
      // Anonymous on purpose: tsx keeps function names, which for a named closure costs a property definition per event.
      (key: string, start: number, stop: number) => {
        if (key === 'endpoints') return;
        try {
          object[key] = JSON.parse(line.toString('utf8', start, stop));
        } catch {
          unreadable = true;
        }
      },
      (key: string, start: number): number | undefined => {
        if (key !== 'endpoints' || line[start] !== LBRACKET) return undefined;
        // A second endpoints key (JSON.parse would take the last): start over, as JSON.parse does.
        arrayStart = start;
        // The API server writes metadata first: then the slice's previous event is known here.
        hinted = sliceId(object.metadata);
        const previous = hinted === undefined ? undefined : slices.get(hinted);
        const split = previous ? splitAfter(line, start, previous) : undefined;
        if (split) {
          stats.shortcuts++;
          ({ bounds, hint } = split);
          arrayEnd = start + split.arrayEnd;
          return arrayEnd;
        }
        bounds = [];
        hint = [];
        arrayEnd = splitEndpoints(line, start, bounds);
        for (let k = 0; k < bounds.length; k++) bounds[k]! -= start;
        return arrayEnd;
      },
    );
    if (unreadable || !endsEvent(line, objectEnd)) return undefined;
    const slice = object as unknown as V1EndpointSlice;
    const name = slice.metadata?.name;
    if (typeof name !== 'string' || !name) return undefined;
    const id = sliceId(slice.metadata)!;
    if (type === 'DELETED') {
      this.slices.delete(id);
      return { type, object: object as KubeObject };
    }
    // Hints about another object's elements (metadata given twice) are dropped.
    if (hinted !== id) hint.length = 0;
    // The endpoints' part of the line and what follows it, with ranges relative to it (copied once decoded).
    const raw = arrayStart >= 0 ? line.subarray(arrayStart) : EMPTY;
    return { type, object: object as KubeObject, record: this.encode(id, slice, raw, arrayStart < 0 ? 0 : arrayEnd - arrayStart, bounds, hint) };
  }

  private decodeEndpoint(raw: Buffer, start: number, end: number, type: SlimEndpointSlice['addressType'], index: number): { json: string; sortKey: string } {
    this.stats.decoded++;
    const slim = buildSlimEndpoint(JSON.parse(raw.toString('utf8', start, end)) as V1Endpoint);
    validateSlimEndpoint(type, slim, index);
    return { json: JSON.stringify(slim), sortKey: endpointSortKey(slim) };
  }

  private encode(id: string, object: V1EndpointSlice, raw: Buffer, arrayEnd: number, bounds: number[], hint: number[]): { value: string } | { error: unknown } {
    try {
      const headerRecord = buildSlimEndpointSlice({ ...object, endpoints: [] });
      const previous = this.slices.get(id);
      // The header (names, address type, ports) rarely changes: validated when its bytes do.
      const headerJson = JSON.stringify(headerRecord);
      if (previous?.headerJson !== headerJson) validateSlim('endpointSlice', headerRecord);
      const old = previous?.addressType === headerRecord.addressType ? previous : undefined;
      const oldCount = old ? old.endpoints.length : 0;
      const count = bounds.length / 2;
      // The controller keeps its endpoints in order and changes a few: walk both lists side by side, comparing bytes
      // (no hashing); only when they lose step is a lookup table built.
      let byBytes: Map<string, number> | undefined;
      // Sized up front: grown by pushes, the per-event arrays were a third of the decoder's garbage.
      const list = new Array<Endpoint>(count);
      /** The canonical encoding of each endpoint decoded afresh (a reused one's lies in the old value). */
      const jsons = new Array<string | undefined>(count);
      /** For each new element, the old one it reuses (-1: decoded afresh), to tell whether the order still holds. */
      const from = new Array<number>(count);
      let inStep = old !== undefined;
      for (let n = 0, j = 0; n < count; n++) {
        let source = -1;
        const known = hint[n] ?? -1;
        // Known to repeat an old element (the shared prefix or suffix): no comparison needed.
        if (known >= j && old) {
          source = known;
          j = known + 1;
        } else if (sameBytes(raw, bounds, n, old, j)) source = j++;
        else if (sameBytes(raw, bounds, n, old, j + 1)) {
          source = j + 1;
          j += 2;
        } else if (sameBytes(raw, bounds, n + 1, old, j)) {
          // Inserted before old element j: decoded afresh, j stays.
        } else if (sameBytes(raw, bounds, n + 1, old, j + 1)) {
          // Changed in place (an endpoint turning terminating): decoded afresh, old element j is gone.
          j++;
        } else if (old && j < oldCount) {
          // Out of step (moved, or several changes side by side); past the old list's end it is simply appended.
          if (!byBytes) this.stats.realigned++;
          byBytes ??= new Map(old.endpoints.map((_, k) => [old.raw.toString('latin1', old.bounds[2 * k]!, old.bounds[2 * k + 1]!), k]));
          const k = byBytes.get(raw.toString('latin1', bounds[2 * n]!, bounds[2 * n + 1]!));
          if (k !== undefined) {
            source = k;
            inStep = false;
          }
        }
        if (source >= 0) {
          this.stats.reused++;
          list[n] = old!.endpoints[source]!;
        } else {
          const { json, sortKey } = this.decodeEndpoint(raw, bounds[2 * n]!, bounds[2 * n + 1]!, headerRecord.addressType, n);
          list[n] = { sortKey };
          jsons[n] = json;
        }
        from[n] = source;
      }
      // The canonical order is a stable sort by the same key as buildSlimEndpointSlice's (ties keep the API's order),
      // i.e. by (sort key, position). While the old endpoints kept their relative positions, their old order still
      // holds among them, and only the new ones are placed into it.
      let order: number[];
      if (inStep && old) {
        const positionOf = new Array<number>(oldCount).fill(-1);
        for (let n = 0; n < count; n++) if (from[n]! >= 0) positionOf[from[n]!] = n;
        order = [];
        for (const k of old.order) if (positionOf[k]! >= 0) order.push(positionOf[k]!);
        for (let n = 0; n < count; n++) {
          if (from[n]! >= 0) continue;
          let low = 0;
          let high = order.length;
          while (low < high) {
            const mid = (low + high) >>> 1;
            if (inOrder(list, order[mid]!, n) < 0) low = mid + 1;
            else high = mid;
          }
          order.splice(low, 0, n);
        }
      } else {
        order = list.map((_, n) => n).sort((a, b) => inOrder(list, a, b));
      }
      // Reused endpoints that follow each other in the old value too are taken from it as one run (commas included):
      // a change of one endpoint joins ~3 parts instead of 100 (the join and its parts were most of the garbage).
      const parts: string[] = [];
      /** Per part: the first endpoint's index in `order`, and where the part starts in the old value (-1: fresh). */
      const partFirst: number[] = [];
      const partFrom: number[] = [];
      for (let p = 0; p < count; p++) {
        const n = order[p]!;
        const k = from[n]!;
        if (k < 0) {
          parts.push(jsons[n]!);
          partFirst.push(p);
          partFrom.push(-1);
          continue;
        }
        const previousSource = p > 0 ? from[order[p - 1]!]! : -1;
        const last = partFrom.length - 1;
        if (last >= 0 && partFrom[last]! >= 0 && previousSource >= 0 && old!.spans[2 * previousSource + 1]! + 1 === old!.spans[2 * k]!) continue;
        partFirst.push(p);
        partFrom.push(old!.spans[2 * k]!);
        parts.push('');
      }
      for (let q = 0; q < parts.length; q++) {
        if (partFrom[q]! < 0) continue;
        const lastOfPart = order[(q + 1 < parts.length ? partFirst[q + 1]! : count) - 1]!;
        parts[q] = old!.value.slice(partFrom[q], old!.spans[2 * from[lastOfPart]! + 1]);
      }
      const value = joinSlimEndpointSlice(headerRecord, parts);
      // The endpoints follow `"endpoints":[` (its first occurrence: in a string a quote would be escaped), a comma apart.
      const spans = new Array<number>(2 * count);
      let at = value.indexOf(ENDPOINTS_KEY) + ENDPOINTS_KEY.length;
      for (const n of order) {
        const k = from[n]!;
        spans[2 * n] = at;
        at += k < 0 ? jsons[n]!.length : old!.spans[2 * k + 1]! - old!.spans[2 * k]!;
        spans[2 * n + 1] = at;
        at++;
      }
      const kept = keep(previous?.store, raw);
      this.slices.set(id, { addressType: headerRecord.addressType, headerJson, raw: kept.subarray(0, raw.length), store: kept, arrayEnd, bounds, endpoints: list, order, value, spans });
      return { value };
    } catch (error) {
      return { error };
    }
  }
}
