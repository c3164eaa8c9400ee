/**
 * kube-sim: serves a simulated Kubernetes cluster over HTTP and writes a kubeconfig for it.
 *   tsx services/kube-sim/src/main.ts --nodes 5000 --pods-per-node 20 --kubeconfig /tmp/kube-sim.kubeconfig
 */
import { Command, flag, parseOptions, schemas, z } from '@sluice/config';
import { createLogger } from '@sluice/log';
import { readFile } from 'node:fs/promises';
import { AuthError, loadTokenFile } from './auth.ts';
import { startKubeSim, type KubeSimOptions } from './index.ts';
import { loadScenario, ScenarioError } from './scenario.ts';

const program = new Command('kube-sim')
  .description('A Kubernetes API simulator that plays thousands of nodes')
  .addOption(flag('--nodes <n>', 'simulated nodes (with pods)', '10'))
  .addOption(flag('--pods-per-node <n>', 'pods per simulated node', '5'))
  .addOption(flag('--services <n>', 'services (each with EndpointSlices selecting pods)', '5'))
  .addOption(flag('--namespaces <n>', 'namespaces the pods and services spread over', '3'))
  .addOption(flag('--empty-nodes <n>', 'extra nodes without pods, for an external kubelet to bind pods to', '0'))
  .addOption(flag('--cluster-cidr <cidr>', 'where node podCIDRs are carved from', '10.128.0.0/9'))
  .addOption(flag('--node-cidr-mask-size <bits>', 'prefix length of each node podCIDR', '24'))
  .addOption(flag('--node-ip-cidr <cidr>', 'where node InternalIPs come from', '172.20.0.0/16'))
  .addOption(flag('--heartbeat-interval <duration>', 'kubelet status update interval per node', '10s'))
  .addOption(flag('--heartbeat-jitter <fraction>', 'heartbeat interval jitter, a fraction of the interval', '0.1'))
  .addOption(flag('--no-heartbeats', 'do not send node heartbeats'))
  .addOption(flag('--heartbeat-mode <mode>', 'node-status: a Node status PATCH per heartbeat; lease: a Lease per node renewed per heartbeat, Node status every --node-status-report-interval (KEP-589)', 'node-status'))
  .addOption(flag('--node-status-report-interval <duration>', 'lease mode: how often the Node status is written without a condition change', '5m'))
  .addOption(flag('--pod-start-delay <duration>', 'pods the simulation creates start Pending and run with an IP after this delay (0: created Running)', '0'))
  .addOption(flag('--churn <perSecond>', 'pod creates plus deletes per second', '0'))
  .addOption(flag('--seed <n>', 'random seed (same seed, same cluster)', '1'))
  .addOption(flag('--scenario <file>', 'JSON scenario file (flags given explicitly win)'))
  .addOption(flag('--port <port>', 'listen port (0: any free port)', '6443'))
  .addOption(flag('--host <address>', 'listen address', '127.0.0.1'))
  .addOption(flag('--kubeconfig <path>', 'where to write the kubeconfig', '.sluice/kube-sim.kubeconfig'))
  .addOption(flag('--window-events <n>', 'watch events kept per resource type (older resourceVersions get 410 Gone)', '10000'))
  .addOption(flag('--bookmark-interval <duration>', 'BOOKMARK interval for watchers that allow bookmarks', '10s'))
  .addOption(flag('--rate-limit-qps <qps>', 'answer 429 with Retry-After above this request rate (0: off)', '0'))
  .addOption(flag('--rate-limit-burst <n>', 'rate limit burst', '100'))
  .addOption(flag('--failure-rate <fraction>', 'fault injection: fraction of requests answered with 500', '0'))
  .addOption(flag('--tls', 'serve HTTPS with a generated CA (written beside the kubeconfig as kube-sim-ca.crt)'))
  .addOption(flag('--tls-cert <file>', 'server certificate (PEM) to serve HTTPS with instead of a generated one'))
  .addOption(flag('--tls-key <file>', 'server private key (PEM), with --tls-cert'))
  .addOption(flag('--tls-ca <file>', 'CA bundle (PEM) that signed --tls-cert, written into the kubeconfig'))
  .addOption(flag('--token-file <file>', 'require bearer tokens: JSON {"tokens":[{"token","user","rules":[{"verbs","apiGroups","resources","namespaces"}]}]}; the kubeconfig carries the first'))
  .addOption(flag('--shutdown-grace <seconds>', 'on SIGTERM/SIGINT, how long to wait for connections to close before exiting anyway', '5'))
  .addOption(flag('--log-level <level>', 'log level', 'info'));

const schema = z.object({
  nodes: schemas.nonNegativeInt,
  podsPerNode: schemas.nonNegativeInt,
  services: schemas.nonNegativeInt,
  namespaces: schemas.positiveInt,
  emptyNodes: schemas.nonNegativeInt,
  clusterCidr: z.string().regex(/^(\d{1,3}\.){3}\d{1,3}\/\d{1,2}$/, 'expected an IPv4 CIDR like 10.128.0.0/9'),
  nodeCidrMaskSize: z.coerce.number().int().min(8).max(30),
  nodeIpCidr: z.string().regex(/^(\d{1,3}\.){3}\d{1,3}\/\d{1,2}$/, 'expected an IPv4 CIDR like 172.20.0.0/16'),
  heartbeatInterval: schemas.duration.pipe(z.number().positive('must be positive')),
  heartbeatJitter: z.coerce.number().min(0).max(1),
  heartbeats: z.boolean(),
  heartbeatMode: z.enum(['node-status', 'lease']),
  nodeStatusReportInterval: schemas.duration.pipe(z.number().positive('must be positive')),
  podStartDelay: schemas.duration.pipe(z.number().min(0)),
  tls: z.boolean().optional(),
  tlsCert: z.string().optional(),
  tlsKey: z.string().optional(),
  tlsCa: z.string().optional(),
  tokenFile: z.string().optional(),
  shutdownGrace: z.coerce.number().min(0),
  churn: z.coerce.number().min(0),
  seed: z.coerce.number().int(),
  scenario: z.string().optional(),
  port: schemas.port,
  host: z.string().min(1),
  kubeconfig: z.string().min(1),
  windowEvents: schemas.positiveInt,
  bookmarkInterval: schemas.duration.pipe(z.number().positive('must be positive')),
  rateLimitQps: z.coerce.number().min(0),
  rateLimitBurst: schemas.positiveInt,
  failureRate: z.coerce.number().min(0).max(1),
  logLevel: schemas.logLevel,
});

const opts = parseOptions(program, schema);
const explicit = (name: string) => program.getOptionValueSource(name) === 'cli' || program.getOptionValueSource(name) === 'env';
const log = createLogger({ component: 'kube-sim', level: opts.logLevel });

let scenario: Awaited<ReturnType<typeof loadScenario>> = {};
if (opts.scenario) {
  try {
    scenario = await loadScenario(opts.scenario);
  } catch (err) {
    if (!(err instanceof ScenarioError)) throw err;
    process.stderr.write(`kube-sim: invalid --scenario: ${err.message}\n`);
    process.exit(2);
  }
}
const pick = <T>(name: string, fromFlag: T, fromScenario: T | undefined): T => (explicit(name) || fromScenario === undefined ? fromFlag : fromScenario);

let tls: KubeSimOptions['tls'] = opts.tls ?? false;
let tokens: KubeSimOptions['tokens'];
try {
  if (opts.tlsCert || opts.tlsKey) {
    if (!opts.tlsCert || !opts.tlsKey) throw new AuthError('--tls-cert and --tls-key go together');
    const [certPem, keyPem, caPem] = await Promise.all([opts.tlsCert, opts.tlsKey, opts.tlsCa ?? opts.tlsCert].map((f) => readFile(f, 'utf8')));
    tls = { certPem: certPem!, keyPem: keyPem!, caPem: caPem! };
  }
  if (opts.tokenFile) tokens = await loadTokenFile(opts.tokenFile);
} catch (err) {
  process.stderr.write(`kube-sim: ${(err as Error).message}
`);
  process.exit(2);
}

const options: KubeSimOptions = {
  nodes: pick('nodes', opts.nodes, scenario.nodes),
  podsPerNode: pick('podsPerNode', opts.podsPerNode, scenario.podsPerNode),
  services: pick('services', opts.services, scenario.services),
  namespaces: pick('namespaces', opts.namespaces, scenario.namespaces),
  emptyNodes: pick('emptyNodes', opts.emptyNodes, scenario.emptyNodes),
  clusterCIDR: pick('clusterCidr', opts.clusterCidr, scenario.clusterCIDR),
  nodeCIDRMaskSize: pick('nodeCidrMaskSize', opts.nodeCidrMaskSize, scenario.nodeCIDRMaskSize),
  nodeIPCIDR: pick('nodeIpCidr', opts.nodeIpCidr, scenario.nodeIPCIDR),
  heartbeatIntervalMs: pick('heartbeatInterval', opts.heartbeatInterval, scenario.heartbeatInterval),
  heartbeatJitter: pick('heartbeatJitter', opts.heartbeatJitter, scenario.heartbeatJitter),
  heartbeats: opts.heartbeats,
  heartbeatMode: pick('heartbeatMode', opts.heartbeatMode, scenario.heartbeat),
  nodeStatusReportIntervalMs: pick('nodeStatusReportInterval', opts.nodeStatusReportInterval, scenario.nodeStatusReportInterval),
  podStartDelayMs: pick('podStartDelay', opts.podStartDelay, scenario.podStartDelay),
  tls,
  ...(tokens ? { tokens } : {}),
  churnPerSecond: pick('churn', opts.churn, scenario.churnPerSecond),
  seed: pick('seed', opts.seed, scenario.seed),
  port: opts.port,
  host: opts.host,
  kubeconfigPath: opts.kubeconfig,
  windowEvents: pick('windowEvents', opts.windowEvents, scenario.windowEvents),
  bookmarkIntervalMs: pick('bookmarkInterval', opts.bookmarkInterval, scenario.bookmarkInterval),
  rateLimit: opts.rateLimitQps > 0 ? { qps: opts.rateLimitQps, burst: opts.rateLimitBurst } : scenario.rateLimit,
  failureRate: pick('failureRate', opts.failureRate, scenario.failureRate),
  nodeList: scenario.nodeList,
  serviceList: scenario.serviceList,
  log,
};

let sim: Awaited<ReturnType<typeof startKubeSim>>;
try {
  sim = await startKubeSim(options);
} catch (err) {
  process.stderr.write(`kube-sim: ${(err as Error).message}\n`);
  process.exit(2);
}
const s = sim.stats();
process.stdout.write(`kube-sim serving ${sim.url}\nkubeconfig ${sim.kubeconfigPath}\n${sim.caPath ? `ca ${sim.caPath}\n` : ''}`);
log.info({ url: sim.url, kubeconfig: sim.kubeconfigPath, objects: s.objects }, 'kube-sim ready');

let stopping = false;
const shutdown = () => {
  // A second signal, or clients that hold their connections past the grace, do not keep the process alive.
  if (stopping) process.exit(1);
  stopping = true;
  setTimeout(() => {
    log.warn({ graceSeconds: opts.shutdownGrace }, 'connections did not close in time; exiting anyway');
    process.exit(0);
  }, opts.shutdownGrace * 1000).unref();
  sim.close().then(() => process.exit(0), (err: unknown) => {
    log.error({ err }, 'shutdown failed');
    process.exit(1);
  });
};
process.on('SIGINT', shutdown);
process.on('SIGTERM', shutdown);
