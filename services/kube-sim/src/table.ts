/**
 * Server-side printing (meta.k8s.io/v1 Table), which `kubectl get` asks for: the same columns the real server
 * prints for nodes, pods, services, namespaces and endpointslices.
 */
import { keyOfResource, type KubeObject, type PrinterColumn, type ResourceType } from './resources.ts';
import type { StoredObject } from './store.ts';

export const wantsTable = (accept: string | undefined) => !!accept && /as=Table/.test(accept);

interface Column {
  name: string;
  type: string;
  format?: string;
  priority?: number;
  cell: (o: KubeObject) => string | number;
}

// Printing reads loosely-typed objects that the store has already validated; `any` stays inside this module.
type Any = Record<string, any>;

function age(created: unknown): string {
  if (typeof created !== 'string') return '<unknown>';
  const s = Math.max(0, Math.floor((Date.now() - Date.parse(created)) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

const name: Column = { name: 'Name', type: 'string', format: 'name', cell: (o) => o.metadata?.name ?? '' };
const ageCol: Column = { name: 'Age', type: 'string', cell: (o) => age(o.metadata?.creationTimestamp) };

const COLUMNS: Record<string, Column[]> = {
  nodes: [
    name,
    { name: 'Status', type: 'string', cell: (o) => {
      const ready = ((o as Any).status?.conditions ?? []).find((c: Any) => c.type === 'Ready');
      return (ready?.status === 'True' ? 'Ready' : 'NotReady') + ((o as Any).spec?.unschedulable ? ',SchedulingDisabled' : '');
    } },
    { name: 'Roles', type: 'string', cell: (o) => {
      const roles = Object.keys(o.metadata?.labels ?? {}).filter((k) => k.startsWith('node-role.kubernetes.io/')).map((k) => k.slice(24));
      return roles.length ? roles.sort().join(',') : '<none>';
    } },
    ageCol,
    { name: 'Version', type: 'string', cell: (o) => (o as Any).status?.nodeInfo?.kubeletVersion ?? '' },
    { name: 'Internal-IP', type: 'string', priority: 1, cell: (o) => ((o as Any).status?.addresses ?? []).find((a: Any) => a.type === 'InternalIP')?.address ?? '<none>' },
  ],
  pods: [
    name,
    { name: 'Ready', type: 'string', cell: (o) => {
      const statuses: Any[] = (o as Any).status?.containerStatuses ?? [];
      const total = ((o as Any).spec?.containers ?? []).length;
      return `${statuses.filter((s) => s.ready).length}/${total}`;
    } },
    { name: 'Status', type: 'string', cell: (o) => (o.metadata?.deletionTimestamp ? 'Terminating' : (o as Any).status?.phase ?? 'Unknown') },
    { name: 'Restarts', type: 'string', cell: (o) => String(((o as Any).status?.containerStatuses ?? []).reduce((n: number, s: Any) => n + (s.restartCount ?? 0), 0)) },
    ageCol,
    { name: 'IP', type: 'string', priority: 1, cell: (o) => (o as Any).status?.podIP ?? '<none>' },
    { name: 'Node', type: 'string', priority: 1, cell: (o) => (o as Any).spec?.nodeName ?? '<none>' },
  ],
  services: [
    name,
    { name: 'Type', type: 'string', cell: (o) => (o as Any).spec?.type ?? 'ClusterIP' },
    { name: 'Cluster-IP', type: 'string', cell: (o) => (o as Any).spec?.clusterIP ?? '<none>' },
    { name: 'External-IP', type: 'string', cell: (o) => externalIPCell(o as Any) },
    { name: 'Port(s)', type: 'string', cell: (o) => ((o as Any).spec?.ports ?? []).map((p: Any) => `${p.port}${p.nodePort ? `:${p.nodePort}` : ''}/${p.protocol ?? 'TCP'}`).join(',') || '<none>' },
    ageCol,
    { name: 'Selector', type: 'string', priority: 1, cell: (o) => Object.entries((o as Any).spec?.selector ?? {}).map(([k, v]) => `${k}=${String(v)}`).join(',') || '<none>' },
  ],
  namespaces: [name, { name: 'Status', type: 'string', cell: (o) => (o.metadata?.deletionTimestamp ? 'Terminating' : (o as Any).status?.phase ?? 'Active') }, ageCol],
  customresourcedefinitions: [name, { name: 'Created At', type: 'date', cell: (o) => String(o.metadata?.creationTimestamp ?? '') }],
  deployments: [
    name,
    { name: 'Ready', type: 'string', cell: (o) => `${(o as Any).status?.readyReplicas ?? 0}/${(o as Any).spec?.replicas ?? 1}` },
    { name: 'Up-to-date', type: 'integer', cell: (o) => (o as Any).status?.updatedReplicas ?? 0 },
    { name: 'Available', type: 'integer', cell: (o) => (o as Any).status?.availableReplicas ?? 0 },
    ageCol,
  ],
  configmaps: [name, { name: 'Data', type: 'integer', cell: (o) => Object.keys((o as Any).data ?? {}).length + Object.keys((o as Any).binaryData ?? {}).length }, ageCol],
  secrets: [name, { name: 'Type', type: 'string', cell: (o) => (o as Any).type ?? 'Opaque' }, { name: 'Data', type: 'integer', cell: (o) => Object.keys((o as Any).data ?? {}).length }, ageCol],
  endpointslices: [
    name,
    { name: 'AddressType', type: 'string', cell: (o) => (o as Any).addressType ?? '' },
    { name: 'Ports', type: 'string', cell: (o) => ((o as Any).ports ?? []).map((p: Any) => String(p.port)).join(',') || '<unset>' },
    { name: 'Endpoints', type: 'string', cell: (o) => {
      const ips: string[] = ((o as Any).endpoints ?? []).flatMap((e: Any) => e.addresses ?? []);
      return ips.length ? ips.slice(0, 3).join(',') + (ips.length > 3 ? ` + ${ips.length - 3} more...` : '') : '<unset>';
    } },
    ageCol,
  ],
};

/** A CRD printer column's value: the simple JSONPath subset CRDs use (`.spec.a.b`, `.status.list[0].x`). */
function jsonPathValue(obj: KubeObject, path: string): string | number {
  let node: unknown = obj;
  for (const part of path.replace(/^\./, '').split('.')) {
    const m = /^([^[\]]*)((\[\d+\])*)$/.exec(part);
    if (!m) return '';
    if (m[1]) node = node && typeof node === 'object' ? (node as Record<string, unknown>)[m[1]] : undefined;
    for (const idx of m[2]!.matchAll(/\[(\d+)\]/g)) node = Array.isArray(node) ? node[Number(idx[1])] : undefined;
  }
  if (node === undefined || node === null) return '';
  if (typeof node === 'number') return node;
  return typeof node === 'object' ? JSON.stringify(node) : String(node);
}

function customColumns(columns: PrinterColumn[]): Column[] {
  return [
    name,
    ...columns.map((c): Column => ({
      name: c.name, type: c.type, ...(c.format ? { format: c.format } : {}), ...(c.priority ? { priority: c.priority } : {}),
      cell: c.type === 'date' ? (o) => age(jsonPathValue(o, c.jsonPath)) : (o) => jsonPathValue(o, c.jsonPath),
    })),
    ...(columns.some((c) => c.jsonPath === '.metadata.creationTimestamp') ? [] : [ageCol]),
  ];
}

function rowObject(obj: KubeObject, include: string): unknown {
  if (include === 'None') return undefined;
  if (include === 'Object') return obj;
  return { kind: 'PartialObjectMetadata', apiVersion: 'meta.k8s.io/v1', metadata: obj.metadata };
}

export function tableFor(r: ResourceType, items: (StoredObject | KubeObject)[], resourceVersion: string, continueToken: string | undefined, include = 'PartialObjectMetadata') {
  const objects = items.map((i) => ('json' in i && typeof i.json === 'string' ? (JSON.parse(i.json) as KubeObject) : (i as KubeObject)));
  const version = String(objects[0]?.apiVersion ?? '').split('/')[1] ?? r.version;
  const custom = r.custom?.printerColumns[version] ?? r.custom?.printerColumns[r.version];
  const columns = custom ? customColumns(custom) : COLUMNS[keyOfResource(r)] ?? [name, ageCol];
  return {
    kind: 'Table', apiVersion: 'meta.k8s.io/v1',
    metadata: { resourceVersion, ...(continueToken ? { continue: continueToken } : {}) },
    columnDefinitions: columns.map((c) => ({ name: c.name, type: c.type, format: c.format ?? '', description: c.name, priority: c.priority ?? 0 })),
    rows: objects.map((o) => ({ cells: columns.map((c) => c.cell(o)), object: rowObject(o, include) })),
  };
}

/**
 * kubectl's EXTERNAL-IP: a LoadBalancer's ingress addresses (and its externalIPs), `<pending>` while it has none; the
 * externalIPs of any other Service.
 */
function externalIPCell(service: Any): string {
  const external: string[] = service.spec?.externalIPs ?? [];
  if (service.spec?.type === 'LoadBalancer') {
    const ingress: string[] = (service.status?.loadBalancer?.ingress ?? []).map((i: Any) => i.ip ?? i.hostname).filter(Boolean);
    const all = [...ingress, ...external];
    return all.length ? all.join(',') : '<pending>';
  }
  return external.length ? external.join(',') : '<none>';
}
