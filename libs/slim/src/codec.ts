/**
 * The canonical encoding: compact JSON of a record built field by field in schema order, with its lists and maps
 * already sorted by the converters. Decoding validates against the same schema and names the first bad field.
 */
import type { z } from 'zod';
import { badEndpointAddress, SCHEMA_VERSION, slimEndpointSchema, slimSchemas, type SlimEndpoint, type SlimKind, type SlimRecord } from './schema.ts';

export class SlimError extends Error {
  constructor(
    message: string,
    /** Dotted path of the offending field, e.g. "podIPs.0". */
    readonly field: string,
  ) {
    super(message);
    this.name = 'SlimError';
  }
}

function describeIssue(error: z.ZodError, what: string): SlimError {
  const issue = error.issues[0]!;
  const field = issue.path.map(String).join('.') || '(record)';
  return new SlimError(`${what}: field ${field} ${issue.message}`, field);
}

/** Validates a freshly converted record and returns it with its fields in schema order (the canonical order). */
export function checked<S extends z.ZodType>(schema: S, value: unknown, what: string): z.infer<S> {
  const result = schema.safeParse(value);
  if (!result.success) {
    const name = (value as { namespace?: string; name?: string }) ?? {};
    const id = [name.namespace, name.name].filter(Boolean).join('/');
    throw describeIssue(result.error, `bad ${what}${id ? ` ${id}` : ''}`);
  }
  return result.data;
}

/**
 * Validates a record built by a `buildSlim*` function, throwing SlimError naming the first bad field. Lets a caller
 * that sees the same bytes again and again (heartbeats) validate only records whose bytes changed.
 */
export function validateSlim<K extends SlimKind>(kind: K, record: SlimRecord<K>): void {
  const result = slimSchemas[kind].safeParse(record);
  if (!result.success) {
    const id = [(record as { namespace?: string }).namespace, (record as { name?: string }).name].filter(Boolean).join('/');
    throw describeIssue(result.error, `bad ${kind}${id ? ` ${id}` : ''}`);
  }
}

/** Validates one endpoint of a slice of `type` (see `joinSlimEndpointSlice`); throws SlimError naming the field. */
export function validateSlimEndpoint(type: SlimRecord<'endpointSlice'>['addressType'], endpoint: SlimEndpoint, index: number): void {
  const result = slimEndpointSchema.safeParse(endpoint);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const field = ['endpoints', index, ...issue.path].map(String).join('.');
    throw new SlimError(`bad endpoint: field ${field} ${issue.message}`, field);
  }
  const bad = badEndpointAddress(type, endpoint);
  if (bad >= 0) throw new SlimError(`bad endpoint: field endpoints.${index}.addresses.${bad} is not a valid ${type} address`, `endpoints.${index}.addresses.${bad}`);
}

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

/** Canonical bytes of a record: equal records give equal bytes. */
export function encodeSlim<K extends SlimKind>(_kind: K, record: SlimRecord<K>): Uint8Array {
  return encoder.encode(JSON.stringify(record));
}

/** The canonical encoding as a string, for callers (like etcd3) that take strings. */
export function encodeSlimString<K extends SlimKind>(_kind: K, record: SlimRecord<K>): string {
  return JSON.stringify(record);
}

/** Decodes and validates; throws SlimError naming the field for anything that is not a valid record of this kind. */
export function decodeSlim<K extends SlimKind>(kind: K, bytes: Uint8Array | string): SlimRecord<K> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(typeof bytes === 'string' ? bytes : decoder.decode(bytes));
  } catch (err) {
    throw new SlimError(`${kind} record is not valid JSON: ${(err as Error).message}`, '(record)');
  }
  const version = (parsed as { v?: unknown } | null)?.v;
  if (version !== SCHEMA_VERSION) {
    throw new SlimError(`${kind} record has unknown schema version ${JSON.stringify(version)} (this reader knows ${SCHEMA_VERSION})`, 'v');
  }
  const result = slimSchemas[kind].safeParse(parsed);
  if (!result.success) throw describeIssue(result.error, `bad ${kind} record`);
  return result.data as SlimRecord<K>;
}
