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
 * | <root>v1/synced/<kind>                        | SyncedMarker `{"kind","schema"}` (see syncedMarkerValue): present once the operator's initial sync of that kind finished | operator |
 * | <root>v1/operator/heartbeat                   | OperatorHeartbeat, on the leader's lease | operator   |
 * | <root>v1/operator/leader/<lease id>           | the candidate's identity (etcd3 election) | operator  |
 * | <root>v1/nodeconfig/<node>                    | NodeConfigRecord (records.ts): per-node datapath settings | an admin or the demo |
 * | <root>v1/agents/<node>                        | AgentStatusRecord (records.ts), on the agent's lease | agent           |
 * | <root>v1/health/<node>                        | HealthEndpointRecord (records.ts): where a node's agent health port and health endpoint answer probes, on the agent's lease | agent |
 *
 * The synced marker's value is deliberately stable (no timestamp): an operator restart that finds nothing changed
 * must write nothing at all, marker included. Candidate keys under operator/leader are created once and never
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
  prefix(collection: ResourceKind | 'synced' | 'nodeconfig' | 'agents' | 'health' | 'operator'): string;
  node(name: string): string;
  pod(namespace: string, name: string): string;
  service(namespace: string, name: string): string;
  endpointSlice(namespace: string, name: string): string;
  synced(kind: ResourceKind): string;
  operatorHeartbeat(): string;
  /** The election prefix (etcd3's Election appends the lease id). */
  operatorElection(): string;
  nodeConfig(node: string): string;
  agent(node: string): string;
  health(node: string): string;
  /** Splits a key under a collection prefix back into its name parts, or undefined if it is not under it. */
  parse(collection: ResourceKind | 'nodeconfig' | 'agents' | 'health', key: string): string[] | undefined;
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
    agent: (node) => `${prefix('agents')}${node}`,
    health: (node) => `${prefix('health')}${node}`,
    parse(collection, key) {
      const p = prefix(collection);
      if (!key.startsWith(p)) return undefined;
      const parts = key.slice(p.length).split('/');
      return parts.every((part) => part.length > 0) ? parts : undefined;
    },
  };
}

/** The value of the `synced/<kind>` marker (stable bytes, so that rewriting it after an unchanged resync is skipped). */
export function syncedMarkerValue(kind: ResourceKind): string {
  return JSON.stringify({ kind, schema: SCHEMA });
}
