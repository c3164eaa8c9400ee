/** sl_endpoints (this node's pods by IP → veth and MACs) as a reconciler target: rows keyed by the pod IP. */
import type { EndpointValue } from '@sluice/bpf';
import type { Datapath } from '@sluice/datapath';
import type { ReconcileTarget } from '../reconciler.ts';
import { mapTarget } from './bpf-map.ts';

export function endpointsMapTarget(dp: Pick<Datapath, 'maps'>): ReconcileTarget<EndpointValue> {
  return mapTarget({ name: 'endpoints-map', map: dp.maps.endpoints, key: (ip) => ({ ip }), id: (k) => k.ip });
}
