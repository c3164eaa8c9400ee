/**
 * The lab kubelet: one per node. Watches kube-sim for pods bound to its node (fieldSelector spec.nodeName), makes
 * each pod's sandbox (a network namespace) through the CNI plugin, starts a tiny web server in it answering with the
 * pod's name, and patches the pod's IP and phase Running into kube-sim through the status subresource. A deleted pod
 * gets CNI DEL and its namespace removed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
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
