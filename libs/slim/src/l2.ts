/**
 * L2 announcements: the slim record of a SluiceL2AnnouncementPolicy, and Kubernetes label selectors.
 *
 * The operator resolves the policy's serviceSelector itself (slim Service records carry no labels) and writes the
 * addresses it picked into the record, so an agent needs nothing but this record and its own node's labels to know
 * what it may announce. The node selector stays a selector: every agent applies it to its own labels.
 */
import { z } from 'zod';
import { SlimError } from './codec.ts';
import { ipString, SCHEMA_VERSION } from './schema.ts';

export const labelSelectorSchema = z.strictObject({
  matchLabels: z.record(z.string(), z.string()).optional(),
  matchExpressions: z
    .array(z.strictObject({ key: z.string().min(1), operator: z.enum(['In', 'NotIn', 'Exists', 'DoesNotExist']), values: z.array(z.string()).optional() }))
    .optional(),
});
export type LabelSelector = z.infer<typeof labelSelectorSchema>;

/**
 * Kubernetes' meaning of a LabelSelector: every matchLabels pair and every expression must hold; an absent or empty
 * selector matches everything. (NotIn and DoesNotExist hold for an object without the key, as in Kubernetes.)
 */
export function matchesLabelSelector(selector: LabelSelector | undefined, labels: Readonly<Record<string, string>>): boolean {
  if (!selector) return true;
  for (const [key, value] of Object.entries(selector.matchLabels ?? {})) if (labels[key] !== value) return false;
  for (const e of selector.matchExpressions ?? []) {
    const has = Object.prototype.hasOwnProperty.call(labels, e.key);
    const values = e.values ?? [];
    switch (e.operator) {
      case 'In':
        if (!has || !values.includes(labels[e.key]!)) return false;
        break;
      case 'NotIn':
        if (has && values.includes(labels[e.key]!)) return false;
        break;
      case 'Exists':
        if (!has) return false;
        break;
      case 'DoesNotExist':
        if (has) return false;
        break;
    }
  }
  return true;
}

export const slimL2AnnouncementSchema = z.strictObject({
  v: z.literal(SCHEMA_VERSION),
  /** The policy's name (policies are cluster-scoped). */
  name: z.string().min(1).max(253),
  /** Nodes that may announce (absent: every node). */
  nodeSelector: labelSelectorSchema.optional(),
  /** Regular expressions an announcing interface's name must match (at least one); empty: any interface. */
  interfaces: z.array(z.string().min(1).max(256)),
  /** The addresses to announce, each with the Service it belongs to (`namespace/name`), sorted by IP then service. */
  addresses: z.array(z.strictObject({ ip: ipString, service: z.string().min(3) })),
});
export type SlimL2Announcement = z.infer<typeof slimL2AnnouncementSchema>;

export function encodeSlimL2Announcement(record: SlimL2Announcement): string {
  const result = slimL2AnnouncementSchema.safeParse(record);
  if (!result.success) throw l2Error(result.error, `bad l2 announcement ${record.name}`);
  return JSON.stringify(result.data);
}

export function decodeSlimL2Announcement(bytes: Uint8Array | string): SlimL2Announcement {
  let parsed: unknown;
  try {
    parsed = JSON.parse(typeof bytes === 'string' ? bytes : Buffer.from(bytes).toString('utf8'));
  } catch (err) {
    throw new SlimError(`l2 announcement record is not valid JSON: ${(err as Error).message}`, '(record)');
  }
  const result = slimL2AnnouncementSchema.safeParse(parsed);
  if (!result.success) throw l2Error(result.error, 'bad l2 announcement record');
  return result.data;
}

function l2Error(error: z.ZodError, what: string): SlimError {
  const issue = error.issues[0]!;
  const field = issue.path.map(String).join('.') || '(record)';
  return new SlimError(`${what}: field ${field} ${issue.message}`, field);
}
