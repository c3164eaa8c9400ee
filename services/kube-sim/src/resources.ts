/** The resource types kube-sim serves, as discovery describes them, with the fields each one can be selected by. */

export type KubeObject = {
  apiVersion?: string;
  kind?: string;
  metadata?: {
    name?: string; generateName?: string; namespace?: string; uid?: string; resourceVersion?: string;
    creationTimestamp?: string; labels?: Record<string, string>; annotations?: Record<string, string>;
    deletionTimestamp?: string; [key: string]: unknown;
  };
  [key: string]: unknown;
};

export interface ResourceType {
  group: string;
  version: string;
  plural: string;
  singular: string;
  kind: string;
  namespaced: boolean;
  shortNames: string[];
  /** Subresources served (status, binding). */
  subresources: string[];
  /** Field selector labels the server supports for this type, beyond metadata.name/namespace ('any' for events). */
  fields: readonly string[] | 'any';
  /** Lists in this type are atomic (no strategic merge by key), as for the discovery group's types. */
  atomicLists?: boolean;
  categories?: string[];
  /** The store's collection name: the plural for built-in kinds, `<plural>.<group>` for custom resources. */
  key?: string;
  /** Every version served (custom resources may serve several; `version` is the storage version). */
  versions?: string[];
  /** metadata.generation counts spec changes (every kind outside the core group, custom resources). */
  generation?: boolean;
  /** Custom resources: the CRD's structural schema per version, and its printer columns. */
  custom?: CustomInfo;
}

export interface PrinterColumn {
  name: string;
  type: string;
  jsonPath: string;
  description?: string;
  priority?: number;
  format?: string;
}

export interface CustomInfo {
  /** The CRD's name (`<plural>.<group>`). */
  crd: string;
  listKind: string;
  schemas: Record<string, unknown>;
  printerColumns: Record<string, PrinterColumn[]>;
}

export const keyOfResource = (r: ResourceType) => r.key ?? r.plural;

export const apiVersionOf = (r: ResourceType) => (r.group ? `${r.group}/${r.version}` : r.version);

const str = (v: unknown) => (v === undefined || v === null ? '' : String(v));
const at = (obj: KubeObject, path: string): unknown => {
  let node: unknown = obj;
  for (const part of path.split('.')) node = node && typeof node === 'object' ? (node as Record<string, unknown>)[part] : undefined;
  return node;
};

export const RESOURCES: readonly ResourceType[] = [
  { group: '', version: 'v1', plural: 'nodes', singular: 'node', kind: 'Node', namespaced: false, shortNames: ['no'], subresources: ['status'], fields: ['spec.unschedulable'] },
  {
    group: '', version: 'v1', plural: 'pods', singular: 'pod', kind: 'Pod', namespaced: true, shortNames: ['po'], subresources: ['status', 'binding'],
    fields: ['spec.nodeName', 'spec.restartPolicy', 'spec.schedulerName', 'spec.serviceAccountName', 'spec.hostNetwork', 'status.phase', 'status.podIP', 'status.nominatedNodeName'],
    categories: ['all'],
  },
  { group: '', version: 'v1', plural: 'services', singular: 'service', kind: 'Service', namespaced: true, shortNames: ['svc'], subresources: ['status'], fields: [], categories: ['all'] },
  { group: '', version: 'v1', plural: 'namespaces', singular: 'namespace', kind: 'Namespace', namespaced: false, shortNames: ['ns'], subresources: ['status'], fields: ['status.phase'] },
  { group: '', version: 'v1', plural: 'events', singular: 'event', kind: 'Event', namespaced: true, shortNames: ['ev'], subresources: [], fields: 'any' },
  { group: 'discovery.k8s.io', version: 'v1', plural: 'endpointslices', singular: 'endpointslice', kind: 'EndpointSlice', namespaced: true, shortNames: [], subresources: [], fields: [], atomicLists: true },
  { group: 'coordination.k8s.io', version: 'v1', plural: 'leases', singular: 'lease', kind: 'Lease', namespaced: true, shortNames: [], subresources: [], fields: [] },
  // Generic kinds an install applies (stored and served as they are, no controller behind them beyond defaults).
  { group: '', version: 'v1', plural: 'serviceaccounts', singular: 'serviceaccount', kind: 'ServiceAccount', namespaced: true, shortNames: ['sa'], subresources: [], fields: [] },
  { group: '', version: 'v1', plural: 'configmaps', singular: 'configmap', kind: 'ConfigMap', namespaced: true, shortNames: ['cm'], subresources: [], fields: [] },
  { group: '', version: 'v1', plural: 'secrets', singular: 'secret', kind: 'Secret', namespaced: true, shortNames: [], subresources: [], fields: ['type'] },
  ...(['ClusterRole', 'ClusterRoleBinding', 'Role', 'RoleBinding'] as const).map((kind): ResourceType => ({
    group: 'rbac.authorization.k8s.io', version: 'v1', plural: `${kind.toLowerCase()}s`, singular: kind.toLowerCase(), kind,
    namespaced: !kind.startsWith('Cluster'), shortNames: [], subresources: [], fields: [], atomicLists: true,
  })),
  { group: 'apps', version: 'v1', plural: 'deployments', singular: 'deployment', kind: 'Deployment', namespaced: true, shortNames: ['deploy'], subresources: ['status'], fields: [], categories: ['all'], generation: true },
  { group: 'apps', version: 'v1', plural: 'daemonsets', singular: 'daemonset', kind: 'DaemonSet', namespaced: true, shortNames: ['ds'], subresources: ['status'], fields: [], categories: ['all'], generation: true },
  { group: 'policy', version: 'v1', plural: 'poddisruptionbudgets', singular: 'poddisruptionbudget', kind: 'PodDisruptionBudget', namespaced: true, shortNames: ['pdb'], subresources: ['status'], fields: [], generation: true },
  {
    group: 'apiextensions.k8s.io', version: 'v1', plural: 'customresourcedefinitions', singular: 'customresourcedefinition', kind: 'CustomResourceDefinition',
    namespaced: false, shortNames: ['crd', 'crds'], subresources: ['status'], fields: [], categories: ['api-extensions'], generation: true, atomicLists: true,
  },
];

export const resourceByPlural = (plural: string): ResourceType => {
  const r = RESOURCES.find((x) => x.plural === plural);
  if (!r) throw new Error(`unknown resource ${plural}`);
  return r;
};

/** The selectable field values of an object (kept beside its bytes so lists and watches filter without parsing). */
export function fieldsOf(resource: ResourceType, obj: KubeObject): Record<string, string> {
  const fields: Record<string, string> = {};
  if (resource.fields === 'any') {
    // Events: kubectl describe selects by involvedObject.*; they are few, so flattening is cheap.
    const flatten = (node: unknown, prefix: string) => {
      if (node && typeof node === 'object' && !Array.isArray(node)) {
        for (const [k, v] of Object.entries(node)) if (k !== 'metadata' || prefix) flatten(v, prefix ? `${prefix}.${k}` : k);
      } else if (prefix && (typeof node === 'string' || typeof node === 'number' || typeof node === 'boolean')) fields[prefix] = String(node);
    };
    flatten(obj, '');
    return fields;
  }
  for (const f of resource.fields) {
    const v = str(at(obj, f));
    if (v) fields[f] = v;
  }
  return fields;
}

export function supportedFields(resource: ResourceType): ReadonlySet<string> | 'any' {
  if (resource.fields === 'any') return 'any';
  return new Set(['metadata.name', 'metadata.namespace', ...resource.fields]);
}
