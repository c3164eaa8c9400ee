/**
 * The Kubernetes API calls a component's code makes, read from its sources: client-node API methods
 * (`core.listNode(...)`, `apps.patchNamespacedDeployment(...)`, custom objects with their group and plural) and the
 * API paths its informers watch. The manifests' RBAC must grant exactly these.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

/** client-node API classes → API group. */
const API_GROUPS: Record<string, string> = {
  CoreV1Api: '',
  DiscoveryV1Api: 'discovery.k8s.io',
  AppsV1Api: 'apps',
  CoordinationV1Api: 'coordination.k8s.io',
  NetworkingV1Api: 'networking.k8s.io',
  RbacAuthorizationV1Api: 'rbac.authorization.k8s.io',
  PolicyV1Api: 'policy',
  EventsV1Api: 'events.k8s.io',
  ApiextensionsV1Api: 'apiextensions.k8s.io',
  CustomObjectsApi: '*custom*',
};

/** client-node verbs (method prefixes) → RBAC verbs. */
const VERBS: Array<[RegExp, string]> = [
  [/^list/, 'list'],
  [/^read/, 'get'],
  [/^create/, 'create'],
  [/^patch/, 'patch'],
  [/^replace/, 'update'],
  [/^deleteCollection/, 'deletecollection'],
  [/^delete/, 'delete'],
];

/** One permission: `group/resource:verb` (core group empty, subresources as resource/sub). */
export type Permission = string;

function tsFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? tsFiles(path) : name.endsWith('.ts') ? [path] : [];
  });
}

/** Node → nodes, EndpointSlice → endpointslices, NetworkPolicy → networkpolicies, Ingress → ingresses. */
export function plural(kind: string): string {
  const lower = kind.toLowerCase();
  if (/(s|x|ch|sh)$/.test(lower)) return `${lower}es`;
  if (/[^aeiou]y$/.test(lower)) return `${lower.slice(0, -1)}ies`;
  return `${lower}s`;
}

export function permissionsUsed(srcDir: string): Set<Permission> {
  const out = new Set<Permission>();
  for (const file of tsFiles(srcDir)) {
    const text = readFileSync(file, 'utf8');
    // const core = config.makeApiClient(CoreV1Api)
    const clients = new Map<string, string>();
    for (const m of text.matchAll(/(\w+)\s*=\s*[\w.]+\.makeApiClient\((\w+)\)/g)) {
      const group = API_GROUPS[m[2]!];
      if (group === undefined) throw new Error(`${file}: unknown client-node API class ${m[2]} (add it to API_GROUPS)`);
      clients.set(m[1]!, group);
    }
    for (const m of text.matchAll(/\b(\w+)\.((?:list|read|create|patch|replace|deleteCollection|delete)\w*)\(([^)]*)\)?/g)) {
      const group = clients.get(m[1]!);
      if (group === undefined) continue;
      const method = m[2]!;
      const verb = VERBS.find(([re]) => re.test(method))![1];
      if (group === '*custom*') {
        const g = /group:\s*['"]([^'"]+)['"]/.exec(m[3] ?? '')?.[1];
        const p = /plural:\s*['"]([^'"]+)['"]/.exec(m[3] ?? '')?.[1];
        if (!g || !p) throw new Error(`${file}: ${method} without literal group and plural; RBAC cannot be derived`);
        out.add(`${g}/${p}${/Status$/.test(method) ? '/status' : ''}:${verb}`);
        continue;
      }
      const rest = method.replace(/^(list|read|create|patch|replace|deleteCollection|delete)/, '').replace(/^Namespaced/, '').replace(/ForAllNamespaces$/, '');
      const sub = /(Status|Scale|Log|Binding|Eviction)$/.exec(rest)?.[1];
      const kind = sub ? rest.slice(0, -sub.length) : rest;
      out.add(`${group}/${plural(kind)}${sub ? `/${sub.toLowerCase()}` : ''}:${verb}`);
    }
    // Informer paths: '/api/v1/pods', '/apis/discovery.k8s.io/v1/endpointslices'. An informer lists and watches
    // (client-node's ListWatch, or the operator's own GET list pages and watch=true streams).
    const paths = [
      ...[...text.matchAll(/['"`]\/api\/v1\/([a-z]+)['"`]/g)].map((m) => `/${m[1]}`),
      ...[...text.matchAll(/['"`]\/apis\/([a-z0-9.-]+)\/v[0-9a-z]+\/([a-z0-9]+)['"`]/g)].map((m) => `${m[1]}/${m[2]}`),
    ];
    for (const path of paths) for (const verb of ['list', 'watch']) out.add(`${path}:${verb}`);
    // Raw HTTP that writes to the API server would escape the derivation: refuse to guess.
    const write = /method:\s*['"](POST|PUT|PATCH|DELETE)['"]/.exec(text);
    if (write && /\/apis?\//.test(text)) throw new Error(`${file}: a raw ${write[1]} to the API server; derive its resource and verb here`);
  }
  return out;
}

export interface PolicyRule {
  apiGroups?: string[];
  resources?: string[];
  verbs: string[];
}

export function permissionsGranted(rules: PolicyRule[]): Set<Permission> {
  const out = new Set<Permission>();
  for (const rule of rules) {
    for (const group of rule.apiGroups ?? []) for (const resource of rule.resources ?? []) for (const verb of rule.verbs) out.add(`${group}/${resource}:${verb}`);
  }
  return out;
}

export function imports(srcDir: string, specifier: string): string[] {
  return tsFiles(srcDir).filter((f) => readFileSync(f, 'utf8').includes(`from '${specifier}'`));
}
