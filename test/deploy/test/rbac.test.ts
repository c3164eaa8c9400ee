import { writeFileSync, mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { find, REPO, render, workloads, type KubeObject } from '../src/index.ts';
import { imports, permissionsGranted, permissionsUsed, type PolicyRule } from '../src/rbac.ts';

const base = render('base');
const role = (name: string) => find(base, 'ClusterRole', name) as KubeObject & { rules: PolicyRule[] };

describe('RBAC is what the code uses, no more and no less', () => {
  it('the operator: every verb of every resource its sources call or watch', () => {
    const used = permissionsUsed(join(REPO, 'services/operator/src'));
    // The derivation found the mirror's four kinds; an empty set would make the comparison meaningless.
    expect(used).toContain('/nodes:list');
    expect(used).toContain('/pods:watch');
    expect([...permissionsGranted(role('sluice-operator').rules)].sort()).toEqual([...used].sort());
  });

  it('the operator\'s ClusterRole is bound to its ServiceAccount, and nothing else is bound', () => {
    const bindings = base.filter((o) => o.kind === 'ClusterRoleBinding' || o.kind === 'RoleBinding') as Array<KubeObject & { roleRef: { name: string }; subjects: Array<{ kind: string; name: string; namespace: string }> }>;
    expect(bindings.map((b) => [b.roleRef.name, b.subjects])).toEqual([['sluice-operator', [{ kind: 'ServiceAccount', name: 'sluice-operator', namespace: 'sluice' }]]]);
    const op = workloads(base).find((w) => w.metadata.name === 'sluice-operator')!;
    expect(op.spec.template.spec.serviceAccountName).toBe('sluice-operator');
  });

  it('the agents and the health service use no Kubernetes API, so they get no role and no token', () => {
    for (const svc of ['agent', 'health']) {
      expect(imports(join(REPO, `services/${svc}/src`), '@kubernetes/client-node'), svc).toEqual([]);
      const sa = find(base, 'ServiceAccount', `sluice-${svc}`) as KubeObject & { automountServiceAccountToken?: boolean };
      expect(sa.automountServiceAccountToken).toBe(false);
    }
  });

  it('the derivation sees what a change to the code would add (a patch, a status write, a custom resource)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sluice-rbac-'));
    try {
      mkdirSync(join(dir, 'src'));
      writeFileSync(join(dir, 'src/x.ts'), [
        "const core = kube.makeApiClient(CoreV1Api);",
        "this.apps = options.kube.makeApiClient(AppsV1Api);",
        "const custom = kube.makeApiClient(CustomObjectsApi);",
        "await core.patchNode({ name, body });",
        "await core.replaceNamespacedPodStatus({ name, namespace, body });",
        "await apps.readNamespacedDaemonSet({ name, namespace });",
        "await custom.listClusterCustomObject({ group: 'sluice.io', version: 'v1alpha1', plural: 'sluicenodeconfigs' });",
        "const path = '/apis/networking.k8s.io/v1/networkpolicies';",
      ].join('\n'));
      expect([...permissionsUsed(join(dir, 'src'))].sort()).toEqual([
        '/nodes:patch', '/pods/status:update', 'apps/daemonsets:get', 'networking.k8s.io/networkpolicies:list', 'networking.k8s.io/networkpolicies:watch', 'sluice.io/sluicenodeconfigs:list',
      ]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
