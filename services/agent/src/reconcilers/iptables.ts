/**
 * iptables masquerading as a reconciler target: Sluice's chain SLUICE_POST_nat in the nat table of the node's
 * namespace and the one POSTROUTING rule that jumps to it (tables/masquerade.ts says which rules).
 *
 * Ownership: we only ever write our chain and our feeder rule (found by its comment); other rules of nat
 * POSTROUTING — Docker's, an admin's — are left alone. Writes go through `iptables-restore --noflush`, where
 * declaring our chain flushes and refills it in one transaction, so a packet never sees a half-written chain. The
 * chain is small (one rule per node), so every write renders the whole of it from the desired table: order matters
 * (returns before the masquerade) and the kernel cannot insert by key anyway.
 *
 * With no rule desired (mode off or bpf, or no podCIDR yet) the feeder rule is deleted and the chain removed — but
 * leaving iptables mode, only once netfilter's conntrack holds no flow it masqueraded from our podCIDRs any more
 * (polled from /proc/net/nf_conntrack in the namespace): its rules keep conntrack alive for those flows, and the
 * mark rule first in the chain keeps every flow BPF masquerades out of netfilter's hands meanwhile.
 * Drift (someone flushed our chain, deleted the feeder, added a rule to our chain) is found by `prune` comparing
 * `iptables-save -t nat` with the rendered rules, verbatim: the rules are written in the form iptables-save prints.
 */
import type { Logger } from '@sluice/log';
import type { Registry } from '@sluice/metrics';
import { run } from '@sluice/netns';
import { Reconciler, type DesiredRows, type PruneResult, type ReconcileTarget, type RowFailure } from '../reconciler.ts';
import { cidrContains, ipv4ToInt, parseV4Cidr, type V4Cidr } from '../tables/cidr.ts';
import { MASQ_CHAIN, MasqueradeTable, ruleOrder, type MasqueradeMode, type MasqueradeRule } from '../tables/masquerade.ts';

/**
 * How many of conntrack's entries (the text of /proc/net/nf_conntrack) netfilter source-NATed from one of these
 * CIDRs: the original direction's source is in them and the reply is addressed elsewhere.
 */
export function masqueradedFlows(conntrack: string, ownCidrs: readonly string[]): number {
  const cidrs = ownCidrs.map(parseV4Cidr).filter((c): c is V4Cidr => c !== undefined);
  let n = 0;
  for (const line of conntrack.split('\n')) {
    const src = [...line.matchAll(/ src=(\S+)/g)].map((m) => m[1]);
    const dst = [...line.matchAll(/ dst=(\S+)/g)].map((m) => m[1]);
    if (src.length < 2 || dst.length < 2) continue;
    const orig = ipv4ToInt(src[0]!);
    if (orig !== undefined && dst[1] !== src[0] && cidrs.some((c) => cidrContains(c, orig))) n++;
  }
  return n;
}

export interface IptablesTargetOptions {
  /** The node's network namespace (under /run/netns), or undefined for the current one. */
  netns?: string;
  /** The desired table: every write renders the whole chain from it. */
  desired: DesiredRows<MasqueradeRule>;
}

interface NatState {
  /** Our chain exists. */
  chain: boolean;
  /** Its rules, in order (text after `-A SLUICE_POST_nat `). */
  rules: string[];
  /** POSTROUTING rules that jump to our chain (text after `-A POSTROUTING `). */
  feeders: string[];
}

export class IptablesMasqueradeTarget implements ReconcileTarget<MasqueradeRule> {
  readonly name = 'iptables-masquerade';

  constructor(private readonly options: IptablesTargetOptions) {}

  private cmd(tool: string, args: string[], input?: string) {
    const [c, a] = this.options.netns ? ['ip', ['netns', 'exec', this.options.netns, tool, ...args]] : [tool, args];
    return run(c, a, { timeoutMs: 30_000, ...(input !== undefined ? { input } : {}) });
  }

  async state(): Promise<NatState> {
    const r = await this.cmd('iptables-save', ['-t', 'nat']);
    if (r.code !== 0) throw new Error(`iptables-save -t nat: ${r.stderr.trim() || `exit ${r.code}`}`);
    const state: NatState = { chain: false, rules: [], feeders: [] };
    for (const line of r.stdout.split('\n')) {
      if (line.startsWith(`:${MASQ_CHAIN} `)) state.chain = true;
      else if (line.startsWith(`-A ${MASQ_CHAIN} `)) state.rules.push(line.slice(`-A ${MASQ_CHAIN} `.length));
      else if (line.startsWith('-A POSTROUTING ') && line.endsWith(`-j ${MASQ_CHAIN}`)) state.feeders.push(line.slice('-A POSTROUTING '.length));
    }
    return state;
  }

  private wanted(): { rules: string[]; feeder: string | undefined } {
    const rows = [...this.options.desired.entries()];
    const rules = rows.filter(([, r]) => r.chain === MASQ_CHAIN).sort(([a], [b]) => ruleOrder(a, b)).map(([, r]) => r.rule);
    return { rules, feeder: rows.find(([, r]) => r.chain === 'POSTROUTING')?.[1].rule };
  }

  /** Makes the nat table hold exactly the desired rules of ours (one iptables-restore transaction). */
  private async sync(): Promise<void> {
    const have = await this.state();
    const want = this.wanted();
    const lines = ['*nat'];
    if (want.rules.length || want.feeder) {
      lines.push(`:${MASQ_CHAIN} - [0:0]`, ...want.rules.map((r) => `-A ${MASQ_CHAIN} ${r}`));
      // Exactly one feeder, ours, appended to POSTROUTING (after whatever the node already does there).
      const ours = have.feeders.filter((f) => f === want.feeder);
      for (const f of have.feeders) if (f !== want.feeder) lines.push(`-D POSTROUTING ${f}`);
      for (let i = 1; i < ours.length; i++) lines.push(`-D POSTROUTING ${want.feeder}`);
      if (want.feeder && !ours.length) lines.push(`-A POSTROUTING ${want.feeder}`);
    } else {
      if (!have.chain && !have.feeders.length) return;
      for (const f of have.feeders) lines.push(`-D POSTROUTING ${f}`);
      if (have.chain) lines.push(`:${MASQ_CHAIN} - [0:0]`, `-X ${MASQ_CHAIN}`);
    }
    lines.push('COMMIT', '');
    const r = await this.cmd('iptables-restore', ['-w', '5', '--noflush'], lines.join('\n'));
    if (r.code !== 0) throw new Error(`iptables-restore --noflush: ${r.stderr.trim() || `exit ${r.code}`}`);
  }

  async update(): Promise<RowFailure[]> {
    await this.sync();
    return [];
  }

  async delete(): Promise<RowFailure[]> {
    await this.sync();
    return [];
  }

  async prune(desired: DesiredRows<MasqueradeRule>): Promise<PruneResult> {
    const have = await this.state();
    const rules = new Set(have.rules);
    const outOfDate: string[] = [];
    for (const [key, row] of desired.entries()) {
      const present = row.chain === 'POSTROUTING' ? have.feeders.includes(row.rule) : rules.has(row.rule);
      if (!present) outOfDate.push(key);
    }
    const want = this.wanted();
    const extra = have.rules.filter((r) => !want.rules.includes(r));
    const strayFeeders = have.feeders.filter((f) => f !== want.feeder || have.feeders.indexOf(f) !== have.feeders.lastIndexOf(f));
    const stale = !want.feeder && !want.rules.length && have.chain;
    const reordered = !outOfDate.length && !extra.length && have.rules.join('\n') !== want.rules.join('\n');
    const pruned = [...extra.map((r) => /--comment "sluice:([^"]+)"/.exec(r)?.[1] ?? `foreign:${r}`), ...strayFeeders.map(() => 'stray-feeder')];
    if (stale && !pruned.length) pruned.push('chain');
    if (pruned.length || reordered) {
      try {
        await this.sync();
      } catch (err) {
        return { outOfDate, pruned: [], failures: pruned.map((key) => ({ key, error: err as Error })) };
      }
      if (reordered) pruned.push('order');
    }
    return { outOfDate, pruned, failures: [] };
  }
}

export interface IptablesMasqueradeOptions {
  netns?: string;
  clusterCidr: string;
  /** The node facts the rules derive from (AgentCore.nodeAddresses). */
  nodes: () => { nodeIps: string[]; ownCidrs: string[] };
  mode: MasqueradeMode;
  log: Logger;
  registry?: Registry;
  refreshIntervalMs?: number;
  /** ip-masq-agent's nonMasqueradeCIDRs (returned before the masquerade); read at each pass, they change live. */
  nonMasqueradeCidrs?: () => readonly string[];
  /** While draining (see above), how often conntrack is read again. Default 5 s. */
  drainIntervalMs?: number;
  /** conntrack's table of the namespace; default: /proc/net/nf_conntrack read in it ('' when there is none). */
  readConntrack?: () => Promise<string>;
}

export interface IptablesMasquerade {
  reconciler: Reconciler<MasqueradeRule>;
  /** The mode changed (node config): rules appear or go in the next pass; resolves once it ran. */
  setMode(mode: MasqueradeMode): Promise<void>;
  /** The nodes changed: re-derive the rules (coalesced to one pass per macrotask). */
  nodesChanged(): void;
  readonly mode: MasqueradeMode;
  /** Outside iptables mode, the rules are still in place for flows netfilter masqueraded. */
  readonly draining: boolean;
  start(): Promise<void>;
  stop(): Promise<void>;
}

function procConntrack(netns: string | undefined): () => Promise<string> {
  return async () => {
    const [c, a] = netns ? ['ip', ['netns', 'exec', netns, 'cat', '/proc/net/nf_conntrack']] : ['cat', ['/proc/net/nf_conntrack']];
    const r = await run(c, a, { timeoutMs: 30_000 });
    if (r.code === 0) return r.stdout;
    if (/No such file/.test(r.stderr)) return ''; // conntrack not loaded: it tracks nothing
    throw new Error(`reading /proc/net/nf_conntrack: ${r.stderr.trim() || `exit ${r.code}`}`);
  };
}

/** The iptables masquerade table and its reconciler, started once the core has synced (its nodes are known). */
export function iptablesMasquerade(options: IptablesMasqueradeOptions): IptablesMasquerade {
  let mode = options.mode;
  let draining = false;
  let drainTimer: NodeJS.Timeout | undefined;
  let stopped = false;
  let readFailed = false;
  const readConntrack = options.readConntrack ?? procConntrack(options.netns);
  const table = new MasqueradeTable(() => ({ mode, clusterCidr: options.clusterCidr, draining, nonMasqueradeCidrs: options.nonMasqueradeCidrs?.() ?? [], ...options.nodes() }));
  const reconciler = new Reconciler<MasqueradeRule>({
    target: new IptablesMasqueradeTarget({ netns: options.netns, desired: table }),
    desired: table,
    log: options.log,
    registry: options.registry,
    refreshIntervalMs: options.refreshIntervalMs ?? 60_000,
    batchMs: 0,
    // Passes see the inputs as they are now; what moved since the last refresh is marked for the next pass.
    beforePass: () => {
      for (const key of table.refresh()) reconciler.changed(key);
    },
  });
  let queued = false;
  const refresh = () => {
    for (const key of table.refresh()) reconciler.changed(key);
  };
  /** Outside iptables mode: are netfilter's masqueraded flows still there? Rules go only once they are not. */
  const checkDrain = async (): Promise<void> => {
    clearTimeout(drainTimer);
    drainTimer = undefined;
    if (stopped) return;
    let next = false;
    if (mode !== 'iptables') {
      try {
        next = masqueradedFlows(await readConntrack(), options.nodes().ownCidrs) > 0;
        readFailed = false;
      } catch (err) {
        // Unknown: keep what we have (rules that stay a while longer are harmless, removed ones reset flows).
        if (!readFailed) options.log.warn({ error: (err as Error).message }, 'cannot read conntrack; iptables masquerade rules kept until it can be read');
        readFailed = true;
        next = draining;
      }
    }
    if (next !== draining) {
      draining = next;
      if (draining) options.log.info({ mode }, 'netfilter still translates flows it masqueraded: its masquerade rules stay until those flows end');
      else if (mode !== 'iptables') options.log.info({ mode }, 'the flows netfilter masqueraded have ended: its masquerade rules removed');
      if (reconciler.isStarted) {
        refresh();
        await reconciler.flush();
      }
    }
    if (draining && !stopped) drainTimer = setTimeout(() => void checkDrain().catch(() => undefined), options.drainIntervalMs ?? 5000).unref();
  };
  return {
    reconciler,
    get mode() {
      return mode;
    },
    get draining() {
      return draining;
    },
    async setMode(next) {
      if (next === mode) return;
      // Leaving iptables: its rules stay (draining) until conntrack says its flows have ended.
      if (mode === 'iptables') draining = true;
      mode = next;
      refresh();
      await reconciler.flush();
      await checkDrain();
    },
    nodesChanged() {
      if (queued || !reconciler.isStarted) return;
      queued = true;
      setImmediate(() => {
        queued = false;
        refresh();
      });
    },
    async start() {
      // A restart into another mode: flows an earlier iptables run masqueraded keep their rules too.
      await checkDrain();
      table.refresh();
      await reconciler.start();
    },
    async stop() {
      stopped = true;
      clearTimeout(drainTimer);
      await reconciler.stop();
    },
  };
}
