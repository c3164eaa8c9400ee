/**
 * Where the aggregator learns which nodes exist: the SlimNode records under keySchema().prefix('nodes') (written by
 * the operator), plus the agents' health registrations under prefix('health') for the health endpoint's address.
 *
 * This is a small adapter over etcd3's own watcher; when @sluice/kvstore exports its resumable watcher, an
 * implementation of NodeSource over it can replace this one without touching the aggregator.
 */
import { Etcd3, type IKeyValue, type Watcher } from 'etcd3';
import { healthRegistrationSchema, type HealthRegistration } from '@sluice/health-api';
import { keySchema, type KeySchema } from '@sluice/kvstore';
import { createLogger, RepeatSuppressor, type Logger } from '@sluice/log';
import { decodeSlim, type SlimNode } from '@sluice/slim';
import type { NodeInfo } from './aggregator.ts';

export interface NodeSource {
  /** Loads the current nodes, calls onChange with them, then again (debounced) on every change. */
  start(onChange: (nodes: NodeInfo[]) => void): Promise<void>;
  stop(): Promise<void>;
}

/** The view of one node: its record and registration combined (IPv4 InternalIP first, the way the probers pick). */
export function nodeInfo(node: SlimNode, registration: HealthRegistration | undefined): NodeInfo {
  const internal = node.addresses.filter((a) => a.type === 'InternalIP').map((a) => a.ip);
  const hostIP = internal.find((ip) => !ip.includes(':')) ?? internal[0] ?? node.addresses[0]?.ip ?? '';
  return { name: node.name, hostIP, endpointIP: registration?.endpointIP ?? node.healthIPs[0] ?? '' };
}

export interface EtcdNodeSourceOptions {
  endpoints: string[];
  root?: string;
  debounceMs?: number;
  logger?: Logger;
  /** TLS to etcd, as etcd3 takes it. */
  credentials?: { rootCertificate: Buffer; privateKey?: Buffer; certChain?: Buffer };
}

export class EtcdNodeSource implements NodeSource {
  private readonly client: Etcd3;
  private readonly keys: KeySchema;
  private readonly log: Logger;
  private readonly badRecords = new RepeatSuppressor(60_000);
  private readonly nodes = new Map<string, SlimNode>();
  private readonly registrations = new Map<string, HealthRegistration>();
  private watchers: Watcher[] = [];
  private timer: NodeJS.Timeout | undefined;
  private onChange: (nodes: NodeInfo[]) => void = () => {};

  constructor(private readonly options: EtcdNodeSourceOptions) {
    this.client = new Etcd3({ hosts: options.endpoints, credentials: options.credentials });
    this.keys = keySchema(options.root);
    this.log = options.logger ?? createLogger({ component: 'health-nodes' });
  }

  async start(onChange: (nodes: NodeInfo[]) => void): Promise<void> {
    this.onChange = onChange;
    for (const collection of ['nodes', 'health'] as const) {
      const prefix = this.keys.prefix(collection);
      const response = await this.client.getAll().prefix(prefix).exec();
      for (const kv of response.kvs) this.apply(collection, kv, false);
      const watcher = await this.client.watch().prefix(prefix).startRevision(String(Number(response.header.revision) + 1)).create();
      watcher.on('put', (kv) => this.apply(collection, kv, false));
      watcher.on('delete', (kv) => this.apply(collection, kv, true));
      watcher.on('error', (err) => this.log.warn({ err: (err as Error).message, collection }, 'etcd watch failed; etcd3 retries'));
      this.watchers.push(watcher);
    }
    this.emit();
  }

  private apply(collection: 'nodes' | 'health', kv: IKeyValue, deleted: boolean): void {
    const key = kv.key.toString();
    const name = this.keys.parse(collection, key)?.join('/');
    if (!name) return;
    const map: Map<string, unknown> = collection === 'nodes' ? this.nodes : this.registrations;
    if (deleted) {
      map.delete(name);
    } else {
      try {
        if (collection === 'nodes') this.nodes.set(name, decodeSlim('node', kv.value));
        else this.registrations.set(name, healthRegistrationSchema.parse(JSON.parse(kv.value.toString())));
      } catch (err) {
        this.badRecords.warn(this.log, key, { key, err: (err as Error).message }, 'ignoring a record that does not validate');
        return;
      }
    }
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.emit(), this.options.debounceMs ?? 100);
  }

  private emit(): void {
    clearTimeout(this.timer);
    this.onChange([...this.nodes.values()].map((node) => nodeInfo(node, this.registrations.get(node.name))));
  }

  async stop(): Promise<void> {
    clearTimeout(this.timer);
    await Promise.all(this.watchers.map((w) => w.cancel()));
    this.client.close();
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
