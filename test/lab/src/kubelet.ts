/**
 * The lab kubelet: one per node. Watches kube-sim for pods bound to its node (fieldSelector spec.nodeName), makes
 * each pod's sandbox (a network namespace) through the CNI plugin, starts a tiny web server in it answering with the
 * pod's name, and patches the pod's IP and phase Running into kube-sim through the status subresource. A deleted pod
 * gets CNI DEL and its namespace removed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, closeSync, mkdirSync, mkdtempSync, openSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Logger } from '@sluice/log';
import { z } from 'zod';

const podSchema = z.looseObject({
  metadata: z.looseObject({ name: z.string(), namespace: z.string(), uid: z.string(), resourceVersion: z.string().optional(), deletionTimestamp: z.string().optional() }),
  spec: z.looseObject({ nodeName: z.string().optional(), hostNetwork: z.boolean().optional() }).optional(),
  status: z.looseObject({ phase: z.string().optional(), podIP: z.string().optional() }).optional(),
});
type KubePod = z.infer<typeof podSchema>;

export interface Sandbox {
  uid: string;
  name: string;
  namespace: string;
  netns: string;
  ip: string;
  server: ChildProcess;
}

export interface KubeletOptions {
  apiUrl: string;
  nodeName: string;
  nodeIp: string;
  /** Makes the pod's network (netns + CNI ADD); returns the sandbox. */
  createSandbox(pod: { uid: string; name: string; namespace: string }): Promise<Sandbox>;
  destroySandbox(sandbox: Sandbox): Promise<void>;
  log: Logger;
  /** Called when a pod's sandbox appeared or went away. */
  onChange?: () => void;
}

export const WEB_PORT = 8080;

/** The pod's web server: `node -e` inside the pod's namespace; its parent is the lab. */
export function webServer(netns: string, name: string): ChildProcess {
  const script = `require('node:http').createServer((q, r) => r.end(process.argv[1] + '\\n')).listen(${WEB_PORT}, '0.0.0.0')`;
  return spawn('nsenter', [`--net=/run/netns/${netns}`, '--', process.execPath, '-e', script, name], { stdio: 'ignore' });
}

export class LabKubelet {
  readonly sandboxes = new Map<string, Sandbox>();
  private readonly pending = new Map<string, Promise<void>>();
  private abort = new AbortController();
  private stopped = false;
  private loop: Promise<void> | undefined;

  constructor(private readonly options: KubeletOptions) {}

  start(): void {
    this.loop = this.run();
  }

  private url(path: string, query: Record<string, string>): string {
    const q = new URLSearchParams({ fieldSelector: `spec.nodeName=${this.options.nodeName}`, ...query });
    return `${this.options.apiUrl}${path}?${q}`;
  }

  private async run(): Promise<void> {
    let rv = '';
    while (!this.stopped) {
      try {
        if (!rv) {
          const res = await fetch(this.url('/api/v1/pods', {}), { signal: this.abort.signal });
          const list = (await res.json()) as { metadata: { resourceVersion: string }; items: unknown[] };
          const seen = new Set<string>();
          for (const item of list.items) {
            const pod = podSchema.parse(item);
            seen.add(pod.metadata.uid);
            this.handle('ADDED', pod);
          }
          for (const [uid, sb] of this.sandboxes) if (!seen.has(uid)) this.queue(uid, () => this.remove(sb));
          rv = list.metadata.resourceVersion;
        }
        const res = await fetch(this.url('/api/v1/pods', { watch: 'true', resourceVersion: rv, allowWatchBookmarks: 'true' }), { signal: this.abort.signal });
        if (!res.body) throw new Error('watch without a body');
        let buffer = '';
        const decoder = new TextDecoder();
        for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
          buffer += decoder.decode(chunk, { stream: true });
          let nl: number;
          while ((nl = buffer.indexOf('\n')) >= 0) {
            const line = buffer.slice(0, nl).trim();
            buffer = buffer.slice(nl + 1);
            if (!line) continue;
            const event = JSON.parse(line) as { type: string; object: { code?: number; metadata?: { resourceVersion?: string } } };
            if (event.type === 'ERROR') {
              rv = ''; // 410 Gone: relist
              break;
            }
            rv = event.object.metadata?.resourceVersion ?? rv;
            if (event.type === 'BOOKMARK') continue;
            this.handle(event.type, podSchema.parse(event.object));
          }
        }
      } catch (err) {
        if (this.stopped) return;
        this.options.log.warn({ error: (err as Error).message }, 'lab kubelet watch failed; retrying');
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  }

  private queue(uid: string, work: () => Promise<void>): void {
    const prev = this.pending.get(uid) ?? Promise.resolve();
    const next = prev.then(work).catch((err: unknown) => this.options.log.error({ uid, error: (err as Error).message }, 'lab kubelet: pod sandbox operation failed'));
    this.pending.set(uid, next);
  }

  private handle(type: string, pod: KubePod): void {
    const uid = pod.metadata.uid;
    if (pod.spec?.nodeName !== this.options.nodeName || pod.spec?.hostNetwork) return;
    if (type === 'DELETED' || pod.metadata.deletionTimestamp) {
      const sb = this.sandboxes.get(uid);
      if (sb) this.queue(uid, () => this.remove(sb));
      return;
    }
    if (this.sandboxes.has(uid) || this.pending.has(uid)) return;
    if (pod.status?.phase === 'Succeeded' || pod.status?.phase === 'Failed') return;
    this.queue(uid, async () => {
      if (this.stopped || this.sandboxes.has(uid)) return;
      const sb = await this.options.createSandbox({ uid, name: pod.metadata.name, namespace: pod.metadata.namespace });
      this.sandboxes.set(uid, sb);
      const patch = { status: { phase: 'Running', podIP: sb.ip, podIPs: [{ ip: sb.ip }], hostIP: this.options.nodeIp, hostIPs: [{ ip: this.options.nodeIp }] } };
      const res = await fetch(`${this.options.apiUrl}/api/v1/namespaces/${pod.metadata.namespace}/pods/${pod.metadata.name}/status`, {
        method: 'PATCH',
        headers: { 'content-type': 'application/merge-patch+json' },
        body: JSON.stringify(patch),
      });
      if (!res.ok) throw new Error(`patching pod status: HTTP ${res.status} ${await res.text()}`);
      this.options.onChange?.();
    });
  }

  private async remove(sb: Sandbox): Promise<void> {
    this.sandboxes.delete(sb.uid);
    await this.options.destroySandbox(sb);
    this.options.onChange?.();
  }

  /** Waits for queued sandbox work. */
  async idle(): Promise<void> {
    await Promise.all([...this.pending.values()]);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.abort.abort();
    await this.loop?.catch(() => undefined);
    await this.idle();
  }
}

/**
 * The lab kubelet's other half: it runs what the manifests in kube-sim say. For a node it reads the DaemonSets (one
 * pod on every node) and Deployments (replicas spread over the nodes that run them) of a namespace and runs each pod's
 * containers as processes on this machine: init containers first, each to completion; then the containers, restarted
 * with backoff when they exit. A container gets its command and args, its env (values, fieldRefs, ConfigMap and
 * Secret keys), and its volumes as files in a private directory (mkdtemp, 0700): ConfigMaps and Secrets (also
 * projected) key by key, emptyDirs, and hostPaths under the node's own root. The image is this repository (its
 * WORKDIR is the checkout); a mount path or the WORKDIR in an argument or an env value is rewritten to where it is on
 * this machine, since there is no mount namespace. What a node adds (the lab's nodes share one machine: its netns,
 * pin dir, ports) comes as environment on top, which the components read after their flags and before their config
 * directory.
 */

const envVarSchema = z.object({
  name: z.string(),
  value: z.string().optional(),
  valueFrom: z
    .object({
      fieldRef: z.object({ fieldPath: z.string() }).optional(),
      configMapKeyRef: z.object({ name: z.string(), key: z.string(), optional: z.boolean().optional() }).optional(),
      secretKeyRef: z.object({ name: z.string(), key: z.string(), optional: z.boolean().optional() }).optional(),
    })
    .optional(),
});
const containerSchema = z.looseObject({
  name: z.string(),
  image: z.string(),
  workingDir: z.string().optional(),
  command: z.array(z.string()).optional(),
  args: z.array(z.string()).optional(),
  env: z.array(envVarSchema).optional(),
  volumeMounts: z.array(z.object({ name: z.string(), mountPath: z.string(), readOnly: z.boolean().optional(), subPath: z.string().optional() })).optional(),
});
const keyItems = z.array(z.object({ key: z.string(), path: z.string() })).optional();
const volumeSchema = z.looseObject({
  name: z.string(),
  configMap: z.object({ name: z.string(), items: keyItems, optional: z.boolean().optional() }).optional(),
  secret: z.object({ secretName: z.string(), items: keyItems, optional: z.boolean().optional() }).optional(),
  projected: z
    .object({
      sources: z.array(
        z.looseObject({
          configMap: z.object({ name: z.string(), items: keyItems, optional: z.boolean().optional() }).optional(),
          secret: z.object({ name: z.string(), items: keyItems, optional: z.boolean().optional() }).optional(),
        }),
      ),
    })
    .optional(),
  hostPath: z.object({ path: z.string(), type: z.string().optional() }).optional(),
  emptyDir: z.looseObject({}).optional(),
});
const podSpecSchema = z.looseObject({
  hostNetwork: z.boolean().optional(),
  initContainers: z.array(containerSchema).optional(),
  containers: z.array(containerSchema).min(1),
  volumes: z.array(volumeSchema).optional(),
});
const workloadSchema = z.looseObject({
  kind: z.enum(['DaemonSet', 'Deployment']),
  metadata: z.looseObject({ name: z.string(), namespace: z.string() }),
  spec: z.looseObject({ replicas: z.number().int().min(0).optional(), template: z.looseObject({ spec: podSpecSchema }) }),
});
const dataObjectSchema = z.looseObject({ metadata: z.looseObject({ name: z.string() }), data: z.record(z.string(), z.string()).optional() });

type ContainerSpec = z.infer<typeof containerSchema>;
type PodSpecW = z.infer<typeof podSpecSchema>;
export type WorkloadObject = z.infer<typeof workloadSchema>;

/** The image's WORKDIR (Containerfile), which is this repository here. */
export const IMAGE_WORKDIR = '/opt/sluice';

export interface WorkloadNode {
  name: string;
  ip: string;
  /** Where this node's hostPath volumes live on this machine: hostPath /x → <hostRoot>/x, unless mapped below. */
  hostRoot: string;
  /** hostPaths that are this machine's own (the bpffs). */
  hostPaths?: Record<string, string>;
  /** Environment every container on this node gets on top of its own (what tells the lab's nodes apart). */
  env?: Record<string, string>;
}

export interface WorkloadContainer {
  workload: string;
  pod: string;
  container: string;
  pid: number;
  logFile: string;
  /** How many times it was started. */
  starts: number;
}

export interface WorkloadKubeletOptions {
  apiUrl: string;
  namespace: string;
  /** Which kinds this kubelet runs: the lab's nodes run the DaemonSets, the demo's control-plane host the Deployments. */
  kinds: ReadonlyArray<'DaemonSet' | 'Deployment'>;
  node: WorkloadNode;
  /** The repository: the image's content. */
  repoRoot: string;
  log: Logger;
  /** Each line a container writes to stdout or stderr (also kept in its log file). */
  onLine?: (container: WorkloadContainer, line: string) => void;
  /** A container (re)started. */
  onStart?: (container: WorkloadContainer) => void;
}

interface Running {
  info: WorkloadContainer;
  child: ChildProcess | undefined;
  stopped: boolean;
}

/** A container's view of the world, rewritten to this machine: mount paths and the image's WORKDIR. */
function rewriter(mounts: Array<[string, string]>): (value: string) => string {
  const sorted = [...mounts].sort((a, b) => b[0].length - a[0].length);
  return (value) => {
    for (const [from, to] of sorted) {
      if (value === from) return to;
      if (value.startsWith(`${from}/`)) return to + value.slice(from.length);
      // --flag=/path
      const eq = value.indexOf('=');
      if (eq > 0 && (value.slice(eq + 1) === from || value.slice(eq + 1).startsWith(`${from}/`))) return `${value.slice(0, eq + 1)}${to}${value.slice(eq + 1 + from.length)}`;
    }
    return value;
  };
}

export class WorkloadKubelet {
  private readonly running: Running[] = [];
  private readonly root: string;
  private stopping = false;

  constructor(private readonly options: WorkloadKubeletOptions) {
    mkdirSync(options.node.hostRoot, { recursive: true, mode: 0o700 });
    this.root = mkdtempSync(join(options.node.hostRoot, 'pods-'));
  }

  /** The containers running now (or being restarted). */
  containers(): WorkloadContainer[] {
    return this.running.filter((r) => !r.stopped).map((r) => r.info);
  }

  private async get(path: string): Promise<unknown> {
    const res = await fetch(`${this.options.apiUrl}${path}`);
    if (!res.ok) throw new Error(`GET ${path}: HTTP ${res.status}`);
    return res.json();
  }

  private async dataOf(kind: 'configmaps' | 'secrets', name: string, optional = false): Promise<Record<string, string> | undefined> {
    const res = await fetch(`${this.options.apiUrl}/api/v1/namespaces/${this.options.namespace}/${kind}/${name}`);
    if (res.status === 404 && optional) return undefined;
    if (!res.ok) throw new Error(`${kind} ${name} in ${this.options.namespace}: HTTP ${res.status}`);
    const obj = dataObjectSchema.parse(await res.json());
    const data = obj.data ?? {};
    return kind === 'secrets' ? Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v, 'base64').toString('utf8')])) : data;
  }

  /**
   * Reads the workloads of this kubelet's kinds and starts their pods that belong on this node. `placement` says
   * which replicas of a Deployment land here (the demo's single host takes them all).
   */
  async start(placement: (workload: WorkloadObject, replica: number) => boolean = () => true): Promise<void> {
    const { namespace, kinds } = this.options;
    for (const kind of kinds) {
      const plural = kind === 'DaemonSet' ? 'daemonsets' : 'deployments';
      const list = z.object({ items: z.array(z.unknown()) }).parse(await this.get(`/apis/apps/v1/namespaces/${namespace}/${plural}`));
      for (const item of list.items) {
        const workload = workloadSchema.parse({ kind, ...(item as object) });
        const replicas = kind === 'DaemonSet' ? 1 : (workload.spec.replicas ?? 1);
        for (let r = 0; r < replicas; r++) {
          if (kind === 'Deployment' && !placement(workload, r)) continue;
          const pod = kind === 'DaemonSet' ? `${workload.metadata.name}-${this.options.node.name}` : `${workload.metadata.name}-${r}`;
          await this.runPod(workload, pod);
        }
      }
    }
  }

  private async materialise(spec: PodSpecW, podDir: string): Promise<Map<string, string>> {
    const volumes = new Map<string, string>();
    const writeKeys = (dir: string, data: Record<string, string>, items: Array<{ key: string; path: string }> | undefined, mode: number) => {
      const pairs = items ? items.map((i) => [i.path, data[i.key]] as const) : Object.entries(data);
      for (const [path, value] of pairs) {
        if (value === undefined) throw new Error(`a volume item names a key that does not exist (${path})`);
        const file = join(dir, path);
        mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
        // O_EXCL: the pod's directory is new (mkdtemp), so nothing may be there already, a planted link least of all.
        writeFileSync(file, value, { flag: 'wx', mode });
      }
    };
    for (const volume of spec.volumes ?? []) {
      let path: string;
      if (volume.hostPath) {
        const own = this.options.node.hostPaths?.[volume.hostPath.path];
        path = own ?? join(this.options.node.hostRoot, volume.hostPath.path);
        if (!own) {
          if (volume.hostPath.type === 'FileOrCreate') {
            mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
            closeSync(openSync(path, 'a', 0o600));
          } else {
            mkdirSync(path, { recursive: true, mode: 0o700 });
          }
        }
      } else {
        path = join(podDir, 'volumes', volume.name);
        mkdirSync(path, { recursive: true, mode: 0o700 });
        if (volume.configMap) {
          const data = await this.dataOf('configmaps', volume.configMap.name, volume.configMap.optional);
          if (data) writeKeys(path, data, volume.configMap.items, 0o644);
        } else if (volume.secret) {
          const data = await this.dataOf('secrets', volume.secret.secretName, volume.secret.optional);
          if (data) writeKeys(path, data, volume.secret.items, 0o400);
        } else if (volume.projected) {
          for (const source of volume.projected.sources) {
            if (source.configMap) {
              const data = await this.dataOf('configmaps', source.configMap.name, source.configMap.optional);
              if (data) writeKeys(path, data, source.configMap.items, 0o644);
            } else if (source.secret) {
              const data = await this.dataOf('secrets', source.secret.name, source.secret.optional);
              if (data) writeKeys(path, data, source.secret.items, 0o400);
            }
          }
        } else if (!volume.emptyDir) {
          throw new Error(`volume ${volume.name}: the lab kubelet runs configMap, secret, projected, hostPath and emptyDir volumes`);
        }
      }
      volumes.set(volume.name, path);
    }
    return volumes;
  }

  private async envOf(container: ContainerSpec, pod: string): Promise<Record<string, string>> {
    const env: Record<string, string> = {};
    const fields: Record<string, string> = {
      'spec.nodeName': this.options.node.name,
      'metadata.name': pod,
      'metadata.namespace': this.options.namespace,
      'status.hostIP': this.options.node.ip,
      'status.podIP': this.options.node.ip,
    };
    for (const e of container.env ?? []) {
      const from = e.valueFrom;
      if (e.value !== undefined) env[e.name] = e.value;
      else if (from?.fieldRef) {
        const value = fields[from.fieldRef.fieldPath];
        if (value === undefined) throw new Error(`env ${e.name}: fieldRef ${from.fieldRef.fieldPath} is not one the lab kubelet knows`);
        env[e.name] = value;
      } else if (from?.configMapKeyRef || from?.secretKeyRef) {
        const ref = (from.configMapKeyRef ?? from.secretKeyRef)!;
        const data = await this.dataOf(from.configMapKeyRef ? 'configmaps' : 'secrets', ref.name, ref.optional);
        const value = data?.[ref.key];
        if (value !== undefined) env[e.name] = value;
        else if (!ref.optional) throw new Error(`env ${e.name}: ${ref.name} has no key ${ref.key}`);
      }
    }
    return env;
  }

  /** argv and environment of a container on this machine. */
  private async commandOf(container: ContainerSpec, pod: string, volumes: Map<string, string>): Promise<{ file: string; args: string[]; cwd: string; env: NodeJS.ProcessEnv }> {
    const { repoRoot } = this.options;
    const mounts: Array<[string, string]> = [[IMAGE_WORKDIR, repoRoot]];
    for (const m of container.volumeMounts ?? []) {
      const path = volumes.get(m.name);
      if (!path) throw new Error(`container ${container.name}: volume ${m.name} is not defined`);
      mounts.push([m.mountPath, m.subPath ? join(path, m.subPath) : path]);
    }
    const rewrite = rewriter(mounts);
    const argv = [...(container.command ?? []), ...(container.args ?? [])].map(rewrite);
    if (!argv.length) throw new Error(`container ${container.name}: no command (the image's CMD is not used in the lab)`);
    const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: join(this.root, pod) };
    for (const [k, v] of Object.entries(await this.envOf(container, pod))) env[k] = rewrite(v);
    Object.assign(env, this.options.node.env);
    const [file, ...args] = argv;
    return { file: file === 'node' ? process.execPath : file!, args, cwd: rewrite(container.workingDir ?? IMAGE_WORKDIR), env };
  }

  private spawnContainer(cmd: { file: string; args: string[]; cwd: string; env: NodeJS.ProcessEnv }, info: WorkloadContainer): ChildProcess {
    const child = spawn(cmd.file, cmd.args, { cwd: cmd.cwd, env: cmd.env, stdio: ['ignore', 'pipe', 'pipe'] });
    if (child.pid !== undefined) info.pid = child.pid;
    info.starts++;
    for (const stream of [child.stdout!, child.stderr!]) {
      let buffer = '';
      stream.on('data', (chunk: Buffer) => {
        const text = chunk.toString();
        appendFileSync(info.logFile, text);
        buffer += text;
        let nl: number;
        while ((nl = buffer.indexOf('\n')) >= 0) {
          const line = buffer.slice(0, nl);
          buffer = buffer.slice(nl + 1);
          this.options.onLine?.(info, line);
        }
      });
    }
    return child;
  }

  private async runPod(workload: WorkloadObject, pod: string): Promise<void> {
    const spec = workload.spec.template.spec;
    for (const c of [...(spec.initContainers ?? []), ...spec.containers]) {
      if (!/(^|\/)sluice(:|@|$)/.test(c.image)) throw new Error(`pod ${pod}: container ${c.name}: image ${c.image} is not Sluice's; the lab runs only its own`);
    }
    const podDir = join(this.root, pod);
    mkdirSync(podDir, { mode: 0o700 });
    const volumes = await this.materialise(spec, podDir);
    const logFile = (c: string) => {
      const file = join(podDir, `${c}.log`);
      writeFileSync(file, '', { flag: 'wx', mode: 0o600 });
      return file;
    };
    for (const init of spec.initContainers ?? []) {
      const info: WorkloadContainer = { workload: workload.metadata.name, pod, container: init.name, pid: 0, logFile: logFile(init.name), starts: 0 };
      const child = this.spawnContainer(await this.commandOf(init, pod, volumes), info);
      const code = await new Promise<number | null>((resolve, reject) => {
        child.once('error', reject);
        child.once('exit', (c) => resolve(c));
      });
      if (code !== 0) throw new Error(`pod ${pod}: init container ${init.name} exited with ${code}; its log: ${info.logFile}`);
    }
    for (const container of spec.containers) {
      const cmd = await this.commandOf(container, pod, volumes);
      const run: Running = { info: { workload: workload.metadata.name, pod, container: container.name, pid: 0, logFile: logFile(container.name), starts: 0 }, child: undefined, stopped: false };
      this.running.push(run);
      let backoffMs = 500;
      const launch = () => {
        if (run.stopped || this.stopping) return;
        const started = Date.now();
        const child = this.spawnContainer(cmd, run.info);
        run.child = child;
        this.options.onStart?.(run.info);
        child.once('error', (err) => this.options.log.error({ pod, container: container.name, error: err.message }, 'lab kubelet: cannot start a container'));
        child.once('exit', (code, signal) => {
          if (run.stopped || this.stopping) return;
          // restartPolicy Always, with a backoff that resets after a run of 10 s (CrashLoopBackOff's shape).
          backoffMs = Date.now() - started > 10_000 ? 500 : Math.min(backoffMs * 2, 10_000);
          this.options.log.warn({ pod, container: container.name, code, signal, restartInMs: backoffMs }, 'lab kubelet: container exited; restarting it');
          setTimeout(launch, backoffMs).unref();
        });
      };
      launch();
    }
  }

  /** The current process of a container (undefined while it is being restarted). */
  process(pod: string, container: string): ChildProcess | undefined {
    return this.running.find((r) => r.info.pod === pod && r.info.container === container && !r.stopped)?.child;
  }

  /** SIGTERM to every container, SIGKILL after the grace period; resolves when all are gone. */
  async stop(graceMs = 5000): Promise<void> {
    this.stopping = true;
    await Promise.all(
      this.running.map(async (r) => {
        r.stopped = true;
        const child = r.child;
        if (!child || child.exitCode !== null || child.signalCode !== null) return;
        const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
        await exited;
        clearTimeout(timer);
      }),
    );
  }

  /** Synchronous last resort (a signal, a failed start): SIGKILL to everything. */
  killAll(): void {
    this.stopping = true;
    for (const r of this.running) {
      r.stopped = true;
      if (r.child && r.child.exitCode === null && r.child.signalCode === null) r.child.kill('SIGKILL');
    }
  }
}
