/**
 * Converters from full Kubernetes objects to slim records. Every list and map is put in a canonical order here, so
 * that the same object gives the same bytes whatever order the API server (or a controller) wrote it in, and a
 * heartbeat that touches nothing the datapath reads gives byte-identical output: the operator's "write only on change"
 * rests on that.
 */
import type { V1EndpointSlice, V1Node, V1Pod, V1Service } from '@kubernetes/client-node';
import {
  SCHEMA_VERSION,
  slimEndpointSliceSchema,
  slimNodeSchema,
  slimPodSchema,
  slimServiceSchema,
  type SlimEndpointSlice,
  type SlimNode,
  type SlimPod,
  type SlimService,
} from './schema.ts';
import { checked } from './codec.ts';

/** Annotation where a node advertises the IPs of its health endpoint (comma-separated). */
export const HEALTH_IPS_ANNOTATION = 'sluice.io/health-ips';

const byString = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
const sortedStrings = (values: Iterable<string | undefined | null>) =>
  [...new Set([...values].filter((v): v is string => !!v))].sort(byString);
const sortedLabels = (labels: Record<string, string> | undefined): Record<string, string> =>
  Object.fromEntries(Object.entries(labels ?? {}).sort(([a], [b]) => byString(a, b)));
const byKey = <T>(key: (item: T) => string) => (a: T, b: T) => byString(key(a), key(b));

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
  return {
    v: SCHEMA_VERSION,
    namespace: pod.metadata?.namespace ?? '',
    name: pod.metadata?.name ?? '',
    uid: pod.metadata?.uid ?? '',
    nodeName: pod.spec?.nodeName ?? '',
    hostIP: pod.status?.hostIP ?? '',
    podIPs: sortedStrings([...(pod.status?.podIPs ?? []).map((p) => p.ip), pod.status?.podIP]),
    hostNetwork: pod.spec?.hostNetwork === true,
    phase: (pod.status?.phase ?? 'Pending') as SlimPod['phase'],
    labels: sortedLabels(pod.metadata?.labels),
    deleting: !!pod.metadata?.deletionTimestamp,
    ports: [...new Map(ports.map((p) => [`${p.protocol}/${p.port}/${p.name}`, p])).values()].sort(byKey((p) => `${p.protocol}/${String(p.port).padStart(5, '0')}/${p.name}`)),
  };
}

/** Builds the record without validating it; `slimService` validates. Fields are built in schema order (canonical). */
export function buildSlimService(service: V1Service): SlimService {
  const spec = service.spec;
  return {
    v: SCHEMA_VERSION,
    namespace: service.metadata?.namespace ?? '',
    name: service.metadata?.name ?? '',
    type: (spec?.type ?? 'ClusterIP') as SlimService['type'],
    // "None" marks a headless service: it has no virtual IP for the datapath to translate.
    clusterIPs: sortedStrings([...(spec?.clusterIPs ?? []), spec?.clusterIP].filter((ip) => ip !== 'None')),
    externalIPs: sortedStrings(spec?.externalIPs ?? []),
    loadBalancerIPs: sortedStrings((service.status?.loadBalancer?.ingress ?? []).map((i) => i.ip)),
    ports: (spec?.ports ?? [])
      .map((p) => ({
        name: p.name ?? '',
        port: p.port,
        targetPort: p.targetPort ?? p.port,
        nodePort: p.nodePort ?? 0,
        protocol: (p.protocol ?? 'TCP') as SlimService['ports'][number]['protocol'],
      }))
      .sort(byKey((p) => `${p.protocol}/${String(p.port).padStart(5, '0')}/${p.name}`)),
    sessionAffinity: (spec?.sessionAffinity ?? 'None') as SlimService['sessionAffinity'],
    externalTrafficPolicy: (spec?.externalTrafficPolicy ?? 'Cluster') as SlimService['externalTrafficPolicy'],
    internalTrafficPolicy: (spec?.internalTrafficPolicy ?? 'Cluster') as SlimService['internalTrafficPolicy'],
  };
}

/** Builds the record without validating it; `slimEndpointSlice` validates. Fields are built in schema order (canonical). */
export function buildSlimEndpointSlice(slice: V1EndpointSlice): SlimEndpointSlice {
  return {
    v: SCHEMA_VERSION,
    namespace: slice.metadata?.namespace ?? '',
    name: slice.metadata?.name ?? '',
    service: slice.metadata?.labels?.['kubernetes.io/service-name'] ?? '',
    addressType: slice.addressType as SlimEndpointSlice['addressType'],
    endpoints: (slice.endpoints ?? [])
      .map((e) => ({
        addresses: sortedStrings(e.addresses),
        // The API's rule: a nil ready condition means ready, nil serving follows ready, nil terminating means not.
        ready: e.conditions?.ready ?? true,
        serving: e.conditions?.serving ?? e.conditions?.ready ?? true,
        terminating: e.conditions?.terminating ?? false,
        nodeName: e.nodeName ?? '',
      }))
      .sort(byKey((e) => e.addresses.join(','))),
    ports: (slice.ports ?? [])
      .map((p) => ({ name: p.name ?? '', port: p.port ?? 0, protocol: (p.protocol ?? 'TCP') as SlimEndpointSlice['ports'][number]['protocol'] }))
      .sort(byKey((p) => `${p.protocol}/${String(p.port).padStart(5, '0')}/${p.name}`)),
  };
}

/**
 * Which pods become datapath endpoints (the agent programs only these):
 * - phase Running: a Pending pod has no sandbox yet, a Succeeded or Failed one has released its IP for reuse;
 * - at least one pod IP: there is nothing to route to otherwise;
 * - not hostNetwork: such a pod shares its node's IP, which the node record already covers;
 * - not being deleted: once deletionTimestamp is set the IP may be handed out again before the object is gone,
 *   and a stale endpoint would steal the new owner's traffic.
 */
export function isEndpoint(pod: SlimPod): boolean {
  return pod.phase === 'Running' && pod.podIPs.length > 0 && !pod.hostNetwork && !pod.deleting;
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
