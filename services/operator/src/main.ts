#!/usr/bin/env -S npx tsx
/**
 * sluice-operator: mirrors Kubernetes into etcd as slim records. Run two for availability; one leads.
 */
import { createWriteStream } from 'node:fs';
import { Command, configOrExit, etcdFlags, etcdFlagShape, flag, parseOptions, resolveEtcdConfig, schemas, z } from '@sluice/config';
import { createKvClient, keySchema } from '@sluice/kvstore';
import { createLogger } from '@sluice/log';
import { createRegistry, startStatusServer } from '@sluice/metrics';
import { apiServerOrigin, loadKubeConfig } from './kube-client.ts';
import { HEAP_HEADROOM_BYTES, keepHeapHeadroom } from './heap-headroom.ts';
import { Operator } from './operator.ts';
import { trackApiTraffic } from './traffic.ts';

// V8 sizes its heap for the machine, not for this process: by default it lets the heap run up to 4× past what the last
// full collection kept, and at 100,000 pods the operator paid for that in RSS (VmHWM 452 MiB). --optimize-for-size
// bounded it (337 MiB) at a price that grew with churn: it lets the heap grow only ~2.5 % past what is live, and
// churn promotes the latest bytes of every changed EndpointSlice, so at 500 nodes / 1,000 pods/s it ran a full,
// compacting collection every ~150 ms, four GC threads spent as much CPU as the operator itself, and a pod event
// cost ~2.5× more. A fixed headroom of 32 MiB (heap-headroom.ts) bounds both (bench/memory.ts and the pod churn
// bench, same machine, one after the other): at 5,000 nodes / 100,000 pods / 20,000 services with heartbeats and
// churn, VmHWM 259 → 317 MiB and the initial sync 29.4 → 14.4 s; at 500 nodes and 1,000 pods/s, 1,034–1,244 →
// 2,570–2,977 pod events per CPU-second (RSS 178 → 216 MiB). --heap-growing-percent or --optimize-for-size on the
// command line or in NODE_OPTIONS is left to decide.
const v8Flags = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)];
if (!v8Flags.some((arg) => /^--(no-)?(heap[-_]growing[-_]percent|optimize[-_]for[-_]size)/.test(arg))) keepHeapHeadroom(HEAP_HEADROOM_BYTES);

const program = new Command('sluice-operator')
  .description('Mirror Kubernetes Nodes, Pods, Services and EndpointSlices into etcd as slim records (one active instance, leader-elected)')
  .addOption(flag('--kube-server <url>', 'Kubernetes API server URL (no credentials), instead of a kubeconfig'))
  .addOption(flag('--kubeconfig <file>', 'kubeconfig file (default: in-cluster, then $KUBECONFIG, then ~/.kube/config)'))
  .addOption(flag('--identity <name>', 'this instance\'s name in the leader election (default: operator-<host>-<pid>)'))
  .addOption(flag('--lease-ttl <seconds>', 'leader lease TTL; a standby takes over within it after the leader dies', '15'))
  .addOption(flag('--page-size <n>', 'objects per page at most when listing Kubernetes (pages of large objects hold about 512 KB)', '500'))
  .addOption(flag('--etcd-qps <n>', 'etcd write transactions per second, at most', '400'))
  .addOption(flag('--max-txn-ops <n>', 'operations per etcd transaction, at most (etcd\'s --max-txn-ops; lowered by itself if etcd allows fewer)', '128'))
  .addOption(flag('--max-request-bytes <n>', 'bytes per etcd transaction, at most (etcd\'s --max-request-bytes)', '1572864'))
  .addOption(flag('--metrics-host <host>', 'address for /metrics, /healthz, /readyz', '127.0.0.1'))
  .addOption(flag('--metrics-port <port>', 'port for /metrics, /healthz, /readyz (0 picks a free one)', '9963'))
  .addOption(flag('--shutdown-grace <seconds>', 'on SIGTERM/SIGINT, how long to wait for etcd and the API server before abandoning what is pending and exiting', '10'))
  .addOption(flag('--receipt-log <file>', 'for measurement harnesses: append "<epoch ms> <A|M|D> <namespace>/<name>" per Pod ADDED/MODIFIED/DELETED watch event as it arrives'))
  .addOption(flag('--log-level <level>', 'fatal, error, warn, info, debug or trace', 'info'));
for (const option of etcdFlags()) program.addOption(option);

const options = parseOptions(
  program,
  z.object({
    ...etcdFlagShape,
    kubeServer: schemas.url.optional(),
    kubeconfig: z.string().min(1).optional(),
    identity: z.string().min(1).optional(),
    leaseTtl: z.coerce.number().int().min(2).max(300),
    pageSize: z.coerce.number().int().min(1).max(10_000),
    etcdQps: schemas.positiveNumber,
    maxTxnOps: z.coerce.number().int().min(1).max(100_000),
    maxRequestBytes: z.coerce.number().int().min(64 * 1024),
    metricsHost: z.string().min(1),
    metricsPort: schemas.port,
    shutdownGrace: z.coerce.number().min(0).max(3600),
    receiptLog: z.string().min(1).optional(),
    logLevel: schemas.logLevel,
  }),
);

const etcdConfig = configOrExit(program, () => resolveEtcdConfig(options));
const log = createLogger({ component: 'operator', level: options.logLevel });
const registry = createRegistry({ defaultMetrics: true });
let kube;
try {
  kube = loadKubeConfig({ server: options.kubeServer, kubeconfig: options.kubeconfig });
} catch (err) {
  process.stderr.write(`sluice-operator: ${(err as Error).message}\n`);
  process.exit(2);
}
const traffic = trackApiTraffic(apiServerOrigin(kube), registry);
const etcd = createKvClient(etcdConfig.client);
// Buffered and unsynchronised: a line per pod change must not cost the event loop a write() each.
const receipts = options.receiptLog ? createWriteStream(options.receiptLog, { flags: 'a' }) : undefined;
const operator = new Operator({
  onReceived: receipts && ((kind, type, namespace, name) => {
    if (kind === 'Pod') receipts.write(`${Date.now()} ${type === 'ADDED' ? 'A' : type === 'DELETED' ? 'D' : 'M'} ${namespace}/${name}\n`);
  }),
  kube,
  etcd,
  keys: keySchema(etcdConfig.prefix),
  registry,
  log,
  identity: options.identity,
  leaseTtlSeconds: options.leaseTtl,
  pageSize: options.pageSize,
  writer: { qps: options.etcdQps, maxTxnOps: options.maxTxnOps, maxRequestBytes: options.maxRequestBytes },
});
const status = await startStatusServer({
  registry,
  host: options.metricsHost,
  port: options.metricsPort,
  // A standby is ready too: it is doing its job, which is to wait.
  ready: () => !operator.isLeader || operator.isSynced,
  routes: { '/status': () => operator.status() },
});
log.info({ identity: operator.identity, metrics: `${status.url}/metrics`, kube: apiServerOrigin(kube).href, etcd: etcdConfig.describe }, 'operator starting');
operator.start();

let stopping = false;
const shutdown = async (signal: string) => {
  if (stopping) return;
  stopping = true;
  const graceMs = options.shutdownGrace * 1000;
  log.info({ signal, graceSeconds: options.shutdownGrace }, 'shutting down: resigning leadership');
  // The last resort: nothing (a hung socket close, a library waiting on etcd) may keep the process past its grace.
  setTimeout(() => {
    log.error({ graceSeconds: options.shutdownGrace }, 'shutdown: still not done after the grace period; exiting anyway');
    exit(1);
  }, graceMs + 2_000).unref();
  await operator.stop(graceMs);
  await Promise.race([status.close(), new Promise((resolve) => setTimeout(resolve, 1_000).unref())]);
  traffic.close();
  receipts?.end();
  etcd.close();
  log.info('stopped');
  exit(0);
};
/** Exits once the asynchronous log destination has written what it holds (what was abandoned must be seen). */
function exit(code: number): void {
  log.flush(() => process.exit(code));
  setTimeout(() => process.exit(code), 1_000).unref();
}
process.on('SIGINT', () => void shutdown('SIGINT'));
process.on('SIGTERM', () => void shutdown('SIGTERM'));
