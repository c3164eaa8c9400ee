/**
 * CustomResourceDefinitions (apiextensions.k8s.io/v1): checks a CRD as the API server does (the parts a client can get
 * wrong), turns it into the resource type the store and the handler serve, and writes the status the real server
 * reports once the names are accepted (NamesAccepted, Established).
 */
import type { KubeObject, PrinterColumn, ResourceType } from './resources.ts';
import { structuralProblems } from './schema.ts';
import type { Cause } from './status.ts';
import { timestamp } from './time.ts';

interface CRDVersion {
  name?: string;
  served?: boolean;
  storage?: boolean;
  schema?: { openAPIV3Schema?: unknown };
  subresources?: { status?: unknown; scale?: unknown };
  additionalPrinterColumns?: PrinterColumn[];
}

interface CRDSpec {
  group?: string;
  scope?: string;
  names?: { plural?: string; singular?: string; kind?: string; listKind?: string; shortNames?: string[]; categories?: string[] };
  versions?: CRDVersion[];
}

const DNS_LABEL = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
const KIND = /^[A-Z][A-Za-z0-9]*$/;

/** Fills the CRD's defaults and returns what is wrong with it (empty when it can be served). */
export function checkCRD(obj: KubeObject): Cause[] {
  const spec = ((obj.spec as CRDSpec | undefined) ??= {});
  const causes: Cause[] = [];
  const names = (spec.names ??= {});
  if (!spec.group || !spec.group.includes('.')) causes.push({ field: 'spec.group', message: `Invalid value: "${spec.group ?? ''}": should be a domain with at least one dot` });
  if (!names.plural || !DNS_LABEL.test(names.plural)) causes.push({ field: 'spec.names.plural', message: `Invalid value: "${names.plural ?? ''}": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'` });
  if (!names.kind || !KIND.test(names.kind)) causes.push({ field: 'spec.names.kind', message: `Invalid value: "${names.kind ?? ''}": may have mixed case, but should otherwise match: ^[a-z]([-a-z0-9]*[a-z0-9])?$` });
  if (names.kind) {
    names.singular ||= names.kind.toLowerCase();
    names.listKind ||= `${names.kind}List`;
  }
  for (const [i, short] of (names.shortNames ?? []).entries()) {
    if (!DNS_LABEL.test(short)) causes.push({ field: `spec.names.shortNames[${i}]`, message: `Invalid value: "${short}": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'` });
  }
  if (spec.scope !== 'Namespaced' && spec.scope !== 'Cluster') {
    causes.push({ field: 'spec.scope', message: `Unsupported value: "${spec.scope ?? ''}": supported values: "Cluster", "Namespaced"`, reason: 'FieldValueNotSupported' });
  }
  const expectedName = `${names.plural}.${spec.group}`;
  if (obj.metadata?.name !== expectedName) causes.push({ field: 'metadata.name', message: `Invalid value: "${obj.metadata?.name ?? ''}": must be spec.names.plural+"."+spec.group` });
  const versions = spec.versions ?? [];
  if (versions.length === 0) causes.push({ field: 'spec.versions', message: 'Invalid value: null: must have exactly one version marked as storage version' });
  else if (versions.filter((v) => v.storage).length !== 1) causes.push({ field: 'spec.versions', message: 'Invalid value: must have exactly one version marked as storage version' });
  for (const [i, v] of versions.entries()) {
    if (!v.name || !DNS_LABEL.test(v.name)) causes.push({ field: `spec.versions[${i}].name`, message: `Invalid value: "${v.name ?? ''}": a DNS-1035 label must consist of lower case alphanumeric characters or '-'` });
    v.served ??= false;
    const schema = v.schema?.openAPIV3Schema;
    if (schema === undefined) causes.push({ field: `spec.versions[${i}].schema.openAPIV3Schema`, message: 'Required value: schemas are required', reason: 'FieldValueRequired' });
    else causes.push(...structuralProblems(schema, `spec.versions[${i}].schema.openAPIV3Schema`));
    for (const [j, c] of (v.additionalPrinterColumns ?? []).entries()) {
      if (!c.jsonPath?.startsWith('.')) causes.push({ field: `spec.versions[${i}].additionalPrinterColumns[${j}].JSONPath`, message: `Invalid value: "${c.jsonPath ?? ''}": must be a simple json path starting with .` });
    }
  }
  return causes;
}

/** The served resource for a checked CRD (undefined when no version is served). */
export function resourceOfCRD(obj: KubeObject): ResourceType | undefined {
  const spec = obj.spec as CRDSpec;
  const names = spec.names!;
  const served = (spec.versions ?? []).filter((v) => v.served);
  if (served.length === 0) return undefined;
  const storage = (spec.versions ?? []).find((v) => v.storage)!;
  const schemas: Record<string, unknown> = {};
  const printerColumns: Record<string, PrinterColumn[]> = {};
  for (const v of served) {
    schemas[v.name!] = v.schema?.openAPIV3Schema;
    printerColumns[v.name!] = v.additionalPrinterColumns ?? [];
  }
  const status = served.some((v) => v.subresources?.status !== undefined);
  return {
    group: spec.group!, version: storage.served ? storage.name! : served[0]!.name!, versions: served.map((v) => v.name!),
    plural: names.plural!, singular: names.singular!, kind: names.kind!, namespaced: spec.scope === 'Namespaced',
    shortNames: names.shortNames ?? [], subresources: status ? ['status'] : [], fields: [], generation: true,
    ...(names.categories?.length ? { categories: names.categories } : {}),
    key: `${names.plural}.${spec.group}`, atomicLists: true,
    custom: { crd: obj.metadata!.name!, listKind: names.listKind!, schemas, printerColumns },
  };
}

/** The status the API server writes for a CRD it serves (acceptedNames, NamesAccepted and Established). */
export function crdStatus(obj: KubeObject, now: Date, conflict?: string): Record<string, unknown> {
  const spec = obj.spec as CRDSpec;
  const t = timestamp(now);
  const previous = ((obj.status as { conditions?: { type: string; status: string; lastTransitionTime?: string }[] } | undefined)?.conditions ?? []);
  const since = (type: string, status: string) => previous.find((c) => c.type === type && c.status === status)?.lastTransitionTime ?? t;
  const accepted = conflict === undefined;
  return {
    acceptedNames: accepted ? { ...spec.names } : {},
    storedVersions: (spec.versions ?? []).filter((v) => v.storage).map((v) => v.name),
    conditions: [
      {
        type: 'NamesAccepted', status: accepted ? 'True' : 'False', lastTransitionTime: since('NamesAccepted', accepted ? 'True' : 'False'),
        reason: accepted ? 'NoConflicts' : 'NameConflict', message: accepted ? 'no conflicts found' : conflict,
      },
      {
        type: 'Established', status: accepted ? 'True' : 'False', lastTransitionTime: since('Established', accepted ? 'True' : 'False'),
        reason: accepted ? 'InitialNamesAccepted' : 'NotAccepted', message: accepted ? 'the initial names have been accepted' : 'not all names are accepted',
      },
    ],
  };
}

/** CRDs a cluster usually has installed before any workload (the Prometheus operator's rule kind). */
export const PREINSTALLED_CRDS: KubeObject[] = [
  {
    apiVersion: 'apiextensions.k8s.io/v1', kind: 'CustomResourceDefinition',
    metadata: { name: 'prometheusrules.monitoring.coreos.com', annotations: { 'kube-sim/preinstalled': 'true' } },
    spec: {
      group: 'monitoring.coreos.com', scope: 'Namespaced',
      names: { plural: 'prometheusrules', singular: 'prometheusrule', kind: 'PrometheusRule', listKind: 'PrometheusRuleList', shortNames: ['promrule'], categories: ['prometheus-operator'] },
      versions: [{
        name: 'v1', served: true, storage: true,
        schema: {
          openAPIV3Schema: {
            type: 'object',
            properties: {
              apiVersion: { type: 'string' }, kind: { type: 'string' }, metadata: { type: 'object' },
              spec: {
                type: 'object', required: ['groups'],
                properties: {
                  groups: {
                    type: 'array',
                    items: {
                      type: 'object', required: ['name'],
                      properties: { name: { type: 'string', minLength: 1 }, interval: { type: 'string' }, rules: { type: 'array', items: { type: 'object', 'x-kubernetes-preserve-unknown-fields': true } } },
                      'x-kubernetes-preserve-unknown-fields': true,
                    },
                  },
                },
              },
            },
          },
        },
      }],
    },
  },
];
