/**
 * Custom resource validation as the API server does it for a CRD's structural OpenAPI v3 schema, in one walk:
 * nulls and unknown fields are pruned (unless x-kubernetes-preserve-unknown-fields), defaults filled in, then type,
 * required, enum, pattern, format, bounds and item rules checked. Causes carry the field path the real server names
 * (`spec.blocks[0].cidr`) and its wording, so kubectl's error reads the same.
 *
 * Hand-written rather than a JSON-schema library: pruning and defaulting are not JSON-schema operations, and they
 * must happen in the same walk that validates, with the server's field paths.
 */
import { isIP } from 'node:net';
import { parse as parseCel, type ParseResult } from '@marcbachmann/cel-js';
import type { Cause } from './status.ts';

export interface StructuralSchema {
  type?: string;
  properties?: Record<string, StructuralSchema>;
  additionalProperties?: StructuralSchema | boolean;
  items?: StructuralSchema;
  required?: string[];
  enum?: unknown[];
  pattern?: string;
  format?: string;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: boolean;
  exclusiveMaximum?: boolean;
  minLength?: number;
  maxLength?: number;
  minItems?: number;
  maxItems?: number;
  minProperties?: number;
  maxProperties?: number;
  nullable?: boolean;
  default?: unknown;
  'x-kubernetes-preserve-unknown-fields'?: boolean;
  'x-kubernetes-int-or-string'?: boolean;
  'x-kubernetes-embedded-resource'?: boolean;
  'x-kubernetes-list-type'?: string;
  'x-kubernetes-list-map-keys'?: string[];
  'x-kubernetes-validations'?: CelRule[];
  [key: string]: unknown;
}

/** A CRD validation rule (CEL): `self` is the value at the schema node; transition rules (oldSelf) are not run. */
export interface CelRule {
  rule: string;
  message?: string;
  fieldPath?: string;
  reason?: string;
}

const celCache = new Map<string, ParseResult | Error>();
function compiled(rule: string): ParseResult | Error {
  let c = celCache.get(rule);
  if (!c) {
    try {
      c = parseCel(rule);
    } catch (err) {
      c = err as Error;
    }
    celCache.set(rule, c);
  }
  return c;
}

/** JSON as CEL sees it: integers are CEL ints (bigint in the evaluator), objects and lists recursively. */
function celValue(v: unknown): unknown {
  if (typeof v === 'number') return Number.isInteger(v) ? BigInt(v) : v;
  if (Array.isArray(v)) return v.map(celValue);
  if (isObject(v)) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, celValue(x)]));
  return v;
}

export interface SchemaResult {
  causes: Cause[];
  /** Paths of the unknown fields dropped (fieldValidation=Strict turns them into an error). */
  pruned: string[];
}

const FORMATS: Record<string, (v: string) => boolean> = {
  ipv4: (v) => isIP(v) === 4,
  ipv6: (v) => isIP(v) === 6,
  ip: (v) => isIP(v) !== 0,
  cidr: (v) => {
    const [ip, bits, extra] = v.split('/');
    const family = isIP(ip ?? '');
    return extra === undefined && family !== 0 && /^\d{1,3}$/.test(bits ?? '') && Number(bits) <= (family === 4 ? 32 : 128);
  },
  'date-time': (v) => /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/.test(v) && !Number.isNaN(Date.parse(v)),
  date: (v) => /^\d{4}-\d{2}-\d{2}$/.test(v),
  uuid: (v) => /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(v),
  hostname: (v) => v.length <= 253 && /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/.test(v),
  byte: (v) => /^[A-Za-z0-9+/]*={0,2}$/.test(v) && v.length % 4 === 0,
};

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number';
  return typeof v;
}

/** Go's %v-ish rendering of a value in a message: strings quoted, numbers bare, containers by type. */
function shown(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  return JSON.stringify(typeName(v));
}

function typeMatches(type: string, v: unknown): boolean {
  switch (type) {
    case 'object': return isObject(v);
    case 'array': return Array.isArray(v);
    case 'string': return typeof v === 'string';
    case 'integer': return typeof v === 'number' && Number.isInteger(v);
    case 'number': return typeof v === 'number';
    case 'boolean': return typeof v === 'boolean';
    default: return true;
  }
}

const patternCache = new Map<string, RegExp | null>();
function regexOf(pattern: string): RegExp | null {
  let re = patternCache.get(pattern);
  if (re === undefined) {
    try {
      re = new RegExp(pattern, 'u');
    } catch {
      re = null;
    }
    patternCache.set(pattern, re);
  }
  return re;
}

class Walker {
  readonly causes: Cause[] = [];
  readonly pruned: string[] = [];

  private bad(field: string, message: string, reason = 'FieldValueInvalid'): void {
    this.causes.push({ field, message, reason });
  }

  /** Validates `value` at `path` (already known not to be a pruned null); recurses into containers, pruning them. */
  walk(value: unknown, schema: StructuralSchema, path: string): void {
    if (schema['x-kubernetes-int-or-string']) {
      if (!(typeof value === 'string' || (typeof value === 'number' && Number.isInteger(value)))) {
        this.bad(path, `Invalid value: ${shown(value)}: ${path} in body must be of type integer,string: ${JSON.stringify(typeName(value))}`);
        return;
      }
    } else if (schema.type && !typeMatches(schema.type, value)) {
      this.bad(path, `Invalid value: ${JSON.stringify(typeName(value))}: ${path} in body must be of type ${schema.type}: ${JSON.stringify(typeName(value))}`);
      return;
    }
    if (schema.enum && !schema.enum.some((e) => JSON.stringify(e) === JSON.stringify(value))) {
      this.bad(path, `Unsupported value: ${shown(value)}: supported values: ${schema.enum.map((e) => JSON.stringify(e)).join(', ')}`, 'FieldValueNotSupported');
    }
    const before = this.causes.length;
    if (typeof value === 'string') this.string(value, schema, path);
    else if (typeof value === 'number') this.number(value, schema, path);
    else if (Array.isArray(value)) this.array(value, schema, path);
    else if (isObject(value)) this.object(value, schema, path);
    // Rules run on a value the schema accepted (a missing required field would only repeat as an evaluation error).
    if (schema['x-kubernetes-validations']?.length && this.causes.length === before) this.rules(value, schema['x-kubernetes-validations'], path);
  }

  /** The node's CEL rules, on the pruned and defaulted value (as the API server runs them, after the schema checks). */
  private rules(value: unknown, rules: CelRule[], path: string): void {
    let self: unknown;
    for (const r of rules) {
      if (typeof r?.rule !== 'string' || /\boldSelf\b/.test(r.rule)) continue;
      const fn = compiled(r.rule);
      const field = r.fieldPath ? `${path}${r.fieldPath.startsWith('[') ? '' : '.'}${r.fieldPath.replace(/^\./, '')}` : path;
      const reason = r.reason ?? 'FieldValueInvalid';
      const shownValue = isObject(value) ? '"object"' : Array.isArray(value) ? '"array"' : shown(value);
      if (fn instanceof Error) {
        this.bad(field, `Invalid value: ${shownValue}: compilation failed: ${fn.message.split('\n')[0]}`);
        continue;
      }
      let ok: unknown;
      try {
        ok = fn({ self: (self ??= celValue(value)) });
      } catch (err) {
        this.bad(field, `Invalid value: ${shownValue}: ${(err as Error).message.split('\n')[0]} evaluating rule: ${r.rule}`);
        continue;
      }
      if (ok !== true) {
        const message = r.message ?? `failed rule: ${r.rule}`;
        this.bad(field, reason === 'FieldValueInvalid' ? `Invalid value: ${shownValue}: ${message}` : message, reason);
      }
    }
  }

  private string(v: string, s: StructuralSchema, path: string): void {
    if (s.minLength !== undefined && v.length < s.minLength) this.bad(path, `Invalid value: ${shown(v)}: ${path} in body should be at least ${s.minLength} chars long`);
    if (s.maxLength !== undefined && v.length > s.maxLength) this.bad(path, `Too long: may not be more than ${s.maxLength} bytes`, 'FieldValueTooLong');
    if (s.pattern) {
      const re = regexOf(s.pattern);
      if (re && !re.test(v)) this.bad(path, `Invalid value: ${shown(v)}: ${path} in body should match '${s.pattern}'`);
    }
    const format = s.format ? FORMATS[s.format] : undefined;
    if (format && !format(v)) this.bad(path, `Invalid value: ${shown(v)}: ${path} in body must be of type ${s.format}: ${shown(v)}`);
  }

  private number(v: number, s: StructuralSchema, path: string): void {
    if (s.minimum !== undefined && (s.exclusiveMinimum ? v <= s.minimum : v < s.minimum)) {
      this.bad(path, `Invalid value: ${v}: ${path} in body should be greater than ${s.exclusiveMinimum ? '' : 'or equal to '}${s.minimum}`);
    }
    if (s.maximum !== undefined && (s.exclusiveMaximum ? v >= s.maximum : v > s.maximum)) {
      this.bad(path, `Invalid value: ${v}: ${path} in body should be less than ${s.exclusiveMaximum ? '' : 'or equal to '}${s.maximum}`);
    }
  }

  private array(v: unknown[], s: StructuralSchema, path: string): void {
    if (s.minItems !== undefined && v.length < s.minItems) this.bad(path, `Invalid value: ${v.length}: ${path} in body should have at least ${s.minItems} items`);
    if (s.maxItems !== undefined && v.length > s.maxItems) this.bad(path, `Too many: ${v.length}: must have at most ${s.maxItems} items`, 'FieldValueTooMany');
    if (s['x-kubernetes-list-type'] === 'set') {
      const seen = new Set<string>();
      v.forEach((e, i) => {
        const k = JSON.stringify(e);
        if (seen.has(k)) this.bad(`${path}[${i}]`, `Duplicate value: ${shown(e)}`, 'FieldValueDuplicate');
        seen.add(k);
      });
    }
    const mapKeys = s['x-kubernetes-list-type'] === 'map' ? (s['x-kubernetes-list-map-keys'] as string[] | undefined) ?? [] : [];
    if (mapKeys.length) {
      const seen = new Set<string>();
      v.forEach((e, i) => {
        if (!isObject(e)) return;
        const id = Object.fromEntries(mapKeys.filter((k) => e[k] !== undefined).map((k) => [k, e[k]]));
        const k = JSON.stringify(id);
        if (seen.has(k)) this.bad(`${path}[${i}]`, `Duplicate value: map[string]interface {}{${mapKeys.filter((m) => m in id).map((m) => `"${m}":${JSON.stringify(id[m])}`).join(', ')}}`, 'FieldValueDuplicate');
        seen.add(k);
      });
    }
    const items = s.items;
    if (!items) return;
    for (let i = 0; i < v.length; i++) {
      if (v[i] === null && !items.nullable) {
        this.bad(`${path}[${i}]`, `Invalid value: "null": ${path}[${i}] in body must be of type ${items.type ?? 'object'}: "null"`);
        continue;
      }
      this.walk(v[i], items, `${path}[${i}]`);
    }
  }

  private object(v: Record<string, unknown>, s: StructuralSchema, path: string): void {
    const props = s.properties ?? {};
    const additional = isObject(s.additionalProperties) ? (s.additionalProperties as StructuralSchema) : undefined;
    const keepUnknown = s['x-kubernetes-preserve-unknown-fields'] === true || s.additionalProperties === true || s['x-kubernetes-embedded-resource'] === true;
    for (const key of Object.keys(v)) {
      const child = props[key] ?? additional;
      const childPath = path ? `${path}.${key}` : key;
      if (!child) {
        if (!keepUnknown) {
          delete v[key];
          this.pruned.push(childPath);
        }
        continue;
      }
      if (v[key] === null && !child.nullable) {
        delete v[key];
        continue;
      }
      if (v[key] !== null) this.walk(v[key], child, childPath);
    }
    for (const [key, child] of Object.entries(props)) {
      if (v[key] === undefined && child.default !== undefined) v[key] = structuredClone(child.default);
    }
    for (const key of s.required ?? []) {
      if (v[key] === undefined) this.bad(path ? `${path}.${key}` : key, 'Required value', 'FieldValueRequired');
    }
    const n = Object.keys(v).length;
    if (s.minProperties !== undefined && n < s.minProperties) this.bad(path, `Invalid value: ${n}: ${path} in body should have at least ${s.minProperties} properties`);
    if (s.maxProperties !== undefined && n > s.maxProperties) this.bad(path, `Too many: ${n}: must have at most ${s.maxProperties} items`, 'FieldValueTooMany');
  }
}

/**
 * Validates and prunes a custom object in place against its version's schema. apiVersion, kind and metadata are the
 * server's, not the schema's (metadata is validated with every other kind's).
 */
export function validateCustomObject(obj: Record<string, unknown>, schema: StructuralSchema | undefined): SchemaResult {
  const walker = new Walker();
  if (!schema) return { causes: [], pruned: [] };
  const { apiVersion, kind, metadata } = obj;
  delete obj.apiVersion;
  delete obj.kind;
  delete obj.metadata;
  const rootProps = { ...(schema.properties ?? {}) };
  delete rootProps.apiVersion;
  delete rootProps.kind;
  delete rootProps.metadata;
  walker.walk(obj, { ...schema, type: 'object', properties: rootProps }, '');
  // Re-insert in the usual order: apiVersion, kind, metadata first.
  const rest = { ...obj };
  for (const key of Object.keys(obj)) delete obj[key];
  Object.assign(obj, { apiVersion, kind, metadata }, rest);
  return { causes: walker.causes, pruned: walker.pruned };
}

/** The CRD's own rule: a schema must say what type it is at every level that is not preserve-unknown or int-or-string. */
export function structuralProblems(schema: unknown, path: string): Cause[] {
  const out: Cause[] = [];
  const visit = (s: unknown, p: string) => {
    if (!isObject(s)) {
      out.push({ field: p, message: 'Required value: must be an object', reason: 'FieldValueRequired' });
      return;
    }
    const node = s as StructuralSchema;
    if (!node.type && !node['x-kubernetes-preserve-unknown-fields'] && !node['x-kubernetes-int-or-string'] && p !== path) {
      out.push({ field: `${p}.type`, message: 'Required value: must not be empty for specified object fields', reason: 'FieldValueRequired' });
    }
    if (node.pattern !== undefined && (typeof node.pattern !== 'string' || regexOf(node.pattern) === null)) {
      out.push({ field: `${p}.pattern`, message: `Invalid value: ${JSON.stringify(node.pattern)}: must be a valid regular expression` });
    }
    for (const [i, r] of (node['x-kubernetes-validations'] ?? []).entries()) {
      const fn = typeof r?.rule === 'string' ? compiled(r.rule) : new Error('rule must be a string');
      if (fn instanceof Error) out.push({ field: `${p}.x-kubernetes-validations[${i}].rule`, message: `Invalid value: ${JSON.stringify(r?.rule)}: compilation failed: ${fn.message.split('\n')[0]}` });
    }
    for (const [k, v] of Object.entries(node.properties ?? {})) visit(v, `${p}.properties[${k}]`);
    if (node.items !== undefined) visit(node.items, `${p}.items`);
    if (isObject(node.additionalProperties)) visit(node.additionalProperties, `${p}.additionalProperties`);
  };
  visit(schema, path);
  return out;
}
