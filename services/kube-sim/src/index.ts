/**
 * kube-sim as a library: a Kubernetes API server simulator that runs in-process (tests, the demo, the scale harness)
 * or behind src/main.ts.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createLogger, type Logger } from '@sluice/log';
import { ADMIN_RULES, Authorizer, type TokenEntry } from './auth.ts';
import { PREINSTALLED_CRDS } from './crds.ts';
import { Faults, type RateLimitOptions } from './faults.ts';
import { writeKubeconfig, kubeconfigFor } from './kubeconfig.ts';
import type { ServiceRangeOptions } from './services.ts';
import { generateTls, type TlsMaterial } from './tls.ts';
import type { Scenario } from './scenario.ts';
import { ApiServer, type ServerStats } from './server.ts';
import { DEFAULT_SIMULATION, Simulation, type SimulationOptions } from './simulation.ts';
import { Store, type WatcherInfo } from './store.ts';

export interface KubeSimOptions extends Partial<SimulationOptions> {
  /** 0 (default) picks a free port. */
  port?: number;
  host?: string;
  /** Where to write the kubeconfig (default: a fresh temporary directory). */
  kubeconfigPath?: string;
  /** Start kubelet heartbeats for the simulated nodes (default true). */
  heartbeats?: boolean;
  /** Events kept per resource type for watch resumption (older resourceVersions get 410). */
  windowEvents?: number;
  windowBytes?: number;
  /** Interval of BOOKMARK events to watchers that allow them. */
  bookmarkIntervalMs?: number;
  /** A watcher whose unsent backlog passes this is closed. */
  maxWatcherBacklogBytes?: number;
  snapshotTtlMs?: number;
  rateLimit?: RateLimitOptions;
  failureRate?: number;
  /** Explicit nodes and services on top of the generated ones (what a scenario file lists). */
  nodeList?: Scenario['nodeList'];
  serviceList?: Scenario['serviceList'];
  log?: Logger;
  /** Serve HTTPS: `true` generates a CA and a server certificate (openssl), or pass your own PEMs. */
  tls?: boolean | TlsMaterial;
  /**
   * Require a bearer token: each entry's rules say what it may do (401 without a known token, 403 outside its rules).
   * `auth: true` without tokens generates one admin token.
   */
  tokens?: TokenEntry[];
  auth?: boolean;
  /** The token the written kubeconfig carries (default: the first of `tokens`, or the generated admin token). */
  kubeconfigToken?: string;
  /** Service cluster IP ranges (IPv4 10.96.0.0/12, IPv6 fd00:10:96::/112) and node port range (30000-32767). */
  serviceRanges?: ServiceRangeOptions;
  /** Install the CRDs a cluster usually has before any workload (PrometheusRule); default true. */
  preinstalledCRDs?: boolean;
}

export interface ServiceAccountFiles {
  /** Give this to `KubeConfig.loadFromCluster(pathPrefix)`. */
  pathPrefix: string;
  /** The service-account directory. */
  dir: string;
  env: { KUBERNETES_SERVICE_HOST: string; KUBERNETES_SERVICE_PORT: string };
}

export interface KubeSimStats {
  resourceVersion: number;
  objects: Record<string, number>;
  requests: Record<string, number>;
  bytesWritten: number;
  watchEventsSent: number;
  watchBytesSent: number;
  eventsPublished: number;
  droppedWatchers: number;
  expiredWatches: number;
  heartbeats: number;
  podsCreated: number;
  podsDeleted: number;
  /** Pods the simulated kubelet ran after the start delay. */
  podsStarted: number;
  /** Lease mode: Lease renewals, and Node status writes (both modes: every Node status the simulation wrote). */
  leaseRenewals: number;
  nodeStatusWrites: number;
  injectedFailures: number;
  rateLimited: number;
  watchers: WatcherInfo[];
  windows: ReturnType<Store['windowStats']>;
  memory: NodeJS.MemoryUsage;
}

export interface KubeSim {
  url: string;
  port: number;
  kubeconfigPath: string;
  /** The kubeconfig's text. */
  kubeconfig: string;
  /** HTTPS: the CA's PEM and where it was written (beside the kubeconfig, `kube-sim-ca.crt`). */
  caPem?: string;
  caPath?: string;
  /** The token in the kubeconfig (when tokens are required). */
  token?: string;
  /** A kubeconfig for another token (or none), same server and CA. */
  kubeconfigFor(token?: string): string;
  /**
   * What a pod's in-cluster client reads: `<root>/var/run/secrets/kubernetes.io/serviceaccount/{token,ca.crt,namespace}`
   * and the KUBERNETES_SERVICE_HOST/PORT environment. `KubeConfig.loadFromCluster(pathPrefix)` with that env reaches
   * this kube-sim over HTTPS with the token (default: the kubeconfig's).
   */
  writeServiceAccount(root: string, options?: { token?: string; namespace?: string }): Promise<ServiceAccountFiles>;
  store: Store;
  cluster: Simulation;
  faults: Faults;
  server: ApiServer;
  stats(): KubeSimStats;
  close(): Promise<void>;
}

export async function startKubeSim(options: KubeSimOptions = {}): Promise<KubeSim> {
  const log = options.log ?? createLogger({ component: 'kube-sim' });
  const store = new Store({
    windowEvents: options.windowEvents, windowBytes: options.windowBytes, maxWatcherBacklogBytes: options.maxWatcherBacklogBytes,
    snapshotTtlMs: options.snapshotTtlMs, ...(options.serviceRanges ? { services: options.serviceRanges } : {}),
  });
  if (options.preinstalledCRDs ?? true) for (const crd of PREINSTALLED_CRDS) store.create('customresourcedefinitions', crd, { quiet: true });
  const simOptions: Partial<SimulationOptions> = {};
  for (const key of Object.keys(DEFAULT_SIMULATION) as (keyof SimulationOptions)[]) {
    if (options[key] !== undefined) (simOptions as Record<string, unknown>)[key] = options[key];
  }
  const cluster = new Simulation(store, simOptions);
  cluster.populate();
  for (const n of options.nodeList ?? []) {
    cluster.addNode({ name: n.name, labels: n.labels, pods: n.pods ?? 0, heartbeat: n.heartbeat ?? true });
  }
  for (const s of options.serviceList ?? []) cluster.createService(s);
  const faults = new Faults();
  if (options.rateLimit) faults.setRateLimit(options.rateLimit);
  if (options.failureRate) faults.setFailureRate(options.failureRate);
  let stats: () => KubeSimStats = () => {
    throw new Error('not started');
  };
  const host = options.host ?? '127.0.0.1';
  const tls = options.tls === true ? await generateTls([host]) : options.tls || undefined;
  let tokens = options.tokens;
  if (!tokens?.length && options.auth) tokens = [{ token: randomBytes(24).toString('base64url'), user: 'kube-sim-admin', rules: ADMIN_RULES }];
  const token = options.kubeconfigToken ?? tokens?.[0]?.token;
  const server = new ApiServer({
    store, faults, log, bookmarkIntervalMs: options.bookmarkIntervalMs, routes: { '/kube-sim/stats': () => stats() },
    ...(tls ? { tls } : {}), ...(tokens?.length ? { auth: new Authorizer(tokens) } : {}),
  });
  const port = await server.listen(options.port ?? 0, host);
  const url = `${tls ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${port}`;
  // A folder kube-sim made for its kubeconfig (none was asked for) is its own to remove when it closes.
  const ownDir = options.kubeconfigPath ? undefined : await mkdtemp(join(tmpdir(), 'kube-sim-'));
  const kubeconfigPath = options.kubeconfigPath ?? join(ownDir!, 'kubeconfig');
  const auth = { ...(tls ? { caPem: tls.caPem } : {}), ...(token ? { token } : {}) };
  await writeKubeconfig(kubeconfigPath, url, auth);
  let caPath: string | undefined;
  if (tls) {
    caPath = join(dirname(kubeconfigPath), 'kube-sim-ca.crt');
    await mkdir(dirname(caPath), { recursive: true });
    await writeFile(caPath, tls.caPem);
  }
  if (options.heartbeats ?? true) cluster.startHeartbeats();
  if (cluster.options.churnPerSecond > 0) cluster.startChurn();

  stats = (): KubeSimStats => {
    const s: ServerStats = server.stats;
    const objects: Record<string, number> = {};
    for (const plural of ['nodes', 'pods', 'services', 'endpointslices', 'namespaces', 'leases']) objects[plural] = store.count(plural);
    return {
      resourceVersion: store.resourceVersion, objects, requests: { ...s.requests }, bytesWritten: s.bytesWritten,
      ...store.counters, heartbeats: cluster.heartbeats.beats, ...cluster.counters, ...faults.counters,
      watchers: store.watchers(), windows: store.windowStats(), memory: process.memoryUsage(),
    };
  };
  return {
    url, port, kubeconfigPath, kubeconfig: kubeconfigFor(url, 'kube-sim', auth), store, cluster, faults, server, stats,
    ...(tls ? { caPem: tls.caPem, caPath } : {}), ...(token ? { token } : {}),
    kubeconfigFor: (t?: string) => kubeconfigFor(url, 'kube-sim', { ...(tls ? { caPem: tls.caPem } : {}), ...(t ? { token: t } : {}) }),
    async writeServiceAccount(root, sa = {}) {
      if (!tls) throw new Error('kube-sim: in-cluster clients speak HTTPS; start it with tls');
      const dir = join(root, 'var/run/secrets/kubernetes.io/serviceaccount');
      await mkdir(dir, { recursive: true });
      await Promise.all([
        writeFile(join(dir, 'token'), sa.token ?? token ?? ''), writeFile(join(dir, 'ca.crt'), tls.caPem), writeFile(join(dir, 'namespace'), sa.namespace ?? 'default'),
      ]);
      return { pathPrefix: root, dir, env: { KUBERNETES_SERVICE_HOST: host, KUBERNETES_SERVICE_PORT: String(port) } };
    },
    async close() {
      cluster.stop();
      try {
        await server.close();
      } finally {
        if (ownDir) await rm(ownDir, { recursive: true, force: true });
      }
    },
  };
}

export { Store } from './store.ts';
export type { StoredObject, StoreEvent, WatcherInfo, ListQuery, WatchQuery, WatchSink } from './store.ts';
export { Simulation, HeartbeatGenerator, DEFAULT_SIMULATION, parseCIDR, ipv4ToInt, intToIpv4 } from './simulation.ts';
export type { SimulationOptions, AddNodeOptions, CreatePodOptions } from './simulation.ts';
export { EndpointSliceController, endpointOf } from './endpoints.ts';
export { Faults } from './faults.ts';
export type { FailureOptions, RateLimitOptions, Verb } from './faults.ts';
export { ApiError } from './status.ts';
export { applyPatch, mergePatch, strategicMergePatch, jsonPatch, patchTypeOf } from './patch.ts';
export type { PatchType } from './patch.ts';
export { kubeconfigFor, writeKubeconfig } from './kubeconfig.ts';
export type { KubeconfigAuth } from './kubeconfig.ts';
export { Authorizer, ADMIN_RULES, loadTokenFile, tokenFileSchema, AuthError } from './auth.ts';
export type { TokenEntry, TokenRule } from './auth.ts';
export { generateTls } from './tls.ts';
export type { TlsMaterial } from './tls.ts';
export { ServiceAllocator } from './services.ts';
export type { ServiceRangeOptions } from './services.ts';
export { validateCustomObject } from './schema.ts';
export type { StructuralSchema } from './schema.ts';
export type { DeleteOptions, WriteOptions, FieldValidation } from './store.ts';
export { loadScenario, scenarioSchema, ScenarioError } from './scenario.ts';
export type { Scenario } from './scenario.ts';
export { RESOURCES } from './resources.ts';
export type { KubeObject, ResourceType } from './resources.ts';
