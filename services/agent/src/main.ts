#!/usr/bin/env -S npx tsx
/**
 * sluice-agent: one per node. Watches nodes and pods in etcd, programs the node's BPF maps and routes, serves the CNI
 * plugin's local API and a status endpoint, and publishes its status in etcd. See agent.ts for where it runs.
 */
import { Command, configOrExit, etcdFlags, etcdFlagShape, flag, parseOptions, resolveEtcdConfig, schemas, z } from '@sluice/config';
import { createLogger } from '@sluice/log';
import { runAgent } from './agent.ts';
import { DEFAULT_CLUSTER_CIDR, DEFAULT_SERVICE_CIDR } from './core.ts';
import { parseV4Cidr } from './tables/cidr.ts';
import { prerequisiteError, unmetPrerequisite } from './tables/host-routing.ts';
import { parseMasqueradeMode } from './tables/masquerade.ts';

const program = new Command('sluice-agent')
  .description('Program a node\'s eBPF datapath from etcd (nodes, pods) and serve the CNI plugin')
  .addOption(flag('--node-name <name>', 'this node\'s name, as in Kubernetes').makeOptionMandatory())
  .addOption(flag('--pin-dir <dir>', 'bpffs directory of this node\'s maps and programs (default /sys/fs/bpf/sluice/<node>)'))
  .addOption(flag('--netns <name>', 'the node\'s network namespace (under /run/netns) to act on; default: the agent\'s own'))
  .addOption(flag('--uplink <dev>', 'the node\'s uplink device', 'eth0'))
  .addOption(flag('--vxlan <dev>', 'the VXLAN device (created if missing): tunnel mode sends through it, and every node decapsulates with it what tunnel nodes send', 'vx0'))
  .addOption(flag('--routing <mode>', 'native or tunnel (a nodeconfig record in etcd overrides it)', 'native'))
  .addOption(flag('--host-routing <mode>', 'auto, bpf or legacy (a nodeconfig record in etcd overrides it)', 'auto'))
  .addOption(flag('--masquerade [mode]', 'masquerade pod traffic leaving the cluster to the node IP: off, iptables (netfilter rules in the node\'s namespace) or bpf (a bare --masquerade: bpf; a nodeconfig record in etcd overrides it)', 'off'))
  .addOption(flag('--non-masquerade-cidrs <cidrs>', 'ip-masq-agent\'s nonMasqueradeCIDRs: comma-separated IPv4 networks pods reach with their own address in either masquerade mode (sluice bpf ipmasq list shows them)'))
  .addOption(flag('--lb-acceleration <mode>', 'XDP acceleration of NodePort and LoadBalancer traffic arriving on the uplink (native routing): native (driver mode, generic where the driver has none), generic or disabled', 'disabled'))
  .addOption(flag('--cgroup-root <dir>', 'cgroup v2 directory whose processes get socket-level load balancing of services (connect() to a ClusterIP goes to a backend): the hierarchy\'s root on a real node; none by default'))
  .addOption(flag('--state-dir <dir>', 'where local endpoints are kept across restarts (default /var/run/sluice/<node>)'))
  .addOption(flag('--api-socket <path>', 'unix socket of the local API for the CNI plugin (default <state-dir>/agent.sock)'))
  .addOption(flag('--api-port <port>', 'serve the local API on 127.0.0.1:<port> instead of a unix socket'))
  .addOption(flag('--api-group <gid>', 'numeric group that may call the local API besides root (the socket becomes 0660, owned by it)'))
  .addOption(flag('--metrics-host <host>', 'address of /metrics, /status, /healthz, /readyz', '127.0.0.1'))
  .addOption(flag('--metrics-port <port>', 'port of /metrics, /status, /healthz, /readyz (0 picks a free one)', '9876'))
  .addOption(flag('--health-port <port>', 'health port inside the node namespace, probed by peers at the node IP (0: none)', '4240'))
  .addOption(flag('--health-endpoint-port <port>', 'make and own the node\'s health endpoint (a namespace with a podCIDR address, like cilium-health-ep) answering on this port (0: none; deployments use 4240)', '0'))
  .addOption(flag('--health-endpoint-netns <name>', 'name of the health endpoint\'s namespace under /run/netns (default: <netns>-health, or sluice-health)'))
  .addOption(flag('--health-service <host:port>', 'the health service: probe peers for cluster health and report there (no probing without it)'))
  .addOption(flag('--health-tls-ca <file>', 'CA bundle of the health service\'s certificate (PEM); enables TLS'))
  .addOption(flag('--health-tls-cert <file>', 'client certificate for mutual TLS (PEM; must name this node)'))
  .addOption(flag('--health-tls-key <file>', 'client private key for mutual TLS (PEM)'))
  .addOption(flag('--health-tls-server-name <name>', 'name to expect in the health service\'s certificate (default: the host of --health-service)'))
  .addOption(flag('--cluster-size <n>', 'nodes in the cluster until the node list arrives (scales etcd reconnect backoff; then the live node count)'))
  .addOption(flag('--cluster-cidr <cidr>', 'the cluster\'s pod range: node podCIDRs (and the addresses in them) outside it are refused', DEFAULT_CLUSTER_CIDR))
  .addOption(flag('--service-cidr <cidr>', 'the service range (the API server\'s --service-cluster-ip-range): clusterIPs outside it, and external or LoadBalancer IPs inside it or the cluster CIDR, are refused', DEFAULT_SERVICE_CIDR))
  .addOption(flag('--reconcile-interval <duration>', 'full reconcile of every target (maps, routes) that repairs drift, e.g. 30s or 5m (0: only at start)', '1m'))
  .addOption(flag('--shutdown-grace <seconds>', 'on SIGTERM/SIGINT, how long to wait for etcd before abandoning what is pending and exiting', '10'))
  .addOption(flag('--log-level <level>', 'fatal, error, warn, info, debug or trace', 'info'));
for (const option of etcdFlags()) program.addOption(option);

const options = parseOptions(
  program,
  z.object({
    nodeName: z.string().regex(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, 'must be a DNS subdomain').max(253),
    ...etcdFlagShape,
    pinDir: z.string().startsWith('/sys/fs/bpf/', 'must be under /sys/fs/bpf/').optional(),
    netns: z.string().regex(/^[A-Za-z0-9_.-]+$/, 'must be a namespace name under /run/netns').optional(),
    uplink: z.string().min(1).max(15),
    vxlan: z.string().min(1).max(15),
    routing: z.enum(['native', 'tunnel']),
    hostRouting: z.enum(['auto', 'bpf', 'legacy']),
    masquerade: z.preprocess((v) => parseMasqueradeMode(v) ?? v, z.enum(['off', 'iptables', 'bpf'], { message: 'must be off, iptables or bpf' })),
    lbAcceleration: z.enum(['native', 'generic', 'disabled'], { message: 'must be native, generic or disabled' }),
    cgroupRoot: z.string().startsWith('/', 'must be an absolute path').optional(),
    stateDir: z.string().min(1).optional(),
    apiSocket: z.string().min(1).optional(),
    apiPort: schemas.port.optional(),
    apiGroup: schemas.nonNegativeInt.optional(),
    metricsHost: z.string().min(1),
    metricsPort: schemas.port,
    healthPort: schemas.port,
    healthEndpointPort: schemas.port,
    healthEndpointNetns: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/, 'is not a namespace name').optional(),
    healthService: z.string().regex(/^(\[[0-9a-fA-F:.]+\]|[^:\s]+):\d{1,5}$/, 'must be host:port').optional(),
    healthTlsCa: z.string().min(1).optional(),
    healthTlsCert: z.string().min(1).optional(),
    healthTlsKey: z.string().min(1).optional(),
    healthTlsServerName: z.string().min(1).optional(),
    clusterSize: schemas.positiveInt.optional(),
    nonMasqueradeCidrs: z
      .preprocess(
        (v) => (typeof v === 'string' ? v.split(',').map((c) => c.trim()).filter(Boolean) : v),
        z.array(z.string().refine((c) => /^(\d{1,3}\.){3}\d{1,3}\/\d{1,2}$/.test(c) && parseV4Cidr(c)?.text === c, 'each must be an IPv4 network like 192.168.0.0/16 (no host bits)')),
      )
      .optional(),
    clusterCidr: z.string().refine((c) => /^(\d{1,3}\.){3}\d{1,3}\/\d{1,2}$/.test(c) && parseV4Cidr(c)?.text === c, 'must be an IPv4 network like 10.128.0.0/9 (no host bits)'),
    serviceCidr: z.string().refine((c) => /^(\d{1,3}\.){3}\d{1,3}\/\d{1,2}$/.test(c) && parseV4Cidr(c)?.text === c, 'must be an IPv4 network like 10.96.0.0/12 (no host bits)'),
    reconcileInterval: schemas.duration,
    shutdownGrace: z.coerce.number().min(0).max(3600),
    logLevel: schemas.logLevel,
  })
    .superRefine((o, ctx) => {
      // BPF host routing bypasses netfilter: asked for explicitly, a missing prerequisite is an error, not a fallback.
      const missing = o.hostRouting === 'bpf' ? unmetPrerequisite({ masquerade: o.masquerade, bpfServiceLb: true }) : undefined;
      if (missing) ctx.addIssue({ code: 'custom', path: ['hostRouting'], message: prerequisiteError(missing, { masquerade: o.masquerade, bpfServiceLb: true }) });
    })
    .refine((o) => !!o.healthTlsCert === !!o.healthTlsKey, { message: 'needs both --health-tls-cert and --health-tls-key', path: ['healthTlsCert'] })
    .refine((o) => !o.healthTlsCert || !!o.healthTlsCa, { message: 'mutual TLS needs --health-tls-ca too', path: ['healthTlsCa'] })
    .refine((o) => !(o.healthTlsCa || o.healthTlsCert) || !!o.healthService, { message: 'TLS flags need --health-service', path: ['healthService'] }),
);

const etcd = configOrExit(program, () => resolveEtcdConfig(options));
const log = createLogger({ component: 'agent', node: options.nodeName, level: options.logLevel });
const stateDir = options.stateDir ?? `/var/run/sluice/${options.nodeName}`;
try {
  const { healthEndpointPort, healthEndpointNetns, healthTlsCa, healthTlsCert, healthTlsKey, metricsHost, metricsPort, reconcileInterval, shutdownGrace, apiGroup, ...rest } = options;
  const agent = await runAgent({
    ...rest,
    etcd: etcd.client,
    rootPrefix: etcd.prefix,
    statusHost: metricsHost,
    statusPort: metricsPort,
    // Production has an operator: wait for its sync markers, never prune on an etcd it has not synced.
    waitForSync: true,
    ...(healthTlsCa ? { healthTls: { ca: healthTlsCa, cert: healthTlsCert, key: healthTlsKey } } : {}),
    ...(healthEndpointPort ? { healthEndpoint: { port: healthEndpointPort, netns: healthEndpointNetns ?? `${options.netns ?? 'sluice'}-health` } } : {}),
    pinDir: options.pinDir ?? `/sys/fs/bpf/sluice/${options.nodeName}`,
    stateDir,
    apiSocket: options.apiPort === undefined ? (options.apiSocket ?? `${stateDir}/agent.sock`) : undefined,
    ...(apiGroup !== undefined ? { apiAllow: { gids: [apiGroup] } } : {}),
    reconcileIntervalMs: reconcileInterval,
    log,
  });
  log.info({ status: agent.status.url, api: agent.api.address, nodeIp: agent.nodeIp }, 'agent running');
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal, graceSeconds: shutdownGrace }, 'stopping (the datapath stays programmed and attached)');
    const graceMs = shutdownGrace * 1000;
    // The last resort: nothing (a socket close that hangs, a library waiting on etcd) keeps the process past its grace.
    setTimeout(() => {
      log.error({ graceSeconds: shutdownGrace }, 'still not stopped after the grace period; exiting anyway');
      process.exit(0);
    }, graceMs + 2_000).unref();
    void agent.stop({ graceMs }).finally(() => process.exit(0));
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
} catch (err) {
  log.fatal({ error: (err as Error).message }, 'agent failed to start');
  process.exit(1);
}
