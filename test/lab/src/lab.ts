/**
 * The lab: a Sluice cluster of network namespaces on one machine.
 *
 *   underlay  sl-<id>-u     a bridge (br0, MTU 9000) that every node's uplink plugs into
 *   node i    sl-<id>-n<i>  eth0 (node IP from kube-sim's node range), vx0 (collect_md VXLAN), ip_forward, a REAL
 *                           agent process (tsx services/agent/src/main.ts) in the host namespace acting on it
 *   health i  sl-<id>-h<i>  the node's health endpoint (like cilium-health-ep): made and owned by the node's agent
 *                           (--health-endpoint-netns/-port; with agents from manifests, by the lab through the CNI
 *                           plugin), its IP advertised on the node (annotation sluice.io/health-ips) and under
 *                           keys.health(node), answering HTTP on HEALTH_ENDPOINT_PORT
 *   pod       sl-<id>-p<k>  made by the node's lab kubelet through the CNI plugin, with a web server on :8080
 *
 * etcd, kube-sim, the operator and the agents live on the host's loopback. The lab registers its nodes in kube-sim
 * (empty nodes: podCIDR and InternalIP come from kube-sim's allocator), starts the operator unless told not to, and
 * always cleans up — namespaces, processes, pins under /sys/fs/bpf/sluice/<lab id>/, its state dir — even after a
 * failed start; it never touches an interface or address outside the namespaces it made.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CNI_BINARY } from '@sluice/cni';
import { lookupIpcache, openPinnedMaps } from '@sluice/datapath';
import type { KubeSim } from '@sluice/kube-sim';
import { createKvClient, keySchema, setupAuth } from '@sluice/kvstore';
import { createLogger, type Logger } from '@sluice/log';
import { execIn, NetLab, ping as nsPing, run, shortId, type ExecResult } from '@sluice/netns';
import { HEALTH_IPS_ANNOTATION } from '@sluice/slim';
import type { EtcdServer } from '@sluice/etcd-runner';
import { ETCD_USERS } from '@sluice/kvstore';

/** Creates (or completes) the etcd users and roles of these nodes' agents and turns etcd auth on (kvstore auth.ts). */
async function grantAgents(etcd: Pick<EtcdServer, 'clientOptions'>, root: string, nodes: string[]): Promise<void> {
  const admin = createKvClient(etcd.clientOptions());
  try {
    await setupAuth(admin, keySchema(root), { nodes });
  } finally {
    admin.close();
  }
}
import { LabKubelet, webServer, WorkloadKubelet, WEB_PORT, type Sandbox } from './kubelet.ts';
import { labServices, makeNodeCgroup, type LabServices } from './services.ts';

const REPO = fileURLToPath(new URL('../../../', import.meta.url));
/** The health port of each node's health endpoint (inside its own namespace, like cilium-health-ep's 4240). */
export const HEALTH_ENDPOINT_PORT = 4240;
const TSX_LOADER = `file://${join(REPO, 'node_modules/tsx/dist/loader.mjs')}`;
export const AGENT_MAIN = join(REPO, 'services/agent/src/main.ts');
export const OPERATOR_MAIN = join(REPO, 'services/operator/src/main.ts');
export { WEB_PORT };

export interface LabOptions {
  nodes: number;
  podsPerNode?: number;
  routing?: 'native' | 'tunnel';
  hostRouting?: 'auto' | 'bpf' | 'legacy';
  masquerade?: boolean;
  /**
   * Extra agent flags for one node, after the lab's own (the last of a repeated flag wins): a mixed cluster, e.g.
   * `['--routing', 'tunnel', '--masquerade', 'iptables']` on some nodes. Agents from manifests ignore it.
   */
  nodeAgentArgs?: (node: { index: number; name: string }) => readonly string[];
  /** false: the lab makes no vx0 in its nodes, each agent makes its own, as on a real node (default true). */
  labVxlan?: boolean;
  /** The agents' --lb-acceleration (XDP on each node's uplink); default: the agent's (disabled). */
  lbAcceleration?: 'native' | 'generic' | 'disabled';
  etcdEndpoint: string;
  /**
   * The etcd the lab runs against, as @sluice/etcd-runner started it. With it, every component reaches etcd through
   * its own etcd.config (--etcd-config) and, under TLS, its own client certificate: CN sluice-agent-<node> for each
   * agent, sluice-operator for the operator (the users etcd auth knows them by). Without it: --etcd-endpoints.
   */
  etcd?: Pick<EtcdServer, 'writeClientConfig' | 'clientOptions'>;
  /**
   * With `etcd` (and client-certificate auth): give each agent its own etcd user and role before it starts and turn
   * etcd auth on, so that an agent can write only its own node's keys (kvstore auth.ts). One key root per etcd.
   */
  etcdAuth?: boolean;
  /** An in-process kube-sim (the lab adds its nodes and pods through it). */
  kubeSim: KubeSim;
  /** etcd key root of the operator and agents. Default `sluice/`. */
  rootPrefix?: string;
  /** Start an operator process (default true); false when the caller runs one. */
  operator?: boolean;
  /** Health endpoint namespace per node (default true). */
  healthEndpoints?: boolean;
  /** Agent health port inside each node namespace (default 4240; 0 = none). */
  healthPort?: number;
  /**
   * host:port of a health service (services/health) the agents probe for and report to (their --health-service);
   * without it the agents do not probe.
   */
  healthService?: string;
  /** Kubernetes namespace of the lab's pods. Default `default`. */
  podNamespace?: string;
  /** Pod names: `<podPrefix><node index>-<j>` (default `web-`); distinct per lab when labs share a kube-sim. */
  podPrefix?: string;
  /** Node names: `<prefix><i>` (default `lab-<id>-node-`). */
  nodePrefix?: string;
  agentLogLevel?: string;
  /**
   * Run the agents from the manifests instead: each node's WorkloadKubelet (kubelet.ts) runs the DaemonSets that
   * kube-sim holds in this namespace (applied from deploy/ beforehand). The lab adds only what tells its nodes apart
   * on one machine (SLUICE_NETNS, SLUICE_PIN_DIR, state dir, socket, free metrics port) as the node's environment.
   */
  manifests?: { namespace: string };
  /** The lab's own directory, made by the caller with mkdtemp (0700); default a new mkdtemp /tmp/sluice-lab-<id>-*. */
  stateRoot?: string;
  id?: string;
  log?: Logger;
}

/** Extra flags and environment of one agent start (not with agents from manifests). */
export interface AgentExtras {
  args?: string[];
  env?: Record<string, string>;
}

export interface LabNode {
  name: string;
  index: number;
  netns: string;
  ip: string;
  podCidr: string;
  pinDir: string;
  stateDir: string;
  agentSocket: string;
  /** The agent's local status endpoint (/status, /metrics, /healthz, /readyz, /counters); changes on restart. */
  statusUrl: string;
  agentPid: number | undefined;
  /** The agent's log (JSON lines on stderr), kept for tests. */
  agentLog: string;
  healthNetns?: string;
  healthIp?: string;
  /** Where the agent's health port answers GET /hello (inside the node namespace). */
  agentHealthUrl?: string;
  /** The underlay-side end of the node's uplink (cutLink sets it down). */
  underlayIf: string;
  /** The node's own cgroup (v2): its agent attaches the socket load balancer there (host-namespace clients). */
  cgroup?: string;
}

export interface LabPod {
  name: string;
  namespace: string;
  node: string;
  ip: string;
  /** The pod's network namespace (enter with nsenter --net=/run/netns/<netns>). */
  netns: string;
  uid: string;
}

export interface Lab {
  id: string;
  nodes: LabNode[];
  underlay: string;
  etcdEndpoint: string;
  rootPrefix: string;
  /** The lab's pods that have a sandbox right now. */
  pods(): LabPod[];
  /** Creates a pod bound to `node` in kube-sim; resolves when it runs and every agent has programmed it. */
  createPod(node: string, name?: string): Promise<LabPod>;
  /** Deletes the pod in kube-sim; resolves when its sandbox is gone. */
  deletePod(pod: LabPod): Promise<void>;
  exec(pod: LabPod, cmd: string, args?: readonly string[], options?: { timeoutMs?: number }): Promise<ExecResult>;
  ping(from: LabPod, toIp: string, options?: { count?: number; timeoutS?: number; intervalS?: number }): Promise<boolean>;
  /** GET http://ip:8080/ from a pod; the body (the target pod's name) or undefined. */
  httpGet(from: LabPod, toIp: string, timeoutS?: number): Promise<string | undefined>;
  killAgent(node: string, signal?: NodeJS.Signals): Promise<void>;
  /**
   * Stops the node's agent (SIGTERM) and starts it again; `with` adds flags and environment to that start only
   * (e.g. a short --reconcile-interval, a test fault injection variable).
   */
  restartAgent(node: string, with_?: AgentExtras): Promise<void>;
  /** Takes the node's uplink down on the underlay side (the node is cut off), and back. */
  cutLink(node: string): Promise<void>;
  restoreLink(node: string): Promise<void>;
  /** Resolves when every node's maps hold every lab pod (and nothing of pods that are gone). */
  waitConverged(timeoutMs?: number): Promise<void>;
  node(name: string): LabNode;
  /** Services (see services.ts in this folder): selector-less Services and hand-written EndpointSlices in kube-sim. */
  services: LabServices;
  stop(): Promise<void>;
}

async function waitFor<T>(what: string, fn: () => Promise<T | undefined> | T | undefined, timeoutMs = 60_000, intervalMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${lastError ? `: ${(lastError as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

function runCni(env: Record<string, string>, config: unknown): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(CNI_BINARY, [], { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
    child.stdin.end(JSON.stringify(config));
  });
}

/** Every lab of this process that has not been stopped: its synchronous teardown. */
const active = new Map<string, () => void>();
let signalsHooked = false;

/**
 * Stops every lab this process started and has not stopped (a test's afterAll after a failed or timed-out start,
 * where no handle was returned).
 */
export function stopAllLabs(): void {
  for (const [id, teardown] of [...active]) {
    active.delete(id);
    teardown();
  }
}

function hookSignals(): void {
  if (signalsHooked) return;
  signalsHooked = true;
  // A test runner that kills its worker, or Ctrl-C on the demo: no 'exit' handlers run on a signal by default.
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
    process.once(signal, () => {
      stopAllLabs();
      process.exit(128 + (signal === 'SIGINT' ? 2 : signal === 'SIGHUP' ? 1 : 15));
    });
  }
}

export async function startLab(options: LabOptions): Promise<Lab> {
  const id = options.id ?? shortId(4);
  const log = options.log ?? createLogger({ component: 'lab' });
  const net = new NetLab(id);
  const rootPrefix = options.rootPrefix ?? 'sluice/';
  const routing = options.routing ?? 'native';
  const hostRouting = options.hostRouting ?? 'auto';
  const podNamespace = options.podNamespace ?? 'default';
  // mkdtemp: a fresh 0700 directory whose name nobody could predict and plant a link at.
  const stateRoot = options.stateRoot ?? mkdtempSync(`/tmp/sluice-lab-${id}-`);
  const pinRoot = `/sys/fs/bpf/sluice/${id}`;
  const sim = options.kubeSim;
  const healthPort = options.healthPort ?? 4240;
  // The agents make their nodes' health endpoints; agents from manifests get no per-node flags, so the lab does.
  const agentsMakeHealthEndpoints = (options.healthEndpoints ?? true) && !options.manifests;
  const healthEndpointsDeferred = new Set<string>();
  net.defer(`state dir ${stateRoot}`, () => {
    // SLUICE_LAB_LOGS=<dir>: keep the agents' and operator's logs of every lab (debugging a failed run).
    const keep = process.env.SLUICE_LAB_LOGS;
    if (keep) cpSync(stateRoot, join(keep, id), { recursive: true, filter: (src) => !src.endsWith('.sock') });
    rmSync(stateRoot, { recursive: true, force: true });
  });
  net.trackPinDir(pinRoot);
  const processes = new Set<ChildProcess>();
  net.defer('lab processes', () => {
    for (const p of processes) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  });
  const nodes: LabNode[] = [];
  const kubelets = new Map<string, LabKubelet>();
  const agents = new Map<string, ChildProcess>();
  let podSeq = 0;
  let stopped = false;
  const createdPods: string[] = [];
  const createPod = (name: string, nodeName: string) => {
    sim.cluster.createPod({ namespace: podNamespace, name, nodeName, phase: 'Pending', assignIP: false, labels: { app: 'lab-web' } });
    createdPods.push(name);
  };

  const teardownSync = () => {
    stopped = true;
    active.delete(id);
    for (const k of kubelets.values()) void k.stop().catch(() => undefined);
    for (const w of workloadKubelets.values()) w.killAll();
    for (const p of processes) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    net.cleanupSync();
  };
  active.set(id, teardownSync);
  hookSignals();
  const cleanup = async () => {
    if (stopped) return;
    stopped = true;
    active.delete(id);
    await Promise.all([...kubelets.values()].map((k) => k.stop().catch(() => undefined)));
    await Promise.all([...workloadKubelets.values()].map((w) => w.stop(3000).catch(() => undefined)));
    for (const p of processes) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    const failures = net.cleanupSync();
    for (const name of createdPods) {
      try {
        sim.cluster.deletePod(podNamespace, name);
      } catch {
        // already gone
      }
    }
    for (const n of nodes) {
      try {
        sim.store.delete('nodes', '', n.name);
      } catch {
        // already gone
      }
    }
    if (failures.length) log.warn({ failures }, 'lab cleanup left something behind');
  };

  // Each component with its own etcd identity, as in production (@sluice/kvstore auth.ts).
  const etcdArgs = (dir: string, user: string): string[] =>
    options.etcd ? ['--etcd-config', options.etcd.writeClientConfig(join(dir, `etcd-${user}.config`), user)] : ['--etcd-endpoints', options.etcdEndpoint];

  // options.manifests: the agent of each node is the DaemonSet's pod, which the node's WorkloadKubelet runs (and
  // restarts when it exits); its lines reach the current start-up watch of that node.
  const workloadKubelets = new Map<string, WorkloadKubelet>();
  const agentWatch = new Map<string, (line: string) => void>();
  const startManifestAgent = async (node: LabNode, namespace: string): Promise<void> => {
    const logFile = join(node.stateDir, 'agent.log');
    let statusUrl: string | undefined;
    let failed: string | undefined;
    agentWatch.set(node.name, (line) => {
      try {
        const rec = JSON.parse(line) as { msg?: string; status?: string; error?: string };
        if (rec.msg === 'agent running' && rec.status) statusUrl = rec.status;
        if (rec.msg === 'agent failed to start') failed = rec.error;
      } catch {
        // not JSON (a libbpf message)
      }
    });
    if (!workloadKubelets.has(node.name)) {
      const hostRoot = join(node.stateDir, 'host');
      // The node's own etcd identity, where deploy/overlays/etcd-tls mounts it from the host (/etc/sluice/etcd).
      if (options.etcd) {
        mkdirSync(join(hostRoot, 'etc/sluice/etcd'), { recursive: true, mode: 0o700 });
        options.etcd.writeClientConfig(join(hostRoot, 'etc/sluice/etcd/etcd.config'), ETCD_USERS.agent(node.name));
      }
      const wk = new WorkloadKubelet({
        apiUrl: sim.url,
        namespace,
        kinds: ['DaemonSet'],
        repoRoot: REPO.replace(/\/$/, ''),
        log,
        node: {
          name: node.name,
          ip: node.ip,
          hostRoot,
          hostPaths: { '/sys/fs/bpf': '/sys/fs/bpf' },
          env: {
            SLUICE_NETNS: node.netns, SLUICE_PIN_DIR: node.pinDir, SLUICE_STATE_DIR: node.stateDir, SLUICE_API_SOCKET: node.agentSocket,
            SLUICE_METRICS_HOST: '127.0.0.1', SLUICE_METRICS_PORT: '0', SLUICE_CLUSTER_SIZE: String(options.nodes),
          },
        },
        onStart: (c) => {
          const child = wk.process(c.pod, c.container);
          if (c.container !== 'agent' || !child) return;
          processes.add(child);
          agents.set(node.name, child);
          node.agentPid = c.pid;
        },
        onLine: (c, line) => {
          if (c.container !== 'agent') return;
          node.agentLog += `${line}\n`;
          if (!stopped) appendFileSync(logFile, `${line}\n`);
          agentWatch.get(node.name)?.(line);
        },
      });
      workloadKubelets.set(node.name, wk);
      await wk.start();
    }
    node.statusUrl = await waitFor(`agent ${node.name} to start (DaemonSet pod)`, () => {
      if (failed) throw new Error(`agent ${node.name}: ${failed}; log in ${logFile}`);
      return statusUrl;
    }, 60_000);
    await waitFor(`agent ${node.name} to sync`, async () => (await fetch(`${node.statusUrl}/readyz`)).ok || undefined, 60_000);
  };

  const startAgent = async (node: LabNode, extras: AgentExtras = {}): Promise<void> => {
    if (options.manifests) {
      if (extras.args?.length || Object.keys(extras.env ?? {}).length) throw new Error('extra agent flags and environment need agents the lab starts itself');
      return startManifestAgent(node, options.manifests.namespace);
    }
    const logFile = join(node.stateDir, 'agent.log');
    const args = [
      '--import', TSX_LOADER, AGENT_MAIN,
      '--node-name', node.name, ...etcdArgs(node.stateDir, ETCD_USERS.agent(node.name)), '--etcd-prefix', rootPrefix,
      '--pin-dir', node.pinDir, '--netns', node.netns, '--uplink', 'eth0', '--vxlan', 'vx0',
      '--routing', routing, '--host-routing', hostRouting, '--state-dir', node.stateDir, '--api-socket', node.agentSocket,
      '--metrics-port', '0', '--health-port', String(healthPort), '--cluster-size', String(options.nodes),
      '--log-level', options.agentLogLevel ?? 'info',
      ...(options.masquerade ? ['--masquerade'] : []),
      ...(options.lbAcceleration ? ['--lb-acceleration', options.lbAcceleration] : []),
      ...(node.cgroup ? ['--cgroup-root', node.cgroup] : []),
      ...(options.healthService ? ['--health-service', options.healthService] : []),
      ...(agentsMakeHealthEndpoints ? ['--health-endpoint-port', String(HEALTH_ENDPOINT_PORT), '--health-endpoint-netns', net.name(`h${node.index}`)] : []),
      ...(options.nodeAgentArgs?.({ index: node.index, name: node.name }) ?? []),
    ];
    if (agentsMakeHealthEndpoints && !healthEndpointsDeferred.has(node.name)) {
      // A killed agent leaves its endpoint behind: the lab takes it away with the rest.
      healthEndpointsDeferred.add(node.name);
      const netns = net.name(`h${node.index}`);
      net.defer(`netns ${netns}`, () => void execFileSync('ip', ['netns', 'delete', netns], { stdio: 'ignore' }));
    }
    args.push(...(extras.args ?? []));
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...extras.env } });
    processes.add(child);
    agents.set(node.name, child);
    node.agentPid = child.pid;
    let statusUrl: string | undefined;
    let failed: string | undefined;
    let buffer = '';
    child.stderr!.on('data', (c: Buffer) => {
      const text = c.toString();
      node.agentLog += text;
      if (!stopped) appendFileSync(logFile, text);
      buffer += text;
      let nl: number;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        try {
          const rec = JSON.parse(line) as { msg?: string; status?: string; error?: string; ip?: string; netns?: string };
          if (rec.msg === 'agent running' && rec.status) statusUrl = rec.status;
          if (rec.msg === 'health endpoint ready' && rec.ip && rec.netns) {
            node.healthIp = rec.ip;
            node.healthNetns = rec.netns;
          }
          if (rec.msg === 'agent failed to start') failed = rec.error;
        } catch {
          // not JSON (a libbpf message)
        }
      }
    });
    child.once('exit', (code, signal) => {
      if (!statusUrl) failed ??= `agent exited (code ${code}, signal ${signal})`;
    });
    node.statusUrl = await waitFor(`agent ${node.name} to start`, () => {
      if (failed) throw new Error(`agent ${node.name}: ${failed}; log in ${logFile}`);
      return statusUrl;
    }, 60_000);
    await waitFor(`agent ${node.name} to sync`, async () => (await fetch(`${node.statusUrl}/readyz`)).ok || undefined, 60_000);
  };

  const cniConfig = (node: LabNode) => ({
    cniVersion: '1.0.0',
    name: 'sluice',
    type: 'sluice-cni',
    agentSocket: node.agentSocket,
    nodeNetns: node.netns,
    ipam: { dataDir: join(node.stateDir, 'ipam'), subnet: node.podCidr },
  });

  const cniAdd = async (node: LabNode, netns: string, containerId: string, args: string): Promise<string> => {
    const r = await runCni({ CNI_COMMAND: 'ADD', CNI_CONTAINERID: containerId, CNI_NETNS: `/run/netns/${netns}`, CNI_IFNAME: 'eth0', CNI_ARGS: args, CNI_PATH: '/opt/cni/bin' }, cniConfig(node));
    if (r.code !== 0) throw new Error(`CNI ADD for ${containerId} failed: ${r.stdout}${r.stderr}`);
    let result: { ips: Array<{ address: string }> };
    try {
      result = JSON.parse(r.stdout) as typeof result;
    } catch {
      throw new Error(`CNI ADD for ${containerId} printed no result: stdout ${JSON.stringify(r.stdout)} stderr ${JSON.stringify(r.stderr)}`);
    }
    return result.ips[0]!.address.split('/')[0]!;
  };

  const cniDel = async (node: LabNode, netns: string, containerId: string): Promise<void> => {
    const r = await runCni({ CNI_COMMAND: 'DEL', CNI_CONTAINERID: containerId, CNI_NETNS: `/run/netns/${netns}`, CNI_IFNAME: 'eth0', CNI_ARGS: '', CNI_PATH: '/opt/cni/bin' }, cniConfig(node));
    if (r.code !== 0) throw new Error(`CNI DEL for ${containerId} failed: ${r.stdout}${r.stderr}`);
  };

  const makeNode = (node: LabNode) => {
    const kubelet = new LabKubelet({
      apiUrl: sim.url,
      nodeName: node.name,
      nodeIp: node.ip,
      log,
      createSandbox: async (pod) => {
        const netns = await net.addNetns(net.name(`p${++podSeq}`));
        const ip = await cniAdd(node, netns, pod.uid, `K8S_POD_NAMESPACE=${pod.namespace};K8S_POD_NAME=${pod.name}`);
        const server = webServer(netns, pod.name);
        processes.add(server);
        await waitFor(`web server of ${pod.name}`, async () => (await execIn(netns, 'curl', ['-s', '-m', '1', `http://127.0.0.1:${WEB_PORT}/`])).code === 0 || undefined, 20_000);
        return { uid: pod.uid, name: pod.name, namespace: pod.namespace, netns, ip, server };
      },
      destroySandbox: async (sb: Sandbox) => {
        sb.server.kill('SIGKILL');
        processes.delete(sb.server);
        await cniDel(node, sb.netns, sb.uid);
        await run('ip', ['netns', 'delete', sb.netns]);
      },
    });
    kubelets.set(node.name, kubelet);
    kubelet.start();
  };

  try {
    const underlay = await net.addNetns(net.name('u'));
    await net.addBridge(underlay, 'br0', { mtu: 9000 });
    const nodeBits = Number(sim.cluster.options.nodeIPCIDR.split('/')[1]);
    const prefix = options.nodePrefix ?? `lab-${id}-node-`;
    for (let i = 1; i <= options.nodes; i++) {
      const name = `${prefix}${i}`;
      sim.cluster.addNode({ name, pods: 0, heartbeat: true });
      const info = sim.cluster.nodeInfo(name);
      if (!info) throw new Error(`kube-sim did not register node ${name}`);
      const netns = await net.addNetns(net.name(`n${i}`), { forwarding: true });
      const underlayIf = `u${i}`;
      await net.addVeth({ ns: underlay, name: underlayIf, mtu: 9000 }, { ns: netns, name: 'eth0', mtu: 9000 });
      await net.setMaster(underlay, underlayIf, 'br0');
      await net.addAddr(netns, 'eth0', `${info.internalIP}/${nodeBits}`);
      if (options.labVxlan ?? true) await net.addVxlan(netns, 'vx0', { mtu: 1500 });
      const stateDir = join(stateRoot, name);
      mkdirSync(stateDir, { recursive: true });
      writeFileSync(join(stateDir, 'agent.log'), '');
      nodes.push({
        name, index: i, netns, ip: info.internalIP, podCidr: info.podCIDR, pinDir: join(pinRoot, name), stateDir,
        agentSocket: join(stateDir, 'agent.sock'), statusUrl: '', agentPid: undefined, agentLog: '', underlayIf,
      });
      nodes[nodes.length - 1]!.cgroup = makeNodeCgroup(net, i);
    }
    if (options.operator ?? true) {
      const op = spawn(process.execPath, ['--import', TSX_LOADER, OPERATOR_MAIN, ...etcdArgs(stateRoot, ETCD_USERS.operator), '--kube-server', sim.url, '--etcd-prefix', rootPrefix, '--metrics-port', '0', '--log-level', 'info'], { stdio: ['ignore', 'ignore', 'pipe'] });
      processes.add(op);
      op.stderr!.on('data', (c: Buffer) => {
        if (!stopped) appendFileSync(join(stateRoot, 'operator.log'), c);
      });
    }
    const t0 = Date.now();
    if (options.etcd && options.etcdAuth) await grantAgents(options.etcd, rootPrefix, nodes.map((n) => n.name));
    await Promise.all(nodes.map((n) => startAgent(n)));
    log.info({ ms: Date.now() - t0 }, 'lab: agents running');
    if (options.healthEndpoints ?? true) {
      await Promise.all(
        nodes.map(async (node) => {
          if (agentsMakeHealthEndpoints) {
            // Made by the agent once it synced (health-endpoint.ts), which says so in its log.
            await waitFor(`agent ${node.name} to make its health endpoint (log in ${join(node.stateDir, 'agent.log')})`, () => node.healthIp, 60_000);
          } else {
            const netns = await net.addNetns(net.name(`h${node.index}`));
            node.healthNetns = netns;
            node.healthIp = await cniAdd(node, netns, `health-${node.name}`, `K8S_POD_NAME=sluice-health;SLUICE_HEALTH=true`);
          }
          if (healthPort) node.agentHealthUrl = `http://${node.ip}:${healthPort}`;
          sim.store.mutate('nodes', '', node.name, (obj) => {
            const meta = obj.metadata!;
            meta.annotations = { ...meta.annotations, [HEALTH_IPS_ANNOTATION]: node.healthIp! };
          });
        }),
      );
    }
    log.info({ ms: Date.now() - t0 }, agentsMakeHealthEndpoints ? 'lab: health endpoints made by the agents' : 'lab: health endpoints made');
    for (const node of nodes) makeNode(node);
    const podsPerNode = options.podsPerNode ?? 0;
    for (const node of nodes) {
      for (let j = 1; j <= podsPerNode; j++) {
        createPod(`${options.podPrefix ?? 'web-'}${node.index}-${j}`, node.name);
      }
    }
    const lab = buildHandle();
    await waitFor('every lab pod to run', () => lab.pods().length >= nodes.length * podsPerNode || undefined, 120_000, 200);
    log.info({ ms: Date.now() - t0 }, 'lab: pods running');
    await lab.waitConverged();
    log.info({ ms: Date.now() - t0 }, 'lab: converged');
    return lab;
  } catch (err) {
    await cleanup();
    throw err;
  }

  function buildHandle(): Lab {
    const node = (name: string) => {
      const n = nodes.find((x) => x.name === name);
      if (!n) throw new Error(`no lab node ${name}`);
      return n;
    };
    const pods = (): LabPod[] =>
      nodes.flatMap((n) => [...(kubelets.get(n.name)?.sandboxes.values() ?? [])].map((sb) => ({ name: sb.name, namespace: sb.namespace, node: n.name, ip: sb.ip, netns: sb.netns, uid: sb.uid })));
    const lab: Lab = {
      id,
      nodes,
      underlay: net.name('u'),
      etcdEndpoint: options.etcdEndpoint,
      rootPrefix,
      pods,
      node,
      async createPod(nodeName, name) {
        const n = node(nodeName);
        const podName = name ?? `${options.podPrefix ?? 'web-'}${n.index}-x${++podSeq}`;
        createPod(podName, n.name);
        const pod = await waitFor(`pod ${podName} to run`, () => pods().find((p) => p.name === podName), 60_000);
        await lab.waitConverged();
        return pod;
      },
      async deletePod(pod) {
        sim.cluster.deletePod(pod.namespace, pod.name);
        await waitFor(`pod ${pod.name} to go`, () => !pods().some((p) => p.uid === pod.uid) || undefined, 60_000);
        await kubelets.get(pod.node)?.idle();
      },
      exec: (pod, cmd, args = [], opts = {}) => execIn(pod.netns, cmd, args, opts),
      ping: (from, toIp, opts) => nsPing(from.netns, toIp, opts),
      async httpGet(from, toIp, timeoutS = 3) {
        const r = await execIn(from.netns, 'curl', ['-s', '-m', String(timeoutS), `http://${toIp}:${WEB_PORT}/`], { timeoutMs: (timeoutS + 5) * 1000 });
        return r.code === 0 ? r.stdout.trim() : undefined;
      },
      async killAgent(nodeName, signal = 'SIGKILL') {
        const child = agents.get(nodeName);
        if (!child || child.exitCode !== null || child.signalCode !== null) return;
        const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
        child.kill(signal);
        await exited;
      },
      async restartAgent(nodeName, extras) {
        await lab.killAgent(nodeName, 'SIGTERM');
        await startAgent(node(nodeName), extras);
      },
      async cutLink(nodeName) {
        await net.exec(net.name('u'), 'ip', ['link', 'set', node(nodeName).underlayIf, 'down']);
      },
      async restoreLink(nodeName) {
        await net.exec(net.name('u'), 'ip', ['link', 'set', node(nodeName).underlayIf, 'up']);
      },
      async waitConverged(timeoutMs = 60_000) {
        await waitFor('every node to program every pod', () => {
          const current = pods();
          for (const n of nodes) {
            const dp = openPinnedMaps(n.pinDir);
            try {
              for (const p of current) if (!lookupIpcache(dp, { cidr: `${p.ip}/32` })) return undefined;
              for (const p of current) if (p.node === n.name && !dp.maps.endpoints.lookup({ ip: p.ip })) return undefined;
            } finally {
              dp.close();
            }
          }
          return true;
        }, timeoutMs, 200);
      },
      services: labServices({ sim, net, processes, podNamespace, nodes: () => nodes, pods }),
      stop: cleanup,
    };
    return lab;
  }
}

/** A node's agent log lines (JSON, every run of its agent) containing `msg`. */
export function agentLogLines(node: LabNode, msg: string): Array<Record<string, unknown>> {
  return node.agentLog
    .split('\n')
    .filter((l) => l.includes(msg))
    .flatMap((l) => {
      try {
        return [JSON.parse(l) as Record<string, unknown>];
      } catch {
        return [];
      }
    });
}

export { keySchema };
