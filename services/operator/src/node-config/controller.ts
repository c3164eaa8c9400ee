/**
 * Per-node configuration: SluiceNodeConfigs + node labels → each node's effective configuration in etcd
 * (keys.effectiveNodeConfig), which the node's agent watches and applies live. Like LB IPAM (../lb-ipam/), every
 * instance follows the objects and only the leader writes: the records, through a fenced KvWriter (unchanged values
 * are not rewritten; a term's first pass sweeps what a previous leader left that no node needs now), and each
 * SluiceNodeConfig's status — a `sluice.io/valid` condition naming every unknown key and bad value, and
 * `sluice.io/selected-nodes` with the nodes it selects. The rules are in resolve.ts.
 */
import { CustomObjectsApi, PatchStrategy, setHeaderOptions, type KubeConfig } from '@kubernetes/client-node';
import { Backoff } from '@sluice/backoff';
import { KvWriter, RECORD_VERSION, type Etcd3, type KeySchema, type LeaderElection } from '@sluice/kvstore';
import type { Logger } from '@sluice/log';
import { Counter, type Registry } from '@sluice/metrics';
import { ObjectCache, type Obj } from '../lb-ipam/informer.ts';
import { effectiveRecord, nodeConfigInput, resolveNodeConfigs, type NodeConfigReport, type Resolution } from './resolve.ts';

export const NODE_CONFIGS_PATH = '/apis/sluice.io/v1alpha1/sluicenodeconfigs';
const NODES_PATH = '/api/v1/nodes';
export const VALID_CONDITION = 'sluice.io/valid';
export const SELECTED_CONDITION = 'sluice.io/selected-nodes';

const MERGE_PATCH = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
type Any = Record<string, any>;

export interface NodeConfigOptions {
  kube: KubeConfig;
  etcd: Etcd3;
  keys: KeySchema;
  election: LeaderElection;
  log: Logger;
  registry?: Registry;
  batchMs?: number;
  /**
   * Where node names and labels come from. The operator passes its Node mirror's (one Node watch for the whole
   * process: a second one would cost every 12 KB heartbeat again); by default a watch of its own.
   */
  nodes?: (onChange: () => void) => NodeSource;
}

/** What the controller reads of the nodes: names and labels, whether the first list is done, start and stop. */
export interface NodeSource {
  readonly hasSynced: boolean;
  list(): Obj[];
  start(): void;
  stop(): Promise<void>;
}

interface Condition {
  type: string;
  status: 'True' | 'False';
  reason: string;
  message: string;
}

export function reportConditions(report: NodeConfigReport): Condition[] {
  const shown = report.nodes.slice(0, 20).join(', ') + (report.nodes.length > 20 ? `, … (${report.nodes.length - 20} more)` : '');
  return [
    report.problems.length
      ? { type: VALID_CONDITION, status: 'False', reason: 'InvalidKeys', message: `not applied: ${report.problems.join('; ')}` }
      : { type: VALID_CONDITION, status: 'True', reason: 'Valid', message: 'every key is known and valid' },
    { type: SELECTED_CONDITION, status: report.nodes.length ? 'True' : 'False', reason: report.nodes.length ? 'Selected' : 'NoNodes', message: report.nodes.length ? `${report.nodes.length} node(s): ${shown}` : 'selects no node' },
  ];
}

const labelsOf = (o: Obj): Record<string, string> => {
  const l = o.metadata?.labels;
  return typeof l === 'object' && l !== null ? Object.fromEntries(Object.entries(l).filter((e): e is [string, string] => typeof e[1] === 'string')) : {};
};

export class NodeConfigController {
  private readonly configs: ObjectCache;
  private readonly nodes: NodeSource;
  private readonly custom: CustomObjectsApi;
  private readonly backoff = new Backoff({ minMs: 500, maxMs: 30_000 });
  private readonly statusWrites: Counter<'result'>;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = false;
  private lastError = '';
  private writer: KvWriter | undefined;
  private synced = false;
  private written = new Set<string>();
  private unsubscribe: (() => void) | undefined;

  constructor(private readonly options: NodeConfigOptions) {
    const onChange = () => this.schedule();
    this.configs = new ObjectCache({ config: options.kube, path: NODE_CONFIGS_PATH, log: options.log, onChange });
    // Only a node's name and labels matter here: heartbeats are recognised undecoded, and nothing else is kept.
    this.nodes = options.nodes?.(onChange) ?? new ObjectCache({
      config: options.kube, path: NODES_PATH, log: options.log, onChange, heartbeats: true,
      trim: (o) => ({ metadata: { name: o.metadata?.name, labels: o.metadata?.labels } }),
    });
    this.custom = options.kube.makeApiClient(CustomObjectsApi);
    this.statusWrites = new Counter({ name: 'sluice_operator_nodeconfig_status_writes_total', help: 'Status PATCHes of SluiceNodeConfigs, by result', labelNames: ['result'], registers: options.registry ? [options.registry] : [] });
  }

  start(): void {
    this.configs.start();
    this.nodes.start();
    this.unsubscribe = this.options.election.onChange((leading) => {
      if (!leading) {
        this.writer?.close();
        this.writer = undefined;
        this.synced = false;
      }
      this.schedule();
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.unsubscribe?.();
    clearTimeout(this.timer);
    this.writer?.close();
    await Promise.all([this.configs.stop(), this.nodes.stop(), this.running]);
  }

  /** The resolution the caches give now (status, tests). */
  resolution(): Resolution {
    return resolveNodeConfigs(this.configs.list().map(nodeConfigInput), this.nodes.list().map((o) => ({ name: String(o.metadata?.name ?? ''), labels: labelsOf(o) })));
  }

  private schedule(delayMs = this.options.batchMs ?? 50): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.running = this.pass()
        .then(() => {
          this.backoff.reset();
          this.lastError = '';
          return undefined;
        })
        .catch((err: unknown) => {
          const message = (err as Error).message;
          if (message !== this.lastError) this.options.log.warn({ err: message }, 'node config pass failed; retrying with backoff');
          this.lastError = message;
          this.again = true;
          return this.backoff.nextDelayMs();
        })
        .then((retryMs) => {
          this.running = undefined;
          if (this.again) {
            this.again = false;
            this.schedule(retryMs);
          }
        });
    }, delayMs);
  }

  private async pass(): Promise<void> {
    const { election, etcd, keys, log, registry } = this.options;
    // A partial view would delete the records of nodes not listed yet.
    if (!election.isLeader || !this.configs.hasSynced || !this.nodes.hasSynced) return;
    const resolution = this.resolution();
    if (!this.writer) {
      this.writer = new KvWriter({ client: etcd, guard: election, registry, log: log.child({ subsystem: 'nodeconfig-writer' }) });
      this.synced = false;
    }
    const writer = this.writer;
    const encode = (node: string) => JSON.stringify(effectiveRecord(resolution.nodes.get(node)!, RECORD_VERSION));
    if (!this.synced) {
      const prefix = keys.prefix('effectiveconfig');
      await writer.beginSync(prefix);
      for (const node of resolution.nodes.keys()) writer.upsert(keys.effectiveNodeConfig(node), encode(node));
      await writer.finishSync(prefix);
      this.synced = true;
    } else {
      for (const node of resolution.nodes.keys()) writer.upsert(keys.effectiveNodeConfig(node), encode(node));
      for (const node of this.written) if (!resolution.nodes.has(node)) writer.delete(keys.effectiveNodeConfig(node));
      await writer.flush();
    }
    for (const [node, config] of resolution.nodes) if (!this.written.has(node)) log.info({ node, sources: config.sources }, 'node configuration resolved');
    this.written = new Set(resolution.nodes.keys());
    await this.writeStatus(resolution.reports);
  }

  private async writeStatus(reports: NodeConfigReport[]): Promise<void> {
    const byName = new Map(this.configs.list().map((o) => [String(o.metadata?.name ?? ''), o]));
    const failed: string[] = [];
    for (const report of reports) {
      const o = byName.get(report.name);
      if (!o) continue;
      const status = (o.status ?? {}) as Any;
      const existing: Any[] = Array.isArray(status.conditions) ? status.conditions : [];
      const generation = typeof o.metadata?.generation === 'number' ? o.metadata.generation : undefined;
      const wanted = reportConditions(report);
      const same = wanted.every((w) => existing.some((c) => c?.type === w.type && c.status === w.status && c.reason === w.reason && c.message === w.message)) && status.observedGeneration === generation;
      if (same) continue;
      const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
      const conditions = [
        ...existing.filter((c) => !wanted.some((w) => w.type === c?.type)),
        ...wanted.map((w) => {
          const old = existing.find((c) => c?.type === w.type);
          return { ...w, lastTransitionTime: old && old.status === w.status && typeof old.lastTransitionTime === 'string' ? old.lastTransitionTime : now, ...(generation !== undefined ? { observedGeneration: generation } : {}) };
        }),
      ];
      const body = { status: { ...(generation !== undefined ? { observedGeneration: generation } : {}), conditions } };
      if (!this.options.election.isLeader) return;
      try {
        await this.custom.patchClusterCustomObjectStatus({ group: 'sluice.io', version: 'v1alpha1', plural: 'sluicenodeconfigs', name: report.name, body }, MERGE_PATCH);
        this.statusWrites.inc({ result: 'ok' });
        if (report.problems.length) this.options.log.warn({ nodeConfig: report.name, problems: report.problems }, 'SluiceNodeConfig has keys that are not applied');
      } catch (err) {
        this.statusWrites.inc({ result: 'error' });
        if ((err as { code?: number }).code !== 404) failed.push(report.name);
      }
    }
    if (failed.length) throw new Error(`status not written for SluiceNodeConfig ${failed.join(', ')}`);
  }
}
