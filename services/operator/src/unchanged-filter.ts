/**
 * Recognises, without decoding it, a watch event that repeats an object's previous state except for the fields that
 * change on every status heartbeat: `resourceVersion`, a condition's `lastHeartbeatTime` and a managedFields entry's
 * `time`. None of these reaches a slim record, so such an event cannot change etcd, and decoding its 12 KB of JSON
 * (most of the operator's CPU at 5,000 nodes) would be wasted.
 *
 * The test is a fingerprint: a hash of the event's object with those values blanked. Because the object's name,
 * namespace and uid are part of what is hashed, a fingerprint identifies one object's state; the filter keeps the
 * fingerprint of each object's newest decoded state, and an event whose fingerprint is one of them is unchanged.
 *
 * Soundness: the blanking works on raw JSON text, so it would also blank a map entry whose key is one of those names
 * (a label, a selector) and miss a change of its value. So a state is remembered only when the number of values the
 * text blanked equals the number of those fields that the decoded object has where they are expected; their values
 * (digits, timestamps) always match, so every blanked value was one of them. A later text with the same fingerprint
 * has the same text around its blanked values, hence the same structure, and blanks the same fields. Inside a JSON
 * string a quote is escaped, so a string's content never looks like a key.
 */
import { hash } from 'node:crypto';

const VOLATILE = /"(resourceVersion|lastHeartbeatTime|time)":"([^"\\]*)"/g;
const MODIFIED_PREFIX = '{"type":"MODIFIED",';
const ADDED_PREFIX = '{"type":"ADDED",';
const OBJECT_MARK = '"object":';

export type Verdict =
  /** Nothing that a slim record can see changed: the event only moves the watch to `resourceVersion`. */
  | { unchanged: true; resourceVersion: string }
  /** Decode it; pass `fingerprint` to `remember` afterwards (undefined when the text cannot be fingerprinted). */
  | { unchanged: false; fingerprint: Fingerprint | undefined };

export interface Fingerprint {
  hash: string;
  /** How many values the text blanked. */
  blanked: number;
}

/** The parts of a decoded object that the filter reads; anything else may be missing or malformed. */
export interface FingerprintedObject {
  metadata?: { name?: unknown; namespace?: unknown; resourceVersion?: unknown; managedFields?: unknown };
  status?: { conditions?: unknown };
}

export class UnchangedEventFilter {
  private readonly fingerprintOf = new Map<string, string>();
  private readonly known = new Set<string>();

  /** Objects whose newest state is remembered. */
  get size(): number {
    return this.fingerprintOf.size;
  }

  /**
   * `line` is one watch event as the API server sent it, decoded as latin1 (a byte per character: cheaper than UTF-8
   * and enough here, since only ASCII punctuation is matched and the hash only needs to be deterministic).
   */
  classify(line: string): Verdict {
    // Only additions and modifications are remembered or recognised (an API server that puts the type elsewhere in
    // the event simply gets every event decoded).
    const modified = line.startsWith(MODIFIED_PREFIX);
    if (!modified && !line.startsWith(ADDED_PREFIX)) return { unchanged: false, fingerprint: undefined };
    const objectAt = line.indexOf(OBJECT_MARK);
    if (objectAt < 0) return { unchanged: false, fingerprint: undefined };
    let blankedCount = 0;
    let resourceVersions = 0;
    let resourceVersion = '';
    const blanked = line.slice(objectAt).replace(VOLATILE, (_match, name: string, value: string) => {
      blankedCount++;
      if (name === 'resourceVersion') {
        resourceVersions++;
        resourceVersion = value;
      }
      return `"${name}":""`;
    });
    // Exactly one resourceVersion, the object's own: with more (an EndpointSlice's targetRefs) the filter stays out.
    if (resourceVersions !== 1) return { unchanged: false, fingerprint: undefined };
    const fingerprint = hash('sha1', blanked, 'base64');
    if (modified && this.known.has(fingerprint)) return { unchanged: true, resourceVersion };
    return { unchanged: false, fingerprint: { hash: fingerprint, blanked: blankedCount } };
  }

  /** Records the decoded state of an object that was added or modified. */
  remember(object: FingerprintedObject, fingerprint: Fingerprint | undefined): void {
    const key = identity(object);
    if (key === undefined) return;
    this.forgetKey(key);
    if (fingerprint === undefined || fingerprint.blanked !== expectedVolatileFields(object)) return;
    this.fingerprintOf.set(key, fingerprint.hash);
    this.known.add(fingerprint.hash);
  }

  /**
   * Forgets every object. After a relist the remembered states may be stale (the list delivered newer ones that the
   * filter never saw as events), and an event reverting an object to a remembered state would wrongly count as
   * unchanged; objects deleted while the watch was down would stay remembered for ever.
   */
  clear(): void {
    this.fingerprintOf.clear();
    this.known.clear();
  }

  /** Drops a deleted object. */
  forget(object: FingerprintedObject): void {
    const key = identity(object);
    if (key !== undefined) this.forgetKey(key);
  }

  private forgetKey(key: string): void {
    const previous = this.fingerprintOf.get(key);
    if (previous === undefined) return;
    this.fingerprintOf.delete(key);
    this.known.delete(previous);
  }
}

function identity(object: FingerprintedObject): string | undefined {
  const { name, namespace } = object.metadata ?? {};
  if (typeof name !== 'string') return undefined;
  return `${typeof namespace === 'string' ? namespace : ''}/${name}`;
}

/** The volatile fields where heartbeats put them: the object's resourceVersion, managedFields times, heartbeat times. */
function expectedVolatileFields(object: FingerprintedObject): number {
  const stringField = (entry: unknown, name: string) => typeof entry === 'object' && entry !== null && typeof (entry as Record<string, unknown>)[name] === 'string';
  const count = (list: unknown, name: string) => (Array.isArray(list) ? list.filter((entry) => stringField(entry, name)).length : 0);
  return (
    (typeof object.metadata?.resourceVersion === 'string' ? 1 : 0) +
    count(object.metadata?.managedFields, 'time') +
    count(object.status?.conditions, 'lastHeartbeatTime')
  );
}
