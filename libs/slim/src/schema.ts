/**
 * The slim records: the contract between the operator (writer) and every agent and the health service (readers).
 * Each type is inferred from its zod schema, so the validation that guards what comes out of etcd and the type that
 * the code uses cannot drift apart.
 */
import ipaddr from 'ipaddr.js';
import { z } from 'zod';

/**
 * Bumped when a record's meaning or shape changes incompatibly; readers reject versions they do not know. Fields added
 * later are optional and appended after the original ones, omitted when they carry nothing (a record that has none of
 * them encodes to the same bytes as before they existed), so schema-1 records of either age decode alike.
 */
export const SCHEMA_VERSION = 1;

export const ipString = z.string().refine((value) => ipFamilyOf(value) !== undefined, {
  message: 'is not a valid IP address',
});
export const cidrString = z.string().refine(isValidCidr, { message: 'is not a valid CIDR' });

/** Four decimal parts 0–255 without leading zeros: the only IPv4 form a record carries. */
const IPV4 = /^(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/**
 * The family of an IP in a form a record may carry, or undefined. ipaddr.isValid alone accepts shorthand like "10.1"
 * or octal-looking parts; IPv4 is checked with one regular expression (every pod and endpoint address goes through
 * here, so it is on the operator's hot path), IPv6 by ipaddr.
 */
export function ipFamilyOf(value: string): 'IPv4' | 'IPv6' | undefined {
  if (IPV4.test(value)) return 'IPv4';
  return value.includes(':') && ipaddr.IPv6.isValid(value) ? 'IPv6' : undefined;
}

export function isValidCidr(value: string): boolean {
  try {
    const [address, prefix] = ipaddr.parseCIDR(value);
    const network = address.kind() === 'ipv4'
      ? ipaddr.IPv4.networkAddressFromCIDR(value).toString()
      : ipaddr.IPv6.networkAddressFromCIDR(value).toString();
    return `${network}/${prefix}` === value.replace(/^([^/]+)/, (ip) => ipaddr.parse(ip).toString());
  } catch {
    return false;
  }
}

const name = z.string().min(1).max(253);
const labels = z.record(z.string(), z.string());
const protocol = z.enum(['TCP', 'UDP', 'SCTP']);
const port = z.number().int().min(0).max(65535);
const ipFamily = z.enum(['IPv4', 'IPv6']);

export const slimNodeSchema = z.strictObject({
  v: z.literal(SCHEMA_VERSION),
  name,
  labels,
  addresses: z.array(z.strictObject({ type: z.enum(['InternalIP', 'ExternalIP']), ip: ipString })),
  podCIDRs: z.array(cidrString),
  ready: z.enum(['True', 'False', 'Unknown']),
  healthIPs: z.array(ipString),
});
export type SlimNode = z.infer<typeof slimNodeSchema>;

export const podPhase = z.enum(['Pending', 'Running', 'Succeeded', 'Failed', 'Unknown']);

export const slimPodSchema = z.strictObject({
  v: z.literal(SCHEMA_VERSION),
  namespace: name,
  name,
  uid: z.string(),
  nodeName: z.string(),
  hostIP: z.union([ipString, z.literal('')]),
  podIPs: z.array(ipString),
  hostNetwork: z.boolean(),
  phase: podPhase,
  labels,
  /** metadata.deletionTimestamp is set (kept for readers of the first schema; see `terminating`). */
  deleting: z.boolean(),
  ports: z.array(z.strictObject({ name: z.string(), port, protocol })),
  /**
   * Present (true) when the pod is being deleted but still holds its IP: it stays an endpoint until the kubelet
   * releases the IP (the pod turns Succeeded/Failed or loses its podIPs). The datapath sends it no new connections
   * and lets existing ones drain.
   */
  terminating: z.literal(true).optional(),
});
export type SlimPod = z.infer<typeof slimPodSchema>;

export const slimServiceSchema = z.strictObject({
  v: z.literal(SCHEMA_VERSION),
  namespace: name,
  name,
  type: z.enum(['ClusterIP', 'NodePort', 'LoadBalancer', 'ExternalName']),
  /** In the API's order: the first is the primary family's. */
  clusterIPs: z.array(ipString),
  externalIPs: z.array(ipString),
  loadBalancerIPs: z.array(ipString),
  ports: z.array(
    z.strictObject({ name: z.string(), port, targetPort: z.union([port, z.string()]), nodePort: port, protocol }),
  ),
  sessionAffinity: z.enum(['None', 'ClientIP']),
  externalTrafficPolicy: z.enum(['Cluster', 'Local']),
  internalTrafficPolicy: z.enum(['Cluster', 'Local']),
  /** spec.ipFamilies, primary first (absent when the API sets none, as for ExternalName). */
  ipFamilies: z.array(ipFamily).min(1).max(2).optional(),
  /** status.loadBalancer.ingress in the API's order (absent when empty); `loadBalancerIPs` keeps the sorted IPs. */
  loadBalancerIngress: z
    .array(
      z.strictObject({
        ip: ipString.optional(),
        hostname: z.string().min(1).max(253).optional(),
        ipMode: z.enum(['VIP', 'Proxy']).optional(),
      }),
    )
    .min(1)
    .optional(),
  /** The node port that answers kube-proxy-style health checks for an externalTrafficPolicy: Local load balancer. */
  healthCheckNodePort: z.number().int().min(1).max(65535).optional(),
  /** Client CIDRs allowed to reach the load balancer (absent: everyone), sorted. */
  loadBalancerSourceRanges: z.array(cidrString).min(1).optional(),
  /** ClientIP affinity's timeout (the API's default 10800 s filled in); absent unless sessionAffinity is ClientIP. */
  sessionAffinityTimeoutSeconds: z.number().int().min(1).max(86_400).optional(),
  /** Which load-balancer implementation owns the service (absent: the default one). */
  loadBalancerClass: z.string().min(1).max(316).optional(),
});
export type SlimService = z.infer<typeof slimServiceSchema>;

export const addressType = z.enum(['IPv4', 'IPv6', 'FQDN']);

export const slimEndpointSchema = z.strictObject({
  /** In the API's order: consumers use the first. IPs of the slice's addressType (hostnames for FQDN). */
  addresses: z.array(z.string()),
  ready: z.boolean(),
  serving: z.boolean(),
  terminating: z.boolean(),
  nodeName: z.string(),
  zone: z.string().min(1).optional(),
  /** Topology-aware routing hints, sorted (absent when the controller gave none). */
  hints: z.strictObject({ forZones: z.array(z.string().min(1)), forNodes: z.array(z.string().min(1)).optional() }).optional(),
  /** The object behind the endpoint (normally its Pod); volatile fields like resourceVersion are left out. */
  targetRef: z.strictObject({ kind: z.string(), namespace: z.string(), name: z.string(), uid: z.string() }).optional(),
});
export type SlimEndpoint = z.infer<typeof slimEndpointSchema>;

/** The index of the first address that is not an IP of the slice's family, or -1 (FQDN slices carry hostnames). */
export function badEndpointAddress(type: z.infer<typeof addressType>, endpoint: Pick<SlimEndpoint, 'addresses'>): number {
  if (type === 'FQDN') return -1;
  return endpoint.addresses.findIndex((address) => ipFamilyOf(address) !== type);
}

export const slimEndpointSliceSchema = z
  .strictObject({
    v: z.literal(SCHEMA_VERSION),
    namespace: name,
    name,
    service: z.string(),
    addressType,
    endpoints: z.array(slimEndpointSchema),
    ports: z.array(z.strictObject({ name: z.string(), port, protocol })),
  })
  .superRefine((slice, context) => {
    // Validated here rather than per address so that the issue can say which family the slice promised.
    slice.endpoints.forEach((endpoint, e) => {
      const a = badEndpointAddress(slice.addressType, endpoint);
      if (a >= 0) context.addIssue({ code: 'custom', path: ['endpoints', e, 'addresses', a], message: `is not a valid ${slice.addressType} address` });
    });
  });
export type SlimEndpointSlice = z.infer<typeof slimEndpointSliceSchema>;

export const slimSchemas = {
  node: slimNodeSchema,
  pod: slimPodSchema,
  service: slimServiceSchema,
  endpointSlice: slimEndpointSliceSchema,
} as const;
export type SlimKind = keyof typeof slimSchemas;
export type SlimRecord<K extends SlimKind> = z.infer<(typeof slimSchemas)[K]>;
