/**
 * A real node agent: the AgentCore over the node's pinned BPF maps, plus everything that touches the node — tc
 * attachments, routes, the CNI API, the status endpoint, the health listener, the records in etcd.
 *
 * Where it runs: in the HOST network namespace (it reaches etcd and its own status/API listeners on the host's
 * loopback) and acts on the node's namespace `netns` from outside: tc attach through inNetns (only the main thread
 * enters the namespace, synchronously), routes and links through `ip -n <netns>`, and the one listener that must
 * live inside the node namespace (the health port peers probe at the node IP) as a child under `nsenter --net`.
 * Without `netns` it acts on its own namespace (a real node).
 *
 * Restart without disruption: loadDatapath reuses the pinned maps (contents kept), attachNode replaces programs
 * atomically, the local endpoints come back from the state dir, and the core reconciles — nothing is flushed, and
 * packets keep flowing through the attached programs while no agent runs.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { applyLbAcceleration, attachNode, attachSocketLb, decideHostRouting, loadDatapath, probeKernel, xdpStatusText, type Datapath, type HostRoutingDecision, type KernelFeatures, type LbAcceleration, type XdpMode } from '@sluice/datapath';
import {
  createKvClient,
  keySchema,
  LeasedKeys,
  RECORD_VERSION,
  type AgentStatusRecord,
  type KvClientOptions,
  type HostRoutingRequest,
  type RoutingMode,
} from '@sluice/kvstore';
import type { TlsFiles } from '@sluice/health-api';
import { createLogger, type Logger } from '@sluice/log';
import { createRegistry, Gauge, startStatusServer, type StatusServer } from '@sluice/metrics';
import { startAgentApi, type AgentApi } from './api.ts';
import { AgentCore, DEFAULT_CLUSTER_CIDR, DEFAULT_SERVICE_CIDR } from './core.ts';
import { startHealthListener, type HealthListener } from './health-listener.ts';
import { ownHealthEndpoint, type HealthEndpoint } from './health-endpoint.ts';
import { startHealthProbing, type HealthProbing } from './health-probing.ts';
import { LocalEndpointStore, toCoreEndpoint, type LocalEndpointRecord } from './local-store.ts';
import { RoutesTarget } from './reconcilers/routes.ts';
import { stopInOrder, type ShutdownStep } from './shutdown.ts';
import { StatusPublisher } from './status.ts';
import { startServices } from './reconcilers/services.ts';
import { startL2Announcer } from './reconcilers/l2-announcer.ts';
import { iptablesMasquerade, type IptablesMasquerade } from './reconcilers/iptables.ts';
import { masqueradingText, parseMasqueradeMode, type MasqueradeMode } from './tables/masquerade.ts';
import { ipmasqSync, syncIpmasq } from './reconcilers/ipmasq.ts';
import { IPMASQ_F_NODE } from '@sluice/bpf';
import { reserveSnatPorts } from './reconcilers/snat-ports.ts';
import { withPrerequisites } from './tables/host-routing.ts';
import { DatapathMode, readStartConfig } from './reconcilers/datapath-mode.ts';
import { alignTunnelMtu, derivePodMtu, linkMtu, podMtuText, type PodMtu } from './mtu.ts';

const exec = promisify(execFile);
export const AGENT_VERSION = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;

export interface AgentOptions {
  nodeName: string;
  /** etcd endpoints, or the whole client configuration (TLS, user) from @sluice/config's resolveEtcdConfig. */
  etcd: string[] | KvClientOptions;
  rootPrefix?: string;
  pinDir: string;
  /** The node's network namespace (name under /run/netns); undefined = the agent's own. */
  netns?: string;
  uplink: string;
  vxlan?: string;
  /** Defaults, overridden by keys.nodeConfig(node) when present. */
  routing: RoutingMode;
  hostRouting: HostRoutingRequest;
  /** off, iptables (SLUICE_POST_nat in the node's namespace) or bpf (the datapath's SNAT); true/false: bpf/off. */
  masquerade?: boolean | MasqueradeMode;
  /** ip-masq-agent's nonMasqueradeCIDRs: destinations never masqueraded (either mode). */
  nonMasqueradeCidrs?: string[];
  /** cgroup v2 directory to attach the socket load balancer to (host-namespace clients of services). */
  cgroupRoot?: string;
  /** XDP acceleration of NodePort/LoadBalancer traffic on the uplink (native routing only); default disabled. */
  lbAcceleration?: LbAcceleration;
  stateDir: string;
  apiSocket?: string;
  apiPort?: number;
  statusHost?: string;
  statusPort?: number;
  /** The health port inside the node namespace (0: none). */
  healthPort?: number;
  /** host:port of the health service: probe peers and report there (health-probing.ts). No probing without it. */
  healthService?: string;
  /** TLS to the health service: a CA (TLS), plus a certificate and key (mutual TLS; the certificate names this node). */
  healthTls?: TlsFiles;
  healthTlsServerName?: string;
  /** Make and own the node's health endpoint (health-endpoint.ts): its namespace's name and its health port. */
  healthEndpoint?: { netns: string; port: number };
  clusterSize?: number;
  /** Wait for the operator's sync markers before the first full pass, never prune without them (AgentCore). */
  waitForSync?: boolean;
  /** podCIDRs (and every address derived from them) must lie inside it; default DEFAULT_CLUSTER_CIDR. */
  clusterCidr?: string;
  /** clusterIPs must lie inside it, external and LoadBalancer IPs outside it and the cluster CIDR; default DEFAULT_SERVICE_CIDR. */
  serviceCidr?: string;
  /** Periodic full reconcile of every target (drift repair), ms; default 60 s. */
  reconcileIntervalMs?: number;
  /** Who may call the local API besides root (SO_PEERCRED). */
  apiAllow?: { uids?: number[]; gids?: number[] };
  log?: Logger;
}

export interface RunningAgent {
  core: AgentCore;
  datapath: Datapath;
  api: AgentApi;
  status: StatusServer;
  hostRouting: HostRoutingDecision;
  routing: RoutingMode;
  features: KernelFeatures;
  nodeIp: string;
  /** The cluster-health prober, when a health service was given. */
  health: HealthProbing | undefined;
  /**
   * Stops everything, in order. With `graceMs`, returns after at most that long whatever etcd's state: what has not
   * finished by then is abandoned and logged (the datapath stays programmed and attached either way).
   */
  stop(options?: { graceMs?: number }): Promise<void>;
}

async function ipJson<T>(netns: string | undefined, args: string[]): Promise<T> {
  const { stdout } = await exec('ip', [...(netns ? ['-n', netns] : []), '-j', ...args], { timeout: 10_000 });
  return JSON.parse(stdout || '[]') as T;
}

type IpLink = { ifname: string; ifindex: number; address: string; addr_info?: Array<{ family: string; local: string }> };

export async function runAgent(options: AgentOptions): Promise<RunningAgent> {
  const log = options.log ?? createLogger({ component: 'agent', node: options.nodeName });
  const registry = createRegistry({ defaultMetrics: true });
  const keys = keySchema(options.rootPrefix);
  const client = createKvClient(Array.isArray(options.etcd) ? { endpoints: options.etcd } : options.etcd);
  const vxlan = options.vxlan ?? 'vx0';
  const netns = options.netns;

  // Flags, then the admin's nodeconfig/ record, then the operator's per-node record (datapath-mode.ts).
  const start = await readStartConfig(client, keys, options.nodeName, log);
  const base = { masquerade: parseMasqueradeMode(start.admin.masquerade ?? options.masquerade) ?? 'off', hostRouting: start.admin.hostRouting ?? options.hostRouting, routing: start.admin.routing ?? options.routing };
  const config = { ...start.admin, ...start.effective };
  const routing = config.routing ?? options.routing;
  const masqueradeMode: MasqueradeMode = parseMasqueradeMode(config.masquerade ?? options.masquerade) ?? 'off';
  const clusterCidr = options.clusterCidr ?? DEFAULT_CLUSTER_CIDR;
  const features = await probeKernel();
  const hostRoutingRequest = config.hostRouting ?? options.hostRouting;
  // (The BPF service load-balancer always runs in this agent: the prerequisite that can be missing is the masquerade.)
  const hostRouting = withPrerequisites(decideHostRouting(features, hostRoutingRequest), hostRoutingRequest, { masquerade: masqueradeMode, bpfServiceLb: true });
  // ip-masq-agent's list and the pods' MTU: the node configuration's (live, from the operator's record) over the flags.
  const flagNonMasq = options.nonMasqueradeCidrs ?? [];
  let nonMasqueradeCidrs: readonly string[] = config.nonMasqueradeCidrs ?? flagNonMasq;
  let configuredMtu = config.mtu;
  const masquerading = masqueradingText(masqueradeMode, options.uplink, clusterCidr, nonMasqueradeCidrs.length > 0);
  // The reason once, on a line of its own: what a user greps for (`BPF host routing requires`).
  log.info({ hostRouting: hostRouting.mode }, `Host Routing: ${hostRouting.mode}`);
  if (hostRouting.reason) log.warn(hostRouting.reason);
  log.info(`Masquerading: ${masquerading}`);
  log.info({ routing }, `Routing: ${routing === 'tunnel' ? 'Tunnel [vxlan]' : 'Network: Native'}`);

  const [uplink] = await ipJson<IpLink[]>(netns, ['addr', 'show', 'dev', options.uplink]);
  if (!uplink) throw new Error(`uplink ${options.uplink} not found in ${netns ?? 'this namespace'}`);
  const nodeIp = uplink.addr_info?.find((a) => a.family === 'inet')?.local;
  if (!nodeIp) throw new Error(`uplink ${options.uplink} has no IPv4 address`);
  let links = await ipJson<IpLink[]>(netns, ['link', 'show']);
  if (!links.some((l) => l.ifname === vxlan)) {
    // A collect_md device: bpf_skb_set_tunnel_key picks the remote per packet. Native nodes have one too: in a mixed
    // cluster a tunnel node sends them VXLAN (its route to every podCIDR is the tunnel), which they must decapsulate.
    const ns = netns ? ['-n', netns] : [];
    await exec('ip', [...ns, 'link', 'add', vxlan, 'type', 'vxlan', 'external', 'dstport', '8472']);
    await exec('ip', [...ns, 'link', 'set', vxlan, 'arp', 'off', 'up']);
    links = await ipJson<IpLink[]>(netns, ['link', 'show']);
  }
  const vx = links.find((l) => l.ifname === vxlan);
  // The pods' MTU: the uplink's, less the tunnel's overhead (mtu.ts); re-derived at each CNI ADD from the live uplink.
  let podMtu: PodMtu = derivePodMtu(await linkMtu(netns, options.uplink), routing, configuredMtu);
  const tunnelMtu = vx ? await alignTunnelMtu(netns, vxlan, podMtu) : undefined;
  if (tunnelMtu) log.info({ device: vxlan, mtu: tunnelMtu }, `${vxlan} MTU set to the pods' ${tunnelMtu}`);
  log.info({ mtu: podMtu }, `Pod MTU: ${podMtuText(podMtu)}`);
  // The routing mode switches live (datapath-mode.ts): new pods get the MTU of the mode that runs now.
  let currentRouting = (): RoutingMode => routing;
  const currentPodMtu = async (): Promise<PodMtu> => {
    const next = derivePodMtu(await linkMtu(netns, options.uplink), currentRouting(), configuredMtu);
    if (next.pod !== podMtu.pod) {
      log.info({ from: podMtu.pod, to: next.pod, uplink: next.uplink }, `Pod MTU changed to ${podMtuText(next)}: new pods get it, existing pods keep theirs until recreated`);
      if (vx) await alignTunnelMtu(netns, vxlan, next);
      podMtu = next;
      publisher?.update();
    }
    return podMtu;
  };

  const dp = loadDatapath({ pinDir: options.pinDir, registry, onIncompatible: 'replace' });
  if (dp.replacedMaps.length) log.warn({ replaced: dp.replacedMaps }, 'pinned maps with an old layout were replaced');
  dp.setConfig({
    bpfHostRouting: hostRouting.mode === 'BPF',
    tunnel: routing === 'tunnel',
    masquerade: masqueradeMode === 'bpf',
    nodeIp,
    uplinkIfindex: uplink.ifindex,
    tunnelIfindex: vx?.ifindex ?? 0,
    vni: 42,
    uplinkMac: uplink.address,
  });

  // Local endpoints from the state dir; those whose veth vanished while we were down are gone for good.
  const store = new LocalEndpointStore(options.stateDir);
  const byName = new Map(links.map((l) => [l.ifname, l]));
  for (const ep of store.all()) {
    const link = byName.get(ep.hostIfname);
    if (!link || link.ifindex !== ep.hostIfindex) {
      log.info({ endpoint: ep.id, ip: ep.ip, ifname: ep.hostIfname }, 'local endpoint vanished while the agent was down; removing it');
      store.delete(ep.id);
    }
  }
  attachNode(dp, { uplink: options.uplink, vxlan: vx ? vxlan : undefined, pods: store.all().map((e) => e.hostIfname) }, netns);
  if (options.cgroupRoot) {
    attachSocketLb(options.pinDir, options.cgroupRoot);
    log.info({ cgroup: options.cgroupRoot }, 'socket load balancer attached (host-namespace clients of services)');
  }
  // XDP before the stack for NodePort/LoadBalancer traffic from outside; 'disabled' also removes a program a previous
  // run left attached. Tunnel mode needs tc's tunnel key, so it stays on the tc path.
  const accelerationRequest: LbAcceleration = options.lbAcceleration ?? 'disabled';
  const accelerationReason = accelerationRequest !== 'disabled' && routing === 'tunnel' ? 'tunnel routing: XDP acceleration needs native routing' : undefined;
  if (accelerationReason) log.warn({ requested: accelerationRequest }, `XDP acceleration disabled (${accelerationReason})`);
  const acceleration: XdpMode | 'disabled' = applyLbAcceleration(dp.programs.xdp_netdev, options.uplink, accelerationReason ? 'disabled' : accelerationRequest, netns);
  if (acceleration !== 'disabled') log.info({ device: options.uplink, mode: acceleration, requested: accelerationRequest }, `XDP Acceleration: ${xdpStatusText(acceleration)}`);
  log.info({ reusedMaps: dp.reusedMaps, endpoints: store.all().length }, dp.reusedMaps ? 'reusing pinned maps (no flush)' : 'created maps');

  const routesTarget = new RoutesTarget({ netns, mode: routing, uplink: options.uplink, vxlan });
  let publisher: StatusPublisher | undefined;
  let masquerade: IptablesMasquerade | undefined;
  let ipmasq: ReturnType<typeof ipmasqSync> | undefined;
  const core = new AgentCore({
    nodeName: options.nodeName,
    client,
    datapath: dp,
    keys,
    nodeIp,
    clusterSize: options.clusterSize,
    ...(options.waitForSync ? { waitForSync: true } : {}),
    registry,
    log,
    localEndpoints: store.all().map(toCoreEndpoint),
    routes: routesTarget,
    ...(options.clusterCidr ? { clusterCidr: options.clusterCidr } : {}),
    ...(options.reconcileIntervalMs !== undefined ? { refreshIntervalMs: options.reconcileIntervalMs } : {}),
    onProgrammed: () => publisher?.update(),
    onNodesChanged: () => {
      masquerade?.nodesChanged();
      ipmasq?.nodesChanged();
    },
  });
  core.start();
  // iptables masquerading (SLUICE_POST_nat): started once the nodes are known, so a restart never takes the rules
  // away for want of this node's podCIDR.
  masquerade = iptablesMasquerade({ netns, clusterCidr, nodes: () => core.nodeAddresses(), mode: masqueradeMode, nonMasqueradeCidrs: () => nonMasqueradeCidrs, log, registry, ...(options.reconcileIntervalMs !== undefined ? { refreshIntervalMs: options.reconcileIntervalMs } : {}) });
  void reserveSnatPorts(netns, log);
  const programmed = syncIpmasq(dp.maps.ipmasq, nonMasqueradeCidrs, dp.maps.ipmasq.entries().filter(([, v]) => v.flags & IPMASQ_F_NODE).map(([k]) => k.cidr.slice(0, -3)));
  if (programmed.added.length || programmed.removed.length) log.info({ ...programmed, nonMasqueradeCidrs }, 'ip-masq-agent: nonMasqueradeCIDRs programmed');
  // Node IPs follow the nodes (kept from the last run until the core knows them).
  ipmasq = ipmasqSync({ map: dp.maps.ipmasq, cidrs: () => nonMasqueradeCidrs, nodeIps: () => core.nodeAddresses().nodeIps, log });
  let stopping = false;
  const mode = new DatapathMode({
    datapath: dp, masquerade, features, base, current: { masquerade: masqueradeMode, hostRouting, routing }, uplink: options.uplink, clusterCidr, ipMasqAgent: () => nonMasqueradeCidrs.length > 0, log,
    // The keys that are not a mode switch: applied in the same order as the record's switches, before them.
    onRecord: (record) => {
      const cidrs = record?.nonMasqueradeCidrs ?? start.admin.nonMasqueradeCidrs ?? flagNonMasq;
      if (cidrs.join(',') !== nonMasqueradeCidrs.join(',')) {
        log.info({ from: nonMasqueradeCidrs, to: cidrs }, 'ip-masq-agent: nonMasqueradeCIDRs changed');
        nonMasqueradeCidrs = cidrs;
        ipmasq?.sync();
        masquerade?.nodesChanged();
        publisher?.update();
      }
      const mtu = record?.mtu ?? start.admin.mtu;
      if (mtu !== configuredMtu) {
        configuredMtu = mtu;
        void currentPodMtu().catch((err: unknown) => log.warn({ error: (err as Error).message }, 'pod MTU not re-derived'));
      }
    },
    onChange: () => {
      publisher?.update();
      // After a routing switch: the pods' MTU of the new mode, in the status now (new pods get it at ADD anyway).
      void currentPodMtu().catch((err: unknown) => log.warn({ error: (err as Error).message }, 'pod MTU not re-derived'));
    },
    routes: { setMode: (m) => routesTarget.setMode(m), resync: () => core.resyncRoutes() },
    alignTunnel: async (m) => {
      if (vx) await alignTunnelMtu(netns, vxlan, derivePodMtu(await linkMtu(netns, options.uplink), m));
    },
  });
  currentRouting = () => mode.routing;
  const masqueradeStarted = core.synced().then(async () => {
    if (stopping) return;
    ipmasq?.sync(); // the nodes are known now (their changes before this point came before the sync was set up)
    await masquerade?.start();
    // Live switches once the rules can be derived (the nodes are known).
    if (!stopping) mode.follow({ client, keys, node: options.nodeName, registry, clusterSize: () => Math.max(1, options.clusterSize ?? 1) });
  }).catch((err: unknown) => log.error({ error: (err as Error).message }, 'iptables masquerading did not start'));
  // Services and EndpointSlices → the load balancer's maps (kube-proxy replacement): a reconciler of its own.
  const services = startServices({ nodeName: options.nodeName, client, keys, datapath: dp, log, registry, nodeIp, netns, uplink: options.uplink, frontendPolicy: { serviceCidr: options.serviceCidr ?? DEFAULT_SERVICE_CIDR, clusterCidr, conflicts: core.conflicts }, ...(options.clusterSize ? { clusterSize: options.clusterSize } : {}), ...(options.reconcileIntervalMs !== undefined ? { refreshIntervalMs: options.reconcileIntervalMs } : {}) });

  // LoadBalancer/external addresses this node answers ARP for, one node per address (a per-address etcd lease).
  const l2 = startL2Announcer({ nodeName: options.nodeName, client, keys, netns, uplink: options.uplink, log, registry, ...(options.reconcileIntervalMs !== undefined ? { refreshIntervalMs: options.reconcileIntervalMs } : {}) });

  const leased = new LeasedKeys({ client, log });
  let statusUrl = '';
  const healthPort = options.healthPort ?? 0;
  let healthEndpoint: HealthEndpoint | undefined;
  const healthEp = (): LocalEndpointRecord | undefined => store.all().find((e) => e.health);
  const publishHealth = () => {
    if (!healthPort && !healthEp()) return;
    const ep = healthEp();
    void publisher
      ?.publishHealth({ v: RECORD_VERSION, node: options.nodeName, nodeIP: nodeIp, ...(healthPort ? { agentPort: healthPort } : {}), ...(ep ? { healthIP: ep.ip } : {}), ...(ep && healthEndpoint ? { healthPort: healthEndpoint.port } : {}) })
      .catch((err: unknown) => log.warn({ error: (err as Error).message }, 'publishing the health endpoint failed'));
  };
  const api = await startAgentApi({
    core,
    store,
    socket: options.apiSocket,
    port: options.apiPort,
    info: { pinDir: options.pinDir, netns, nodeIp, podMtu: currentPodMtu },
    ...(options.apiAllow ? { allow: options.apiAllow } : {}),
    log,
    onChange: (ep) => {
      publisher?.update();
      if (ep.health) publishHealth();
    },
  });

  const statusJson = () => {
    const s = core.status();
    return {
      node: options.nodeName,
      version: AGENT_VERSION,
      nodeIp,
      etcd: s.etcd,
      synced: s.synced,
      endpoints: s.endpoints,
      writes: s.writes,
      // Every target, the services one included, as `sluice status` sums them.
      reconcilers: [...s.reconcilers, services.status().reconciler, ...(masquerade?.reconciler.isStarted ? [masquerade.reconciler.status()] : [])],
      conflicts: s.conflicts,
      routing: mode.routing,
      hostRouting: mode.hostRouting,
      masquerading: mode.masquerading,
      mtu: { ...podMtu, status: podMtuText(podMtu) },
      kernel: features,
      maps: dp.fillLevels(),
      kubeProxyReplacement: {
        enabled: true,
        socketLb: !!options.cgroupRoot,
        xdpAcceleration: xdpStatusText(acceleration),
        xdp: { requested: accelerationRequest, device: options.uplink, ...(accelerationReason ? { reason: accelerationReason } : {}) },
        ...services.status(),
      },
      l2Announcements: l2.status(),
      api: api.address,
    };
  };
  // Readiness as a series, for the "agents not synced" alert (deploy/monitoring).
  new Gauge({ name: 'sluice_agent_synced', help: '1 once the agent has synced with etcd and programmed its maps (its readiness)', registers: [registry], collect() { this.set(core.isSynced ? 1 : 0); } });
  const status = await startStatusServer({
    registry,
    host: options.statusHost ?? '127.0.0.1',
    port: options.statusPort ?? 0,
    ready: () => core.isSynced,
    routes: {
      '/status': statusJson,
      '/counters': () => Object.fromEntries(Object.entries(dp.readCounters()).map(([k, v]) => [k, { packets: Number(v.packets), bytes: Number(v.bytes) }])),
    },
  });
  statusUrl = status.url;

  const buildStatus = (): AgentStatusRecord => {
    const s = core.status();
    return {
      v: RECORD_VERSION,
      node: options.nodeName,
      statusUrl,
      version: AGENT_VERSION,
      routing: mode.routing,
      hostRouting: { mode: mode.hostRouting.mode, reason: mode.hostRouting.reason, status: mode.hostRouting.status },
      masquerading: mode.masquerading,
      podMtu: podMtu.pod,
      synced: s.synced,
      endpoints: s.endpoints,
    };
  };
  publisher = new StatusPublisher({ leased, keys, node: options.nodeName, build: buildStatus, log });
  publisher.publishNow();

  // Through the local API like a pod's, once synced (the CNI plugin needs this node's podCIDR); retried until made.
  const endpointOwner = options.healthEndpoint
    ? ownHealthEndpoint({
        node: options.nodeName, netns: options.healthEndpoint.netns, port: options.healthEndpoint.port, nodeNetns: netns,
        apiSocket: options.apiSocket, apiPort: options.apiPort, stateDir: options.stateDir, log, after: core.synced(),
        existing: () => healthEp()?.ip,
        onReady: (endpoint) => {
          healthEndpoint = endpoint;
          publishHealth();
        },
      })
    : undefined;
  let health: HealthListener | undefined;
  if (healthPort || options.healthService) health = await startHealthListener(netns, healthPort, options.nodeName);
  publishHealth();
  let probing: HealthProbing | undefined;
  if (options.healthService && health) {
    probing = startHealthProbing({
      node: options.nodeName,
      client,
      keys,
      healthService: options.healthService,
      ...(options.healthTls ? { tls: options.healthTls } : {}),
      ...(options.healthTlsServerName ? { tlsServerName: options.healthTlsServerName } : {}),
      ...(netns ? { netns } : {}),
      helper: health,
      clusterSize: options.clusterSize,
      log,
    });
  }

  void core.synced().then(() => {
    log.info(core.status().endpoints, 'synced with etcd; maps programmed');
    publisher?.update();
  });

  return {
    core,
    datapath: dp,
    api,
    status,
    get hostRouting() {
      return mode.hostRouting;
    },
    get routing() {
      return mode.routing;
    },
    features,
    nodeIp,
    health: probing,
    async stop(stopOptions = {}) {
      const steps: ShutdownStep[] = [
        ['health probing', () => probing?.stop()],
        ['health listener', () => health?.stop()],
        ['health endpoint', () => endpointOwner?.stop()],
        ['status publisher', () => publisher?.close()],
        ['local API', () => api.close()],
        ['status server', () => status.close()],
        ['L2 announcements (withdrawn, leases given back)', () => l2.stop()],
        ['etcd watches and reconcilers', () => core.stop()],
        ['agent lease (etcd)', () => leased.close()],
        ['iptables masquerade reconciler (rules stay)', async () => {
          stopping = true;
          if (core.isSynced) await masqueradeStarted;
          await mode.stop();
          await masquerade?.stop();
        }],
        // Detached, unlike tc: the uplink's tc programs carry every flow on (the same conntrack), so nothing breaks
        // while no agent runs, and a next start with acceleration disabled leaves no XDP behind.
        ['XDP acceleration (detached; tc carries the flows on)', () => {
          if (acceleration !== 'disabled') applyLbAcceleration(undefined, options.uplink, 'disabled', netns);
        }],
        ['services reconciler', () => services.stop().catch((err: unknown) => log.warn({ error: (err as Error).message }, 'stopping the services reconciler failed'))],
      ];
      await stopInOrder(steps, log, stopOptions.graceMs);
      client.close();
      dp.close();
    },
  };
}
