/**
 * Cluster health from this node (issue 7): the agent runs @sluice/prober's Prober for its node and reports to the
 * health service over ReportProbes.
 *
 * Peers: every node record in etcd — the same set the health service counts, so that both compute the same fanout
 * and quorum — with its agent's health record (HealthEndpointRecord) when there is one: a node whose agent is gone
 * is still probed over ICMP (host and health endpoint), so that the cluster sees "agent not running" or unreachable
 * instead of losing the node. A separate lightweight watch of those two prefixes (AgentCore keeps no SlimNode
 * records and no health records, and the prober needs both).
 *
 * Where probes come from: the node's network namespace, like the pods' traffic. ICMP runs `ping` under
 * `nsenter --net=/run/netns/<ns>`; HTTP goes through the health helper already living in that namespace
 * (health-listener.ts). Without a netns (a real node) both run in the agent's own namespace.
 */
import { clientCredentials, createHealthClient, type TlsFiles } from '@sluice/health-api';
import { decodeRecord, healthEndpointRecord, watchPrefix, type Etcd3, type HealthEndpointRecord, type KeySchema, type PrefixWatch } from '@sluice/kvstore';
import type { Logger } from '@sluice/log';
import { healthServiceSink, peerOf, ping, Prober, type Peer, type PlanOptions } from '@sluice/prober';
import { decodeSlim, type SlimNode } from '@sluice/slim';
import type { HealthListener } from './health-listener.ts';

export interface HealthProbingOptions {
  node: string;
  client: Etcd3;
  keys: KeySchema;
  /** host:port of the health service. */
  healthService: string;
  tls?: TlsFiles;
  /** TLS server name to expect when it differs from the host in healthService. */
  tlsServerName?: string;
  netns?: string;
  /** The helper in the node namespace that sends HTTP probes. */
  helper: HealthListener;
  plan?: PlanOptions;
  clusterSize?: number;
  log: Logger;
}

export interface HealthProbing {
  prober: Prober;
  /** The current peers (members of the health view, this node included). */
  members(): Peer[];
  stop(): Promise<void>;
}

export function startHealthProbing(options: HealthProbingOptions): HealthProbing {
  const nodes = new Map<string, SlimNode>();
  const records = new Map<string, HealthEndpointRecord>();
  const follow = <T>(collection: 'nodes' | 'health', map: Map<string, T>, decode: (bytes: Buffer) => T): PrefixWatch =>
    watchPrefix<T>(options.client, options.keys.prefix(collection), {
      name: `prober-${collection}`,
      log: options.log,
      clusterSize: options.clusterSize,
      decode: (_key, bytes) => decode(bytes),
      onEvent: (event) => {
        const name = event.type === 'listDone' ? undefined : options.keys.parse(collection, event.key)?.join('/');
        if (name === undefined) return;
        if (event.type === 'upsert') map.set(name, event.value);
        else map.delete(name);
      },
    });
  const watches = [
    follow('nodes', nodes, (bytes) => decodeSlim('node', bytes)),
    follow('health', records, (bytes) => decodeRecord(healthEndpointRecord, 'health endpoint', bytes)),
  ];
  const members = (): Peer[] => {
    const out: Peer[] = [];
    for (const [name, node] of nodes) {
      const peer = peerOf(node, records.get(name));
      if (peer) out.push(peer);
    }
    return out;
  };
  const client = createHealthClient(options.healthService, {
    credentials: clientCredentials(options.tls),
    ...(options.tlsServerName ? { channelOptions: { 'grpc.ssl_target_name_override': options.tlsServerName } } : {}),
  });
  const sink = healthServiceSink(client);
  const prober = new Prober({
    ...options.plan,
    node: options.node,
    peers: members,
    sink,
    icmp: (ip, timeoutMs) => ping(ip, { timeoutMs, ...(options.netns ? { netns: options.netns } : {}) }),
    http: (ip, port, timeoutMs) => options.helper.httpProbe(ip, port, timeoutMs),
    logger: options.log,
  });
  prober.start();
  options.log.info({ healthService: options.healthService, tls: !!(options.tls?.ca || options.tls?.cert) }, 'probing peers for cluster health');
  return {
    prober,
    members,
    async stop() {
      // The last flush goes to a service that may be gone: it must not hold up the agent's shutdown.
      await Promise.race([prober.stop(), new Promise((resolve) => setTimeout(resolve, 2000).unref())]);
      sink.close();
      client.close();
      await Promise.all(watches.map((w) => w.stop()));
    },
  };
}
