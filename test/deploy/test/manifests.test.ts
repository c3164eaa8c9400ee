import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { find, IMAGE_WORKDIR, mountedConfigMaps, OVERLAYS, REPO, render, validateObject, workloads, type KubeObject, type Workload } from '../src/index.ts';

const DIRS = ['base', ...OVERLAYS.map((o) => `overlays/${o}`)];
const rendered = new Map(DIRS.map((d) => [d, render(d)]));
const base = rendered.get('base')!;
const configData = (objects: KubeObject[], name: string) => (find(objects, 'ConfigMap', name) as KubeObject & { data: Record<string, string> }).data;

describe('every kustomization renders objects that the Kubernetes schemas accept', () => {
  for (const dir of DIRS) {
    it(dir, async () => {
      const objects = rendered.get(dir)!;
      expect(objects.length).toBeGreaterThan(10);
      for (const obj of objects) await validateObject(obj);
      // Everything namespaced lives in sluice.
      for (const obj of objects.filter((o) => !['Namespace', 'ClusterRole', 'ClusterRoleBinding', 'CustomResourceDefinition'].includes(o.kind))) {
        expect(obj.metadata.namespace, `${obj.kind}/${obj.metadata.name}`).toBe('sluice');
      }
    });
  }

  it('the validator rejects a bad object (it is not a rubber stamp)', async () => {
    const ds = structuredClone(find<Workload>(base, 'DaemonSet', 'sluice-agent'));
    (ds.spec.template.spec.containers[0]!.ports![0] as { containerPort: unknown }).containerPort = 'nine';
    await expect(validateObject(ds)).rejects.toThrow(/containerPort/);
    await expect(validateObject({ ...ds, kind: 'DeamonSet' })).rejects.toThrow(/no Kubernetes schema for kind DeamonSet/);
  });
});

describe('the base', () => {
  it('has the namespace, the service accounts, the operator, the agents, the health service and a PDB', () => {
    const kinds = base.map((o) => `${o.kind}/${o.metadata.name}`);
    for (const k of ['Namespace/sluice', 'ServiceAccount/sluice-operator', 'ServiceAccount/sluice-agent', 'ServiceAccount/sluice-health', 'ClusterRole/sluice-operator', 'ClusterRoleBinding/sluice-operator', 'Deployment/sluice-operator', 'DaemonSet/sluice-agent', 'Deployment/sluice-health', 'Service/sluice-health', 'PodDisruptionBudget/sluice-operator', 'ConfigMap/sluice-config']) {
      expect(kinds).toContain(k);
    }
  });

  it('runs two leader-elected operators that a drain never takes both of', () => {
    const op = find<Workload>(base, 'Deployment', 'sluice-operator');
    expect(op.spec.replicas).toBe(2);
    const pdb = find(base, 'PodDisruptionBudget', 'sluice-operator') as KubeObject & { spec: { minAvailable: number; selector: { matchLabels: Record<string, string> } } };
    expect(pdb.spec.minAvailable).toBe(1);
    expect(pdb.spec.selector.matchLabels).toEqual(op.spec.selector.matchLabels);
    expect(op.spec.template.spec.serviceAccountName).toBe('sluice-operator');
  });

  it('runs the agent on every node in the host network with capabilities, not privileged, one node at a time', () => {
    const ds = find<Workload>(base, 'DaemonSet', 'sluice-agent');
    const pod = ds.spec.template.spec;
    expect(pod.hostNetwork).toBe(true);
    expect(pod.tolerations).toContainEqual({ operator: 'Exists' });
    expect(ds.spec.updateStrategy).toEqual({ type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1 } });
    const agent = pod.containers.find((c) => c.name === 'agent')!;
    expect(agent.securityContext?.privileged).not.toBe(true);
    expect(agent.securityContext?.capabilities?.drop).toEqual(['ALL']);
    expect(agent.securityContext?.capabilities?.add).toEqual(expect.arrayContaining(['NET_ADMIN', 'BPF', 'PERFMON', 'SYS_ADMIN']));
    const hostPaths = new Map(pod.volumes!.filter((v) => v.hostPath).map((v) => [v.name, v.hostPath!.path]));
    const mounted = new Map(agent.volumeMounts!.map((m) => [m.mountPath, hostPaths.get(m.name)]));
    expect(mounted.get('/sys/fs/bpf')).toBe('/sys/fs/bpf');
    expect(mounted.get('/var/run/sluice')).toBe('/var/run/sluice');
    // The init step installs the plugin and its conflist into the host's CNI directories.
    const init = pod.initContainers?.find((c) => c.name === 'install-cni');
    expect(init).toBeDefined();
    const initMounts = new Map(init!.volumeMounts!.map((m) => [hostPaths.get(m.name), m.mountPath]));
    const env = new Map(init!.env!.map((e) => [e.name, e.value]));
    expect(env.get('CNI_BIN_DIR')).toBe(initMounts.get('/opt/cni/bin'));
    expect(env.get('CNI_CONF_DIR')).toBe(initMounts.get('/etc/cni/net.d'));
    // The conflist's socket is where the agent's state dir puts it on the host.
    expect(env.get('SLUICE_AGENT_SOCKET')).toBe(`${configData(base, 'sluice-agent-config')['state-dir']}/agent.sock`);
  });

  it('exposes the health service on a Service whose selector matches its pods and ports', () => {
    const dep = find<Workload>(base, 'Deployment', 'sluice-health');
    const svc = find(base, 'Service', 'sluice-health') as KubeObject & { spec: { selector: Record<string, string>; ports: Array<{ port: number; targetPort: string }> } };
    expect(dep.spec.template.metadata?.labels).toMatchObject(svc.spec.selector);
    const portNames = dep.spec.template.spec.containers[0]!.ports!.map((p) => p.name);
    for (const p of svc.spec.ports) expect(portNames).toContain(p.targetPort);
    const agentConfig = configData(base, 'sluice-agent-config');
    expect(agentConfig['health-service']).toBe(`sluice-health.sluice.svc:${svc.spec.ports.find((p) => p.targetPort === 'grpc')!.port}`);
  });

  it('refers only to ConfigMaps and ServiceAccounts that exist, and to the etcd identities\' Secrets the overlay documents', () => {
    for (const [dir, objects] of rendered) {
      const names = (kind: string) => new Set(objects.filter((o) => o.kind === kind).map((o) => o.metadata.name));
      for (const w of workloads(objects)) {
        const spec = w.spec.template.spec;
        expect(names('ServiceAccount'), `${dir} ${w.metadata.name}`).toContain(spec.serviceAccountName);
        for (const v of spec.volumes ?? []) {
          for (const cm of [v.configMap?.name, ...(v.projected?.sources.map((s) => s.configMap?.name) ?? [])].filter(Boolean)) expect(names('ConfigMap'), `${dir}: ${w.metadata.name} mounts ${cm}`).toContain(cm);
          // The etcd identities' Secrets are made by whoever installs (../overlays/etcd-tls says how), not shipped.
          if (v.secret) expect(['sluice-etcd-operator', 'sluice-etcd-health', 'sluice-health-tls'], `${dir}: ${w.metadata.name}`).toContain(v.secret.secretName);
        }
      }
    }
  });
});

describe('the overlays change what they say', () => {
  it('native and tunnel routing, masquerade', () => {
    expect(configData(rendered.get('overlays/native')!, 'sluice-agent-config').routing).toBe('native');
    expect(configData(rendered.get('overlays/tunnel')!, 'sluice-agent-config').routing).toBe('tunnel');
    expect(configData(rendered.get('overlays/masquerade')!, 'sluice-agent-config').masquerade).toBe('true');
    expect(configData(base, 'sluice-agent-config').masquerade).toBe('false');
  });

  it('etcd over TLS: each component reads its own identity (etcd.config, CA, certificate, key) with --etcd-config', () => {
    const objects = rendered.get('overlays/etcd-tls')!;
    expect(configData(objects, 'sluice-config')['etcd-endpoints']!.split(',').every((u) => u.startsWith('https://'))).toBe(true);
    const identity: Record<string, string> = { 'sluice-operator': 'secret sluice-etcd-operator', 'sluice-health': 'secret sluice-etcd-health', 'sluice-agent': 'hostPath /etc/sluice/etcd' };
    for (const w of workloads(objects)) {
      const spec = w.spec.template.spec;
      const container = spec.containers[0]!;
      const args = container.args!;
      const file = args[args.indexOf('--etcd-config') + 1]!;
      const mount = container.volumeMounts!.find((m) => file.startsWith(`${m.mountPath}/`))!;
      expect(mount, w.metadata.name).toBeDefined();
      expect(mount.readOnly).toBe(true);
      const volume = spec.volumes!.find((v) => v.name === mount.name)!;
      expect(volume.secret ? `secret ${volume.secret.secretName}` : `hostPath ${volume.hostPath?.path}`).toBe(identity[w.metadata.name]);
    }
  });
});

describe('probe reports over mutual TLS (overlays/health-tls)', () => {
  it('the health service asks for client certificates instead of taking reports from anyone, and every file it names is mounted', () => {
    const objects = rendered.get('overlays/health-tls')!;
    expect(configData(base, 'sluice-health-config').insecure).toBe('true');
    const health = configData(objects, 'sluice-health-config');
    expect(health.insecure).toBeUndefined();
    const agent = configData(objects, 'sluice-agent-config');
    const files: Array<[string, string]> = [
      ['sluice-health', health['tls-cert']!], ['sluice-health', health['tls-key']!], ['sluice-health', health['tls-ca']!],
      ['sluice-agent', agent['health-tls-ca']!], ['sluice-agent', agent['health-tls-cert']!], ['sluice-agent', agent['health-tls-key']!],
    ];
    for (const [name, file] of files) {
      const w = workloads(objects).find((x) => x.metadata.name === name)!;
      const mount = w.spec.template.spec.containers[0]!.volumeMounts!.find((m) => file?.startsWith(`${m.mountPath}/`));
      expect(mount, `${name}: ${file}`).toBeDefined();
      expect(mount!.readOnly).toBe(true);
    }
    // The agents check the service's certificate for the Service's name, which the agent config dials.
    expect(agent['health-service']!.split(':')[0]).toBe(agent['health-tls-server-name']);
  });
});

describe('what the containers run exists in the image, which is this repository', () => {
  const all = [...rendered.values()].flatMap(workloads);
  for (const w of workloads(base)) {
    it(w.metadata.name, () => {
      for (const c of [...(w.spec.template.spec.initContainers ?? []), ...w.spec.template.spec.containers]) {
        expect(c.image).toMatch(/sluice/);
        expect(c.workingDir).toBe(IMAGE_WORKDIR);
        const scripts = (c.command ?? []).filter((arg) => /\.(ts|sh|mjs|js)$/.test(arg));
        expect(scripts.length, `${c.name}: ${c.command?.join(' ')}`).toBe(1);
        for (const s of scripts) expect(existsSync(join(REPO, s)), s).toBe(true);
      }
    });
  }

  it('every config directory a container reads is a volume it mounts', () => {
    for (const w of all) {
      for (const c of w.spec.template.spec.containers) {
        const args = c.args ?? [];
        const i = args.indexOf('--config-dir');
        if (i < 0) continue;
        expect([...mountedConfigMaps(w.spec.template.spec, c).keys()]).toContain(args[i + 1]);
      }
    }
  });

  it('the demo overlay keeps every listener on the loopback', () => {
    const demo = rendered.get('overlays/demo')!;
    for (const cm of demo.filter((o) => o.kind === 'ConfigMap')) {
      const data = (cm as KubeObject & { data: Record<string, string> }).data;
      for (const [key, value] of Object.entries(data)) if (/(^|-)(host|listen)$/.test(key)) expect(value, `${cm.metadata.name} ${key}`).toMatch(/^127\.0\.0\.1/);
    }
  });
});

it('monitoring/ renders the dashboard as a ConfigMap for Grafana\'s sidecar and the PrometheusRule', async () => {
  const objects = render('monitoring');
  expect(objects.map((o) => `${o.kind}/${o.metadata.name}`).sort()).toEqual(['ConfigMap/sluice-grafana-dashboard', 'PrometheusRule/sluice']);
  const cm = find(objects, 'ConfigMap', 'sluice-grafana-dashboard') as KubeObject & { data: Record<string, string> };
  await validateObject(cm);
  expect(cm.metadata.labels?.grafana_dashboard).toBe('1');
  expect(JSON.parse(cm.data['sluice-dashboard.json']!)).toMatchObject({ uid: 'sluice-overview', title: 'Sluice' });
  // The PrometheusRule's rules are checked with promtool against the components' metrics (metrics.test.ts).
});

it('the deploy/ folder has no kustomization that this test does not render', () => {
  const overlays = readdirSync(join(REPO, 'deploy/overlays')).sort();
  expect(overlays).toEqual([...OVERLAYS].sort());
});
