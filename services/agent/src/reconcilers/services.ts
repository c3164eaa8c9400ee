/**
 * Services → the load balancer's maps: the services table (Services and EndpointSlices watched in etcd) with one
 * reconciler whose rows are whole services and whose target is LbProgrammer (it writes a service's backends,
 * Maglev tables and frontends in the order that never exposes a half-written one). Nothing is written before both
 * watches listed; the first full pass after that is a diff against what the maps hold (after a restart: nothing),
 * then every change is one row, and the periodic full pass repairs drift.
 *
 * NodePort frontends go on every address of the node: its record's InternalIP and ExternalIP addresses (watched on its
 * own key) and the addresses of its uplink (read at start and every `addressPollMs`); a change of either rewrites the
 * NodePort services' rows.
 *
 * Connection tracking is LRU with lifetimes checked by the programs; the garbage collection here removes entries
 * past their lifetime so they do not sit in the table until the LRU evicts them.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { CT_F_HAIRPIN, CT_F_SNAT, HAIRPIN_IP, type LbTuple } from '@sluice/bpf';
import { LbProgrammer, MaglevPool, type Datapath, type LbService } from '@sluice/datapath';
import { watchPrefix, type Etcd3, type KeySchema, type PrefixWatch, type WatchEvent } from '@sluice/kvstore';
import type { Logger } from '@sluice/log';
import { Counter, type Registry } from '@sluice/metrics';
import { decodeSlim, type SlimEndpointSlice, type SlimNode, type SlimService } from '@sluice/slim';
import { Reconciler, type ReconcileTarget, type ReconcilerStatus } from '../reconciler.ts';
import { ServicesTable, type FrontendPolicy } from '../tables/services.ts';

const exec = promisify(execFile);

/**
 * Test-only fault injection: set in an agent's environment, the first N frontend writes of the services reconciler
 * after its first full pass fail as a kernel write would (LbProgrammer.injectFrontendWriteFailures), to prove the
 * retry path with real maps on a change the test makes.
 */
export const FAIL_SERVICE_WRITES_ENV = 'SLUICE_AGENT_TEST_FAIL_SERVICE_WRITES';

/** A node record's IPv4 addresses (InternalIP and ExternalIP). */
export function recordAddresses(node: Pick<SlimNode, 'addresses'>): string[] {
  return node.addresses.filter((a) => a.type === 'InternalIP' || a.type === 'ExternalIP').map((a) => a.ip).filter((ip) => !ip.includes(':'));
}

/** The global-scope IPv4 addresses of a device in a network namespace (`ip -j -4 addr show dev <device>`). */
export async function deviceAddresses(netns: string | undefined, device: string): Promise<string[]> {
  const { stdout } = await exec('ip', [...(netns ? ['-n', netns] : []), '-j', '-4', 'addr', 'show', 'dev', device], { timeout: 10_000 });
  const links = JSON.parse(stdout || '[]') as Array<{ addr_info?: Array<{ family?: string; local?: string; scope?: string }> }>;
  return links.flatMap((l) => l.addr_info ?? []).filter((a) => a.family === 'inet' && a.scope === 'global' && a.local).map((a) => a.local!);
}

export function servicesTarget(programmer: LbProgrammer): ReconcileTarget<LbService> {
  return {
    name: 'services',
    // One batch per map for the whole set of rows (a cold start programs 20,000 services in three writes).
    update: (rows) => programmer.applyManyAsync(rows),
    delete: (keys) => programmer.applyMany(keys.map((key) => [key, undefined] as const)),
    prune: (desired) => {
      const r = programmer.prune(desired.entries());
      return { outOfDate: r.outOfDate, pruned: r.removedKeys, failures: [] };
    },
  };
}

/** CLOCK_MONOTONIC seconds, the programs' clock (bpf_ktime_get_ns). */
export function monotonicSeconds(): number {
  return Number(process.hrtime.bigint() / 1_000_000_000n);
}

/** Deletes forward entries past their lifetime and the reverse entries they made. Returns how many flows went. */
export function collectConntrack(dp: Pick<Datapath, 'maps'>, now = monotonicSeconds(), nodeIp?: string): number {
  const expired: LbTuple[] = [];
  const reverse: LbTuple[] = [];
  for (const [k, v] of dp.maps.lbFwd.entries()) {
    // Seconds wrap at 2^32 in the program: compare as a signed difference, as it does.
    if (((v.expires - now) | 0) >= 0) continue;
    expired.push(k);
    const be = dp.maps.backends.lookup({ id: v.backendId });
    if (!be) continue;
    const natIp = v.flags & CT_F_HAIRPIN ? HAIRPIN_IP : v.flags & CT_F_SNAT ? nodeIp : k.clientIp;
    if (natIp) reverse.push({ clientIp: natIp, clientPort: v.natPort || k.clientPort, peerIp: be.ip, peerPort: be.port, proto: k.proto });
  }
  dp.maps.lbFwd.deleteBatch(expired);
  dp.maps.lbCt.deleteBatch(reverse);
  return expired.length;
}

export interface ServicesOptions {
  nodeName: string;
  client: Etcd3;
  keys: KeySchema;
  datapath: Pick<Datapath, 'maps'>;
  log: Logger;
  registry?: Registry;
  clusterSize?: number;
  /** This node's IP (the SNAT address of NodePort flows, for conntrack GC). */
  nodeIp?: string;
  refreshIntervalMs?: number;
  batchMs?: number;
  /** Conntrack garbage collection interval, ms (0: none). Default 30 s. */
  gcIntervalMs?: number;
  /** Which frontend addresses records may claim (none given: every address is programmed). */
  frontendPolicy?: FrontendPolicy;
  /** The node's namespace and uplink, whose addresses get NodePort frontends (none: only the record's addresses). */
  netns?: string;
  uplink?: string;
  /** How often the uplink's addresses are read again, ms. Default 5 s. */
  addressPollMs?: number;
  /** Frontend writes to fail after the first full pass (tests of the retry path); default $SLUICE_AGENT_TEST_FAIL_SERVICE_WRITES. */
  failFrontendWrites?: number;
}

export interface ServicesStatus {
  synced: boolean;
  services: number;
  endpointSlices: number;
  programmed: number;
  /** The node's addresses that have NodePort frontends (besides 0.0.0.0, the primary IP's). */
  nodePortAddresses: string[];
  reconciler: ReconcilerStatus;
}

export interface Services {
  table: ServicesTable;
  reconciler: Reconciler<LbService>;
  programmer: LbProgrammer;
  /** Resolves after both lists and the first full pass. */
  synced(): Promise<void>;
  status(): ServicesStatus;
  stop(): Promise<void>;
}

export function startServices(options: ServicesOptions): Services {
  const { log, keys } = options;
  const table = new ServicesTable(options.nodeName, options.frontendPolicy);
  const maglevPool = new MaglevPool();
  const programmer = new LbProgrammer(options.datapath, { maglevPool });
  programmer.seed();
  const failWrites = options.failFrontendWrites ?? Number(process.env[FAIL_SERVICE_WRITES_ENV] ?? 0);
  const armFaults = () => {
    if (!Number.isInteger(failWrites) || failWrites <= 0) return;
    programmer.injectFrontendWriteFailures(failWrites);
    log.warn({ writes: failWrites, env: FAIL_SERVICE_WRITES_ENV }, `test fault injection: the next ${failWrites} service frontend writes fail`);
  };
  const reconciler = new Reconciler<LbService>({
    target: servicesTarget(programmer),
    desired: table,
    // (The reconciler names itself on its lines.)
    log,
    ...(options.registry ? { registry: options.registry } : {}),
    refreshIntervalMs: options.refreshIntervalMs ?? 60_000,
    batchMs: options.batchMs ?? 10,
    revision: () => table.revision,
  });
  table.follow(reconciler);
  const gcCounter = options.registry
    ? new Counter({ name: 'sluice_agent_lb_conntrack_gc_total', help: 'Load-balancer flows removed by garbage collection after their lifetime', registers: [options.registry] })
    : undefined;

  /** One watch of a slim kind into the table: upserts by record, deletes by "namespace/name" (the key's tail). */
  const watch = <T>(collection: 'services' | 'endpointslices', decode: (bytes: Buffer) => T, upsert: (v: T, rev: number) => void, remove: (key: string, rev: number) => void): PrefixWatch => {
    const prefix = keys.prefix(collection);
    return watchPrefix<T>(options.client, prefix, {
      name: collection,
      decode: (_k, bytes) => decode(bytes),
      onEvent: (e: WatchEvent<T>) => {
        if (e.type === 'upsert') upsert(e.value, e.modRevision);
        else if (e.type === 'delete') remove(e.key.slice(prefix.length), e.modRevision);
      },
      log,
      ...(options.registry ? { registry: options.registry } : {}),
      ...(options.clusterSize ? { clusterSize: options.clusterSize } : {}),
    });
  };
  // The node's addresses: its record's and its uplink's, NodePort frontends on each.
  let fromRecord: string[] = [];
  let fromDevice: string[] = [];
  const addressesChanged = (revision: number) => {
    if (table.setNodeAddresses([...fromRecord, ...fromDevice], revision)) log.info({ addresses: table.nodeAddresses }, `NodePort addresses: ${table.nodeAddresses.join(', ') || 'none'}`);
  };
  const nodeKey = keys.node(options.nodeName);
  const nodeWatch = watchPrefix<SlimNode>(options.client, nodeKey, {
    name: 'node-addresses',
    decode: (_k, bytes) => decodeSlim('node', bytes),
    onEvent: (e: WatchEvent<SlimNode>) => {
      // A prefix watch of the node's key also sees nodes whose names extend it (node-1 → node-10).
      if ((e.type !== 'upsert' && e.type !== 'delete') || e.key !== nodeKey) return;
      fromRecord = e.type === 'upsert' ? recordAddresses(e.value) : [];
      addressesChanged(e.modRevision);
    },
    log,
    ...(options.registry ? { registry: options.registry } : {}),
    ...(options.clusterSize ? { clusterSize: options.clusterSize } : {}),
  });
  let pollError: string | undefined;
  const pollDevice = async () => {
    if (!options.uplink) return;
    try {
      fromDevice = await deviceAddresses(options.netns, options.uplink);
      if (pollError !== undefined) log.info({ uplink: options.uplink }, 'reading the uplink\'s addresses works again');
      pollError = undefined;
      addressesChanged(0);
    } catch (err) {
      // Once per kind of failure, not every poll.
      const message = (err as Error).message;
      if (message !== pollError) log.warn({ uplink: options.uplink, error: message }, 'could not read the uplink\'s addresses; NodePort frontends keep the last ones');
      pollError = message;
    }
  };
  const watches = [
    watch<SlimService>('services', (b) => decodeSlim('service', b), (v, r) => table.upsertService(v, r), (k, r) => table.deleteService(k, r)),
    watch<SlimEndpointSlice>('endpointslices', (b) => decodeSlim('endpointSlice', b), (v, r) => table.upsertSlice(v, r), (k, r) => table.deleteSlice(k, r)),
    nodeWatch,
  ];
  let isSynced = false;
  let stopped = false;
  const pollEvery = options.addressPollMs ?? 5_000;
  const pollTimer = options.uplink && pollEvery > 0 ? setInterval(() => void pollDevice(), pollEvery) : undefined;
  pollTimer?.unref();
  const ready = Promise.all([...watches.map((w) => w.synced), pollDevice()]).then(async () => {
    if (stopped) return;
    await reconciler.start();
    armFaults();
    isSynced = true;
    log.info({ ...table.counts, programmed: programmer.size }, 'services programmed');
  });
  ready.catch(() => undefined);

  const gcEvery = options.gcIntervalMs ?? 30_000;
  const gcTimer =
    gcEvery > 0
      ? setInterval(() => {
          try {
            const n = collectConntrack(options.datapath, monotonicSeconds(), options.nodeIp);
            if (n) gcCounter?.inc(n);
          } catch (err) {
            log.warn({ error: (err as Error).message }, 'load-balancer conntrack garbage collection failed');
          }
        }, gcEvery)
      : undefined;
  gcTimer?.unref();

  return {
    table,
    reconciler,
    programmer,
    synced: () => ready,
    status: () => ({ synced: isSynced, ...table.counts, programmed: programmer.size, nodePortAddresses: [...table.nodeAddresses], reconciler: reconciler.status() }),
    async stop() {
      stopped = true;
      if (gcTimer) clearInterval(gcTimer);
      if (pollTimer) clearInterval(pollTimer);
      maglevPool.close();
      await Promise.all(watches.map((w) => w.stop()));
      await reconciler.stop();
    },
  };
}
