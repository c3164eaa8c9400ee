/**
 * deploy/ as data: renders a kustomization with the machine's kubectl (what users run), parses the objects, and
 * validates each against the Kubernetes OpenAPI schemas (kubernetes-models).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';

export const REPO = fileURLToPath(new URL('../../../', import.meta.url)).replace(/\/$/, '');
export const DEPLOY = join(REPO, 'deploy');
/** The image's WORKDIR (Containerfile): a container's relative paths are the repository's. */
export const IMAGE_WORKDIR = '/opt/sluice';

export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [field: string]: unknown;
}

/** `kubectl kustomize <dir>` → its objects. */
export function render(dir: string): KubeObject[] {
  const text = execFileSync('kubectl', ['kustomize', join(DEPLOY, dir)], { encoding: 'utf8', maxBuffer: 64 << 20 });
  return parseObjects(text);
}

export function parseObjects(text: string): KubeObject[] {
  return parseAllDocuments(text)
    .map((doc) => {
      if (doc.errors.length) throw new Error(doc.errors.map((e) => e.message).join('; '));
      return doc.toJS() as KubeObject | null;
    })
    .filter((o): o is KubeObject => o !== null);
}

export function find<T = KubeObject>(objects: KubeObject[], kind: string, name: string): T {
  const obj = objects.find((o) => o.kind === kind && o.metadata.name === name);
  if (!obj) throw new Error(`no ${kind} ${name} in the rendered manifests (${objects.map((o) => `${o.kind}/${o.metadata.name}`).join(', ')})`);
  return obj as T;
}

/** The module of kubernetes-models that holds an apiVersion's classes: v1 → kubernetes-models/v1. */
function modelModule(apiVersion: string): string {
  return `kubernetes-models/${apiVersion}`;
}

/**
 * Validates one object against its kind's OpenAPI schema. Throws naming the object and the first bad field; an
 * apiVersion or kind the schemas do not know is an error too (a typo must not pass unchecked).
 */
export async function validateObject(obj: KubeObject): Promise<void> {
  const where = `${obj.kind}/${obj.metadata?.name ?? '?'} (${obj.apiVersion})`;
  let models: Record<string, unknown>;
  try {
    models = (await import(modelModule(obj.apiVersion))) as Record<string, unknown>;
  } catch {
    throw new Error(`${where}: no Kubernetes schema for apiVersion ${obj.apiVersion}`);
  }
  const Model = models[obj.kind] as (new (data: unknown) => { validate(): void }) | undefined;
  if (typeof Model !== 'function') throw new Error(`${where}: no Kubernetes schema for kind ${obj.kind} in ${obj.apiVersion}`);
  try {
    new Model(obj).validate();
  } catch (err) {
    throw new Error(`${where}: ${(err as Error).message}`);
  }
}

export interface PodTemplateSpec {
  metadata?: { labels?: Record<string, string>; annotations?: Record<string, string> };
  spec: PodSpec;
}
export interface Container {
  name: string;
  image: string;
  workingDir?: string;
  command?: string[];
  args?: string[];
  env?: Array<{ name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string }; configMapKeyRef?: { name: string; key: string }; secretKeyRef?: { name: string; key: string } } }>;
  ports?: Array<{ name?: string; containerPort: number; hostPort?: number }>;
  volumeMounts?: Array<{ name: string; mountPath: string; readOnly?: boolean }>;
  securityContext?: { privileged?: boolean; capabilities?: { add?: string[]; drop?: string[] }; runAsNonRoot?: boolean };
  readinessProbe?: unknown;
}
export interface Volume {
  name: string;
  configMap?: { name: string };
  secret?: { secretName: string };
  projected?: { sources: Array<{ configMap?: { name: string }; secret?: { name: string } }> };
  hostPath?: { path: string; type?: string };
  emptyDir?: object;
}
export interface PodSpec {
  serviceAccountName?: string;
  hostNetwork?: boolean;
  initContainers?: Container[];
  containers: Container[];
  volumes?: Volume[];
  tolerations?: Array<{ operator?: string; key?: string; effect?: string }>;
}
export interface Workload extends KubeObject {
  spec: { replicas?: number; selector: { matchLabels: Record<string, string> }; template: PodTemplateSpec; updateStrategy?: { type: string; rollingUpdate?: { maxUnavailable?: number | string } } };
}

export function workloads(objects: KubeObject[]): Workload[] {
  return objects.filter((o): o is Workload => o.kind === 'Deployment' || o.kind === 'DaemonSet');
}

/** The ConfigMaps (and Secrets) a container's volume mounts put into a directory, by mount path. */
export function mountedConfigMaps(spec: PodSpec, container: Container): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const mount of container.volumeMounts ?? []) {
    const volume = spec.volumes?.find((v) => v.name === mount.name);
    if (!volume) continue;
    const names = [
      ...(volume.configMap ? [volume.configMap.name] : []),
      ...(volume.projected?.sources.flatMap((s) => (s.configMap ? [s.configMap.name] : [])) ?? []),
    ];
    if (names.length) out.set(mount.mountPath, names);
  }
  return out;
}

export function readRepoFile(path: string): string {
  return readFileSync(join(REPO, path), 'utf8');
}

export const OVERLAYS = ['native', 'tunnel', 'etcd-tls', 'health-tls', 'masquerade', 'demo'] as const;
