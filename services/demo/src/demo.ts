/**
 * The demo cluster as a library: etcd, kube-sim (in this process), Sluice installed into it from deploy/ with kubectl
 * (overlay demo), the Deployments' containers (operator ×2, health) run as processes on this machine, and a lab of
 * nodes in network namespaces whose kubelets run the agent DaemonSet with real eBPF. `startDemo` brings the parts up
 * in order, recording each in the state file as it goes, so that `stop()` — or a later demo, after a crash — can take
 * down exactly what was made.
 */
import { closeSync, constants, existsSync, mkdirSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { freePort, startEtcd, type EtcdServer } from '@sluice/etcd-runner';
import { pidAlive, readDemoStateFile, removeDemoState, writeDemoState, type DemoState, type DemoStateInput } from '@sluice/demo-state';
import { startKubeSim, type KubeSim } from '@sluice/kube-sim';
import { createHealthClient } from '@sluice/health-api';
import { createKvClient, ETCD_USERS, keySchema, RESOURCE_KINDS, setupAuth, type KvClientOptions } from '@sluice/kvstore';
import { WorkloadKubelet } from '@sluice/lab';
import { createLogger } from '@sluice/log';
import { httpOk, tail, waitFor } from './children.ts';
import { cleanupStale } from './cleanup.ts';
import { startLabPart, type LabPart } from './lab.ts';
import { kubectlApply, SLUICE_NAMESPACE, writeDemoKustomization } from './manifests.ts';
import type { Progress } from './progress.ts';

export { REPO_ROOT } from './paths.ts';
import { REPO_ROOT } from './paths.ts';

export interface DemoOptions {
  stateDir: string;
  /** Lab nodes (real namespaces, agents, eBPF); 0 for none. */
  nodes: number;
  podsPerNode: number;
  /** Extra nodes simulated by kube-sim (no agent, no datapath). */
  simNodes: number;
  simPodsPerNode: number;
  /** Skip the health service even when it exists. */
  health: boolean;
  /** How long a part may take to come up. */
  partTimeoutMs: number;
  /** The agents' masquerading (sluice-agent-config's `masquerade`); default the manifests' (off). */
  masquerade?: 'off' | 'iptables' | 'bpf';
}

/** The lab cannot run here (not root): the demo goes on without it and says why. */
class LabUnavailable extends Error {}

export class DemoRunningError extends Error {
  override name = 'DemoRunningError';
}

export interface Demo {
  readonly state: DemoState;
  readonly statePath: string;
  stop(): Promise<void>;
}

/**
 * Takes the demo lock: a state file written with O_EXCL. A file left by a dead demo is cleaned up after and replaced;
 * one of a live demo is a DemoRunningError.
 */
async function takeLock(statePath: string, progress: Progress): Promise<DemoStateInput> {
  const existing = await readDemoStateFile(statePath).catch(() => undefined);
  if (existing && pidAlive(existing.pid) && existing.pid !== process.pid) {
    throw new DemoRunningError(
      `a demo is already running (pid ${existing.pid}, started ${existing.startedAt}, state in ${statePath}); stop it with Ctrl-C in its terminal or kill -INT ${existing.pid}`,
    );
  }
  if (existing || existsSync(statePath)) {
    const removed = existing ? cleanupStale(existing) : [];
    progress.done('cleaned up after a previous demo that did not stop', removed.length ? removed.join(', ') : '(nothing was left)');
    await removeDemoState(statePath);
  }
  const initial: DemoStateInput = { version: 1, phase: 'starting', pid: process.pid, startedAt: new Date().toISOString() };
  try {
    await writeDemoState(statePath, initial, { exclusive: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new DemoRunningError(`another demo is starting right now (${statePath} appeared); wait for it or stop it`);
    throw err;
  }
  return initial;
}

export async function startDemo(options: DemoOptions, progress: Progress): Promise<Demo> {
  const stateDir = resolve(options.stateDir);
  const statePath = join(stateDir, 'demo.json');
  const logDir = join(stateDir, 'logs');
  mkdirSync(logDir, { recursive: true });
  let state = await takeLock(statePath, progress);

  let etcd: EtcdServer | undefined;
  let sim: KubeSim | undefined;
  let controlPlane: WorkloadKubelet | undefined;
  let hostRoot: string | undefined;
  const manifestsDir = join(stateDir, 'manifests');
  // The pods' logs under the state dir, opened without following a link someone may have put in a log's place.
  const podLogs = new Map<string, number>();
  const podLog = (pod: string, line: string) => {
    let fd = podLogs.get(pod);
    if (fd === undefined) {
      try {
        fd = openSync(join(logDir, `${pod}.log`), constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
      } catch (err) {
        // Said once; the pod's output is still in its own folder (the kubelet's log file).
        fd = -1;
        process.stderr.write(`sluice-demo: not writing ${join(logDir, `${pod}.log`)}: ${(err as Error).message}\n`);
      }
      podLogs.set(pod, fd);
    }
    if (fd >= 0) writeSync(fd, `${line}\n`);
  };
  let healthAddress: string | undefined;
  let lab: LabPart | undefined;
  let stopped: Promise<void> | undefined;

  const save = async (patch: Partial<DemoStateInput>) => {
    state = { ...state, ...patch };
    await writeDemoState(statePath, state);
  };
  const processes = () => [
    ...(controlPlane?.containers().filter((c) => c.pid > 0).map((c) => ({ name: `${c.container} ${c.pod}`, pid: c.pid })) ?? []),
    ...(lab?.processes ?? []),
  ];

  const stop = (): Promise<void> =>
    (stopped ??= (async () => {
      // Newest first: the lab (agents, namespaces, pins) before the services it reports to.
      const errors: string[] = [];
      const attempt = async (what: string, fn: () => Promise<void>) => fn().catch((err: Error) => void errors.push(`${what}: ${err.message}`));
      if (lab) await attempt('lab', () => lab!.stop());
      await attempt('operator and health', async () => controlPlane?.stop());
      for (const fd of podLogs.values()) if (fd >= 0) closeSync(fd);
      // Their files (config, the etcd identities' keys) go with them.
      if (hostRoot) rmSync(hostRoot, { recursive: true, force: true });
      rmSync(manifestsDir, { recursive: true, force: true });
      await attempt('kube-sim', async () => sim?.close());
      await attempt('etcd', async () => etcd?.stop());
      await removeDemoState(statePath);
      if (errors.length) throw new Error(`stopping the demo: ${errors.join('; ')}`);
    })());

  try {
    progress.start('etcd');
    // Mutual TLS, as production runs etcd: each component has its own client certificate (its CN is its etcd user).
    etcd = await startEtcd({ logFile: join(logDir, 'etcd.log'), clientCertAuth: true });
    // Its folder (data and certificates) is listed so that the next demo can remove it if this one is killed first.
    const cli = etcd.clientFiles(ETCD_USERS.cli);
    await save({ etcd: { endpoints: [etcd.endpoint], pid: etcd.pid, ca: cli.ca, cert: cli.cert, key: cli.key }, tempDirs: [etcd.dir] });
    // Least privilege from the start: etcd auth on, the operator, the health service and the CLI each with its own
    // user and role (the lab adds one per agent): libs/kvstore auth.ts.
    const admin = createKvClient(etcd.clientOptions());
    await setupAuth(admin, keySchema(), { nodes: [] }).finally(() => admin.close());
    progress.done('etcd', etcd.endpoint);

    progress.start('kube-sim');
    const kubeconfig = join(stateDir, 'kubeconfig');
    sim = await startKubeSim({
      nodes: options.simNodes,
      podsPerNode: options.simPodsPerNode,
      services: options.simNodes > 0 ? 5 : 0,
      kubeconfigPath: kubeconfig,
      log: createLogger({ component: 'kube-sim', level: 'warn' }),
    });
    await save({ kubernetes: { server: sim.url, kubeconfig, statsUrl: `${sim.url}/kube-sim/stats` }, simNodes: options.simNodes });
    progress.done('kube-sim', `${sim.url}  (kubeconfig ${kubeconfig}${options.simNodes ? `, ${options.simNodes} simulated nodes` : ''})`);

    progress.start('manifests');
    const healthPorts = options.health ? { grpcPort: await freePort(), metricsPort: await freePort() } : undefined;
    writeDemoKustomization({ dir: manifestsDir, kubeconfig, etcd, kubeServer: sim.url, health: healthPorts, ...(options.masquerade ? { masquerade: options.masquerade } : {}) });
    const applied = await kubectlApply(kubeconfig, manifestsDir);
    const shown = relative(process.cwd(), manifestsDir);
    progress.done('manifests', `kubectl apply -k ${shown && !shown.startsWith('..') ? shown : manifestsDir}  (deploy/overlays/demo: ${applied.length} objects)`);

    // The Deployments' pods run on this machine, as on a control-plane node: a private mkdtemp folder for their
    // files, recorded before anything runs from it.
    progress.start('operator');
    hostRoot = mkdtempSync('/tmp/sluice-demo-');
    await save({ tempDirs: [etcd.dir, hostRoot] });
    const operatorUrls = new Map<string, string>();
    controlPlane = new WorkloadKubelet({
      apiUrl: sim.url,
      namespace: SLUICE_NAMESPACE,
      kinds: ['Deployment'],
      repoRoot: REPO_ROOT,
      log: createLogger({ component: 'kubelet', level: 'warn' }),
      node: { name: 'demo-control-plane', ip: '127.0.0.1', hostRoot },
      onLine: (c, line) => {
        podLog(c.pod, line);
        if (c.workload !== 'sluice-operator') return;
        try {
          const rec = JSON.parse(line) as { msg?: string; metrics?: unknown };
          if (rec.msg === 'operator starting' && typeof rec.metrics === 'string') operatorUrls.set(c.pod, rec.metrics.replace(/\/metrics$/, ''));
        } catch {
          // not a log record
        }
      },
    });
    await controlPlane.start();
    await save({ processes: processes() });
    const operatorLog = join(logDir, 'sluice-operator-0.log');
    await waitFor(undefined, `the operator synced Kubernetes into etcd (its log: ${operatorLog}${tail(operatorLog) ? `\n${tail(operatorLog)}` : ''})`, () => operatorSynced(etcd!.clientOptions()), options.partTimeoutMs);
    const leader = await waitFor(undefined, 'the operators to say where they listen', async () => (await leaderOf(operatorUrls)) !== undefined, options.partTimeoutMs).then(() => leaderOf(operatorUrls));
    const operatorUrl = leader!.url;
    const operatorPid = controlPlane.containers().find((c) => c.pod === leader!.pod)?.pid;
    await save({ operator: { metricsUrl: `${operatorUrl}/metrics`, statusUrl: `${operatorUrl}/status`, ...(operatorPid ? { pid: operatorPid } : {}) }, processes: processes() });
    const replicas = controlPlane.containers().filter((c) => c.workload === 'sluice-operator').length;
    progress.done('operator', `leader, synced  (${leader!.pod} of ${replicas} replicas; metrics ${operatorUrl}/metrics)`);

    if (healthPorts) {
      progress.start('health service');
      const address = `127.0.0.1:${healthPorts.grpcPort}`;
      healthAddress = address;
      const statusUrl = `http://127.0.0.1:${healthPorts.metricsPort}`;
      const healthPid = controlPlane.containers().find((c) => c.workload === 'sluice-health')?.pid;
      await save({ health: { address, statusUrl: `${statusUrl}/status`, ...(healthPid ? { pid: healthPid } : {}) }, processes: processes() });
      const healthLog = join(logDir, 'sluice-health-0.log');
      await waitFor(undefined, `the health service is ready (its log: ${healthLog})`, () => httpOk(`${statusUrl}/readyz`), options.partTimeoutMs);
      progress.done('health service', `grpc ${address}  (metrics ${statusUrl}/metrics)`);
    } else {
      progress.skip('health service', '--no-health');
    }

    if (options.nodes > 0) {
      progress.start(`lab (${options.nodes} nodes × ${options.podsPerNode} pods)`);
      try {
        const part = await startLabPart({
          nodes: options.nodes,
          podsPerNode: options.podsPerNode,
          etcdEndpoint: etcd.endpoint,
          etcd,
          sim,
          onCreating: (made) => save({ ...made, tempDirs: [...made.tempDirs, etcd!.dir, hostRoot!] }),
        }).then((r) => {
          if ('error' in r) throw new LabUnavailable(r.error);
          return r;
        });
        lab = part;
        await save({ nodes: part.nodes, pods: part.pods, namespaces: part.namespaces, pinRoot: part.pinRoot, processes: processes() });
        for (const n of part.nodes) progress.done(`node ${n.name}`, `${n.nodeIP}  netns ${n.netns}  agent ${n.agentStatusUrl ?? '-'}`);
        progress.done('lab', `${part.nodes.length} nodes, ${part.pods.length} pods (web servers on :${part.pods[0]?.port ?? '-'}), pins under ${part.pinRoot}`);
        if (healthAddress) {
          // The agents start probing as they come up; wait for their first rounds so that the status printed next
          // shows the cluster view rather than "unknown" (a few seconds; not fatal if it takes longer).
          progress.start('cluster health');
          const names = part.nodes.map((n) => n.name);
          const verdict = await labReachable(healthAddress, names, 30_000);
          if (verdict.ok) progress.done('cluster health', `${names.length}/${names.length} lab nodes reachable (the agents probe each other over ICMP and HTTP)`);
          else progress.skip('cluster health', `not every lab node reachable yet (${verdict.detail})`);
        }
      } catch (err) {
        if (!(err instanceof LabUnavailable)) throw err;
        progress.skip('lab', err.message);
        await save({ labError: err.message });
      }
    }

    await save({ phase: 'ready', processes: processes() });
    const final = await readDemoStateFile(statePath);
    return { state: final!, statePath, stop };
  } catch (err) {
    await stop().catch(() => undefined);
    throw err;
  }
}

/** Waits until the health service sees every lab node reachable (or the time is up). */
async function labReachable(address: string, names: readonly string[], timeoutMs: number): Promise<{ ok: boolean; detail: string }> {
  const client = createHealthClient(address, { deadlineMs: 2000 });
  const deadline = Date.now() + timeoutMs;
  let detail = 'no answer';
  try {
    for (;;) {
      try {
        const view = await client.getClusterHealth();
        const pending = names.filter((n) => view.nodes.find((x) => x.name === n)?.reachability !== 'REACHABILITY_REACHABLE');
        if (!pending.length) return { ok: true, detail: '' };
        detail = `waiting for ${pending.join(', ')}`;
      } catch (err) {
        detail = (err as Error).message;
      }
      if (Date.now() > deadline) return { ok: false, detail };
      await new Promise((r) => setTimeout(r, 250));
    }
  } finally {
    client.close();
  }
}

/** The operator replica that leads (its /status says so), and where it listens. */
async function leaderOf(urls: ReadonlyMap<string, string>): Promise<{ pod: string; url: string } | undefined> {
  for (const [pod, url] of urls) {
    const status = (await fetch(`${url}/status`, { signal: AbortSignal.timeout(1000) }).then((r) => r.json()).catch(() => undefined)) as { leading?: boolean } | undefined;
    if (status?.leading) return { pod, url };
  }
  return undefined;
}

/** The operator's heartbeat exists once its first full sync is written, and every kind has its synced marker. */
async function operatorSynced(etcdClient: KvClientOptions): Promise<boolean> {
  const client = createKvClient({ ...etcdClient, dialTimeoutMs: 1000, callTimeoutMs: 1000 });
  try {
    const keys = keySchema();
    const [heartbeat, synced] = await Promise.all([client.get(keys.operatorHeartbeat()).string(), client.getAll().prefix(keys.prefix('synced')).count()]);
    return heartbeat !== null && synced >= RESOURCE_KINDS.length;
  } finally {
    client.close();
  }
}
