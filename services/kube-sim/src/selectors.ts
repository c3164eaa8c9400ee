/** Label and field selectors, in the syntax the API server accepts in ?labelSelector= and ?fieldSelector=. */
import { badRequest } from './status.ts';

type LabelRequirement =
  | { op: 'exists' | 'notexists'; key: string }
  | { op: 'in' | 'notin'; key: string; values: Set<string> };

export type Labels = Readonly<Record<string, string>>;

export interface LabelSelector {
  readonly requirements: readonly LabelRequirement[];
  matches(labels: Labels): boolean;
}

const KEY = /^([a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?\/)?[a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?$/;
const VALUE = /^([a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?)?$/;

/** Splits on commas that are not inside a parenthesised value set. */
function splitTopLevel(text: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '(') depth++;
    else if (c === ')') depth--;
    else if (c === ',' && depth === 0) {
      parts.push(text.slice(start, i));
      start = i + 1;
    }
  }
  parts.push(text.slice(start));
  return parts.map((p) => p.trim()).filter((p) => p.length > 0);
}

function checkKey(key: string, selector: string): string {
  if (!KEY.test(key)) throw badRequest(`unable to parse requirement: invalid label key "${key}" in selector "${selector}"`);
  return key;
}

function checkValue(value: string, selector: string): string {
  if (value.length > 63 || !VALUE.test(value)) throw badRequest(`unable to parse requirement: invalid label value "${value}" in selector "${selector}"`);
  return value;
}

export function parseLabelSelector(text: string | undefined | null): LabelSelector | undefined {
  if (!text || !text.trim()) return undefined;
  const requirements: LabelRequirement[] = [];
  for (const part of splitTopLevel(text)) {
    let m: RegExpExecArray | null;
    if ((m = /^!\s*([^\s=!(),]+)$/.exec(part))) requirements.push({ op: 'notexists', key: checkKey(m[1]!, text) });
    else if ((m = /^([^\s=!(),]+)\s+(in|notin)\s*\(([^)]*)\)$/.exec(part))) {
      const values = new Set(m[3]!.split(',').map((v) => checkValue(v.trim(), text)));
      requirements.push({ op: m[2] === 'in' ? 'in' : 'notin', key: checkKey(m[1]!, text), values });
    } else if ((m = /^([^\s=!(),]+)\s*(==|=|!=)\s*([^\s=!(),]*)$/.exec(part))) {
      requirements.push({ op: m[2] === '!=' ? 'notin' : 'in', key: checkKey(m[1]!, text), values: new Set([checkValue(m[3]!, text)]) });
    } else if ((m = /^([^\s=!(),]+)$/.exec(part))) requirements.push({ op: 'exists', key: checkKey(m[1]!, text) });
    else throw badRequest(`unable to parse requirement: found '${part}', expected: in, notin, =, ==, !=, gt, lt`);
  }
  return { requirements, matches: (labels) => requirements.every((r) => matchRequirement(r, labels)) };
}

function matchRequirement(r: LabelRequirement, labels: Labels): boolean {
  const has = Object.prototype.hasOwnProperty.call(labels, r.key);
  switch (r.op) {
    case 'exists': return has;
    case 'notexists': return !has;
    case 'in': return has && r.values.has(labels[r.key]!);
    case 'notin': return !has || !r.values.has(labels[r.key]!);
  }
}

/** A map selector (a Service's spec.selector): every pair must match; an empty selector selects nothing here. */
export function matchesMap(selector: Labels | undefined, labels: Labels): boolean {
  if (!selector) return false;
  let any = false;
  for (const key in selector) {
    any = true;
    if (labels[key] !== selector[key]) return false;
  }
  return any;
}

export interface FieldRequirement {
  field: string;
  value: string;
  negate: boolean;
}

export interface FieldSelector {
  readonly requirements: readonly FieldRequirement[];
  matches(get: (field: string) => string): boolean;
  /** The value the selector pins a field to, when it does (for index lookups). */
  exact(field: string): string | undefined;
}

export function parseFieldSelector(text: string | undefined | null, supported: ReadonlySet<string> | 'any'): FieldSelector | undefined {
  if (!text || !text.trim()) return undefined;
  const requirements: FieldRequirement[] = [];
  for (const part of text.split(',').map((p) => p.trim()).filter(Boolean)) {
    const m = /^([^=!\s]+)\s*(==|=|!=)\s*(.*)$/.exec(part);
    if (!m) throw badRequest(`invalid selector: '${text}'; can't understand '${part}'`);
    const field = m[1]!;
    if (supported !== 'any' && !supported.has(field)) throw badRequest(`field label not supported: ${field}`);
    requirements.push({ field, value: m[3]!, negate: m[2] === '!=' });
  }
  return {
    requirements,
    matches: (get) => requirements.every((r) => (get(r.field) === r.value) !== r.negate),
    exact: (field) => requirements.find((r) => r.field === field && !r.negate)?.value,
  };
}
