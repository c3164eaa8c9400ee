/** sl_tunnel (another node's podCIDR → its node IP, for VXLAN encapsulation) as a reconciler target. */
import type { TunnelValue } from '@sluice/bpf';
import type { Datapath } from '@sluice/datapath';
import type { ReconcileTarget } from '../reconciler.ts';
import { mapTarget } from './bpf-map.ts';

export function tunnelMapTarget(dp: Pick<Datapath, 'maps'>): ReconcileTarget<TunnelValue> {
  return mapTarget({ name: 'tunnel-map', map: dp.maps.tunnel, key: (cidr) => ({ cidr }), id: (k) => k.cidr });
}
