/**
 * Per-node configuration: SluiceNodeConfigs + node labels → each node's effective configuration in etcd
 * (keys.effectiveNodeConfig), which the node's agent watches and applies live. Like LB IPAM (../lb-ipam/), every
 * instance follows the objects and only the leader writes: the records, through a fenced KvWriter (unchanged values
 * are not rewritten; a term's first pass sweeps what a previous leader left that no node needs now), and each
 * SluiceNodeConfig's status — a `sluice.io/valid` condition naming every unknown key and bad value, and
 * `sluice.io/selected-nodes` with the nodes it selects. The rules are in resolve.ts.
 */
import { CustomObjectsApi, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { RECORD_VERSION } from '@sluice/kvstore';
import { Counter } from '@sluice/metrics';
import { ObjectCache, type Obj } from '../lb-ipam/informer.ts';
import { LeaderGatedLoop, type ControllerOptions } from '../leader-gated.ts';
import { effectiveRecord, nodeConfigInput, resolveNodeConfigs, type NodeConfigReport, type Resolution } from './resolve.ts';

export const NODE_CONFIGS_PATH = '/apis/sluice.io/v1alpha1/sluicenodeconfigs';
const NODES_PATH = '/api/v1/nodes';
export const VALID_CONDITION = 'sluice.io/valid';
export const SELECTED_CONDITION = 'sluice.io/selected-nodes';

const MERGE_PATCH = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
type Any = Record<string, any>;

export interface NodeConfigOptions extends ControllerOptions {
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
  private readonly statusWrites: Counter<'result'>;
  private readonly loop: LeaderGatedLoop;
  /** Nodes whose configuration has been resolved (each is logged when it first is). */
  private resolved = new Set<string>();

  constructor(private readonly options: NodeConfigOptions) {
    this.loop = new LeaderGatedLoop({ ...options, name: 'node config', writerSubsystem: 'nodeconfig-writer', pass: () => this.pass() });
    const onChange = () => this.loop.schedule();
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
    this.loop.start();
  }

  async stop(): Promise<void> {
    await Promise.all([this.configs.stop(), this.nodes.stop(), this.loop.stop()]);
  }

  /** The resolution the caches give now (status, tests). */
  resolution(): Resolution {
    return resolveNodeConfigs(this.configs.list().map(nodeConfigInput), this.nodes.list().map((o) => ({ name: String(o.metadata?.name ?? ''), labels: labelsOf(o) })));
  }

  private async pass(): Promise<void> {
    const { keys, log } = this.options;
    // A partial view would delete the records of nodes not listed yet.
    if (!this.loop.isLeader || !this.configs.hasSynced || !this.nodes.hasSynced) return;
    const resolution = this.resolution();
    const records = new Map([...resolution.nodes].map(([node, config]) => [keys.effectiveNodeConfig(node), JSON.stringify(effectiveRecord(config, RECORD_VERSION))]));
    await this.loop.syncRecords(keys.prefix('effectiveconfig'), records);
    for (const [node, config] of resolution.nodes) if (!this.resolved.has(node)) log.info({ node, sources: config.sources }, 'node configuration resolved');
    this.resolved = new Set(resolution.nodes.keys());
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
      if (!this.loop.isLeader) return;
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
