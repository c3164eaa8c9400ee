import { createLogger } from '@sluice/log';
import { KubeConfig } from '@kubernetes/client-node';
import { startKubeSim, type KubeSim, type KubeSimOptions } from '../src/index.ts';

export async function startSmall(options: KubeSimOptions = {}): Promise<KubeSim> {
  return startKubeSim({
    nodes: 3, podsPerNode: 4, services: 2, namespaces: 2, heartbeats: false, log: createLogger({ component: 'kube-sim', level: 'silent' }),
    ...options,
  });
}

export function kubeConfig(sim: KubeSim): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromFile(sim.kubeconfigPath);
  return kc;
}

export async function request(sim: KubeSim, method: string, path: string, body?: unknown, contentType = 'application/json') {
  const res = await fetch(`${sim.url}${path}`, {
    method, headers: body === undefined ? {} : { 'Content-Type': contentType },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let json: any;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, json, text };
}

/** Reads a watch stream's events until `until` says stop (or the stream ends); returns them. */
export async function readWatch(url: string, until: (events: { type: string; object: any }[]) => boolean, timeoutMs = 15_000) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  const events: { type: string; object: any }[] = [];
  try {
    const res = await fetch(url, { signal: controller.signal });
    if (!res.body) return events;
    const decoder = new TextDecoder();
    let buffer = '';
    for await (const chunk of res.body) {
      buffer += decoder.decode(chunk as Uint8Array, { stream: true });
      let nl: number;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        if (line.trim()) events.push(JSON.parse(line));
      }
      if (until(events)) break;
    }
  } catch (err) {
    if ((err as Error).name !== 'AbortError') throw err;
  } finally {
    clearTimeout(timer);
    controller.abort();
  }
  return events;
}

export async function waitFor(check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const start = Date.now();
  while (!check()) {
    if (Date.now() - start > timeoutMs) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}
