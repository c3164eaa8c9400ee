/**
 * sluice-health: the cluster health service. Agents report their probes to it (ReportProbes); users and the CLI ask
 * it for the cluster view (GetClusterHealth, GetNodeHealth, WatchClusterHealth). It learns the nodes from etcd.
 */
import { readFileSync } from 'node:fs';
import { Command, configOrExit, etcdFlags, etcdFlagShape, flag, parseOptions, resolveEtcdConfig, schemas, z } from '@sluice/config';
import { createLogger } from '@sluice/log';
import { createRegistry, startStatusServer, type StatusServer } from '@sluice/metrics';
import { reachabilityWord } from '@sluice/health-api';
import { Aggregator } from './aggregator.ts';
import { registerHealthMetrics } from './metrics.ts';
import { EtcdNodeSource } from './node-source.ts';
import { startHealthServer } from './server.ts';

const program = new Command('sluice-health')
  .description('Aggregate the agents\' cross-node probes into the cluster health view, served over gRPC')
  .addOption(flag('--listen <address>', 'gRPC listen address (host:port or unix:///path)', '0.0.0.0:4250'))
  .addOption(flag('--tls-cert <file>', 'server certificate (PEM); enables TLS'))
  .addOption(flag('--tls-key <file>', 'server private key (PEM)'))
  .addOption(flag('--tls-ca <file>', 'CA bundle for client certificates; enables mutual TLS (reporters may only report for the node in their certificate)'))
  .addOption(flag('--insecure', 'take probe reports without mutual TLS (anyone who reaches the port can report for any node: demos and labs only)'))
  .addOption(flag('--max-watchers <n>', 'open WatchClusterHealth streams allowed in total', '1024'))
  .addOption(flag('--max-watchers-per-client <n>', 'open WatchClusterHealth streams allowed per client (peer IP, or certificate name with mutual TLS)', '16'))
  .addOption(flag('--metrics-max-targets <n>', 'nodes with per-target series in /metrics (nodes with a problem first)', '100'))
  .addOption(flag('--staleness <duration>', 'forget reports older than this', '20s'))
  .addOption(flag('--confirmations <n>', 'distinct failing reporters needed to declare a node unreachable', '3'))
  .addOption(flag('--max-probe-rate <n>', 'probes per second per node the agents are configured for (sets the quorum\'s cap)', '15'))
  .addOption(flag('--cluster-health-max-age <duration>', 'how far GetClusterHealth\'s per-node details (probe times, RTTs) may lag the reports; verdicts are always current (0: always re-encode)', '1s'))
  .addOption(flag('--metrics-host <host>', 'address of /metrics, /status, /healthz, /readyz', '127.0.0.1'))
  .addOption(flag('--metrics-port <port>', 'port of /metrics, /status, /healthz, /readyz (0 picks a free one)', '9965'))
  .addOption(flag('--shutdown-grace <seconds>', 'on SIGTERM/SIGINT, how long to wait for streams and etcd before abandoning them and exiting', '10'))
  .addOption(flag('--log-level <level>', 'log level', 'info'));
for (const option of etcdFlags()) program.addOption(option);

const options = parseOptions(
  program,
  z
    .object({
      listen: z.string().regex(/^(unix:\/\/\/.+|\[?[0-9a-zA-Z.:-]+\]?:\d{1,5})$/, 'expected host:port or unix:///path'),
      ...etcdFlagShape,
      tlsCert: z.string().min(1).optional(),
      tlsKey: z.string().min(1).optional(),
      tlsCa: z.string().min(1).optional(),
      insecure: z.boolean().optional(),
      maxWatchers: schemas.positiveInt,
      maxWatchersPerClient: schemas.positiveInt,
      metricsMaxTargets: schemas.positiveInt,
      staleness: schemas.duration.pipe(z.number().min(1000, 'must be at least 1s')),
      confirmations: schemas.positiveInt,
      maxProbeRate: schemas.positiveNumber,
      clusterHealthMaxAge: schemas.duration.pipe(z.number().min(0).max(60_000, 'must be at most 60s')),
      metricsHost: z.string().min(1),
      metricsPort: schemas.port,
      shutdownGrace: schemas.nonNegativeInt,
      logLevel: schemas.logLevel,
    })
    .refine((o) => !!o.tlsCert === !!o.tlsKey, { message: 'needs both --tls-cert and --tls-key', path: ['tlsCert'] })
    .refine((o) => !o.tlsCa || !!o.tlsCert, { message: 'mutual TLS needs --tls-cert and --tls-key too', path: ['tlsCa'] }),
);

const etcd = configOrExit(program, () => resolveEtcdConfig(options));
const log = createLogger({ component: 'health', level: options.logLevel });
const read = (file: string) => {
  try {
    return readFileSync(file);
  } catch (err) {
    process.stderr.write(`sluice-health: cannot read ${file}: ${(err as Error).message}\n`);
    process.exit(2);
  }
};
const tls = options.tlsCert && options.tlsKey
  ? { cert: read(options.tlsCert), key: read(options.tlsKey), ca: options.tlsCa ? read(options.tlsCa) : undefined }
  : undefined;

const aggregator = new Aggregator({ staleMs: options.staleness, confirmations: options.confirmations, plan: { maxProbeRate: options.maxProbeRate } });
const source = new EtcdNodeSource({ etcd: etcd.client, root: etcd.prefix, logger: log });
let nodesLoaded = false;

const server = await startHealthServer({
  aggregator, address: options.listen, tls, logger: log, clusterHealthMaxAgeMs: options.clusterHealthMaxAge,
  insecure: options.insecure ?? false, maxWatchers: options.maxWatchers, maxWatchersPerClient: options.maxWatchersPerClient,
}).catch((err: Error) => {
  log.fatal({ err: err.message, listen: options.listen }, 'cannot listen');
  process.exit(1);
});
server.setServing(false);

const registry = createRegistry({ defaultMetrics: true });
registerHealthMetrics(registry, aggregator, { maxTargets: options.metricsMaxTargets, watchers: () => server.stats().watchers });
const status: StatusServer = await startStatusServer({ registry, host: options.metricsHost, port: options.metricsPort, ready: () => nodesLoaded, routes: { '/status': () => aggregator.summary(), '/stats': () => server.stats() } });
log.info({ url: status.url }, 'metrics and status listening');

// Every change of a node's state, once, as it happens (joins and leaves included); the initial verdicts after a
// start come as changes from UNKNOWN too.
aggregator.subscribe((change) => {
  const h = change.health;
  log.info({
    node: change.node, previous: reachabilityWord(change.previous), current: change.removed ? 'removed' : reachabilityWord(change.current),
    endpoint: reachabilityWord(h.endpointReachability), agent: h.agent.replace('AGENT_STATE_', '').toLowerCase(),
    ...(h.unreachableFrom.length ? { unreachableFrom: h.unreachableFrom } : {}), failingReporters: h.failingReporters,
  }, change.removed ? 'node left the cluster' : 'node health changed');
});

let stopping = false;
async function shutdown(): Promise<void> {
  if (stopping) return;
  stopping = true;
  const graceMs = options.shutdownGrace * 1000;
  log.info({ graceSeconds: options.shutdownGrace }, 'shutting down');
  // Whatever etcd and the clients do, the process ends within its grace: what has not finished by then is abandoned.
  const deadline = Date.now() + graceMs;
  const step = async (what: string, work: () => Promise<unknown>): Promise<void> => {
    let timer: NodeJS.Timeout | undefined;
    const left = Math.max(0, deadline - Date.now());
    const done = await Promise.race([work().then(() => true, () => true), new Promise<false>((r) => (timer = setTimeout(() => r(false), left)))]);
    clearTimeout(timer);
    if (!done) log.warn({ step: what }, 'shutdown: abandoned after the grace period');
  };
  await step('closing gRPC streams', () => server.stop(Math.min(2000, graceMs)));
  await step('closing the etcd watches', () => source.stop());
  await step('closing the metrics listener', () => status.close());
  process.exit(0);
}
process.on('SIGINT', () => void shutdown());
process.on('SIGTERM', () => void shutdown());

// The watches retry on their own until etcd answers; meanwhile the service answers NOT_SERVING in grpc.health.v1.
await source.start((nodes) => aggregator.setNodes(nodes));
nodesLoaded = true;
server.setServing(true);
log.info({ nodes: aggregator.summary().total }, 'node list loaded from etcd');

