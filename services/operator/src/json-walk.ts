/**
 * Walking the raw bytes of a watch event without decoding them, for selective decoders (EndpointSlices), which find
 * the parts a slim record needs and parse only those. Every helper returns -1 for bytes it cannot read, and the
 * callers then leave the line to the ordinary JSON.parse, which names what is wrong; so a walk never has to decide
 * whether odd input is valid, only recognise the shape it expects.
 */
import type { KubeObject, WatchEventType } from './watch.ts';

export const QUOTE = 0x22;
export const BACKSLASH = 0x5c;
export const LBRACE = 0x7b;
export const RBRACE = 0x7d;
export const LBRACKET = 0x5b;
export const RBRACKET = 0x5d;
export const COMMA = 0x2c;
export const COLON = 0x3a;

export function isSpace(c: number | undefined): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
}

export function skipSpace(b: Buffer, i: number): number {
  while (isSpace(b[i])) i++;
  return i;
}

/**
 * The index after the string that starts at b[i] (a quote), or -1. A loop in JavaScript: most strings are short, and
 * a native search per string costs more in the call than in the search.
 */
export function skipString(b: Buffer, i: number): number {
  const length = b.length;
  for (let k = i + 1; k < length; k++) {
    const c = b[k];
    if (c === QUOTE) return k + 1;
    if (c === BACKSLASH) k++;
  }
  return -1;
}

/** The index after the JSON value that starts at b[i], or -1. */
export function skipValue(b: Buffer, i: number): number {
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

/** Whether the key in b[start, end) (between its quotes) is `key`, compared byte by byte (no string is made). */
function keyIs(b: Buffer, start: number, end: number, key: string): boolean {
  if (end - start !== key.length) return false;
  for (let k = 0; k < key.length; k++) if (b[start + k] !== key.charCodeAt(k)) return false;
  return true;
}

/**
 * Calls `member` with each key among `keys` and its value's byte range, skipping the others unread; returns the index
 * after the object, or -1. `skip` may find a wanted value's end itself (returning -1 for a value it cannot read).
 * Keys are compared as bytes: the API server writes them unescaped, and an escaped key (which JSON.parse would
 * unescape, perhaps into a wanted one) makes the walk give up.
 */
export function walkObject(
  b: Buffer,
  i: number,
  keys: readonly string[],
  member: (key: string, start: number, end: number) => void,
  skip?: (key: string, start: number) => number | undefined,
): number {
  if (b[i] !== LBRACE) return -1;
  i = skipSpace(b, i + 1);
  if (b[i] === RBRACE) return i + 1;
  for (;;) {
    if (b[i] !== QUOTE) return -1;
    const keyEnd = skipString(b, i);
    if (keyEnd < 0) return -1;
    let key: string | undefined;
    for (const wanted of keys) {
      if (keyIs(b, i + 1, keyEnd - 1, wanted)) {
        key = wanted;
        break;
      }
    }
    if (key === undefined) for (let k = i + 1; k < keyEnd - 1; k++) if (b[k] === BACKSLASH) return -1;
    i = skipSpace(b, keyEnd);
    if (b[i] !== COLON) return -1;
    i = skipSpace(b, i + 1);
    const end = (key !== undefined ? skip?.(key, i) : undefined) ?? skipValue(b, i);
    if (end < 0) return -1;
    if (key !== undefined) member(key, i, end);
    i = skipSpace(b, end);
    if (b[i] === COMMA) i = skipSpace(b, i + 1);
    else return b[i] === RBRACE ? i + 1 : -1;
  }
}

const TYPE_PREFIX = Buffer.from('{"type":"');
const OBJECT_MARK = Buffer.from('","object":');

/**
 * The API server's framing of a watch event, `{"type":"…","object":{…}}`: the type (ADDED, MODIFIED or DELETED) and
 * where the object starts; undefined for anything else (bookmarks and errors are decoded as usual).
 */
export function eventFrame(line: Buffer): { type: 'ADDED' | 'MODIFIED' | 'DELETED'; objectAt: number } | undefined {
  if (line.compare(TYPE_PREFIX, 0, TYPE_PREFIX.length, 0, TYPE_PREFIX.length) !== 0) return undefined;
  const typeEnd = line.indexOf(OBJECT_MARK, TYPE_PREFIX.length);
  if (typeEnd < 0 || typeEnd > TYPE_PREFIX.length + 10) return undefined;
  const type = line.toString('latin1', TYPE_PREFIX.length, typeEnd);
  if (type !== 'ADDED' && type !== 'MODIFIED' && type !== 'DELETED') return undefined;
  return { type, objectAt: typeEnd + OBJECT_MARK.length };
}

/** Whether the object that ends at `objectEnd` also ends the event (nothing but its closing brace follows). */
export function endsEvent(line: Buffer, objectEnd: number): boolean {
  if (objectEnd < 0) return false;
  const close = skipSpace(line, objectEnd);
  return line[close] === RBRACE && skipSpace(line, close + 1) === line.length;
}

export interface DecodedEvent {
  type: WatchEventType;
  /** The parts of the object its slim record needs besides what `record` holds (and its metadata). */
  object: KubeObject;
  /** The canonical slim record (ADDED/MODIFIED) when the decoder made it, or why the object cannot be slimmed. */
  record?: { value: string } | { error: unknown };
}

/** Decodes a kind's watch events selectively; a line it does not take (undefined) is decoded as usual. */
export interface WatchDecoder {
  decode(line: Buffer): DecodedEvent | undefined;
  /** Forgets what it remembers of objects (after a relist, states may have moved without events). */
  clear(): void;
}
