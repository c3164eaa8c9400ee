/**
 * The three patch formats kubectl and client libraries send: JSON merge patch (RFC 7386), strategic merge patch (the
 * Kubernetes dialect: lists of structs merge by a key such as `type` or `name`) and JSON patch (RFC 6902).
 */
import { ApiError, badRequest } from './status.ts';

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

const isObject = (v: unknown): v is JsonObject => typeof v === 'object' && v !== null && !Array.isArray(v);

export function mergePatch(target: Json, patch: Json): Json {
  if (!isObject(patch)) return patch;
  const out: JsonObject = isObject(target) ? { ...target } : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete out[key];
    else out[key] = mergePatch(out[key] ?? null, value);
  }
  return out;
}

/**
 * Merge keys of the core API's lists that merge rather than replace (the `patchMergeKey` tags of the Go types).
 * Keyed by field name: the few collisions in the core types (`ports`) are told apart by the elements' shape.
 */
const MERGE_KEYS: Record<string, string | ((element: JsonObject) => string)> = {
  conditions: 'type',
  addresses: 'type',
  containers: 'name',
  initContainers: 'name',
  ephemeralContainers: 'name',
  volumes: 'name',
  env: 'name',
  volumeMounts: 'mountPath',
  volumeDevices: 'devicePath',
  imagePullSecrets: 'name',
  ownerReferences: 'uid',
  podIPs: 'ip',
  hostIPs: 'ip',
  hostAliases: 'ip',
  ports: (element) => ('containerPort' in element ? 'containerPort' : 'port'),
};
/** Lists of scalars whose strategy is merge (set union). */
const MERGE_SCALAR_LISTS = new Set(['finalizers']);

export function strategicMergePatch(target: Json, patch: Json, atomicLists = false): Json {
  if (!isObject(patch)) return patch;
  const directive = patch.$patch;
  if (directive === 'replace') {
    const { $patch: _, ...rest } = patch;
    return stripDirectives(rest);
  }
  if (directive === 'delete') return null;
  const out: JsonObject = isObject(target) ? { ...target } : {};
  const retain = Array.isArray(patch.$retainKeys) ? new Set(patch.$retainKeys.map(String)) : undefined;
  for (const [key, value] of Object.entries(patch)) {
    if (key === '$patch' || key === '$retainKeys' || key.startsWith('$setElementOrder/')) continue;
    if (key.startsWith('$deleteFromPrimitiveList/')) {
      const field = key.slice('$deleteFromPrimitiveList/'.length);
      const remove = new Set((Array.isArray(value) ? value : []).map((v) => JSON.stringify(v)));
      const current = out[field];
      if (Array.isArray(current)) out[field] = current.filter((v) => !remove.has(JSON.stringify(v)));
      continue;
    }
    if (value === null) {
      delete out[key];
      continue;
    }
    const current = out[key];
    if (Array.isArray(value) && !atomicLists) out[key] = mergeList(key, Array.isArray(current) ? current : [], value);
    else if (isObject(value)) out[key] = strategicMergePatch(current ?? null, value, atomicLists);
    else out[key] = value;
  }
  if (retain) for (const key of Object.keys(out)) if (!retain.has(key)) delete out[key];
  return out;
}

function mergeList(field: string, current: Json[], patch: Json[]): Json[] {
  if (MERGE_SCALAR_LISTS.has(field)) {
    const seen = new Set(current.map((v) => JSON.stringify(v)));
    return [...current, ...patch.filter((v) => !seen.has(JSON.stringify(v)))];
  }
  const rule = MERGE_KEYS[field];
  const first = patch.find(isObject) ?? current.find(isObject);
  if (!rule || !first) return patch.map(stripDirectives);
  if (patch.some((e) => isObject(e) && e.$patch === 'replace')) {
    return patch.filter((e) => !(isObject(e) && e.$patch === 'replace')).map(stripDirectives);
  }
  const key = typeof rule === 'string' ? rule : rule(first);
  const out = [...current];
  for (const element of patch) {
    if (!isObject(element)) continue;
    const id = element[key];
    const index = out.findIndex((e) => isObject(e) && e[key] === id);
    if (element.$patch === 'delete') {
      if (index >= 0) out.splice(index, 1);
    } else if (index >= 0) out[index] = strategicMergePatch(out[index]!, element);
    else out.push(stripDirectives(element));
  }
  return out;
}

function stripDirectives(value: Json): Json {
  if (Array.isArray(value)) return value.map(stripDirectives);
  if (!isObject(value)) return value;
  const out: JsonObject = {};
  for (const [k, v] of Object.entries(value)) if (!k.startsWith('$')) out[k] = stripDirectives(v);
  return out;
}

function unescapePointer(token: string): string {
  return token.replace(/~1/g, '/').replace(/~0/g, '~');
}

function parsePointer(pointer: unknown): string[] {
  if (typeof pointer !== 'string' || (pointer !== '' && !pointer.startsWith('/'))) throw badRequest(`invalid JSON pointer: ${String(pointer)}`);
  return pointer === '' ? [] : pointer.slice(1).split('/').map(unescapePointer);
}

function resolveParent(doc: Json, path: string[]): { parent: Json; last: string } {
  let node = doc;
  for (const token of path.slice(0, -1)) {
    if (Array.isArray(node)) node = node[Number(token)] ?? null;
    else if (isObject(node)) node = node[token] ?? null;
    else node = null;
    if (node === null) throw new ApiError(422, 'Invalid', `the JSON patch path /${path.join('/')} does not exist`);
  }
  return { parent: node, last: path[path.length - 1]! };
}

function getAt(doc: Json, path: string[]): Json | undefined {
  let node: Json | undefined = doc;
  for (const token of path) {
    if (Array.isArray(node)) node = node[Number(token)];
    else if (isObject(node)) node = node[token];
    else return undefined;
    if (node === undefined) return undefined;
  }
  return node;
}

function removeAt(doc: Json, path: string[]): Json {
  const { parent, last } = resolveParent(doc, path);
  if (Array.isArray(parent)) {
    const i = Number(last);
    if (!Number.isInteger(i) || i < 0 || i >= parent.length) throw new ApiError(422, 'Invalid', `JSON patch: no element at index ${last}`);
    return parent.splice(i, 1)[0]!;
  }
  if (isObject(parent) && last in parent) {
    const value = parent[last]!;
    delete parent[last];
    return value;
  }
  throw new ApiError(422, 'Invalid', `JSON patch: unable to remove nonexistent key: ${last}`);
}

function addAt(doc: Json, path: string[], value: Json, replace: boolean): Json {
  if (path.length === 0) return value;
  const { parent, last } = resolveParent(doc, path);
  if (Array.isArray(parent)) {
    const i = last === '-' ? parent.length : Number(last);
    if (!Number.isInteger(i) || i < 0 || i > parent.length) throw new ApiError(422, 'Invalid', `JSON patch: index ${last} out of range`);
    if (replace) parent[i] = value;
    else parent.splice(i, 0, value);
  } else if (isObject(parent)) {
    if (replace && !(last in parent)) throw new ApiError(422, 'Invalid', `JSON patch: unable to replace nonexistent key: ${last}`);
    parent[last] = value;
  } else throw new ApiError(422, 'Invalid', `JSON patch: path /${path.join('/')} has no container`);
  return doc;
}

export function jsonPatch(target: Json, operations: Json): Json {
  if (!Array.isArray(operations)) throw badRequest('a JSON patch must be an array of operations');
  let doc: Json = structuredClone(target);
  for (const op of operations) {
    if (!isObject(op)) throw badRequest('a JSON patch operation must be an object');
    const path = parsePointer(op.path);
    switch (op.op) {
      case 'add': doc = addAt(doc, path, structuredClone(op.value ?? null), false); break;
      case 'replace': doc = addAt(doc, path, structuredClone(op.value ?? null), true); break;
      case 'remove': removeAt(doc, path); break;
      case 'test':
        if (JSON.stringify(getAt(doc, path)) !== JSON.stringify(op.value)) throw new ApiError(422, 'Invalid', `JSON patch test failed at ${String(op.path)}`);
        break;
      case 'move': case 'copy': {
        const from = parsePointer(op.from);
        const value = getAt(doc, from);
        if (value === undefined) throw new ApiError(422, 'Invalid', `JSON patch: nothing at ${String(op.from)}`);
        if (op.op === 'move') removeAt(doc, from);
        doc = addAt(doc, path, structuredClone(value), false);
        break;
      }
      default: throw badRequest(`unknown JSON patch operation: ${String(op.op)}`);
    }
  }
  return doc;
}

export type PatchType = 'merge' | 'strategic' | 'json';

export function patchTypeOf(contentType: string | undefined): PatchType | undefined {
  const base = (contentType ?? '').split(';')[0]!.trim().toLowerCase();
  if (base === 'application/merge-patch+json') return 'merge';
  if (base === 'application/strategic-merge-patch+json') return 'strategic';
  if (base === 'application/json-patch+json') return 'json';
  return undefined;
}

export function applyPatch(type: PatchType, target: unknown, patch: unknown, atomicLists: boolean): unknown {
  if (type === 'json') return jsonPatch(target as Json, patch as Json);
  if (!isObject(patch)) throw badRequest('a merge patch must be a JSON object');
  return type === 'merge' ? mergePatch(target as Json, patch) : strategicMergePatch(target as Json, patch, atomicLists);
}
