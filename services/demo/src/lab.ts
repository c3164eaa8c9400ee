/**
 * The demo's lab part: nodes in network namespaces, each with a real agent and eBPF datapath, and pods running a
 * small web server, through @sluice/lab (which registers its nodes and pods in the demo's kube-sim, so kubectl sees
 * them and the operator carries them into etcd).
 */
import { mkdtempSync } from 'node:fs';
import type { DemoNode, DemoPod } from '@sluice/demo-state';
import type { EtcdServer } from '@sluice/etcd-runner';
import type { KubeSim } from '@sluice/kube-sim';
import { startLab, WEB_PORT } from '@sluice/lab';
import { createLogger } from '@sluice/log';
import { shortId } from '@sluice/netns';

export interface LabPart {
  nodes: DemoNode[];
  pods: DemoPod[];
  namespaces: string[];
  pinRoot: string;
  processes: Array<{ name: string; pid: number }>;
  stop(): Promise<void>;
}

export interface LabPartOptions {
  nodes: number;
  podsPerNode: number;
  etcdEndpoint: string;
  /** The demo's etcd: each node gets its agent's etcd identity (etcd.config, client certificate, etcd user) from it. */
  etcd?: Pick<EtcdServer, 'writeClientConfig' | 'clientOptions'>;
  sim: KubeSim;
  /** Called before anything is made, so that a crash midway still leaves a record of what to clean up. */
  onCreating(made: { namespacePrefix: string; pinRoot: string; tempDirs: string[] }): Promise<void>;
}

export async function startLabPart(options: LabPartOptions): Promise<LabPart | { error: string }> {
  if (process.getuid?.() !== 0) return { error: 'the lab needs root (network namespaces, eBPF); run npm start as root' };
  const id = shortId(4);
  const pinRoot = `/sys/fs/bpf/sluice/${id}`;
  // The lab's own naming (namespaces sl-<id>-…, pins, its mkdtemp folder), recorded before anything runs in them.
  const stateRoot = mkdtempSync(`/tmp/sluice-lab-${id}-`);
  await options.onCreating({ namespacePrefix: `sl-${id}-`, pinRoot, tempDirs: [stateRoot] });
  const lab = await withoutNewSignalHandlers(() => startLab({
    id,
    nodes: options.nodes,
    podsPerNode: options.podsPerNode,
    etcdEndpoint: options.etcdEndpoint,
    ...(options.etcd ? { etcd: options.etcd, etcdAuth: true } : {}),
    kubeSim: options.sim,
    stateRoot,
    // The agents are the DaemonSet of deploy/ that the demo applied (its config has the health service's address);
    // the operator is one of the Deployments the demo runs.
    manifests: { namespace: 'sluice' },
    operator: false,
    nodePrefix: 'lab-node-',
    podNamespace: 'default',
    log: createLogger({ component: 'lab', level: 'warn' }),
  }));
  const nodes: DemoNode[] = lab.nodes.map((n) => ({
    name: n.name,
    nodeIP: n.ip,
    netns: n.netns,
    pinDir: n.pinDir,
    agentStatusUrl: n.statusUrl || undefined,
    agentPid: n.agentPid,
    healthEndpointIP: n.healthIp,
  }));
  const pods: DemoPod[] = lab
    .pods()
    .map((p) => ({ name: p.name, namespace: p.namespace, ip: p.ip, netns: p.netns, node: p.node, port: WEB_PORT }))
    .sort((a, b) => a.name.localeCompare(b.name));
  const namespaces = [lab.underlay, ...lab.nodes.flatMap((n) => [n.netns, ...(n.healthNetns ? [n.healthNetns] : [])]), ...pods.map((p) => p.netns)];
  return {
    nodes,
    pods,
    namespaces,
    pinRoot,
    processes: lab.nodes.flatMap((n) => (n.agentPid ? [{ name: `agent ${n.name}`, pid: n.agentPid }] : [])),
    stop: () => lab.stop(),
  };
}

const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/**
 * The lab hooks SIGINT/SIGTERM/SIGHUP to tear itself down and exit at once, which suits a test runner; the demo owns
 * its signals (it stops the lab first, then the services, then etcd, and removes demo.json), so handlers that
 * startLab adds are taken off again.
 */
async function withoutNewSignalHandlers<T>(fn: () => Promise<T>): Promise<T> {
  const before = new Map(SIGNALS.map((s) => [s, new Set(process.listeners(s))]));
  try {
    return await fn();
  } finally {
    for (const signal of SIGNALS) {
      for (const listener of process.listeners(signal)) if (!before.get(signal)!.has(listener)) process.removeListener(signal, listener);
    }
  }
}
