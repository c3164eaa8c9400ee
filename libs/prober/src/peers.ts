/** How an agent turns what it watches in etcd into the prober's peers. */
import type { HealthRegistration } from '@sluice/health-api';
import type { SlimNode } from '@sluice/slim';
import type { Peer } from './prober.ts';

/**
 * A peer from its node record (keySchema().node) and its agent's health registration (keySchema().health, value
 * checked with healthRegistrationSchema): the first IPv4 InternalIP (else the first address), the registration's
 * endpoint IP or else the node's first health IP. Undefined for a node without any address.
 */
export function peerOf(node: SlimNode, registration?: HealthRegistration): Peer | undefined {
  const internal = node.addresses.filter((a) => a.type === 'InternalIP').map((a) => a.ip);
  const hostIP = internal.find((ip) => !ip.includes(':')) ?? internal[0] ?? node.addresses[0]?.ip;
  if (!hostIP) return undefined;
  const endpointIP = registration?.endpointIP ?? node.healthIPs[0];
  return {
    name: node.name,
    hostIP,
    ...(registration ? { agentPort: registration.agentPort } : {}),
    ...(endpointIP ? { endpointIP } : {}),
    ...(registration?.endpointPort ? { endpointPort: registration.endpointPort } : {}),
  };
}
