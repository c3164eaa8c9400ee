import { execFile, spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { KubeSim } from '../src/index.ts';
import { readWatch, request, startSmall, waitFor } from './helpers.ts';

const run = promisify(execFile);
const CRDS = fileURLToPath(new URL('../../../deploy/crds', import.meta.url));
let sim: KubeSim;
let dir: string;

async function kubectl(...args: string[]): Promise<string> {
  const { stdout } = await run('kubectl', ['--kubeconfig', sim.kubeconfigPath, '--cache-dir', join(dir, 'cache'), ...args], { timeout: 30_000 });
  return stdout;
}

/** kubectl's exit error text (stderr), for commands expected to fail. */
async function kubectlError(...args: string[]): Promise<string> {
  try {
    await kubectl(...args);
  } catch (err) {
    return (err as { stderr: string }).stderr;
  }
  throw new Error(`kubectl ${args.join(' ')} succeeded`);
}

async function manifest(name: string, text: string): Promise<string> {
  const file = join(dir, name);
  await writeFile(file, text);
  return file;
}

beforeAll(async () => {
  sim = await startSmall({ nodes: 2, podsPerNode: 1 });
  dir = dirname(sim.kubeconfigPath);
  await kubectl('apply', '-k', CRDS);
});
afterAll(async () => {
  await sim.close();
});

const POOL = `apiVersion: sluice.io/v1alpha1
kind: SluiceLoadBalancerIPPool
metadata:
  name: pool-a
  labels: {tier: edge}
spec:
  blocks:
  - cidr: 192.0.2.0/24
  - start: 198.51.100.10
    stop: 198.51.100.20
  serviceSelector:
    matchExpressions:
    - {key: app, operator: In, values: [web]}
`;

describe('custom resources through kubectl', () => {
  it('registers the project CRDs from deploy/crds as served, established types with discovery', async () => {
    const crds = await kubectl('get', 'crd', '-o', 'name');
    for (const name of ['sluicenodeconfigs.sluice.io', 'sluiceloadbalancerippools.sluice.io', 'sluicel2announcementpolicies.sluice.io']) {
      expect(crds).toContain(`customresourcedefinition.apiextensions.k8s.io/${name}`);
      const crd = JSON.parse(await kubectl('get', 'crd', name, '-o', 'json'));
      expect(crd.status.conditions).toEqual(expect.arrayContaining([expect.objectContaining({ type: 'Established', status: 'True' })]));
    }
    expect(await kubectl('wait', '--for=condition=Established', 'crd/sluicenodeconfigs.sluice.io', '--timeout=10s')).toContain('condition met');
    expect((await kubectl('apply', '-k', CRDS)).match(/unchanged/g)).toHaveLength(3);
    const resources = await kubectl('api-resources', '--api-group', 'sluice.io');
    expect(resources).toMatch(/sluiceloadbalancerippools\s+lbippool,lbippools\s+sluice\.io\/v1alpha1\s+false\s+SluiceLoadBalancerIPPool/);
    expect(resources).toMatch(/sluicenodeconfigs\s+snc\s+sluice\.io\/v1alpha1\s+false\s+SluiceNodeConfig/);
    expect(resources).toMatch(/sluicel2announcementpolicies\s+l2policy,l2policies/);
    // A cluster has the Prometheus operator's rule kind installed (deploy/ applies PrometheusRules).
    expect(await kubectl('api-resources', '--api-group', 'monitoring.coreos.com')).toContain('prometheusrules');
  });

  it('applies, re-applies and gets objects of a custom kind with its printer columns and defaults', async () => {
    const file = await manifest('pool.yaml', POOL);
    expect(await kubectl('apply', '-f', file)).toContain('sluiceloadbalancerippool.sluice.io/pool-a created');
    expect(await kubectl('apply', '-f', file)).toContain('sluiceloadbalancerippool.sluice.io/pool-a unchanged');
    await writeFile(file, POOL.replace('192.0.2.0/24', '203.0.113.0/24'));
    expect(await kubectl('apply', '-f', file)).toContain('sluiceloadbalancerippool.sluice.io/pool-a configured');
    const table = await kubectl('get', 'lbippool');
    expect(table).toMatch(/^NAME\s+DISABLED\s+AGE/);
    expect(table).toMatch(/pool-a\s+false\s+\d+s/);
    const pool = JSON.parse(await kubectl('get', 'sluiceloadbalancerippools.sluice.io', 'pool-a', '-o', 'json'));
    expect(pool.spec.blocks[0]).toEqual({ cidr: '203.0.113.0/24' });
    expect(pool.spec.disabled).toBe(false); // the schema's default
    expect(pool.metadata.generation).toBe(2);
    expect(await kubectl('get', 'lbippool', '-l', 'tier=edge', '-o', 'name')).toBe('sluiceloadbalancerippool.sluice.io/pool-a\n');
  });

  it('rejects invalid objects with a 422 naming each field, and unknown fields under strict validation', async () => {
    const bad = await manifest('bad.yaml', `apiVersion: sluice.io/v1alpha1
kind: SluiceLoadBalancerIPPool
metadata: {name: pool-bad}
spec:
  blocks:
  - cidr: not-a-cidr
  disabled: "yes"
  serviceSelector:
    matchExpressions:
    - {key: app, operator: Near}
`);
    const error = await kubectlError('apply', '-f', bad);
    expect(error).toContain('The SluiceLoadBalancerIPPool "pool-bad" is invalid');
    expect(error).toMatch(/spec\.blocks\[0\]\.cidr: Invalid value: "not-a-cidr"/);
    expect(error).toMatch(/spec\.disabled: Invalid value: "string": spec\.disabled in body must be of type boolean/);
    expect(error).toMatch(/spec\.serviceSelector\.matchExpressions\[0\]\.operator: Unsupported value: "Near"/);
    // The CRD's CEL rules hold too: a block is a cidr or a start and a stop, In needs values.
    const rules = await manifest('rules.yaml', `apiVersion: sluice.io/v1alpha1
kind: SluiceLoadBalancerIPPool
metadata: {name: pool-rules}
spec:
  blocks:
  - {cidr: 192.0.2.0/24, start: 192.0.2.1}
  - {start: 192.0.2.1, stop: 192.0.2.9}
  serviceSelector:
    matchExpressions:
    - {key: app, operator: In}
`);
    const ruleError = await kubectlError('apply', '-f', rules);
    expect(ruleError).toMatch(/spec\.blocks\[0\]: Invalid value: "object": a block is either a cidr or a start and a stop/);
    expect(ruleError).not.toMatch(/spec\.blocks\[1\]/);
    expect(ruleError).toMatch(/spec\.serviceSelector\.matchExpressions\[0\]: Invalid value: "object": In and NotIn need values/);
    const missing = await manifest('missing.yaml', 'apiVersion: sluice.io/v1alpha1\nkind: SluiceLoadBalancerIPPool\nmetadata: {name: pool-empty}\nspec: {}\n');
    expect(await kubectlError('apply', '-f', missing)).toMatch(/spec\.blocks: Required value/);
    const unknown = await manifest('unknown.yaml', 'apiVersion: sluice.io/v1alpha1\nkind: SluiceNodeConfig\nmetadata: {name: odd}\nspec: {bogus: 1}\n');
    expect(await kubectlError('apply', '-f', unknown)).toContain('strict decoding error: unknown field "spec.bogus"');
    // Without strict validation (client libraries) unknown fields are pruned, as the real server does.
    const created = await request(sim, 'POST', '/apis/sluice.io/v1alpha1/sluicenodeconfigs', {
      apiVersion: 'sluice.io/v1alpha1', kind: 'SluiceNodeConfig', metadata: { name: 'pruned' }, spec: { bogus: 1, defaults: { mtu: '1450' } },
    });
    expect(created.status).toBe(201);
    expect(created.json.spec).toEqual({ defaults: { mtu: '1450' } });
    expect(sim.store.get('sluiceloadbalancerippools.sluice.io', '', 'pool-bad')).toBeUndefined();
  });

  it('keeps status and spec apart through the status subresource', async () => {
    const base = '/apis/sluice.io/v1alpha1/sluicenodeconfigs';
    await request(sim, 'POST', base, { apiVersion: 'sluice.io/v1alpha1', kind: 'SluiceNodeConfig', metadata: { name: 'st' }, spec: { defaults: { a: '1' } } });
    const condition = { type: 'Ready', status: 'True', lastTransitionTime: '2026-01-01T00:00:00Z', reason: 'Applied', message: 'ok' };
    const status = await request(sim, 'PATCH', `${base}/st/status`, { status: { conditions: [condition] }, spec: { defaults: { a: 'ignored' } } }, 'application/merge-patch+json');
    expect(status.status).toBe(200);
    expect(status.json.status.conditions).toEqual([condition]);
    expect(status.json.spec.defaults.a).toBe('1');
    const main = await request(sim, 'PATCH', `${base}/st`, { spec: { defaults: { a: '2' } }, status: { conditions: [] } }, 'application/merge-patch+json');
    expect(main.json.spec.defaults.a).toBe('2');
    expect(main.json.status.conditions).toEqual([condition]);
    const badStatus = await request(sim, 'PATCH', `${base}/st/status`, { status: { conditions: [{ ...condition, status: 'Maybe' }] } }, 'application/merge-patch+json');
    expect(badStatus.status).toBe(422);
    expect(badStatus.json.details.causes[0].field).toBe('status.conditions[0].status');
    const twice = await request(sim, 'PATCH', `${base}/st/status`, { status: { conditions: [condition, condition] } }, 'application/merge-patch+json');
    expect(twice.status).toBe(422);
    expect(twice.json.details.causes[0]).toMatchObject({ field: 'status.conditions[1]', reason: 'FieldValueDuplicate' });
    const json = await request(sim, 'PATCH', `${base}/st`, [{ op: 'replace', path: '/spec/defaults/a', value: '3' }], 'application/json-patch+json');
    expect(json.json.spec.defaults.a).toBe('3');
  });

  it('streams a custom kind with kubectl get -w, and lists and watches it with resourceVersions and bookmarks', async () => {
    const child = spawn('kubectl', ['--kubeconfig', sim.kubeconfigPath, '--cache-dir', join(dir, 'cache'), 'get', 'snc', '-w', '--output-watch-events'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    try {
      await waitFor(() => /ADDED\s+pruned/.test(out), 20_000);
      await kubectl('label', 'snc', 'pruned', 'watched=yes');
      await kubectl('delete', 'snc', 'pruned');
      await waitFor(() => /MODIFIED\s+pruned/.test(out) && /DELETED\s+pruned/.test(out), 20_000);
    } finally {
      child.kill();
    }
    const list = await request(sim, 'GET', '/apis/sluice.io/v1alpha1/sluicenodeconfigs');
    expect(list.json.kind).toBe('SluiceNodeConfigList');
    const rv = list.json.metadata.resourceVersion as string;
    await request(sim, 'POST', '/apis/sluice.io/v1alpha1/sluicenodeconfigs', { apiVersion: 'sluice.io/v1alpha1', kind: 'SluiceNodeConfig', metadata: { name: 'later' }, spec: {} });
    const events = await readWatch(`${sim.url}/apis/sluice.io/v1alpha1/sluicenodeconfigs?watch=true&resourceVersion=${rv}&allowWatchBookmarks=true`, (e) => e.length >= 1);
    expect(events[0]).toMatchObject({ type: 'ADDED', object: { metadata: { name: 'later' } } });
    const gone = await readWatch(`${sim.url}/apis/sluice.io/v1alpha1/sluicenodeconfigs?watch=true&resourceVersion=1`, (e) => e.length >= 1);
    // Every event since resourceVersion 1 is still in the window here: a replay, not a 410.
    expect(gone.length).toBeGreaterThan(0);
  });

  it('deletes every object of a kind with its CRD and stops serving it', async () => {
    const crd = await manifest('crd.yaml', `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            x-kubernetes-preserve-unknown-fields: true
            properties:
              size: {type: integer, minimum: 1, maximum: 10}
`);
    expect(await kubectl('apply', '-f', crd)).toContain('created');
    const widget = await manifest('widget.yaml', 'apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1, namespace: default}\nspec: {size: 3, color: red}\n');
    expect(await kubectl('apply', '-f', widget)).toContain('widget.example.com/w1 created');
    expect(await kubectl('get', 'wd', '-n', 'default', '-o', 'jsonpath={.items[0].spec.color}')).toBe('red');
    await writeFile(widget, 'apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w2, namespace: default}\nspec: {size: 11}\n');
    expect(await kubectlError('apply', '-f', widget)).toMatch(/spec\.size: Invalid value: 11: spec\.size in body should be less than or equal to 10/);
    const events = readWatch(`${sim.url}/apis/example.com/v1/widgets?watch=true`, (e) => e.some((x) => x.type === 'DELETED'));
    await waitFor(() => sim.store.watchers().some((w) => w.resource === 'widgets'));
    expect(await kubectl('delete', 'crd', 'widgets.example.com')).toContain('deleted');
    expect((await events).map((e) => e.type)).toEqual(['ADDED', 'DELETED']);
    expect((await request(sim, 'GET', '/apis/example.com/v1/namespaces/default/widgets')).status).toBe(404);
    expect((await request(sim, 'GET', '/apis/example.com/v1')).status).toBe(404);
  });

  it('rejects a malformed CRD with the fields named', async () => {
    const res = await request(sim, 'POST', '/apis/apiextensions.k8s.io/v1/customresourcedefinitions', {
      apiVersion: 'apiextensions.k8s.io/v1', kind: 'CustomResourceDefinition', metadata: { name: 'things.example.com' },
      spec: { group: 'example.com', scope: 'Galaxy', names: { plural: 'stuff', kind: 'Thing' }, versions: [{ name: 'v1', served: true, storage: true }] },
    });
    expect(res.status).toBe(422);
    const fields = (res.json.details.causes as { field: string }[]).map((c) => c.field);
    expect(fields).toEqual(expect.arrayContaining(['spec.scope', 'metadata.name', 'spec.versions[0].schema.openAPIV3Schema']));
    const badRule = await request(sim, 'POST', '/apis/apiextensions.k8s.io/v1/customresourcedefinitions', {
      apiVersion: 'apiextensions.k8s.io/v1', kind: 'CustomResourceDefinition', metadata: { name: 'things.example.com' },
      spec: {
        group: 'example.com', scope: 'Cluster', names: { plural: 'things', kind: 'Thing' },
        versions: [{ name: 'v1', served: true, storage: true, schema: { openAPIV3Schema: { type: 'object', 'x-kubernetes-validations': [{ rule: 'self.(' }] } } }],
      },
    });
    expect(badRule.status).toBe(422);
    expect(badRule.json.details.causes[0].field).toBe('spec.versions[0].schema.openAPIV3Schema.x-kubernetes-validations[0].rule');
  });
});

describe('built-in kinds an install applies', () => {
  it('applies a multi-document manifest of generic kinds, re-applies it unchanged, and deletes it', async () => {
    const file = await manifest('install.yaml', `apiVersion: v1
kind: Namespace
metadata: {name: sluice-test}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: agent, namespace: sluice-test}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: agent-config, namespace: sluice-test}
data: {mtu: "1450"}
---
apiVersion: v1
kind: Secret
metadata: {name: etcd-client, namespace: sluice-test}
stringData: {token: s3cret}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: sluice-test-agent}
rules:
- apiGroups: [""]
  resources: [nodes, pods]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: sluice-test-agent}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: sluice-test-agent}
subjects:
- {kind: ServiceAccount, name: agent, namespace: sluice-test}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: leader, namespace: sluice-test}
rules:
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, update]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: leader, namespace: sluice-test}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: leader}
subjects:
- {kind: ServiceAccount, name: agent, namespace: sluice-test}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: operator, namespace: sluice-test}
spec:
  replicas: 2
  selector: {matchLabels: {app: operator}}
  template:
    metadata: {labels: {app: operator}}
    spec:
      containers:
      - {name: operator, image: sluice/operator:dev, args: [--log-level, info]}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: sluice-test}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers:
      - {name: agent, image: sluice/agent:dev}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: operator, namespace: sluice-test}
spec:
  minAvailable: 1
  selector: {matchLabels: {app: operator}}
---
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata: {name: sluice, namespace: sluice-test}
spec:
  groups:
  - name: sluice
    rules:
    - {alert: SluiceAgentDown, expr: up == 0, for: 5m}
`);
    const first = await kubectl('apply', '-f', file);
    for (const line of ['namespace/sluice-test created', 'serviceaccount/agent created', 'configmap/agent-config created', 'secret/etcd-client created',
      'clusterrole.rbac.authorization.k8s.io/sluice-test-agent created', 'clusterrolebinding.rbac.authorization.k8s.io/sluice-test-agent created',
      'role.rbac.authorization.k8s.io/leader created', 'rolebinding.rbac.authorization.k8s.io/leader created', 'deployment.apps/operator created',
      'daemonset.apps/agent created', 'poddisruptionbudget.policy/operator created', 'prometheusrule.monitoring.coreos.com/sluice created']) {
      expect(first).toContain(line);
    }
    const again = await kubectl('apply', '-f', file);
    expect(again).toContain('deployment.apps/operator unchanged');
    expect(again).toContain('clusterrole.rbac.authorization.k8s.io/sluice-test-agent unchanged');
    const secret = JSON.parse(await kubectl('get', 'secret', '-n', 'sluice-test', 'etcd-client', '-o', 'json'));
    expect(Buffer.from(secret.data.token, 'base64').toString()).toBe('s3cret');
    expect(secret.type).toBe('Opaque');
    const deploy = await kubectl('get', 'deploy', '-n', 'sluice-test');
    expect(deploy).toMatch(/operator\s+2\/2\s+2\s+2/);
    await kubectl('rollout', 'status', 'deployment/operator', '-n', 'sluice-test', '--timeout=10s');
    await writeFile(file, (await import('node:fs/promises').then((fs) => fs.readFile(file, 'utf8'))).replace('replicas: 2', 'replicas: 3'));
    expect(await kubectl('apply', '-f', file)).toContain('deployment.apps/operator configured');
    const updated = JSON.parse(await kubectl('get', 'deploy', '-n', 'sluice-test', 'operator', '-o', 'json'));
    expect(updated.spec.replicas).toBe(3);
    expect(updated.metadata.generation).toBe(2);
    expect(updated.spec.template.spec.containers[0].args).toEqual(['--log-level', 'info']);
    expect(await kubectl('delete', '-f', file, '--wait=false')).toContain('namespace "sluice-test" deleted');
    await waitFor(() => !sim.store.get('namespaces', '', 'sluice-test'));
    expect(sim.store.get('configmaps', 'sluice-test', 'agent-config')).toBeUndefined();
    expect(sim.store.get('clusterroles', '', 'sluice-test-agent')).toBeUndefined();
  });

  it('keeps an object with finalizers until they are removed, for any kind', async () => {
    const base = '/api/v1/namespaces/default/configmaps';
    await request(sim, 'POST', base, { metadata: { name: 'held', finalizers: ['example.com/hold'] }, data: { a: 'b' } });
    const deleted = await request(sim, 'DELETE', `${base}/held`);
    expect(deleted.status).toBe(200);
    expect(deleted.json.metadata.deletionTimestamp).toBeTruthy();
    expect(sim.store.get('configmaps', 'default', 'held')).toBeDefined();
    const addMore = await request(sim, 'PATCH', `${base}/held`, { metadata: { finalizers: ['example.com/hold', 'example.com/more'] } }, 'application/merge-patch+json');
    expect(addMore.status).toBe(422);
    const released = await request(sim, 'PATCH', `${base}/held`, [{ op: 'remove', path: '/metadata/finalizers' }], 'application/json-patch+json');
    expect(released.status).toBe(200);
    expect(sim.store.get('configmaps', 'default', 'held')).toBeUndefined();
  });

  it('server-side apply creates and merges', async () => {
    const path = '/api/v1/namespaces/default/configmaps/ssa?fieldManager=test';
    const created = await request(sim, 'PATCH', path, { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'ssa' }, data: { a: '1' } }, 'application/apply-patch+yaml');
    expect(created.status).toBe(201);
    const merged = await request(sim, 'PATCH', path, { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'ssa' }, data: { b: '2' } }, 'application/apply-patch+yaml');
    expect(merged.status).toBe(200);
    expect(merged.json.data).toEqual({ a: '1', b: '2' });
    expect(await kubectl('apply', '--server-side', '-f', await manifest('ssa.yaml', 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ssa2, namespace: default}\ndata: {c: "3"}\n'))).toContain('serverside-applied');
  });
});

describe('custom resource watches in the store', () => {
  const crd = {
    apiVersion: 'apiextensions.k8s.io/v1', kind: 'CustomResourceDefinition', metadata: { name: 'gadgets.example.com' },
    spec: {
      group: 'example.com', scope: 'Cluster', names: { plural: 'gadgets', kind: 'Gadget' },
      versions: [{ name: 'v1', served: true, storage: true, schema: { openAPIV3Schema: { type: 'object', properties: { spec: { type: 'object', 'x-kubernetes-preserve-unknown-fields': true } } } } }],
    },
  };
  const sink = () => {
    const lines: string[] = [];
    return { lines, sink: { write: (b: Buffer) => lines.push(...b.toString().trim().split('\n')), backlog: () => 0, end: () => undefined } };
  };

  it('answers a resourceVersion older than the window with a 410 ERROR event, and sends bookmarks to those who asked', async () => {
    const { Store } = await import('../src/index.ts');
    const store = new Store({ windowEvents: 2 });
    store.create('customresourcedefinitions', crd);
    const first = store.create('gadgets.example.com', { apiVersion: 'example.com/v1', kind: 'Gadget', metadata: { name: 'g0' }, spec: {} });
    for (let i = 1; i < 5; i++) store.create('gadgets.example.com', { apiVersion: 'example.com/v1', kind: 'Gadget', metadata: { name: `g${i}` }, spec: {} });
    const old = sink();
    const w = store.watch('gadgets.example.com', { resourceVersion: String(first.rv) }, old.sink);
    expect(w.closed).toBe(true);
    expect(JSON.parse(old.lines[0]!)).toMatchObject({ type: 'ERROR', object: { kind: 'Status', code: 410, reason: 'Expired' } });
    const recent = sink();
    store.watch('gadgets.example.com', { resourceVersion: String(store.resourceVersion), allowWatchBookmarks: true }, recent.sink);
    store.sendBookmarks();
    expect(JSON.parse(recent.lines[0]!)).toMatchObject({ type: 'BOOKMARK', object: { kind: 'Gadget', apiVersion: 'example.com/v1', metadata: { resourceVersion: String(store.resourceVersion) } } });
    // A wrong kind or version for the type is refused.
    expect(() => store.create('gadgets.example.com', { apiVersion: 'example.com/v2', kind: 'Gadget', metadata: { name: 'x' } })).toThrow(/does not match/);
  });
});
