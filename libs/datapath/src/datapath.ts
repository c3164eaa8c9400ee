/**
 * One node's datapath: the object loaded once per agent start, its maps pinned under the node's own directory
 * (default /sys/fs/bpf/sluice/<node>/) and reused across restarts, its programs pinned beside them so that other
 * processes (the CNI plugin, tests) can attach them by path.
 */
import { existsSync, mkdirSync, rmSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import {
  COUNTERS,
  OBJECT_PATH,
  PROGRAMS,
  configMap,
  countersMap,
  counterValue,
  endpointsMap,
  ipcacheHostMap,
  ipcacheMap,
  tunnelMap,
  servicesMap,
  backendsMap,
  maglevMap,
  lbFwdMap,
  lbCtMap,
  affinityMap,
  affinitySockMap,
  affinityMatchMap,
  sockNatMap,
  snatMap,
  snatRevMap,
  ipmasqMap,
  type Counter,
  type CounterName,
  type MapSpec,
  type NodeConfig,
  type ProgramName,
} from '@sluice/bpf';
import type { Registry } from '@sluice/metrics';
import { CodecMap, type RawMap } from './backend.ts';
import { BpfRawMap, mapInfo } from './bpf-map.ts';
import { bpf, check, checkPtr, closeFd } from './libbpf.ts';
import { MemoryRawMap } from './memory-map.ts';
import { mapMetrics } from './metrics.ts';
import { attachTc, detachTc, ifindex, inNetns, type NodeAttachments, type TcDirection } from './tc.ts';

export const BPFFS_ROOT = '/sys/fs/bpf/sluice';

export function defaultPinDir(node: string): string {
  return join(BPFFS_ROOT, node);
}

export function programPinPath(pinDir: string, program: ProgramName): string {
  return join(pinDir, `prog_${program}`);
}

export interface DatapathMaps {
  endpoints: CodecMap<KeyOf<typeof endpointsMap>, NodeValue<typeof endpointsMap>>;
  /** The ipcache's /32s (hash); use upsertIpcache/reconcileIpcache to address both halves by CIDR. */
  ipcacheHost: CodecMap<KeyOf<typeof ipcacheHostMap>, NodeValue<typeof ipcacheHostMap>>;
  /** The ipcache's shorter prefixes (LPM trie). */
  ipcache: CodecMap<KeyOf<typeof ipcacheMap>, NodeValue<typeof ipcacheMap>>;
  tunnel: CodecMap<KeyOf<typeof tunnelMap>, NodeValue<typeof tunnelMap>>;
  config: CodecMap<number, NodeConfig>;
  counters: CodecMap<number, Counter>;
  /** Service load-balancing (see services.ts for reconcileServices). */
  services: CodecMap<KeyOf<typeof servicesMap>, NodeValue<typeof servicesMap>>;
  backends: CodecMap<KeyOf<typeof backendsMap>, NodeValue<typeof backendsMap>>;
  /** Service id → its Maglev lookup table. */
  maglev: CodecMap<KeyOf<typeof maglevMap>, NodeValue<typeof maglevMap>>;
  /** Forward connection tracking of load-balanced flows, written by the programs (LRU). */
  lbFwd: CodecMap<KeyOf<typeof lbFwdMap>, NodeValue<typeof lbFwdMap>>;
  /** Reverse-NAT state written by the programs (LRU). */
  lbCt: CodecMap<KeyOf<typeof lbCtMap>, NodeValue<typeof lbCtMap>>;
  /** sessionAffinity ClientIP entries, written by the programs (LRU). */
  affinity: CodecMap<KeyOf<typeof affinityMap>, NodeValue<typeof affinityMap>>;
  /** The socket LB's sessionAffinity entries, keyed by network namespace cookie, written by the cgroup programs (LRU). */
  affinitySock: CodecMap<KeyOf<typeof affinitySockMap>, NodeValue<typeof affinitySockMap>>;
  /** Each affinity backend set's active backends (service id, backend id), written by LbProgrammer. */
  affinityMatch: CodecMap<KeyOf<typeof affinityMatchMap>, NodeValue<typeof affinityMatchMap>>;
  /** Socket LB of unconnected UDP: (socket, backend) → frontend, written by the cgroup programs (LRU). */
  sockNat: CodecMap<KeyOf<typeof sockNatMap>, NodeValue<typeof sockNatMap>>;
  /** Masquerade state written by the programs (LRU): forward and reverse. */
  snat: CodecMap<KeyOf<typeof snatMap>, NodeValue<typeof snatMap>>;
  snatRev: CodecMap<KeyOf<typeof snatRevMap>, NodeValue<typeof snatRevMap>>;
  /** ip-masq-agent's nonMasqueradeCIDRs. */
  ipmasq: CodecMap<KeyOf<typeof ipmasqMap>, NodeValue<typeof ipmasqMap>>;
}
type KeyOf<S> = S extends MapSpec<infer K, unknown> ? K : never;
type NodeValue<S> = S extends MapSpec<unknown, infer V> ? V : never;

export interface Datapath {
  pinDir: string;
  maps: DatapathMaps;
  /** Program fds (valid until close()). Only set when the object was loaded, not for openPinnedMaps(). */
  programs: Partial<Record<ProgramName, number>>;
  /** True when every map came from an existing pin (a restart), false when at least one was created. */
  reusedMaps: boolean;
  /** Pinned maps whose layout no longer matched the object (an upgrade) and were replaced: "<name>: <why>". */
  replacedMaps: string[];
  setConfig(config: NodeConfig): void;
  getConfig(): NodeConfig | undefined;
  /** Every counter summed over CPUs. */
  readCounters(): Record<CounterName, Counter>;
  /** Entries and capacity per map, for a status endpoint (counts by dumping: ~tens of ms at 100k entries). */
  fillLevels(): Record<string, { entries: number; capacity: number }>;
  close(): void;
}

export interface LoadOptions {
  /** bpffs directory for this node's pins, e.g. defaultPinDir('node-1'). */
  pinDir: string;
  objectPath?: string;
  /** Map metrics (operation durations, errors, full maps, fill levels) go here. */
  registry?: Registry;
  /** Overrides max_entries (tests of full maps). */
  maxEntries?: Partial<Record<keyof DatapathMaps, number>>;
  /**
   * A pinned map whose type, key/value size, max_entries or flags differ from the object's (after an upgrade):
   * 'error' (default) fails the load, since libbpf refuses to reuse it; 'replace' unpins it and creates a new one
   * (listed in `replacedMaps`; the old map lives on, still used by the attached programs, until they are replaced).
   */
  onIncompatible?: 'error' | 'replace';
}

const MAP_SPECS = { endpoints: endpointsMap, ipcacheHost: ipcacheHostMap, ipcache: ipcacheMap, tunnel: tunnelMap, config: configMap, counters: countersMap, services: servicesMap, backends: backendsMap, maglev: maglevMap, lbFwd: lbFwdMap, lbCt: lbCtMap, affinity: affinityMap, affinitySock: affinitySockMap, affinityMatch: affinityMatchMap, sockNat: sockNatMap, snat: snatMap, snatRev: snatRevMap, ipmasq: ipmasqMap } as const;

function buildDatapath(pinDir: string, raws: Record<keyof DatapathMaps, RawMap>, registry: Registry | undefined, programs: Datapath['programs'], reusedMaps: boolean, onClose: () => void): Datapath {
  const metrics = registry ? mapMetrics(registry) : undefined;
  let closed = false;
  const maps: DatapathMaps = {
    endpoints: new CodecMap(endpointsMap, raws.endpoints, metrics),
    ipcacheHost: new CodecMap(ipcacheHostMap, raws.ipcacheHost, metrics),
    ipcache: new CodecMap(ipcacheMap, raws.ipcache, metrics),
    tunnel: new CodecMap(tunnelMap, raws.tunnel, metrics),
    config: new CodecMap(configMap, raws.config, metrics),
    counters: new CodecMap(countersMap, raws.counters, metrics),
    services: new CodecMap(servicesMap, raws.services, metrics),
    backends: new CodecMap(backendsMap, raws.backends, metrics),
    maglev: new CodecMap(maglevMap, raws.maglev, metrics),
    lbFwd: new CodecMap(lbFwdMap, raws.lbFwd, metrics),
    lbCt: new CodecMap(lbCtMap, raws.lbCt, metrics),
    affinity: new CodecMap(affinityMap, raws.affinity, metrics),
    affinitySock: new CodecMap(affinitySockMap, raws.affinitySock, metrics),
    affinityMatch: new CodecMap(affinityMatchMap, raws.affinityMatch, metrics),
    sockNat: new CodecMap(sockNatMap, raws.sockNat, metrics),
    snat: new CodecMap(snatMap, raws.snat, metrics),
    snatRev: new CodecMap(snatRevMap, raws.snatRev, metrics),
    ipmasq: new CodecMap(ipmasqMap, raws.ipmasq, metrics),
  };
  if (metrics) for (const m of Object.values(maps)) metrics.capacity.set({ map: m.name }, m.capacity);
  return {
    pinDir,
    maps,
    programs,
    reusedMaps,
    replacedMaps: [],
    setConfig: (config) => maps.config.upsertBatch([[0, config]]),
    getConfig: () => {
      const c = maps.config.lookup(0);
      return c && c.nodeIp !== '0.0.0.0' ? c : undefined;
    },
    readCounters: () => sumCounters(maps.counters.raw),
    fillLevels: () => {
      const out: Record<string, { entries: number; capacity: number }> = {};
      for (const m of Object.values(maps)) {
        if (m.spec.type === 'array' || m.spec.type === 'percpu_array') continue;
        out[m.name] = { entries: m.count(), capacity: m.capacity };
        metrics?.entries.set({ map: m.name }, out[m.name]!.entries);
      }
      return out;
    },
    close: () => {
      if (closed) return;
      closed = true;
      for (const m of Object.values(maps)) m.close();
      onClose();
    },
  };
}

export function sumCounters(raw: RawMap): Record<CounterName, Counter> {
  const slot = Math.ceil(counterValue.size / 8) * 8;
  const cpus = raw.valueSize / slot;
  const out = {} as Record<CounterName, Counter>;
  for (const [name, index] of Object.entries(COUNTERS) as Array<[CounterName, number]>) {
    const key = Buffer.alloc(4);
    key.writeUInt32LE(index, 0);
    const value = raw.lookupRaw(key);
    const total: Counter = { packets: 0n, bytes: 0n };
    for (let c = 0; value && c < cpus; c++) {
      const v = counterValue.decode(value, c * slot);
      total.packets += v.packets;
      total.bytes += v.bytes;
    }
    out[name] = total;
  }
  return out;
}

/**
 * Loads the BPF object for a node: maps pinned in `pinDir` are reused as they are (contents kept, so a restarting
 * agent never flushes the datapath), missing ones are created and pinned; programs are (re)pinned as
 * `prog_<name>`. Attach them with attachTc()/attachTcInNetns(); tc keeps them attached after this process exits.
 */
export function loadDatapath(options: LoadOptions): Datapath {
  const { pinDir } = options;
  mkdirSync(pinDir, { recursive: true });
  const replacedMaps = checkPinnedLayouts(options);
  const reusedMaps = Object.values(MAP_SPECS).every((s) => existsSync(join(pinDir, s.name)));
  const path = options.objectPath ?? OBJECT_PATH;
  const obj = checkPtr('bpf_object__open_file', bpf.objectOpenFile(path, null), path);
  try {
    for (const [key, spec] of Object.entries(MAP_SPECS) as Array<[keyof DatapathMaps, MapSpec<unknown, unknown>]>) {
      const map = checkPtr('bpf_object__find_map_by_name', bpf.findMap(obj, spec.name), spec.name);
      check('bpf_map__set_pin_path', bpf.mapSetPinPath(map, join(pinDir, spec.name)));
      const max = options.maxEntries?.[key];
      if (max !== undefined) check('bpf_map__set_max_entries', bpf.mapSetMaxEntries(map, max), spec.name);
    }
    const loaded = bpf.objectLoad(obj);
    if (loaded < 0) {
      const why = -loaded === 13 ? 'the verifier rejected a program; its log is on stderr' : 'see the libbpf messages on stderr';
      check('bpf_object__load', loaded, `${path}: ${why}`);
    }
    const raws = {} as Record<keyof DatapathMaps, RawMap>;
    for (const [key, spec] of Object.entries(MAP_SPECS) as Array<[keyof DatapathMaps, MapSpec<unknown, unknown>]>) {
      // Our own fd from the pin (the object's goes away with bpf_object__close).
      raws[key] = BpfRawMap.openPinned(join(pinDir, spec.name), spec.name);
    }
    const programs: Datapath['programs'] = {};
    for (const p of Object.values(PROGRAMS)) {
      const prog = checkPtr('bpf_object__find_program_by_name', bpf.findProgram(obj, p.name), p.name);
      const pinPath = programPinPath(pinDir, p.name);
      if (existsSync(pinPath)) unlinkSync(pinPath);
      check('bpf_program__pin', bpf.programPin(prog, pinPath), pinPath);
      programs[p.name] = check('bpf_obj_get', bpf.objGet(pinPath), pinPath);
    }
    bpf.objectClose(obj);
    const dp = buildDatapath(pinDir, raws, options.registry, programs, reusedMaps, () => {
      for (const fd of Object.values(programs)) closeFd(fd);
    });
    dp.replacedMaps = replacedMaps;
    return dp;
  } catch (err) {
    bpf.objectClose(obj);
    throw err;
  }
}

const MAP_TYPE_IDS: Record<string, number> = { hash: 1, array: 2, percpu_array: 6, lru_hash: 9, lpm_trie: 11 };
const NO_PREALLOC = 1;

/** Compares each pinned map with what the object will ask for; unpins mismatches when told to replace them. */
function checkPinnedLayouts(options: LoadOptions): string[] {
  const replaced: string[] = [];
  for (const [key, spec] of Object.entries(MAP_SPECS) as Array<[keyof DatapathMaps, MapSpec<unknown, unknown>]>) {
    const path = join(options.pinDir, spec.name);
    if (!existsSync(path)) continue;
    const fd = check('bpf_obj_get', bpf.objGet(path), path);
    let info;
    try {
      info = mapInfo(fd);
    } finally {
      closeFd(fd);
    }
    const want = {
      type: MAP_TYPE_IDS[spec.type],
      keySize: spec.key.size,
      valueSize: spec.value.size,
      maxEntries: options.maxEntries?.[key] ?? spec.maxEntries,
      noPrealloc: spec.noPrealloc ?? false,
    };
    const have = { type: info.type, keySize: info.keySize, valueSize: info.valueSize, maxEntries: info.maxEntries, noPrealloc: (info.flags & NO_PREALLOC) !== 0 };
    const diffs = (Object.keys(want) as Array<keyof typeof want>).filter((k) => want[k] !== have[k]).map((k) => `${k} ${have[k]} -> ${want[k]}`);
    if (!diffs.length) continue;
    const why = `${spec.name}: ${diffs.join(', ')}`;
    if (options.onIncompatible !== 'replace') {
      throw new Error(`pinned map ${path} does not match the BPF object (${why}); load with onIncompatible: 'replace' to recreate it`);
    }
    unlinkSync(path);
    replaced.push(why);
  }
  return replaced;
}

/** Opens a node's pinned maps without loading programs (tests, status tools, a second reader). */
export function openPinnedMaps(pinDir: string, registry?: Registry): Datapath {
  const raws = {} as Record<keyof DatapathMaps, RawMap>;
  for (const [key, spec] of Object.entries(MAP_SPECS) as Array<[keyof DatapathMaps, MapSpec<unknown, unknown>]>) {
    raws[key] = BpfRawMap.openPinned(join(pinDir, spec.name), spec.name);
  }
  return buildDatapath(pinDir, raws, registry, {}, true, () => {});
}

/** The same maps in process memory, same codecs and capacities (the scale harness's backend). */
export function memoryDatapath(options: { registry?: Registry; capacities?: Partial<Record<keyof DatapathMaps, number>> } = {}): Datapath {
  const raws = {} as Record<keyof DatapathMaps, RawMap>;
  for (const [key, spec] of Object.entries(MAP_SPECS) as Array<[keyof DatapathMaps, MapSpec<unknown, unknown>]>) {
    const capacity = options.capacities?.[key];
    raws[key] = new MemoryRawMap(spec, capacity === undefined ? {} : { capacity });
  }
  return buildDatapath('memory', raws, options.registry, {}, false, () => {});
}

/** Removes a node's pins (maps and programs; attached programs stay attached until detached). */
export function removePins(pinDir: string): void {
  if (!pinDir.startsWith('/sys/fs/bpf/')) throw new Error(`refusing to remove ${pinDir}: not under /sys/fs/bpf`);
  rmSync(pinDir, { recursive: true, force: true });
}

/**
 * Attaches a node's programs (atomically replacing what is there, so a restarting agent causes no gap): from_netdev
 * (ingress) and to_netdev (egress) on the uplink, from_overlay/to_overlay on the VXLAN device, from_container (ingress) and to_container (egress) on
 * each pod veth. With `netns`, the
 * devices are looked up and attached inside that namespace (see inNetns); without it, in the current one.
 */
export function attachNode(dp: Pick<Datapath, 'programs'>, devices: NodeAttachments, netns?: string): void {
  const fd = (name: ProgramName) => {
    const value = dp.programs[name];
    if (value === undefined) throw new Error(`program ${name} is not loaded (use loadDatapath, not openPinnedMaps)`);
    return value;
  };
  const work = () => {
    attachTc({ ifindex: ifindex(devices.uplink), direction: 'ingress', progFd: fd('from_netdev') });
    attachTc({ ifindex: ifindex(devices.uplink), direction: 'egress', progFd: fd('to_netdev') });
    if (devices.vxlan) {
      attachTc({ ifindex: ifindex(devices.vxlan), direction: 'ingress', progFd: fd('from_overlay') });
      attachTc({ ifindex: ifindex(devices.vxlan), direction: 'egress', progFd: fd('to_overlay') });
    }
    for (const pod of devices.pods ?? []) {
      attachTc({ ifindex: ifindex(pod), direction: 'ingress', progFd: fd('from_container') });
      attachTc({ ifindex: ifindex(pod), direction: 'egress', progFd: fd('to_container') });
    }
  };
  if (netns) inNetns(netns, work);
  else work();
}

/**
 * Attaches a pinned program by path, for processes that did not load the object (the CNI plugin attaching
 * from_container to a new pod's host-side veth). `ifname` is looked up in `netns` (or the current namespace).
 */
export function attachPinnedProgram(pinDir: string, program: ProgramName, ifname: string, direction: TcDirection, netns?: string): number {
  const path = programPinPath(pinDir, program);
  const progFd = check('bpf_obj_get', bpf.objGet(path), path);
  try {
    const work = () => attachTc({ ifindex: ifindex(ifname), direction, progFd });
    return netns ? inNetns(netns, work) : work();
  } finally {
    closeFd(progFd);
  }
}

/** A new pod's host-side veth, from its pinned programs (what a CNI plugin calls): from_container + to_container. */
export function attachPod(pinDir: string, ifname: string, netns?: string): void {
  attachPinnedProgram(pinDir, 'from_container', ifname, 'ingress', netns);
  attachPinnedProgram(pinDir, 'to_container', ifname, 'egress', netns);
}

/** Removes what attachNode attached (uninstall; an agent restart does not need this). Missing devices are skipped. */
export function detachNode(devices: NodeAttachments, netns?: string): void {
  const work = () => {
    const tryDetach = (ifname: string, direction: TcDirection) => {
      let index: number;
      try {
        index = ifindex(ifname);
      } catch {
        return;
      }
      detachTc({ ifindex: index, direction });
    };
    tryDetach(devices.uplink, 'ingress');
    tryDetach(devices.uplink, 'egress');
    if (devices.vxlan) {
      tryDetach(devices.vxlan, 'ingress');
      tryDetach(devices.vxlan, 'egress');
    }
    for (const pod of devices.pods ?? []) {
      tryDetach(pod, 'ingress');
      tryDetach(pod, 'egress');
    }
  };
  if (netns) inNetns(netns, work);
  else work();
}
