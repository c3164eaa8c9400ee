/**
 * sluice-health: the cluster health service. Agents report their probes to it (ReportProbes); users and the CLI ask
 * it for the cluster view (GetClusterHealth, GetNodeHealth, WatchClusterHealth). It learns the nodes from etcd.
 */
import { readFileSync } from 'node:fs';
import { Command, flag, parseOptions, schemas, z } from '@sluice/config';
import { createLogger } from '@sluice/log';
import { createRegistry, Gauge, startStatusServer, type StatusServer } from '@sluice/metrics';
import { Aggregator } from './aggregator.ts';
import { EtcdNodeSource } from './node-source.ts';
import { startHealthServer } from './server.ts';

const program = new Command('sluice-health')
  .description('Aggregate the agents\' cross-node probes into the cluster health view, served over gRPC')
  .addOption(flag('--listen <address>', 'gRPC listen address (host:port or unix:///path)', '0.0.0.0:4250'))
  .addOption(flag('--etcd-endpoints <urls>', 'etcd client URLs, comma-separated', 'http://127.0.0.1:2379'))
  .addOption(flag('--etcd-root <prefix>', 'root prefix of Sluice\'s keys in etcd', 'sluice/'))
  .addOption(flag('--tls-cert <file>', 'server certificate (PEM); enables TLS'))
  .addOption(flag('--tls-key <file>', 'server private key (PEM)'))
  .addOption(flag('--tls-ca <file>', 'CA bundle for client certificates; enables mutual TLS (reporters may only report for the node in their certificate)'))
  .addOption(flag('--members <which>', 'nodes in the health view: "agents" (nodes whose agent published a health record; what the agents\' probers count) or "nodes" (every node record: simulations whose probers publish none)', 'agents'))
  .addOption(flag('--staleness <duration>', 'forget reports older than this', '20s'))
  .addOption(flag('--confirmations <n>', 'distinct failing reporters needed to declare a node unreachable', '3'))
  .addOption(flag('--max-probe-rate <n>', 'probes per second per node the agents are configured for (sets the quorum\'s cap)', '15'))
  .addOption(flag('--cluster-health-max-age <duration>', 'how far GetClusterHealth\'s per-node details (probe times, RTTs) may lag the reports; verdicts are always current (0: always re-encode)', '1s'))
  .addOption(flag('--status-port <port>', 'port of /metrics, /healthz, /readyz on 127.0.0.1 (0: none)', '0'))
  .addOption(flag('--log-level <level>', 'log level', 'info'));

const options = parseOptions(
  program,
  z
    .object({
      listen: z.string().regex(/^(unix:\/\/\/.+|\[?[0-9a-zA-Z.:-]+\]?:\d{1,5})$/, 'expected host:port or unix:///path'),
      etcdEndpoints: schemas.endpoints,
      etcdRoot: z.string().regex(/\/$/, 'must end with "/"'),
      tlsCert: z.string().min(1).optional(),
      tlsKey: z.string().min(1).optional(),
      tlsCa: z.string().min(1).optional(),
      members: z.enum(['agents', 'nodes']),
      staleness: schemas.duration.pipe(z.number().min(1000, 'must be at least 1s')),
      confirmations: schemas.positiveInt,
      maxProbeRate: schemas.positiveNumber,
      clusterHealthMaxAge: schemas.duration.pipe(z.number().min(0).max(60_000, 'must be at most 60s')),
      statusPort: schemas.port,
      logLevel: schemas.logLevel,
    })
    .refine((o) => !!o.tlsCert === !!o.tlsKey, { message: 'needs both --tls-cert and --tls-key', path: ['tlsCert'] })
    .refine((o) => !o.tlsCa || !!o.tlsCert, { message: 'mutual TLS needs --tls-cert and --tls-key too', path: ['tlsCa'] }),
);

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
const source = new EtcdNodeSource({ endpoints: options.etcdEndpoints, root: options.etcdRoot, members: options.members, logger: log });
let nodesLoaded = false;

const server = await startHealthServer({ aggregator, address: options.listen, tls, logger: log, clusterHealthMaxAgeMs: options.clusterHealthMaxAge }).catch((err: Error) => {
  log.fatal({ err: err.message, listen: options.listen }, 'cannot listen');
  process.exit(1);
});
server.setServing(false);

let status: StatusServer | undefined;
if (options.statusPort > 0) {
  const registry = createRegistry({ defaultMetrics: true });
  const gauge = (name: string, help: string, value: () => number) =>
    new Gauge({ name, help, registers: [registry], collect() { this.set(value()); } });
  gauge('sluice_health_nodes', 'Nodes known from etcd', () => aggregator.summary().total);
  gauge('sluice_health_reachable_nodes', 'Nodes reachable or suspect', () => aggregator.summary().reachable);
  gauge('sluice_health_unreachable_nodes', 'Nodes confirmed unreachable', () => aggregator.summary().unreachable.length);
  gauge('sluice_health_watchers', 'Open WatchClusterHealth streams', () => server.stats().watchers);
  status = await startStatusServer({ registry, port: options.statusPort, ready: () => nodesLoaded, routes: { '/status': () => aggregator.summary(), '/stats': () => server.stats() } });
}

// The watches retry on their own until etcd answers; meanwhile the service answers NOT_SERVING in grpc.health.v1.
await source.start((nodes) => aggregator.setNodes(nodes));
nodesLoaded = true;
server.setServing(true);
log.info({ nodes: aggregator.summary().total }, 'node list loaded from etcd');

async function shutdown(): Promise<void> {
  log.info('shutting down');
  await server.stop();
  await source.stop();
  await status?.close();
  process.exit(0);
}
process.on('SIGINT', () => void shutdown());
process.on('SIGTERM', () => void shutdown());
