/** How an agent turns what it watches in etcd into the prober's peers. */
import type { HealthEndpointRecord } from '@sluice/kvstore';
import type { SlimNode } from '@sluice/slim';
import type { Peer } from './prober.ts';

/**
 * A peer from its node record (keySchema().node) and its agent's health record (keySchema().health, the
 * HealthEndpointRecord of @sluice/kvstore): the first IPv4 InternalIP (else the record's nodeIP, else the first
 * address), the record's health endpoint IP or else the node's first health IP. Undefined for a node without any
 * address.
 */
export function peerOf(node: SlimNode, record?: HealthEndpointRecord): Peer | undefined {
  const internal = node.addresses.filter((a) => a.type === 'InternalIP').map((a) => a.ip);
  const hostIP = internal.find((ip) => !ip.includes(':')) ?? internal[0] ?? record?.nodeIP ?? node.addresses[0]?.ip;
  if (!hostIP) return undefined;
  const endpointIP = record?.healthIP ?? node.healthIPs[0];
  return {
    name: node.name,
    hostIP,
    ...(record?.agentPort ? { agentPort: record.agentPort } : {}),
    ...(endpointIP ? { endpointIP } : {}),
    ...(record?.healthPort ? { endpointPort: record.healthPort } : {}),
  };
}
