/**
 * Services as the load balancer's two maps: a service (ClusterIP, port, protocol) gets an agent-chosen id and a
 * backend count in sl_services, and its backends fill slots 0..count-1 of sl_backends under that id. Ids must be
 * stable across restarts (e.g. derived from the service's namespace/name) so a reconcile rewrites only what changed.
 */
import type { BackendKey, BackendValue, L4Proto, ServiceKey, ServiceValue } from '@sluice/bpf';
import type { Datapath } from './datapath.ts';
import type { MapMetrics } from './metrics.ts';
import { reconcile, type ReconcileResult } from './reconcile.ts';

export interface ServiceSpec {
  id: number;
  vip: string;
  port: number;
  proto: L4Proto;
  backends: Array<{ ip: string; port: number }>;
}

export function serviceEntries(services: Iterable<ServiceSpec>): {
  services: Array<[ServiceKey, ServiceValue]>;
  backends: Array<[BackendKey, BackendValue]>;
} {
  const out = { services: [] as Array<[ServiceKey, ServiceValue]>, backends: [] as Array<[BackendKey, BackendValue]> };
  for (const s of services) {
    out.services.push([{ vip: s.vip, port: s.port, proto: s.proto }, { id: s.id, count: s.backends.length }]);
    s.backends.forEach((b, slot) => out.backends.push([{ serviceId: s.id, slot }, { ip: b.ip, port: b.port }]));
  }
  return out;
}

/**
 * Backends first, then services: a service never points at slots that are not written yet. (A shrinking service
 * briefly keeps its old count while its last slots are deleted; those packets fall through to the stack.)
 */
export function reconcileServices(dp: Pick<Datapath, 'maps'>, services: Iterable<ServiceSpec>, metrics?: MapMetrics): [ReconcileResult, ReconcileResult] {
  const entries = serviceEntries(services);
  const backends = reconcile(dp.maps.backends, entries.backends, metrics);
  return [reconcile(dp.maps.services, entries.services, metrics), backends];
}
