/**
 * The node's datapath mode — masquerading and host routing — applied live when the operator's per-node record
 * (keys.effectiveNodeConfig, resolved from SluiceNodeConfigs) changes, without a restart.
 *
 * Layers, lowest first: the agent's flags, the admin's nodeconfig/ record (both read at start), the operator's
 * record (read at start too, so a restart gives what a live switch gave, then watched).
 *
 * A switch writes the new path before it removes the old one, so no packet leaves with neither:
 * - into iptables masquerading: SLUICE_POST_nat is written first, then BPF host routing and the BPF SNAT go off
 *   (legacy host routing sends pod traffic through netfilter, where the rules now are);
 * - out of it: the BPF SNAT (and BPF host routing, if its prerequisites now hold) go on first, then the chain goes.
 * Established flows keep the translation they started with, whichever way the switch goes: netfilter's rules stay
 * after leaving iptables until conntrack holds none of the flows it masqueraded (without a rule needing it, the
 * kernel stops tracking and those flows would leave untranslated and be reset); the BPF path hands what it does not
 * know to the stack and never maps a packet netfilter already translated; BPF's NAT table keeps translating its own
 * flows after the switch to iptables, and their packets carry a mark netfilter's chain returns on.
 *
 * Routing (native ↔ tunnel) switches live too. Every node has its VXLAN device and sl_tunnel in either mode, and
 * every node takes both plain and encapsulated packets for its pods (mixed clusters), so each step leaves a working
 * path; what changes is the config's tunnel flag (BPF host routing's choice), the kernel routes to the other
 * nodes' podCIDRs (the legacy path and what BPF hands to the stack) and the MTU given to new pods:
 * - into tunnel: vx0 gets the pods' new MTU, then the flag (BPF sends through vx0 with a tunnel key, no kernel
 *   route needed), then the routes move to vx0;
 * - into native: the routes move to the uplink first (bpf_redirect_neigh looks them up), then the flag goes.
 * Pods made in native mode keep the uplink's MTU; their packets too big for the tunnel are left to the stack by
 * BPF host routing (bpf_check_mtu against vx0), whose route via vx0 answers ICMP "fragmentation needed", so their
 * path MTU narrows as it does under legacy host routing.
 */
import { decideHostRouting, type Datapath, type HostRoutingDecision, type KernelFeatures } from '@sluice/datapath';
import { decodeRecord, nodeConfigRecord, watchPrefix, type Etcd3, type KeySchema, type NodeConfigRecord, type PrefixWatch, type RoutingMode } from '@sluice/kvstore';
import type { Logger } from '@sluice/log';
import type { Registry } from '@sluice/metrics';
import { withPrerequisites, type HostRoutingRequest } from '../tables/host-routing.ts';
import { masqueradingText, parseMasqueradeMode, type MasqueradeMode } from '../tables/masquerade.ts';
import type { IptablesMasquerade } from './iptables.ts';
import { registerDatapathCounters } from './datapath-counters.ts';
import { startSnatGc } from './snat-gc.ts';

export interface DatapathModeOptions {
  /** With its maps, the BPF masquerade's NAT table is garbage-collected while the mode is followed. */
  datapath: Pick<Datapath, 'setConfig' | 'getConfig'> & Partial<Pick<Datapath, 'maps' | 'readCounters'>>;
  masquerade: IptablesMasquerade;
  features: KernelFeatures;
  /** Flags overlaid with the admin's nodeconfig/ record: what applies where the operator's record says nothing. */
  base: { masquerade: MasqueradeMode; hostRouting: HostRoutingRequest; routing: RoutingMode };
  /** What runs now (decided at start). */
  current: { masquerade: MasqueradeMode; hostRouting: HostRoutingDecision; routing: RoutingMode };
  uplink: string;
  clusterCidr: string;
  /** nonMasqueradeCIDRs are configured now (status: `BPF (ip-masq-agent)`); they change live. */
  ipMasqAgent?: () => boolean;
  /** Each record as it is applied (undefined: none), for the settings that are not a mode (nonMasqueradeCIDRs, MTU). */
  onRecord?: (record: NodeConfigRecord | undefined) => void;
  log: Logger;
  /** After a switch (status publishing). */
  onChange?: () => void;
  /** The kernel routes to other nodes' podCIDRs, switched with the routing mode (absent: routing is not switched). */
  routes?: { setMode(mode: RoutingMode): void; resync(): Promise<void> };
  /** Gives the VXLAN device the MTU of the pods of that routing mode (mtu.ts), before the tunnel carries them. */
  alignTunnel?: (routing: RoutingMode) => Promise<void>;
}

export class DatapathMode {
  private masqueradeMode: MasqueradeMode;
  private decision: HostRoutingDecision;
  private routingMode: RoutingMode;
  private queue: Promise<void> = Promise.resolve();
  private routingWarned = '';
  private watch: PrefixWatch | undefined;
  private snatGc: { stop(): void } | undefined;

  constructor(private readonly options: DatapathModeOptions) {
    this.masqueradeMode = options.current.masquerade;
    this.decision = options.current.hostRouting;
    this.routingMode = options.current.routing;
  }

  get routing(): RoutingMode {
    return this.routingMode;
  }

  get masquerade(): MasqueradeMode {
    return this.masqueradeMode;
  }

  get hostRouting(): HostRoutingDecision {
    return this.decision;
  }

  get masquerading(): string {
    return masqueradingText(this.masqueradeMode, this.options.uplink, this.options.clusterCidr, this.options.ipMasqAgent?.());
  }

  /** Applies the operator's record (undefined: none, back to the base); switches run one at a time, in order. */
  apply(record: NodeConfigRecord | undefined): Promise<void> {
    this.queue = this.queue.then(() => {
      this.options.onRecord?.(record);
      return this.switchTo(record);
    }).catch((err: unknown) => this.options.log.error({ error: (err as Error).message }, 'switching the datapath mode failed'));
    return this.queue;
  }

  private async switchTo(record: NodeConfigRecord | undefined): Promise<void> {
    const { base, datapath, masquerade, log, routes } = this.options;
    const routing = routes ? (record?.routing ?? base.routing) : this.routingMode;
    if (!routes && record?.routing && record.routing !== this.routingMode && this.routingWarned !== record.routing) {
      this.routingWarned = record.routing;
      log.warn({ routing: record.routing, running: this.routingMode }, 'the node configuration asks for another routing mode; routing changes need an agent restart');
    }
    const mode = parseMasqueradeMode(record?.masquerade ?? base.masquerade) ?? 'off';
    const requested = record?.hostRouting ?? base.hostRouting;
    const decision = withPrerequisites(decideHostRouting(this.options.features, requested), requested, { masquerade: mode, bpfServiceLb: true });
    if (routing !== this.routingMode) await this.switchRouting(routing);
    if (mode === this.masqueradeMode && decision.mode === this.decision.mode && decision.reason === this.decision.reason) return;
    const from = `${this.masqueradeMode}/${this.decision.mode}`;
    const config = datapath.getConfig();
    if (!config) throw new Error('the datapath has no configuration to change');
    const setDatapath = () => datapath.setConfig({ ...config, masquerade: mode === 'bpf', bpfHostRouting: decision.mode === 'BPF' });
    if (mode === 'iptables') {
      await masquerade.setMode(mode);
      setDatapath();
    } else {
      setDatapath();
      await masquerade.setMode(mode);
    }
    const reasonChanged = decision.reason !== this.decision.reason;
    this.masqueradeMode = mode;
    this.decision = decision;
    log.info({ from, to: `${mode}/${decision.mode}` }, `datapath mode switched live: Masquerading: ${this.masquerading}, Host Routing: ${decision.mode}`);
    if (decision.reason && reasonChanged) log.warn(decision.reason);
    this.options.onChange?.();
  }

  /** Native ↔ tunnel, the new path in place before the old one goes (see the top of this file). */
  private async switchRouting(routing: RoutingMode): Promise<void> {
    const { datapath, routes, alignTunnel, log } = this.options;
    const config = datapath.getConfig();
    if (!config || !routes) throw new Error('the datapath has no configuration to change');
    const setFlag = () => datapath.setConfig({ ...(datapath.getConfig() ?? config), tunnel: routing === 'tunnel' });
    if (routing === 'tunnel') {
      if (!config.tunnelIfindex) throw new Error('no VXLAN device: tunnel routing is not possible on this node');
      await alignTunnel?.(routing);
      setFlag();
      routes.setMode(routing);
      await routes.resync();
    } else {
      routes.setMode(routing);
      await routes.resync();
      setFlag();
    }
    const from = this.routingMode;
    this.routingMode = routing;
    log.info({ from, to: routing }, `routing switched live: Routing: ${routing === 'tunnel' ? 'Tunnel [vxlan]' : 'Network: Native'}`);
    this.options.onChange?.();
  }

  /** Follows the operator's record for this node. */
  follow(options: { client: Etcd3; keys: KeySchema; node: string; registry?: Registry; clusterSize?: () => number; snatGcIntervalMs?: number }): void {
    const key = options.keys.effectiveNodeConfig(options.node);
    // In every mode: BPF's mappings outlive a switch away from BPF masquerading, until their flows end.
    const maps = this.options.datapath.maps;
    if (maps && !this.snatGc) this.snatGc = startSnatGc({ maps, log: this.options.log, registry: options.registry, intervalMs: options.snatGcIntervalMs });
    // The programs' counters, the masquerade's drops among them, as metrics.
    const { readCounters } = this.options.datapath;
    if (options.registry && readCounters) registerDatapathCounters(options.registry, { readCounters });
    let listed: NodeConfigRecord | undefined;
    let done = false;
    this.watch = watchPrefix<NodeConfigRecord>(options.client, key, {
      name: 'effectiveconfig',
      log: this.options.log,
      registry: options.registry,
      clusterSize: options.clusterSize ?? (() => 1),
      decode: (_key, bytes) => decodeRecord(nodeConfigRecord, 'effective node config', bytes),
      onEvent: (e) => {
        if (e.type === 'listDone') {
          done = true;
          void this.apply(listed);
          return;
        }
        if (e.key !== key) return; // the prefix also covers nodes whose name starts with ours
        const value = e.type === 'upsert' ? e.value : undefined;
        if (done) void this.apply(value);
        else listed = value;
      },
    });
    this.watch.synced.catch(() => undefined); // rejects when stopped before its list: nothing to do then
  }

  async stop(): Promise<void> {
    this.snatGc?.stop();
    await this.watch?.stop();
    await this.queue;
  }
}

/** The admin's record and the operator's, read once at start. */
export async function readStartConfig(client: Etcd3, keys: KeySchema, node: string, log: Logger): Promise<{ admin: NodeConfigRecord; effective: NodeConfigRecord }> {
  const read = async (key: string, what: string): Promise<NodeConfigRecord> => {
    try {
      const text = await Promise.race([
        client.get(key).string(),
        new Promise<never>((_, reject) => setTimeout(() => reject(new Error('etcd did not answer within 3 s')), 3000).unref()),
      ]);
      return text === null ? {} : decodeRecord(nodeConfigRecord, what, text);
    } catch (err) {
      log.warn({ key, error: (err as Error).message }, `${what} not read; using the flags`);
      return {};
    }
  };
  const [admin, effective] = await Promise.all([read(keys.nodeConfig(node), 'node config'), read(keys.effectiveNodeConfig(node), 'effective node config')]);
  return { admin, effective };
}
