/**
 * What the API server does to a Service on its way in: cluster IPs from the service CIDRs (one per requested family,
 * dual-stack included), node ports from 30000–32767 for NodePort and LoadBalancer Services, a healthCheckNodePort for
 * an `externalTrafficPolicy: Local` LoadBalancer, all without collisions; a request for a taken or out-of-range value
 * is a 422 naming the field. An update keeps what the old object held when the new one leaves it out, as the real
 * server's patchAllocatedValues does.
 */
import { isIP } from 'node:net';
import { ApiError, invalid, type Cause } from './status.ts';

type Family = 'IPv4' | 'IPv6';

interface Port { name?: string; port?: number; protocol?: string; nodePort?: number; targetPort?: number | string }
interface Spec {
  type?: string;
  clusterIP?: string;
  clusterIPs?: string[];
  ipFamilies?: Family[];
  ipFamilyPolicy?: string;
  ports?: Port[];
  externalTrafficPolicy?: string;
  healthCheckNodePort?: number;
  allocateLoadBalancerNodePorts?: boolean;
  externalName?: string;
  [key: string]: unknown;
}

export interface ServiceRangeOptions {
  /** IPv4 service CIDR (default 10.96.0.0/12). */
  serviceCIDR?: string;
  /** IPv6 service CIDR (default fd00:10:96::/112). */
  serviceCIDRv6?: string;
  /** Node port range, inclusive (default 30000-32767). */
  nodePortRange?: [number, number];
}

function ipv6ToBig(ip: string): bigint {
  const [head, tail] = ip.includes('::') ? (ip.split('::') as [string, string]) : [ip, undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = [...h, ...Array<string>(tail === undefined ? 0 : 8 - h.length - t.length).fill('0'), ...t];
  return groups.reduce((acc, g) => (acc << 16n) + BigInt(parseInt(g || '0', 16)), 0n);
}

function bigToIpv6(n: bigint): string {
  const groups: string[] = [];
  for (let i = 7; i >= 0; i--) groups.push(((n >> BigInt(i * 16)) & 0xffffn).toString(16));
  // Canonical form: the longest run of zero groups becomes "::".
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== '0') { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}

const ipv4ToBig = (ip: string) => BigInt(ip.split('.').reduce((a, p) => a * 256 + Number(p), 0));
const bigToIpv4 = (n: bigint) => [24n, 16n, 8n, 0n].map((s) => String((n >> s) & 255n)).join('.');

/** One service CIDR: addresses handed out from offset 10 on, the network and last address never. */
class IPRange {
  readonly base: bigint;
  readonly size: bigint;
  private readonly used = new Set<string>();
  private cursor = 10n;

  constructor(readonly cidr: string, readonly family: Family) {
    const [ip, bits] = cidr.split('/');
    const width = family === 'IPv4' ? 32n : 128n;
    const prefix = BigInt(Number(bits));
    const raw = family === 'IPv4' ? ipv4ToBig(ip!) : ipv6ToBig(ip!);
    this.size = 1n << (width - prefix);
    this.base = (raw / this.size) * this.size;
  }

  private text(n: bigint): string {
    return this.family === 'IPv4' ? bigToIpv4(n) : bigToIpv6(n);
  }

  /** The canonical form of an address, or undefined when it is not in this range. */
  contains(ip: string): string | undefined {
    if (isIP(ip) !== (this.family === 'IPv4' ? 4 : 6)) return undefined;
    const n = this.family === 'IPv4' ? ipv4ToBig(ip) : ipv6ToBig(ip);
    const offset = n - this.base;
    return offset > 0n && offset < this.size - 1n ? this.text(n) : undefined;
  }

  has(ip: string): boolean {
    return this.used.has(ip);
  }

  take(ip: string): void {
    this.used.add(ip);
  }

  release(ip: string): void {
    this.used.delete(ip);
  }

  allocate(): string {
    const span = this.size - 2n;
    for (let i = 0n; i < span && i < 1_000_000n; i++) {
      const offset = this.cursor;
      this.cursor = offset + 1n >= this.size - 1n ? 1n : offset + 1n;
      const ip = this.text(this.base + offset);
      if (!this.used.has(ip)) {
        this.used.add(ip);
        return ip;
      }
    }
    throw new ApiError(500, 'InternalError', `Internal error occurred: failed to allocate a serviceIP: range is full`);
  }
}

const familyOf = (ip: string): Family | undefined => (isIP(ip) === 4 ? 'IPv4' : isIP(ip) === 6 ? 'IPv6' : undefined);
const needsNodePorts = (spec: Spec) => spec.type === 'NodePort' || (spec.type === 'LoadBalancer' && spec.allocateLoadBalancerNodePorts !== false);
const needsHealthCheck = (spec: Spec) => spec.type === 'LoadBalancer' && spec.externalTrafficPolicy === 'Local';

/** What one Service holds, to release on delete or to diff on update. */
interface Held { ips: string[]; nodePorts: number[] }

export class ServiceAllocator {
  private readonly ranges: Record<Family, IPRange>;
  private readonly nodePorts = new Set<number>();
  private readonly portRange: [number, number];
  private portCursor: number;

  constructor(options: ServiceRangeOptions = {}) {
    this.ranges = {
      IPv4: new IPRange(options.serviceCIDR ?? '10.96.0.0/12', 'IPv4'),
      IPv6: new IPRange(options.serviceCIDRv6 ?? 'fd00:10:96::/112', 'IPv6'),
    };
    this.portRange = options.nodePortRange ?? [30000, 32767];
    this.portCursor = this.portRange[0];
  }

  get serviceCIDRs(): string[] {
    return [this.ranges.IPv4.cidr, this.ranges.IPv6.cidr];
  }

  private held(spec: Spec | undefined): Held {
    if (!spec) return { ips: [], nodePorts: [] };
    const ips = (spec.clusterIPs ?? (spec.clusterIP ? [spec.clusterIP] : [])).filter((ip) => ip && ip !== 'None');
    const nodePorts = (spec.ports ?? []).map((p) => p.nodePort ?? 0).filter((p) => p > 0);
    if (spec.healthCheckNodePort) nodePorts.push(spec.healthCheckNodePort);
    return { ips, nodePorts };
  }

  /**
   * Fills in and checks a Service's allocated fields (`old`: the stored version on an update). Throws a 422 before
   * anything is taken; on success the new values are held and those the old version no longer uses released.
   */
  prepare(name: string, spec: Spec, old: Spec | undefined, dryRun: boolean): void {
    const causes: Cause[] = [];
    spec.type ??= 'ClusterIP';
    const oldHeld = this.held(old);
    const oldIPs = new Set(oldHeld.ips);
    const oldPorts = new Set(oldHeld.nodePorts);
    const ipFree = (ip: string) => oldIPs.has(ip) || !this.ranges[familyOf(ip)!].has(ip);
    const portFree = (port: number, taken: Set<number>) => !taken.has(port) && (oldPorts.has(port) || !this.nodePorts.has(port));

    // Cluster IPs.
    const externalName = spec.type === 'ExternalName';
    if (old && !spec.clusterIP && !spec.clusterIPs && !externalName && old.type !== 'ExternalName') {
      spec.clusterIP = old.clusterIP;
      spec.clusterIPs = old.clusterIPs;
      spec.ipFamilies ??= old.ipFamilies;
      spec.ipFamilyPolicy ??= old.ipFamilyPolicy;
    }
    const toAllocate: Family[] = [];
    if (externalName) {
      delete spec.clusterIP;
      delete spec.clusterIPs;
      if (!spec.externalName) causes.push({ field: 'spec.externalName', message: 'Required value', reason: 'FieldValueRequired' });
    } else {
      let requested = spec.clusterIPs ?? (spec.clusterIP ? [spec.clusterIP] : []);
      if (spec.clusterIP && spec.clusterIPs && spec.clusterIPs[0] !== spec.clusterIP) {
        causes.push({ field: 'spec.clusterIPs', message: `Invalid value: ${JSON.stringify(spec.clusterIPs)}: must have the same value as spec.clusterIP` });
      }
      requested = requested.filter((ip) => ip !== '');
      const headless = requested[0] === 'None';
      if (old && old.clusterIP && old.clusterIP !== 'None' && requested[0] !== undefined && requested[0] !== old.clusterIP) {
        causes.push({ field: 'spec.clusterIPs[0]', message: `Invalid value: ${JSON.stringify(requested)}: may not change once set` });
      }
      const policy = spec.ipFamilyPolicy ?? 'SingleStack';
      if (!['SingleStack', 'PreferDualStack', 'RequireDualStack'].includes(policy)) {
        causes.push({ field: 'spec.ipFamilyPolicy', message: `Unsupported value: "${policy}": supported values: "PreferDualStack", "RequireDualStack", "SingleStack"`, reason: 'FieldValueNotSupported' });
      }
      let families: Family[] = [...(spec.ipFamilies ?? [])];
      for (const [i, f] of families.entries()) {
        if (f !== 'IPv4' && f !== 'IPv6') causes.push({ field: `spec.ipFamilies[${i}]`, message: `Unsupported value: "${String(f)}": supported values: "IPv4", "IPv6"`, reason: 'FieldValueNotSupported' });
      }
      if (new Set(families).size !== families.length) causes.push({ field: 'spec.ipFamilies[1]', message: `Duplicate value: "${families[1]}"`, reason: 'FieldValueDuplicate' });
      if (!headless) {
        requested.forEach((ip, i) => {
          const f = familyOf(ip);
          if (!f) {
            causes.push({ field: i === 0 ? 'spec.clusterIPs[0]' : `spec.clusterIPs[${i}]`, message: `Invalid value: "${ip}": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)` });
            return;
          }
          if (families[i] === undefined) families[i] = f;
          else if (families[i] !== f) causes.push({ field: `spec.clusterIPs[${i}]`, message: `Invalid value: "${ip}": expected an IP of family ${families[i]}` });
          const canonical = this.ranges[f].contains(ip);
          if (!canonical) {
            causes.push({ field: 'spec.clusterIPs', message: `Invalid value: ${JSON.stringify(requested)}: failed to allocate IP ${ip}: the provided IP (${ip}) is not in the valid range. The range of valid IPs is ${this.ranges[f].cidr}` });
          } else if (!ipFree(canonical)) {
            causes.push({ field: 'spec.clusterIPs', message: `Invalid value: ${JSON.stringify(requested)}: failed to allocate IP ${ip}: provided IP is already allocated` });
          } else requested[i] = canonical;
        });
      }
      if (families.length === 0) families = ['IPv4'];
      if (policy !== 'SingleStack' && families.length === 1) families.push(families[0] === 'IPv4' ? 'IPv6' : 'IPv4');
      if (policy === 'SingleStack' && families.length > 1) {
        causes.push({ field: 'spec.ipFamilies', message: `Invalid value: ${JSON.stringify(families)}: when spec.ipFamilyPolicy is SingleStack, at most one IP family may be specified` });
      }
      if (requested.length > families.length) {
        causes.push({ field: 'spec.clusterIPs', message: `Invalid value: ${JSON.stringify(requested)}: when spec.ipFamilyPolicy is SingleStack, at most one IP may be specified` });
      }
      spec.ipFamilies = families;
      spec.ipFamilyPolicy = policy;
      if (headless) {
        spec.clusterIP = 'None';
        spec.clusterIPs = ['None'];
      } else {
        for (let i = requested.length; i < families.length; i++) toAllocate.push(families[i]!);
        spec.clusterIPs = requested;
      }
    }

    // Node ports.
    const takenHere = new Set<number>();
    const [lo, hi] = this.portRange;
    const portsToAllocate: { port: Port }[] = [];
    const oldPortOf = (p: Port) => old?.ports?.find((o) => o.port === p.port && (o.protocol ?? 'TCP') === (p.protocol ?? 'TCP'))?.nodePort;
    (spec.ports ?? []).forEach((p, i) => {
      p.protocol ??= 'TCP';
      if (p.targetPort === undefined && p.port !== undefined) p.targetPort = p.port;
      if (!Number.isInteger(p.port) || p.port! < 1 || p.port! > 65535) {
        causes.push({ field: `spec.ports[${i}].port`, message: `Invalid value: ${String(p.port)}: must be between 1 and 65535, inclusive` });
      }
      if (!['TCP', 'UDP', 'SCTP'].includes(p.protocol)) {
        causes.push({ field: `spec.ports[${i}].protocol`, message: `Unsupported value: "${p.protocol}": supported values: "SCTP", "TCP", "UDP"`, reason: 'FieldValueNotSupported' });
      }
      if (!needsNodePorts(spec)) {
        // dropTypeDependentFields: a type change away from node ports drops the ones the client left unchanged.
        if (p.nodePort && old && needsNodePorts(old) && p.nodePort === oldPortOf(p)) delete p.nodePort;
        if (p.nodePort && spec.type === 'ClusterIP') causes.push({ field: `spec.ports[${i}].nodePort`, message: `Forbidden: may not be used when \`type\` is 'ClusterIP'`, reason: 'FieldValueForbidden' });
        if (spec.type !== 'LoadBalancer') delete p.nodePort;
        return;
      }
      if (!p.nodePort) {
        const kept = oldPortOf(p);
        if (kept) p.nodePort = kept;
      }
      if (!p.nodePort) {
        portsToAllocate.push({ port: p });
        return;
      }
      if (!Number.isInteger(p.nodePort) || p.nodePort < lo || p.nodePort > hi) {
        causes.push({ field: `spec.ports[${i}].nodePort`, message: `Invalid value: ${p.nodePort}: provided port is not in the valid range. The range of valid ports is ${lo}-${hi}` });
      } else if (!portFree(p.nodePort, takenHere)) {
        causes.push({ field: `spec.ports[${i}].nodePort`, message: `Invalid value: ${p.nodePort}: provided port is already allocated` });
      } else takenHere.add(p.nodePort);
    });
    let allocateHealthCheck = false;
    if (needsHealthCheck(spec)) {
      if (!spec.healthCheckNodePort && old?.healthCheckNodePort && needsHealthCheck(old)) spec.healthCheckNodePort = old.healthCheckNodePort;
      const hc = spec.healthCheckNodePort;
      if (!hc) allocateHealthCheck = true;
      else if (!Number.isInteger(hc) || hc < lo || hc > hi) {
        causes.push({ field: 'spec.healthCheckNodePort', message: `Invalid value: ${hc}: provided port is not in the valid range. The range of valid ports is ${lo}-${hi}` });
      } else if (!portFree(hc, takenHere)) {
        causes.push({ field: 'spec.healthCheckNodePort', message: `Invalid value: ${hc}: provided health check port is already allocated` });
      } else takenHere.add(hc);
    } else {
      if (spec.healthCheckNodePort && spec.healthCheckNodePort === old?.healthCheckNodePort) delete spec.healthCheckNodePort;
      if (spec.healthCheckNodePort && spec.type !== 'LoadBalancer') {
        causes.push({ field: 'spec.healthCheckNodePort', message: 'Invalid value: may only be set when `type` is \'LoadBalancer\' and `externalTrafficPolicy` is \'Local\'' });
      }
      delete spec.healthCheckNodePort;
    }
    if (spec.externalTrafficPolicy !== undefined && spec.type !== 'NodePort' && spec.type !== 'LoadBalancer' && spec.externalTrafficPolicy !== 'Cluster') {
      causes.push({ field: 'spec.externalTrafficPolicy', message: `Invalid value: "${spec.externalTrafficPolicy}": may only be set for externally-accessible services` });
    }
    if (causes.length) throw invalid('Service', name, causes);

    // Everything checked: take what is new, allocate what is missing, release what the old version held and no longer does.
    const taken: { ips: [Family, string][]; ports: number[] } = { ips: [], ports: [] };
    try {
      for (const ip of spec.clusterIPs ?? []) {
        if (ip === 'None' || oldIPs.has(ip)) continue;
        const f = familyOf(ip)!;
        this.ranges[f].take(ip);
        taken.ips.push([f, ip]);
      }
      for (const f of toAllocate) {
        const ip = this.ranges[f].allocate();
        taken.ips.push([f, ip]);
        spec.clusterIPs!.push(ip);
      }
      if (spec.clusterIPs) spec.clusterIP = spec.clusterIPs[0];
      for (const port of takenHere) if (!oldPorts.has(port)) {
        this.nodePorts.add(port);
        taken.ports.push(port);
      }
      for (const { port } of portsToAllocate) {
        port.nodePort = this.allocatePort();
        taken.ports.push(port.nodePort);
      }
      if (allocateHealthCheck) {
        spec.healthCheckNodePort = this.allocatePort();
        taken.ports.push(spec.healthCheckNodePort);
      }
    } catch (err) {
      this.undo(taken);
      throw err;
    }
    if (dryRun) {
      this.undo(taken);
      return;
    }
    const now = this.held(spec);
    const keepIPs = new Set(now.ips);
    const keepPorts = new Set(now.nodePorts);
    for (const ip of oldHeld.ips) if (!keepIPs.has(ip)) this.ranges[familyOf(ip)!].release(ip);
    for (const port of oldHeld.nodePorts) if (!keepPorts.has(port)) this.nodePorts.delete(port);
  }

  private undo(taken: { ips: [Family, string][]; ports: number[] }): void {
    for (const [f, ip] of taken.ips) this.ranges[f].release(ip);
    for (const port of taken.ports) this.nodePorts.delete(port);
  }

  private allocatePort(): number {
    const [lo, hi] = this.portRange;
    for (let i = 0; i <= hi - lo; i++) {
      const port = this.portCursor;
      this.portCursor = port >= hi ? lo : port + 1;
      if (!this.nodePorts.has(port)) {
        this.nodePorts.add(port);
        return port;
      }
    }
    throw new ApiError(500, 'InternalError', 'Internal error occurred: failed to allocate a nodePort: range is full');
  }

  release(spec: Spec | undefined): void {
    const held = this.held(spec);
    for (const ip of held.ips) {
      const f = familyOf(ip);
      if (f) this.ranges[f].release(ip);
    }
    for (const port of held.nodePorts) this.nodePorts.delete(port);
  }
}
