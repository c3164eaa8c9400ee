/**
 * The etcd key schema, version 1: every key Sluice writes, and the format of its value, in one place.
 *
 * All keys live under a root prefix (default `sluice/`) followed by the schema version, so that a reader can tell at
 * once whether it understands what it finds, and a new layout can be written beside the old one during an upgrade.
 *
 * | key                                           | value                               | written by      |
 * | --------------------------------------------- | ----------------------------------- | --------------- |
 * | <root>v1/nodes/<node>                         | SlimNode (canonical JSON)           | operator        |
 * | <root>v1/pods/<namespace>/<pod>               | SlimPod, endpoints only (see slim)  | operator        |
 * | <root>v1/services/<namespace>/<service>       | SlimService                         | operator        |
 * | <root>v1/endpointslices/<namespace>/<slice>   | SlimEndpointSlice                   | operator        |
 * | <root>v1/synced/<kind>                        | SyncedMarker `{"kind","schema","term","revision"}` (see syncedMarkerValue): present once the current operator term's sweep of that kind ended (deleted when a new term starts) | operator |
 * | <root>v1/operator/heartbeat                   | OperatorHeartbeat, on the leader's lease | operator   |
 * | <root>v1/operator/leader/<lease id>           | the candidate's identity (etcd3 election) | operator  |
 * | <root>v1/nodeconfig/<node>                    | NodeConfigRecord (records.ts): per-node datapath settings | an admin or the demo |
 * | <root>v1/effectiveconfig/<node>               | NodeConfigRecord with `sources`: the node's settings resolved from the SluiceNodeConfigs that select it (agents apply it live, over nodeconfig/ and their flags); absent when none sets anything | operator |
 * | <root>v1/agents/<node>                        | AgentStatusRecord (records.ts), on the agent's lease | agent           |
 * | <root>v1/health/<node>                        | HealthEndpointRecord (records.ts): where a node's agent health port and health endpoint answer probes, on the agent's lease | agent |
 * | <root>v1/l2announcements/<policy>             | SlimL2Announcement (slim l2.ts): a SluiceL2AnnouncementPolicy with the addresses it selects | operator |
 * | <root>v1/l2leases/<ip>                        | the name of the node announcing that address, on its agent's lease (created only if absent) | agent |
 *
 * The synced marker names the operator term and the revision its sweep ended at (Cilium's cilium/synced markers):
 * readers (agents, health) wait for it before their first full reconcile and never prune on a view without it. An
 * operator restart that finds nothing changed writes only the markers (deleted at the term's start, rewritten at the
 * end of its sweep). Candidate keys under operator/leader are created once and never
 * rewritten (their modRevision is their create revision; the lowest leads).
 *
 * Names in Kubernetes are DNS subdomains (no `/`), so `namespace/name` splits unambiguously.
 */
export const SCHEMA = 'v1';
export const DEFAULT_ROOT = 'sluice/';

export const RESOURCE_KINDS = ['nodes', 'pods', 'services', 'endpointslices'] as const;
export type ResourceKind = (typeof RESOURCE_KINDS)[number];

export interface KeySchema {
  readonly root: string;
  /** The prefix under which every key of a collection lives, ending in `/`. */
  prefix(collection: ResourceKind | 'synced' | 'nodeconfig' | 'effectiveconfig' | 'agents' | 'health' | 'operator' | 'l2announcements' | 'l2leases'): string;
  node(name: string): string;
  pod(namespace: string, name: string): string;
  service(namespace: string, name: string): string;
  endpointSlice(namespace: string, name: string): string;
  synced(kind: ResourceKind): string;
  operatorHeartbeat(): string;
  /** The election prefix (etcd3's Election appends the lease id). */
  operatorElection(): string;
  nodeConfig(node: string): string;
  /** A node's configuration as the operator resolved it from SluiceNodeConfigs. */
  effectiveNodeConfig(node: string): string;
  agent(node: string): string;
  health(node: string): string;
  /** A SluiceL2AnnouncementPolicy as the operator resolved it (not one of RESOURCE_KINDS: no sync marker). */
  l2Announcement(policy: string): string;
  /** Who announces an address on the underlay: one agent holds this key on its lease. */
  l2Lease(ip: string): string;
  /** Splits a key under a collection prefix back into its name parts, or undefined if it is not under it. */
  parse(collection: ResourceKind | 'nodeconfig' | 'effectiveconfig' | 'agents' | 'health' | 'l2announcements' | 'l2leases', key: string): string[] | undefined;
}

export function keySchema(root = DEFAULT_ROOT): KeySchema {
  if (!root.endsWith('/')) throw new Error(`root prefix must end with "/", got "${root}"`);
  const base = `${root}${SCHEMA}/`;
  const prefix: KeySchema['prefix'] = (collection) => `${base}${collection}/`;
  return {
    root,
    prefix,
    node: (name) => `${prefix('nodes')}${name}`,
    pod: (namespace, name) => `${prefix('pods')}${namespace}/${name}`,
    service: (namespace, name) => `${prefix('services')}${namespace}/${name}`,
    endpointSlice: (namespace, name) => `${prefix('endpointslices')}${namespace}/${name}`,
    synced: (kind) => `${prefix('synced')}${kind}`,
    operatorHeartbeat: () => `${prefix('operator')}heartbeat`,
    operatorElection: () => `${prefix('operator')}leader`,
    nodeConfig: (node) => `${prefix('nodeconfig')}${node}`,
    effectiveNodeConfig: (node) => `${prefix('effectiveconfig')}${node}`,
    agent: (node) => `${prefix('agents')}${node}`,
    health: (node) => `${prefix('health')}${node}`,
    l2Announcement: (policy) => `${prefix('l2announcements')}${policy}`,
    l2Lease: (ip) => `${prefix('l2leases')}${ip}`,
    parse(collection, key) {
      const p = prefix(collection);
      if (!key.startsWith(p)) return undefined;
      const parts = key.slice(p.length).split('/');
      return parts.every((part) => part.length > 0) ? parts : undefined;
    },
  };
}

/**
 * Which operator term wrote a sync marker, and the etcd revision at which that term's sweep of the prefix ended: a
 * reader that has seen the prefix up to that revision holds the complete state the operator asserted.
 */
export interface SyncStamp {
  /** The leader's fence (the create revision of its election key): a new term has a new one. */
  term: string;
  revision: number;
}

export interface SyncedMarker {
  kind: ResourceKind;
  schema: string;
  term?: string;
  revision?: number;
}

/**
 * The value of the `synced/<kind>` marker. With a stamp (what the operator writes) it names the term and revision; a
 * new term deletes the markers when it starts and writes them again when its sweep ends, so that a reader never
 * takes an incomplete prefix for a complete one. Without a stamp the bytes are stable (tests, tools).
 */
export function syncedMarkerValue(kind: ResourceKind, stamp?: SyncStamp): string {
  return JSON.stringify(stamp ? { kind, schema: SCHEMA, term: stamp.term, revision: stamp.revision } : { kind, schema: SCHEMA });
}

/** Reads a marker's value; undefined when it is not one (another schema, garbage). */
export function parseSyncedMarker(bytes: Buffer | string): SyncedMarker | undefined {
  try {
    const value = JSON.parse(bytes.toString()) as Partial<SyncedMarker>;
    if (typeof value !== 'object' || value === null || value.schema !== SCHEMA) return undefined;
    if (!(RESOURCE_KINDS as readonly string[]).includes(String(value.kind))) return undefined;
    if (value.term !== undefined && typeof value.term !== 'string') return undefined;
    if (value.revision !== undefined && (typeof value.revision !== 'number' || !Number.isSafeInteger(value.revision) || value.revision < 0)) return undefined;
    return value as SyncedMarker;
  } catch {
    return undefined;
  }
}
