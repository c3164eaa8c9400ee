/**
 * Each node's effective agent configuration from the SluiceNodeConfigs that select it (pure: no I/O).
 *
 * Precedence (documented in README.md, tested in node-config-resolve.test.ts):
 * 1. the agent's own flags (SLUICE_* environment, --config-dir: the cluster defaults) — not seen here;
 * 2. the SluiceNodeConfigs whose nodeSelector matches the node's labels, applied in order of their names (sorted
 *    by code unit), so for a key set by several the one whose name sorts LAST wins. Names are the only order every
 *    operator instance sees the same way (creation times tie, and a re-created object would move); numbering names
 *    (`10-base`, `50-ebpf`) gives the order one reads.
 * A key this agent does not know, or a value it would refuse, is not applied (the node keeps what it had from the
 * level below) and is reported in that object's status; a selector that cannot be read selects nothing.
 */
import { labelSelectorSchema, matchesLabelSelector, type LabelSelector } from '@sluice/slim';
import type { NodeConfigRecord } from '@sluice/kvstore';

type Any = Record<string, any>;

/** A key's value as the agent's record holds it, or why the value is refused. */
type Parsed = { value: string | number | string[] } | { problem: string };

const oneOf = (values: readonly string[]) => (raw: unknown): Parsed => {
  const value = typeof raw === 'string' ? raw.trim() : raw;
  return typeof value === 'string' && values.includes(value) ? { value } : { problem: `${JSON.stringify(raw)} is not one of ${values.join(', ')}` };
};

const IPV4_CIDR = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}\/(3[0-2]|[12]?\d)$/;

/** ip-masq-agent's list: a YAML list of IPv4 CIDRs, or one comma-separated string (as the agent's flag takes it). */
function cidrList(raw: unknown): Parsed {
  const items = Array.isArray(raw) ? raw : typeof raw === 'string' ? raw.split(',') : undefined;
  if (!items) return { problem: `${JSON.stringify(raw)} is not a list of IPv4 CIDRs` };
  const cidrs: string[] = [];
  for (const item of items) {
    const cidr = typeof item === 'string' ? item.trim() : '';
    if (!IPV4_CIDR.test(cidr)) return { problem: `${JSON.stringify(item)} is not an IPv4 CIDR` };
    if (!cidrs.includes(cidr)) cidrs.push(cidr);
  }
  return { value: cidrs };
}

/** The pods' MTU, overriding the one derived from the uplink (IPv4's 576 would do; 1280 keeps IPv6 possible). */
function mtu(raw: unknown): Parsed {
  const value = typeof raw === 'string' && /^\d+$/.test(raw.trim()) ? Number(raw.trim()) : raw;
  return typeof value === 'number' && Number.isInteger(value) && value >= 1280 && value <= 65_535 ? { value } : { problem: `${JSON.stringify(raw)} is not an MTU (an integer from 1280 to 65535)` };
}

/** The agent keys a SluiceNodeConfig may set, how each value is read, and the record field each becomes. */
export const NODE_CONFIG_KEYS = {
  routing: { parse: oneOf(['native', 'tunnel']), field: 'routing' },
  'host-routing': { parse: oneOf(['auto', 'bpf', 'legacy']), field: 'hostRouting' },
  masquerade: { parse: oneOf(['off', 'iptables', 'bpf']), field: 'masquerade' },
  'non-masquerade-cidrs': { parse: cidrList, field: 'nonMasqueradeCidrs' },
  mtu: { parse: mtu, field: 'mtu' },
} as const satisfies Record<string, { parse: (raw: unknown) => Parsed; field: keyof NodeConfigRecord }>;
export type NodeConfigKey = keyof typeof NODE_CONFIG_KEYS;

export interface NodeConfigInput {
  name: string;
  generation?: number;
  selector: LabelSelector | undefined;
  /** Set when the selector could not be read (then it selects nothing). */
  selectorError?: string;
  defaults: Record<string, unknown>;
}

export interface NodeInput {
  name: string;
  labels: Record<string, string>;
}

/** What one SluiceNodeConfig's status should say. */
export interface NodeConfigReport {
  name: string;
  /** Problems found (unknown keys, bad values, an unreadable selector); empty: valid. */
  problems: string[];
  /** Nodes it selects, sorted. */
  nodes: string[];
}

/** A node's effective settings (only keys some object set), and which objects they came from, in order. */
export type EffectiveConfig = Pick<NodeConfigRecord, 'routing' | 'hostRouting' | 'masquerade' | 'nonMasqueradeCidrs' | 'mtu'> & { sources: string[] };

export interface Resolution {
  nodes: Map<string, EffectiveConfig>;
  reports: NodeConfigReport[];
}

const isKey = (k: string): k is NodeConfigKey => Object.hasOwn(NODE_CONFIG_KEYS, k);

/** Reads a SluiceNodeConfig object as Kubernetes returns it. */
export function nodeConfigInput(o: Any): NodeConfigInput {
  const spec = (o.spec ?? {}) as Any;
  const name = typeof o.metadata?.name === 'string' ? o.metadata.name : '';
  const generation = typeof o.metadata?.generation === 'number' ? o.metadata.generation : undefined;
  const defaults = typeof spec.defaults === 'object' && spec.defaults !== null && !Array.isArray(spec.defaults) ? (spec.defaults as Record<string, unknown>) : {};
  if (spec.nodeSelector === undefined || spec.nodeSelector === null) return { name, generation, selector: undefined, defaults };
  const parsed = labelSelectorSchema.safeParse(spec.nodeSelector);
  if (parsed.success) return { name, generation, selector: parsed.data, defaults };
  const issue = parsed.error.issues[0]!;
  return { name, generation, selector: undefined, selectorError: `nodeSelector.${issue.path.join('.')}: ${issue.message}`, defaults };
}

/** The valid settings of one object and its problems. */
export function validateDefaults(defaults: Record<string, unknown>): { settings: Partial<Record<NodeConfigKey, string | number | string[]>>; problems: string[] } {
  const settings: Partial<Record<NodeConfigKey, string | number | string[]>> = {};
  const problems: string[] = [];
  for (const [key, raw] of Object.entries(defaults).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    if (!isKey(key)) {
      problems.push(`unknown key "${key}" (known: ${Object.keys(NODE_CONFIG_KEYS).join(', ')})`);
      continue;
    }
    const parsed = NODE_CONFIG_KEYS[key].parse(raw);
    if ('problem' in parsed) {
      problems.push(`${key}: ${parsed.problem}`);
      continue;
    }
    settings[key] = parsed.value;
  }
  return { settings, problems };
}

export function resolveNodeConfigs(configs: readonly NodeConfigInput[], nodes: readonly NodeInput[]): Resolution {
  const ordered = [...configs].filter((c) => c.name).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const validated = ordered.map((c) => ({ config: c, ...validateDefaults(c.defaults) }));
  const result = new Map<string, EffectiveConfig>();
  const selected = new Map<string, string[]>(ordered.map((c) => [c.name, []]));
  for (const node of [...nodes].sort((a, b) => (a.name < b.name ? -1 : 1))) {
    let effective: EffectiveConfig | undefined;
    for (const { config, settings } of validated) {
      if (config.selectorError || !matchesLabelSelector(config.selector, node.labels)) continue;
      selected.get(config.name)!.push(node.name);
      const keys = Object.keys(settings) as NodeConfigKey[];
      if (!keys.length) continue;
      effective ??= { sources: [] };
      effective.sources.push(config.name);
      for (const key of keys) (effective as Record<string, unknown>)[NODE_CONFIG_KEYS[key].field] = settings[key];
    }
    if (effective) result.set(node.name, effective);
  }
  const reports = validated.map(({ config, problems }) => ({
    name: config.name,
    problems: config.selectorError ? [`${config.selectorError} (selects no node)`, ...problems] : problems,
    nodes: selected.get(config.name)!,
  }));
  return { nodes: result, reports };
}

/** The etcd record of a node's effective configuration (keys.effectiveNodeConfig). */
export function effectiveRecord(config: EffectiveConfig, version: number): NodeConfigRecord {
  const { sources, ...settings } = config;
  return { v: version as NodeConfigRecord['v'] & number, ...settings, sources } as NodeConfigRecord;
}
