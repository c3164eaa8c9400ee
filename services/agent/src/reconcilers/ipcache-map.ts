/**
 * The ipcache as one reconciler target over its two maps, rows keyed by CIDR: "a.b.c.d/32" rows go to
 * sl_ipcache_host (hash), shorter prefixes to sl_ipcache (LPM trie), as the programs look them up.
 */
import type { IpcacheValue } from '@sluice/bpf';
import type { Datapath } from '@sluice/datapath';
import type { ReconcileTarget } from '../reconciler.ts';
import { mapTarget, splitTarget } from './bpf-map.ts';

const isHost = (cidr: string) => cidr.endsWith('/32');

export function ipcacheMapTarget(dp: Pick<Datapath, 'maps'>): ReconcileTarget<IpcacheValue> {
  return splitTarget('ipcache-map', [
    { owns: isHost, target: mapTarget({ name: 'sl_ipcache_host', map: dp.maps.ipcacheHost, key: (cidr) => ({ ip: cidr.slice(0, -3) }), id: (k) => `${k.ip}/32` }) },
    { owns: (cidr) => !isHost(cidr), target: mapTarget({ name: 'sl_ipcache', map: dp.maps.ipcache, key: (cidr) => ({ cidr }), id: (k) => k.cidr }) },
  ]);
}
