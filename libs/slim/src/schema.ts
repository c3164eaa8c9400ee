/**
 * The slim records: the contract between the operator (writer) and every agent and the health service (readers).
 * Each type is inferred from its zod schema, so the validation that guards what comes out of etcd and the type that
 * the code uses cannot drift apart.
 */
import ipaddr from 'ipaddr.js';
import { z } from 'zod';

/** Bumped when a record's meaning or shape changes; readers reject versions they do not know. */
export const SCHEMA_VERSION = 1;

export const ipString = z.string().refine((value) => ipaddr.isValid(value) && isCanonicalIp(value), {
  message: 'is not a valid IP address',
});
export const cidrString = z.string().refine(isValidCidr, { message: 'is not a valid CIDR' });

function isCanonicalIp(value: string): boolean {
  // ipaddr.isValid accepts shorthand like "10.1" or octal-looking parts; a record only ever carries the standard form.
  return ipaddr.IPv4.isValidFourPartDecimal(value) || (ipaddr.IPv6.isValid(value) && value.includes(':'));
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
  deleting: z.boolean(),
  ports: z.array(z.strictObject({ name: z.string(), port, protocol })),
});
export type SlimPod = z.infer<typeof slimPodSchema>;

export const slimServiceSchema = z.strictObject({
  v: z.literal(SCHEMA_VERSION),
  namespace: name,
  name,
  type: z.enum(['ClusterIP', 'NodePort', 'LoadBalancer', 'ExternalName']),
  clusterIPs: z.array(ipString),
  externalIPs: z.array(ipString),
  loadBalancerIPs: z.array(ipString),
  ports: z.array(
    z.strictObject({ name: z.string(), port, targetPort: z.union([port, z.string()]), nodePort: port, protocol }),
  ),
  sessionAffinity: z.enum(['None', 'ClientIP']),
  externalTrafficPolicy: z.enum(['Cluster', 'Local']),
  internalTrafficPolicy: z.enum(['Cluster', 'Local']),
});
export type SlimService = z.infer<typeof slimServiceSchema>;

export const slimEndpointSliceSchema = z.strictObject({
  v: z.literal(SCHEMA_VERSION),
  namespace: name,
  name,
  service: z.string(),
  addressType: z.enum(['IPv4', 'IPv6', 'FQDN']),
  endpoints: z.array(
    z.strictObject({
      addresses: z.array(z.string()),
      ready: z.boolean(),
      serving: z.boolean(),
      terminating: z.boolean(),
      nodeName: z.string(),
    }),
  ),
  ports: z.array(z.strictObject({ name: z.string(), port, protocol })),
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
