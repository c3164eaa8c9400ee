/**
 * `sluice service list --node <name>` (like `cilium-dbg service list`): every frontend a node load-balances, its
 * type and its backends with their state, from the Services and EndpointSlices in etcd as that node's agent reads
 * them (the same rules: traffic policies, terminating endpoints), with the ids the node's maps use when they can be
 * read. `sluice bpf lb list --node <name>`: the raw load-balancer maps of a node (with each sessionAffinity set's
 * active backends, sl_lb_affinity_match).
 */
import { BE_F_LOCAL, BE_F_TERMINATING, SVC_F_AFFINITY, SVC_F_DROP, SVC_F_EXTERNAL, type ServiceKey } from '@sluice/bpf';
import { activeBackends, type Datapath, type LbService } from '@sluice/datapath';
import { decodeSlim, type SlimEndpointSlice, type SlimService } from '@sluice/slim';
import type { ClusterReader } from './cluster.ts';
import { oneLine } from './errors.ts';
import { renderTable } from './render.ts';

export interface ServiceBackendRow {
  address: string;
  state: 'active' | 'terminating' | 'not ready';
}

export interface ServiceRow {
  /** The node's id of the frontend's backend set (sl_services), '-' when its maps were not read or lack it. */
  id: string;
  frontend: string;
  type: string;
  service: string;
  backends: ServiceBackendRow[];
}

async function readAll<T>(reader: ClusterReader, prefix: string, decode: (v: Buffer) => T): Promise<{ items: T[]; errors: string[] }> {
  const values = await reader.client.getAll().prefix(prefix).buffers();
  const items: T[] = [];
  const errors: string[] = [];
  for (const [key, value] of Object.entries(values)) {
    try {
      items.push(decode(value));
    } catch (err) {
      errors.push(`${key}: ${oneLine(err)}`);
    }
  }
  return { items, errors };
}

const frontendText = (k: ServiceKey) => `${k.vip}:${k.port}/${k.proto.toUpperCase()}`;

function frontendType(svc: SlimService, f: LbService['frontends'][number]): string {
  if (!f.external) return 'ClusterIP';
  if (f.vip === '0.0.0.0') return 'NodePort';
  return svc.loadBalancerIPs.includes(f.vip) ? 'LoadBalancer' : 'ExternalIPs';
}

/** The rows of `sluice service list` for `node`; `dp`: that node's maps, for the ids (optional). */
export async function listServices(reader: ClusterReader, node: string, dp: Pick<Datapath, 'maps'> | undefined): Promise<{ items: ServiceRow[]; errors: string[] }> {
  const { buildLbService } = await import('@sluice/agent');
  const [services, slices] = await Promise.all([
    readAll<SlimService>(reader, reader.keys.prefix('services'), (v) => decodeSlim('service', v)),
    readAll<SlimEndpointSlice>(reader, reader.keys.prefix('endpointslices'), (v) => decodeSlim('endpointSlice', v)),
  ]);
  const slicesOf = new Map<string, SlimEndpointSlice[]>();
  for (const s of slices.items) {
    const key = `${s.namespace}/${s.service}`;
    slicesOf.set(key, [...(slicesOf.get(key) ?? []), s]);
  }
  const ids = new Map<string, number>();
  for (const [k, v] of dp?.maps.services.entries() ?? []) ids.set(frontendText(k), v.id);
  const items: ServiceRow[] = [];
  for (const svc of services.items) {
    const name = `${svc.namespace}/${svc.name}`;
    const lb = buildLbService(svc, slicesOf.get(name) ?? [], node);
    if (!lb) continue;
    for (const f of lb.frontends) {
      const set = lb.sets.find((s) => s.name === f.set)!;
      const active = new Set(activeBackends(set.backends).map((b) => `${b.ip}:${b.port}`));
      const frontend = frontendText({ vip: f.vip, port: f.port, proto: f.proto });
      items.push({
        id: ids.has(frontend) ? String(ids.get(frontend)) : '-',
        frontend,
        type: frontendType(svc, f),
        service: name,
        backends: set.backends.map((b) => {
          const address = `${b.ip}:${b.port}/${f.proto.toUpperCase()}`;
          return { address, state: active.has(`${b.ip}:${b.port}`) && !b.terminating ? 'active' : b.terminating ? 'terminating' : 'not ready' };
        }),
      });
    }
  }
  items.sort((a, b) => (a.id === b.id ? a.frontend.localeCompare(b.frontend) : a.id === '-' ? 1 : b.id === '-' ? -1 : Number(a.id) - Number(b.id)));
  return { items, errors: [...services.errors, ...slices.errors] };
}

export function renderServices(rows: ServiceRow[]): string {
  if (!rows.length) return 'No services\n';
  const table: string[][] = [];
  for (const r of rows) {
    const backends = r.backends.length ? r.backends.map((b, i) => `${i + 1} => ${b.address} (${b.state})`) : ['-'];
    backends.forEach((b, i) => table.push(i === 0 ? [r.id, r.frontend, r.type, b] : ['', '', '', b]));
  }
  return renderTable(['ID', 'Frontend', 'Service Type', 'Backend'], table);
}

export interface LbMapsView {
  frontends: Array<{ frontend: string; id: number; count: number; flags: string[]; affinityTimeout: number }>;
  backends: Array<{ id: number; address: string; flags: string[] }>;
  /** Per backend set: how many Maglev slots each backend id holds. */
  maglev: Array<{ id: number; slots: Record<string, number> }>;
  /** Per backend set with sessionAffinity: the backend ids its clients' affinity may follow (sl_lb_affinity_match). */
  affinityMatches: Array<{ id: number; backends: number[] }>;
  conntrack: number;
  affinity: number;
  /** Socket LB affinity entries: host-namespace (and pod) sockets, keyed by network namespace (sl_lb_affinity_sock). */
  socketAffinity: number;
}

export function readLbMaps(dp: Pick<Datapath, 'maps'>): LbMapsView {
  const svcFlags = (f: number) => [f & SVC_F_EXTERNAL ? 'external' : '', f & SVC_F_AFFINITY ? 'affinity' : '', f & SVC_F_DROP ? 'drop' : ''].filter(Boolean);
  const beFlags = (f: number) => [f & BE_F_TERMINATING ? 'terminating' : '', f & BE_F_LOCAL ? 'local' : ''].filter(Boolean);
  const matches = new Map<number, number[]>();
  for (const [k] of dp.maps.affinityMatch.entries()) {
    let ids = matches.get(k.serviceId);
    if (!ids) matches.set(k.serviceId, (ids = []));
    ids.push(k.backendId);
  }
  return {
    frontends: dp.maps.services
      .entries()
      .map(([k, v]) => ({ frontend: frontendText(k), id: v.id, count: v.count, flags: svcFlags(v.flags), affinityTimeout: v.affinityTimeout }))
      .sort((a, b) => a.id - b.id || a.frontend.localeCompare(b.frontend)),
    backends: dp.maps.backends
      .entries()
      .map(([k, v]) => ({ id: k.id, address: `${v.ip}:${v.port}`, flags: beFlags(v.flags) }))
      .sort((a, b) => a.id - b.id),
    maglev: dp.maps.maglev
      .entries()
      .map(([id, table]) => {
        const slots: Record<string, number> = {};
        for (const b of table) slots[b] = (slots[b] ?? 0) + 1;
        return { id, slots };
      })
      .sort((a, b) => a.id - b.id),
    affinityMatches: [...matches].map(([id, backends]) => ({ id, backends: backends.sort((a, b) => a - b) })).sort((a, b) => a.id - b.id),
    conntrack: dp.maps.lbFwd.count(),
    affinity: dp.maps.affinity.count(),
    socketAffinity: dp.maps.affinitySock.count(),
  };
}

export function renderLbMaps(view: LbMapsView): string {
  const out: string[] = [];
  out.push(view.frontends.length ? renderTable(['SERVICE ADDRESS', 'ID', 'BACKENDS', 'FLAGS'], view.frontends.map((f) => [f.frontend, String(f.id), String(f.count), [...f.flags, ...(f.affinityTimeout ? [`timeout ${f.affinityTimeout}s`] : [])].join(',') || '-'])) : 'No frontends\n');
  out.push(view.backends.length ? renderTable(['BACKEND ID', 'ADDRESS', 'FLAGS'], view.backends.map((b) => [String(b.id), b.address, b.flags.join(',') || '-'])) : 'No backends\n');
  out.push(
    view.maglev.length
      ? renderTable(['MAGLEV TABLE', 'SLOTS PER BACKEND ID'], view.maglev.map((m) => [String(m.id), Object.entries(m.slots).map(([id, n]) => `${id}:${n}`).join(' ')]))
      : 'No Maglev tables\n',
  );
  if (view.affinityMatches.length) out.push(renderTable(['AFFINITY SET', 'ACTIVE BACKEND IDS'], view.affinityMatches.map((m) => [String(m.id), m.backends.join(' ')])));
  out.push(`Connection tracking: ${view.conntrack} flows, session affinity: ${view.affinity} clients by address, ${view.socketAffinity} by network namespace (socket LB)\n`);
  return out.join('\n');
}
