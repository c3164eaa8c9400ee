/**
 * Where the aggregator learns which nodes exist: the SlimNode records under keySchema().prefix('nodes') (written by
 * the operator), joined with the agents' health records under prefix('health') (HealthEndpointRecord). Both come
 * through @sluice/kvstore's resumable prefix watcher.
 *
 * Members of the health view are the node records (the operator's): a node whose agent is gone (its health record
 * went with its lease) stays a member, with `agent: false`, so that it shows as unreachable or "agent not running"
 * instead of dropping out of the view; the probers count the same set. A node record deleted is a node that left.
 */
import {
  createKvClient,
  decodeRecord,
  healthEndpointRecord,
  keySchema,
  watchPrefix,
  watchSyncMarkers,
  type Etcd3,
  type HealthEndpointRecord,
  type KvClientOptions,
  type KeySchema,
  type PrefixWatch,
  type SyncMarkers,
  type WatchEvent,
} from '@sluice/kvstore';
import { createLogger, type Logger } from '@sluice/log';
import { decodeSlim, type SlimNode } from '@sluice/slim';
import type { NodeInfo } from './aggregator.ts';

export interface NodeSource {
  /** Loads the current nodes, calls onChange with them, then again (debounced) on every change. */
  start(onChange: (nodes: NodeInfo[]) => void): Promise<void>;
  stop(): Promise<void>;
}

/** The view of one node: its record and health record combined, the way the probers pick (peerOf). */
export function nodeInfo(node: SlimNode, record: HealthEndpointRecord | undefined): NodeInfo {
  const internal = node.addresses.filter((a) => a.type === 'InternalIP').map((a) => a.ip);
  const hostIP = internal.find((ip) => !ip.includes(':')) ?? internal[0] ?? record?.nodeIP ?? node.addresses[0]?.ip ?? '';
  return { name: node.name, hostIP, endpointIP: record?.healthIP ?? node.healthIPs[0] ?? '', agent: record !== undefined };
}

export interface EtcdNodeSourceOptions {
  /** etcd client URLs, or the whole client configuration (TLS, user); or pass an existing client. */
  endpoints?: string[];
  etcd?: KvClientOptions;
  client?: Etcd3;
  root?: string;
  debounceMs?: number;
  logger?: Logger;
  /**
   * Wait for the operator's sync marker of the nodes prefix before the first node list, and never drop nodes on a
   * view without it (an empty or replaced etcd): see @sluice/kvstore sync.ts. Default true.
   */
  waitForSync?: boolean;
}

export class EtcdNodeSource implements NodeSource {
  private readonly client: Etcd3;
  private readonly ownClient: boolean;
  private readonly keys: KeySchema;
  private readonly log: Logger;
  private readonly nodes = new Map<string, SlimNode>();
  private readonly registrations = new Map<string, HealthEndpointRecord>();
  private watches: PrefixWatch[] = [];
  private markers: SyncMarkers | undefined;
  private timer: NodeJS.Timeout | undefined;
  /** Changes reach onChange only after the first complete list (start() resolved). */
  private listed = false;
  private onChange: (nodes: NodeInfo[]) => void = () => {};

  constructor(private readonly options: EtcdNodeSourceOptions) {
    if (!options.client && !options.endpoints?.length && !options.etcd) throw new Error('EtcdNodeSource needs etcd endpoints or a client');
    this.ownClient = !options.client;
    this.client = options.client ?? createKvClient(options.etcd ?? { endpoints: options.endpoints! });
    this.keys = keySchema(options.root);
    this.log = options.logger ?? createLogger({ component: 'health-nodes' });
  }

  /** Resolves once both prefixes are listed (the watches then keep going, retrying on their own). */
  async start(onChange: (nodes: NodeInfo[]) => void): Promise<void> {
    this.onChange = onChange;
    const nameOf = (collection: 'nodes' | 'health', key: string) => this.keys.parse(collection, key)?.join('/') ?? key;
    // Node records are the operator's: complete only once its sync marker says so. Health records are the agents'.
    if (this.options.waitForSync ?? true) this.markers = watchSyncMarkers(this.client, this.keys, { log: this.log, clusterSize: () => Math.max(1, this.nodes.size) });
    const follow = <T>(collection: 'nodes' | 'health', map: Map<string, T>, decode: (bytes: Buffer) => T) =>
      watchPrefix<T>(this.client, this.keys.prefix(collection), {
        name: `health-${collection}`,
        log: this.log,
        ...(collection === 'nodes' && this.markers ? { completeness: this.markers.gate('nodes') } : {}),
        decode: (_key, bytes) => decode(bytes),
        onEvent: (event: WatchEvent<T>) => {
          if (event.type === 'upsert') map.set(nameOf(collection, event.key), event.value);
          else if (event.type === 'delete') map.delete(nameOf(collection, event.key));
          else return;
          this.schedule();
        },
      });
    this.watches = [
      follow('nodes', this.nodes, (bytes) => decodeSlim('node', bytes)),
      follow('health', this.registrations, (bytes) => decodeRecord(healthEndpointRecord, 'health endpoint', bytes)),
    ];
    await Promise.all(this.watches.map((w) => w.synced));
    this.listed = true;
    this.emit();
  }

  private schedule(): void {
    if (!this.listed) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.emit(), this.options.debounceMs ?? 100);
  }

  private emit(): void {
    clearTimeout(this.timer);
    const members: NodeInfo[] = [];
    for (const node of this.nodes.values()) members.push(nodeInfo(node, this.registrations.get(node.name)));
    this.onChange(members);
  }

  async stop(): Promise<void> {
    clearTimeout(this.timer);
    await Promise.all(this.watches.map((w) => w.stop()));
    await this.markers?.stop();
    if (this.ownClient) this.client.close();
  }
}

/** A fixed node list (tests, benchmarks, or a cluster without etcd). */
export class StaticNodeSource implements NodeSource {
  constructor(private readonly nodes: NodeInfo[]) {}
  async start(onChange: (nodes: NodeInfo[]) => void): Promise<void> {
    onChange(this.nodes);
  }
  async stop(): Promise<void> {}
}
