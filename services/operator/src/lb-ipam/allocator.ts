/**
 * LB IPAM's decisions, as a pure function of what Kubernetes holds: the pools and the Services, including the
 * addresses their status already carries. Nothing is remembered between calls, so an operator that restarts or takes
 * over reads the assignment back from the Services and continues it; the same input always gives the same answer.
 *
 * Rules (Cilium's LB IPAM, minus address sharing):
 * - Services considered: `type: LoadBalancer` with no loadBalancerClass or ours. Others are left alone, except that a
 *   Service that stopped being a LoadBalancer of ours gives back the pool addresses its status still shows.
 * - Services are served oldest first (creationTimestamp, then the one LB IPAM already satisfied, then namespace/name):
 *   the first Service to hold an address
 *   keeps it; a later Service showing the same address loses it and gets another one (a conflict).
 * - An address is kept only while a pool that selects the Service contains it (a disabled pool keeps what it gave).
 * - Requested addresses (`spec.loadBalancerIP`, or the `lbipam.sluice.io/ips` annotation, comma-separated) must lie in
 *   a selecting, enabled pool and be free; otherwise the Service gets none and a condition says why.
 * - New addresses: the lowest free address of the first selecting enabled pool (by name), one per IP family of the
 *   Service (spec.ipFamilies, IPv4 when absent).
 * - Pools whose blocks overlap an older pool's are in conflict: they hand out nothing until the overlap is gone.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { matchesLabelSelector, type LabelSelector } from '@sluice/slim';

export const LB_CLASS = 'sluice.io/l2-announcer';
export const REQUESTED_IPS_ANNOTATION = 'lbipam.sluice.io/ips';
export const SERVICE_CONDITION = 'sluice.io/lb-ipam-request-satisfied';

export type Family = 'IPv4' | 'IPv6';

export interface PoolInput {
  name: string;
  /** creationTimestamp (RFC 3339), for the conflict order. */
  created: string;
  blocks: Array<{ cidr?: string; start?: string; stop?: string }>;
  serviceSelector?: LabelSelector;
  disabled: boolean;
}

export interface ServiceInput {
  namespace: string;
  name: string;
  created: string;
  type: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  loadBalancerClass?: string;
  loadBalancerIP?: string;
  ipFamilies?: Family[];
  /** The IPs in status.loadBalancer.ingress now. */
  ingressIPs: string[];
  /**
   * Its status carries our condition as satisfied: LB IPAM gave it what it shows. creationTimestamp has a resolution of
   * one second, so between two Services created in the same second this, not their names, says which one held an
   * address first.
   */
  assigned?: boolean;
}

export interface Condition {
  status: 'True' | 'False';
  reason: string;
  message: string;
}

export interface ServiceDecision {
  namespace: string;
  name: string;
  /** The ingress IPs the Service must show (in family order). */
  ips: string[];
  /** Our condition on the Service; undefined for a Service we no longer manage (only its addresses are removed). */
  condition?: Condition;
}

export interface PoolReport {
  name: string;
  total: bigint;
  used: number;
  /** The older pool whose blocks overlap this one's, when there is one. */
  conflict?: string;
  /** Blocks that could not be read (bad CIDR, start after stop, mixed families). */
  badBlocks: string[];
}

export interface Allocation {
  services: ServiceDecision[];
  pools: PoolReport[];
}

interface Block {
  family: Family;
  first: bigint;
  last: bigint;
}

interface Pool extends PoolInput {
  ranges: Block[];
  badBlocks: string[];
  conflict?: string;
}

export function ipToBigInt(ip: string): { family: Family; value: bigint } | undefined {
  if (isIPv4(ip)) return { family: 'IPv4', value: ip.split('.').reduce((n, part) => (n << 8n) | BigInt(Number(part)), 0n) };
  if (!isIPv6(ip) || ip.includes('.')) return undefined;
  const [head, tail] = ip.includes('::') ? ip.split('::') as [string, string] : [ip, undefined];
  const left = head ? head.split(':') : [];
  const right = tail === undefined ? [] : tail ? tail.split(':') : [];
  const groups = tail === undefined ? left : [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right];
  return { family: 'IPv6', value: groups.reduce((n, g) => (n << 16n) | BigInt(parseInt(g, 16)), 0n) };
}

export function bigIntToIp(family: Family, value: bigint): string {
  if (family === 'IPv4') return [24n, 16n, 8n, 0n].map((s) => String((value >> s) & 255n)).join('.');
  const groups = Array.from({ length: 8 }, (_, i) => ((value >> BigInt(16 * (7 - i))) & 0xffffn).toString(16));
  // The canonical (RFC 5952) form: the longest run of two or more zero groups becomes "::".
  let best = -1, bestLen = 0;
  for (let i = 0; i < 8; ) {
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen && j - i >= 2) [best, bestLen] = [i, j - i];
    i = j === i ? i + 1 : j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}

/** The canonical text of an IP (what status and leases carry), or undefined when it is not one. */
export function canonicalIp(ip: string): string | undefined {
  const parsed = ipToBigInt(ip.trim());
  return parsed && bigIntToIp(parsed.family, parsed.value);
}

function parseBlock(block: PoolInput['blocks'][number]): Block | string {
  if (block.cidr) {
    const [ip, bitsText] = block.cidr.split('/');
    const parsed = ip ? ipToBigInt(ip) : undefined;
    const width = parsed?.family === 'IPv4' ? 32 : 128;
    const bits = Number(bitsText);
    if (!parsed || !Number.isInteger(bits) || bits < 0 || bits > width) return `${block.cidr}: not a CIDR`;
    const size = 1n << BigInt(width - bits);
    const first = parsed.value & ~(size - 1n) & ((1n << BigInt(width)) - 1n);
    // An IPv4 network's own and broadcast addresses are not handed out (a /31 or /32 has neither).
    const edge = parsed.family === 'IPv4' && bits < 31 ? 1n : 0n;
    return { family: parsed.family, first: first + edge, last: first + size - 1n - edge };
  }
  const start = block.start ? ipToBigInt(block.start) : undefined;
  const stop = block.stop ? ipToBigInt(block.stop) : undefined;
  if (!start || !stop) return `${block.start ?? '?'}-${block.stop ?? '?'}: start and stop must be IPs`;
  if (start.family !== stop.family) return `${block.start}-${block.stop}: start and stop are of different families`;
  if (start.value > stop.value) return `${block.start}-${block.stop}: start is after stop`;
  return { family: start.family, first: start.value, last: stop.value };
}

const byAge = <T extends { created: string }>(key: (x: T) => string) => (a: T, b: T) =>
  a.created < b.created ? -1 : a.created > b.created ? 1 : key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0;

const overlaps = (a: Block, b: Block) => a.family === b.family && a.first <= b.last && b.first <= a.last;

const inPool = (pool: Pool, family: Family, value: bigint) => pool.ranges.some((r) => r.family === family && r.first <= value && value <= r.last);

/** The lowest address of the first pool (in the given order) with one free. */
function firstFree(pools: readonly Pool[], family: Family, taken: (v: bigint) => boolean): { pool: string; value: bigint } | undefined {
  for (const pool of pools) {
    for (const range of pool.ranges) {
      if (range.family !== family) continue;
      let v = range.first;
      while (v <= range.last && taken(v)) v++;
      if (v <= range.last) return { pool: pool.name, value: v };
    }
  }
  return undefined;
}

export function requestedIps(service: ServiceInput): string[] {
  const annotation = service.annotations[REQUESTED_IPS_ANNOTATION];
  const raw = annotation !== undefined ? annotation.split(',') : service.loadBalancerIP ? [service.loadBalancerIP] : [];
  return raw.map((ip) => ip.trim()).filter(Boolean);
}

export function isOurs(service: ServiceInput): boolean {
  return service.type === 'LoadBalancer' && (service.loadBalancerClass === undefined || service.loadBalancerClass === LB_CLASS);
}

export function allocate(poolInputs: readonly PoolInput[], serviceInputs: readonly ServiceInput[]): Allocation {
  const pools: Pool[] = [...poolInputs].sort(byAge((p) => p.name)).map((p) => {
    const ranges: Block[] = [];
    const badBlocks: string[] = [];
    for (const b of p.blocks) {
      const parsed = parseBlock(b);
      if (typeof parsed === 'string') badBlocks.push(parsed);
      else ranges.push(parsed);
    }
    return { ...p, ranges, badBlocks };
  });
  for (let i = 0; i < pools.length; i++) {
    for (let j = 0; j < i; j++) {
      if (pools[i]!.ranges.some((a) => pools[j]!.ranges.some((b) => overlaps(a, b)))) {
        pools[i]!.conflict = pools[j]!.name;
        break;
      }
    }
  }
  // The pools that may hold a Service's addresses (kept ones), and those that may hand out new ones, by name.
  const holding = (s: ServiceInput) => pools.filter((p) => !p.conflict && matchesLabelSelector(p.serviceSelector, s.labels));
  const giving = (s: ServiceInput) => holding(s).filter((p) => !p.disabled).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));

  const used = new Map<string, string>(); // `${family}/${value}` → pool name
  const key = (family: Family, value: bigint) => `${family}/${value}`;
  const poolOf = (candidates: Pool[], family: Family, value: bigint) => candidates.find((p) => inPool(p, family, value));

  const services = [...serviceInputs].sort((a, b) =>
    a.created !== b.created || !!a.assigned === !!b.assigned ? byAge<ServiceInput>((s) => `${s.namespace}/${s.name}`)(a, b) : a.assigned ? -1 : 1);
  const decisions = new Map<string, ServiceDecision>();
  const id = (s: ServiceInput) => `${s.namespace}/${s.name}`;

  // Pass 1: what every Service keeps (oldest first), so that a new Service never takes an address an older one shows.
  const kept = new Map<string, Map<Family, string>>();
  for (const s of services) {
    const keep = new Map<Family, string>();
    kept.set(id(s), keep);
    if (!isOurs(s)) continue;
    const requested = requestedIps(s).map((ip) => ipToBigInt(ip));
    const candidates = holding(s);
    for (const ip of s.ingressIPs) {
      const parsed = ipToBigInt(ip);
      if (!parsed || keep.has(parsed.family) || used.has(key(parsed.family, parsed.value))) continue;
      if (requested.length && !requested.some((r) => r && r.family === parsed.family && r.value === parsed.value)) continue;
      const pool = poolOf(candidates, parsed.family, parsed.value);
      if (!pool) continue;
      used.set(key(parsed.family, parsed.value), pool.name);
      keep.set(parsed.family, bigIntToIp(parsed.family, parsed.value));
    }
  }

  // Pass 2: requested addresses (before any new one, so a fresh allocation never takes an address a Service asks for);
  // pass 3: new addresses for what is still missing.
  const problems = new Map<string, Condition[]>();
  for (const s of services) {
    const keep = kept.get(id(s))!;
    if (!isOurs(s)) {
      // No longer ours: give back whatever pool addresses the status still shows; foreign addresses are not ours to touch.
      const ours = s.ingressIPs.filter((ip) => {
        const p = ipToBigInt(ip);
        return p && pools.some((pool) => inPool(pool, p.family, p.value));
      });
      if (ours.length) decisions.set(id(s), { namespace: s.namespace, name: s.name, ips: s.ingressIPs.filter((ip) => !ours.includes(ip)) });
      continue;
    }
    const list: Condition[] = [];
    problems.set(id(s), list);
    for (const raw of requestedIps(s)) {
      const parsed = ipToBigInt(raw);
      if (!parsed) {
        list.push({ status: 'False', reason: 'RequestedIPInvalid', message: `requested address "${raw}" is not an IP address` });
        continue;
      }
      if (keep.has(parsed.family)) continue;
      const pool = poolOf(giving(s), parsed.family, parsed.value);
      if (!pool) {
        list.push({ status: 'False', reason: 'RequestedIPNotInPool', message: `requested address ${raw} is in no enabled pool that selects this service` });
      } else if (used.has(key(parsed.family, parsed.value))) {
        list.push({ status: 'False', reason: 'RequestedIPInUse', message: `requested address ${raw} is already assigned to another service` });
      } else {
        used.set(key(parsed.family, parsed.value), pool.name);
        keep.set(parsed.family, bigIntToIp(parsed.family, parsed.value));
      }
    }
  }
  for (const s of services) {
    if (!isOurs(s)) continue;
    const keep = kept.get(id(s))!;
    const list = problems.get(id(s))!;
    const families: Family[] = s.ipFamilies?.length ? s.ipFamilies : ['IPv4'];
    if (!requestedIps(s).length) {
      for (const family of families) {
        if (keep.has(family)) continue;
        const candidates = giving(s).filter((p) => p.ranges.some((r) => r.family === family));
        const got = firstFree(candidates, family, (v) => used.has(key(family, v)));
        if (got) {
          used.set(key(family, got.value), got.pool);
          keep.set(family, bigIntToIp(family, got.value));
        } else if (candidates.length) {
          list.push({ status: 'False', reason: 'PoolExhausted', message: `every ${family} address of the pools that select this service (${candidates.map((p) => p.name).join(', ')}) is in use` });
        } else {
          list.push({ status: 'False', reason: 'NoPool', message: `no enabled ${family} pool selects this service` });
        }
      }
    }
    const order: Family[] = [...families, 'IPv4', 'IPv6'];
    const ips = [...keep.entries()].sort(([a], [b]) => order.indexOf(a) - order.indexOf(b)).map(([, ip]) => ip);
    const condition = list[0] ?? { status: 'True', reason: 'Satisfied', message: `assigned ${ips.join(', ')}` };
    decisions.set(id(s), { namespace: s.namespace, name: s.name, ips, condition });
  }

  const usedByPool = new Map<string, number>();
  for (const pool of used.values()) usedByPool.set(pool, (usedByPool.get(pool) ?? 0) + 1);
  return {
    services: [...decisions.values()],
    pools: pools.map((p) => ({
      name: p.name,
      total: p.ranges.reduce((n, r) => n + (r.last - r.first + 1n), 0n),
      used: usedByPool.get(p.name) ?? 0,
      ...(p.conflict ? { conflict: p.conflict } : {}),
      badBlocks: p.badBlocks,
    })),
  };
}
