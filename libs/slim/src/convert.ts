/**
 * Converters from full Kubernetes objects to slim records. Every list and map is put in a canonical order here, so
 * that the same object gives the same bytes whatever order the API server (or a controller) wrote it in, and a
 * heartbeat that touches nothing the datapath reads gives byte-identical output: the operator's "write only on change"
 * rests on that.
 */
import type { V1Endpoint, V1EndpointSlice, V1Node, V1Pod, V1Service } from '@kubernetes/client-node';
import {
  SCHEMA_VERSION,
  slimEndpointSliceSchema,
  slimNodeSchema,
  slimPodSchema,
  slimServiceSchema,
  type SlimEndpoint,
  type SlimEndpointSlice,
  type SlimNode,
  type SlimPod,
  type SlimService,
} from './schema.ts';
import { checked } from './codec.ts';
import ipaddr from 'ipaddr.js';

/** Annotation where a node advertises the IPs of its health endpoint (comma-separated). */
export const HEALTH_IPS_ANNOTATION = 'sluice.io/health-ips';

const byString = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
const sortedStrings = (values: Iterable<string | undefined | null>) =>
  [...new Set([...values].filter((v): v is string => !!v))].sort(byString);
const sortedLabels = (labels: Record<string, string> | undefined): Record<string, string> =>
  Object.fromEntries(Object.entries(labels ?? {}).sort(([a], [b]) => byString(a, b)));
const byKey = <T>(key: (item: T) => string) => (a: T, b: T) => byString(key(a), key(b));
/** Unique values in first-seen order: for lists whose order means something (the primary IP family comes first). */
const orderedUnique = (values: Iterable<string | undefined | null>) => [...new Set([...values].filter((v): v is string => !!v))];
/** A CIDR with its host bits cleared ("10.0.0.5/8" → "10.0.0.0/8", as Kubernetes reads it); a bad one is left for validation to name. */
function networkOf(cidr: string): string {
  try {
    const [address, prefix] = ipaddr.parseCIDR(cidr.trim());
    const network = address.kind() === 'ipv4' ? ipaddr.IPv4.networkAddressFromCIDR(cidr.trim()) : ipaddr.IPv6.networkAddressFromCIDR(cidr.trim());
    return `${network.toString()}/${prefix}`;
  } catch {
    return cidr;
  }
}
/** `value` under `key` when it is not undefined: optional fields are omitted, so they add no bytes when absent. */
const when = <K extends string, V>(key: K, value: V | undefined): { [P in K]?: V } => (value === undefined ? {} : ({ [key]: value } as { [P in K]: V }));
const nonEmpty = <T>(list: T[]): T[] | undefined => (list.length ? list : undefined);

/** Builds the record without validating it; `slimNode` validates. Fields are built in schema order (canonical). */
export function buildSlimNode(node: V1Node): SlimNode {
  const addresses = (node.status?.addresses ?? [])
    .filter((a) => a.type === 'InternalIP' || a.type === 'ExternalIP')
    .map((a) => ({ type: a.type as 'InternalIP' | 'ExternalIP', ip: a.address }));
  const unique = [...new Map(addresses.map((a) => [`${a.type}/${a.ip}`, a])).values()].sort(byKey((a) => `${a.type}/${a.ip}`));
  const ready = node.status?.conditions?.find((c) => c.type === 'Ready')?.status ?? 'Unknown';
  const healthIPs = (node.metadata?.annotations?.[HEALTH_IPS_ANNOTATION] ?? '').split(',').map((s) => s.trim());
  return {
    v: SCHEMA_VERSION,
    name: node.metadata?.name ?? '',
    labels: sortedLabels(node.metadata?.labels),
    addresses: unique,
    podCIDRs: sortedStrings([...(node.spec?.podCIDRs ?? []), node.spec?.podCIDR]),
    ready: ready as SlimNode['ready'],
    healthIPs: sortedStrings(healthIPs),
  };
}

/** Builds the record without validating it; `slimPod` validates. Fields are built in schema order (canonical). */
export function buildSlimPod(pod: V1Pod): SlimPod {
  const ports = (pod.spec?.containers ?? [])
    .flatMap((c) => c.ports ?? [])
    .map((p) => ({ name: p.name ?? '', port: p.containerPort, protocol: (p.protocol ?? 'TCP') as SlimPod['ports'][number]['protocol'] }));
  const deleting = !!pod.metadata?.deletionTimestamp;
  const record: SlimPod = {
    v: SCHEMA_VERSION,
    namespace: pod.metadata?.namespace ?? '',
    name: pod.metadata?.name ?? '',
    uid: pod.metadata?.uid ?? '',
    nodeName: pod.spec?.nodeName ?? '',
    hostIP: pod.status?.hostIP ?? '',
    // podIPs[0] is podIP, the primary family's: the API's order is kept.
    podIPs: orderedUnique([pod.status?.podIP, ...(pod.status?.podIPs ?? []).map((p) => p.ip)]),
    hostNetwork: pod.spec?.hostNetwork === true,
    phase: (pod.status?.phase ?? 'Pending') as SlimPod['phase'],
    labels: sortedLabels(pod.metadata?.labels),
    deleting,
    ports: [...new Map(ports.map((p) => [`${p.protocol}/${p.port}/${p.name}`, p])).values()].sort(byKey((p) => `${p.protocol}/${String(p.port).padStart(5, '0')}/${p.name}`)),
  };
  if (deleting && holdsIP(record)) record.terminating = true;
  return record;
}

/** The pod has an IP of its own that the kubelet has not released: the sandbox exists and is not torn down. */
/** The endpoint rule on the few fields it needs, so that readers decoding only those (the agent) apply the same one. */
export function holdsIP(pod: Pick<SlimPod, 'podIPs' | 'hostNetwork' | 'phase'>): boolean {
  return pod.podIPs.length > 0 && !pod.hostNetwork && (pod.phase === 'Running' || pod.phase === 'Pending');
}

/** Builds the record without validating it; `slimService` validates. Fields are built in schema order (canonical). */
export function buildSlimService(service: V1Service): SlimService {
  const spec = service.spec;
  const ingress = service.status?.loadBalancer?.ingress ?? [];
  const sessionAffinity = (spec?.sessionAffinity ?? 'None') as SlimService['sessionAffinity'];
  return {
    v: SCHEMA_VERSION,
    namespace: service.metadata?.namespace ?? '',
    name: service.metadata?.name ?? '',
    type: (spec?.type ?? 'ClusterIP') as SlimService['type'],
    // "None" marks a headless service: it has no virtual IP for the datapath to translate. clusterIPs[0] is
    // clusterIP, the primary family's: the API's order is kept.
    clusterIPs: orderedUnique([spec?.clusterIP, ...(spec?.clusterIPs ?? [])].filter((ip) => ip !== 'None')),
    externalIPs: sortedStrings(spec?.externalIPs ?? []),
    loadBalancerIPs: sortedStrings(ingress.map((i) => i.ip)),
    ports: (spec?.ports ?? [])
      .map((p) => ({
        name: p.name ?? '',
        port: p.port,
        targetPort: p.targetPort ?? p.port,
        nodePort: p.nodePort ?? 0,
        protocol: (p.protocol ?? 'TCP') as SlimService['ports'][number]['protocol'],
      }))
      .sort(byKey((p) => `${p.protocol}/${String(p.port).padStart(5, '0')}/${p.name}`)),
    sessionAffinity,
    externalTrafficPolicy: (spec?.externalTrafficPolicy ?? 'Cluster') as SlimService['externalTrafficPolicy'],
    internalTrafficPolicy: (spec?.internalTrafficPolicy ?? 'Cluster') as SlimService['internalTrafficPolicy'],
    ...when('ipFamilies', nonEmpty(orderedUnique(spec?.ipFamilies ?? []) as ('IPv4' | 'IPv6')[])),
    ...when(
      'loadBalancerIngress',
      nonEmpty(ingress.map((i) => ({ ...when('ip', i.ip || undefined), ...when('hostname', i.hostname || undefined), ...when('ipMode', (i.ipMode || undefined) as 'VIP' | 'Proxy' | undefined) }))),
    ),
    ...when('healthCheckNodePort', spec?.healthCheckNodePort || undefined),
    ...when('loadBalancerSourceRanges', nonEmpty(sortedStrings((spec?.loadBalancerSourceRanges ?? []).map(networkOf)))),
    // The API server fills in 10800 s (3 h) for ClientIP affinity without a timeout.
    ...when('sessionAffinityTimeoutSeconds', sessionAffinity === 'ClientIP' ? (spec?.sessionAffinityConfig?.clientIP?.timeoutSeconds ?? 10_800) : undefined),
    ...when('loadBalancerClass', spec?.loadBalancerClass || undefined),
  };
}

/** One endpoint of a slice, unvalidated (see `validateSlimEndpoint`). */
export function buildSlimEndpoint(e: V1Endpoint): SlimEndpoint {
  return {
    addresses: orderedUnique(e.addresses ?? []),
    // The API's rule: a nil ready condition means ready, nil serving follows ready, nil terminating means not.
    ready: e.conditions?.ready ?? true,
    serving: e.conditions?.serving ?? e.conditions?.ready ?? true,
    terminating: e.conditions?.terminating ?? false,
    nodeName: e.nodeName ?? '',
    ...when('zone', e.zone || undefined),
    ...when('hints', e.hints ? { forZones: sortedStrings((e.hints.forZones ?? []).map((z) => z.name)), ...when('forNodes', nonEmpty(sortedStrings((e.hints.forNodes ?? []).map((n) => n.name)))) } : undefined),
    ...when('targetRef', e.targetRef ? { kind: e.targetRef.kind ?? '', namespace: e.targetRef.namespace ?? '', name: e.targetRef.name ?? '', uid: e.targetRef.uid ?? '' } : undefined),
  };
}

/** The canonical order of a slice's endpoints: by their addresses (a stable sort, so ties keep the API's order). */
export const endpointSortKey = (e: Pick<SlimEndpoint, 'addresses'>): string => e.addresses.join(',');

/** Builds the record without validating it; `slimEndpointSlice` validates. Fields are built in schema order (canonical). */
export function buildSlimEndpointSlice(slice: V1EndpointSlice): SlimEndpointSlice {
  return {
    v: SCHEMA_VERSION,
    namespace: slice.metadata?.namespace ?? '',
    name: slice.metadata?.name ?? '',
    service: slice.metadata?.labels?.['kubernetes.io/service-name'] ?? '',
    addressType: slice.addressType as SlimEndpointSlice['addressType'],
    endpoints: (slice.endpoints ?? []).map(buildSlimEndpoint).sort(byKey(endpointSortKey)),
    ports: (slice.ports ?? [])
      .map((p) => ({ name: p.name ?? '', port: p.port ?? 0, protocol: (p.protocol ?? 'TCP') as SlimEndpointSlice['ports'][number]['protocol'] }))
      .sort(byKey((p) => `${p.protocol}/${String(p.port).padStart(5, '0')}/${p.name}`)),
  };
}

/**
 * The canonical bytes of a slice from its parts: `header` is the record built with no endpoints, `endpoints` the
 * canonical bytes of each endpoint (`JSON.stringify(buildSlimEndpoint(e))`), already in canonical order; a part may
 * also be a run of consecutive endpoints, comma-joined, cut from an earlier result. Equal to
 * `JSON.stringify(buildSlimEndpointSlice(slice))`: lets a caller that sees one endpoint change in a slice of a hundred
 * re-encode only that one, and join three parts instead of a hundred.
 */
export function joinSlimEndpointSlice(header: SlimEndpointSlice, endpoints: readonly string[]): string {
  const empty = JSON.stringify(header);
  // The first `"endpoints":[]` is the key: inside a string a quote is escaped, so no value can contain it.
  const at = empty.indexOf('"endpoints":[]');
  if (at < 0 || header.endpoints.length > 0) throw new Error('joinSlimEndpointSlice needs a header built without endpoints');
  if (endpoints.length === 0) return empty;
  const open = at + '"endpoints":['.length;
  const head = empty.slice(0, open);
  const tail = empty.slice(open);
  // One join, so that the result is one flat string: concatenating around a join makes a rope, which the next
  // search in it flattens into a second copy (20 KB per EndpointSlice change, most of the operator's garbage).
  const parts = endpoints.slice();
  parts[0] = head + parts[0];
  parts[parts.length - 1] += tail;
  return parts.join(',');
}

/**
 * Which pods become datapath endpoints (the operator writes only these to etcd):
 * - an IP of its own: a Pending pod gets one when the kubelet has created its sandbox (init containers already use
 *   the network), a Succeeded or Failed one has released it for reuse, and a hostNetwork pod shares its node's IP,
 *   which the node record already covers;
 * - phase Running or Pending: Unknown means the node stopped reporting, and then nothing says the IP is still held;
 * - a pod being deleted stays one (`terminating`) until its IP is released, so that its connections can drain.
 */
export function isEndpoint(pod: SlimPod): boolean {
  return holdsIP(pod);
}

export function slimNode(node: V1Node): SlimNode {
  return checked(slimNodeSchema, buildSlimNode(node), 'Node');
}

export function slimPod(pod: V1Pod): SlimPod {
  return checked(slimPodSchema, buildSlimPod(pod), 'Pod');
}

export function slimService(service: V1Service): SlimService {
  return checked(slimServiceSchema, buildSlimService(service), 'Service');
}

export function slimEndpointSlice(slice: V1EndpointSlice): SlimEndpointSlice {
  return checked(slimEndpointSliceSchema, buildSlimEndpointSlice(slice), 'EndpointSlice');
}
