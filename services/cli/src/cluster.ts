/**
 * What etcd holds about the cluster, read once (a snapshot for one command, not a watch): slim nodes and pods, the
 * agents' status records, the operator's heartbeat and synced markers, and etcd's own status.
 */
import { agentStatusRecord, createKvClient, decodeRecord, keySchema, RESOURCE_KINDS, type AgentStatusRecord, type Etcd3, type KeySchema, type KvClientOptions, healthEndpointRecord, type HealthEndpointRecord } from '@sluice/kvstore';
import { decodeSlim, type SlimNode, type SlimPod } from '@sluice/slim';
import { z } from '@sluice/config';
import { CliError, oneLine } from './errors.ts';

export interface ClusterReader {
  client: Etcd3;
  keys: KeySchema;
  endpoints: string[];
  /** How to reach etcd (TLS, user): etcdStatus asks each endpoint on its own with it. */
  config: KvClientOptions;
  close(): void;
}

// Short deadlines: a CLI must say "not running" within seconds, not hang on a dead endpoint.
const CLI_DEADLINES = { dialTimeoutMs: 2000, callTimeoutMs: 3000 };

export function openCluster(etcd: string[] | KvClientOptions, root: string): ClusterReader {
  const config = Array.isArray(etcd) ? { endpoints: etcd } : etcd;
  const client = createKvClient({ ...config, ...CLI_DEADLINES });
  return { client, keys: keySchema(root), endpoints: config.endpoints, config, close: () => client.close() };
}

export interface EtcdStatus {
  endpoint: string;
  version: string;
  revision: number;
  isLeader: boolean;
  leader: string;
  dbSizeBytes: number;
  /** Endpoints that answered, out of endpoints.length. */
  connected: number;
}

/** etcd's status, or a CliError naming the endpoints when none answers. */
export async function etcdStatus(reader: ClusterReader): Promise<EtcdStatus> {
  let connected = 0;
  let first: { endpoint: string; version: string } | undefined;
  let lastError = '';
  await Promise.all(
    reader.endpoints.map(async (endpoint) => {
      // Over gRPC with the client's own TLS and credentials: etcd's HTTP /version needs a client certificate too
      // under --client-cert-auth.
      const one = createKvClient({ ...reader.config, endpoints: [endpoint], ...CLI_DEADLINES });
      try {
        const status = await one.maintenance.status();
        connected++;
        first ??= { endpoint, version: status.version };
      } catch (err) {
        lastError = oneLine(err);
      } finally {
        one.close();
      }
    }),
  );
  if (!first) throw new CliError(`cannot reach etcd at ${reader.endpoints.join(', ')}: ${lastError || 'no answer'}; is the demo running (npm start)?`);
  const status = await reader.client.maintenance.status();
  const memberId = status.header.member_id;
  return {
    endpoint: first.endpoint,
    version: status.version || first.version,
    revision: Number(status.header.revision),
    isLeader: status.leader === memberId,
    leader: String(status.leader),
    dbSizeBytes: Number(status.dbSize),
    connected,
  };
}

/** Values under a prefix decoded one by one; a record that does not decode is reported, not fatal. */
async function readPrefix<T>(reader: ClusterReader, prefix: string, decode: (key: string, value: Buffer) => T): Promise<{ items: T[]; errors: string[] }> {
  const all = await reader.client.getAll().prefix(prefix).exec();
  const items: T[] = [];
  const errors: string[] = [];
  for (const kv of all.kvs) {
    const key = kv.key.toString();
    try {
      items.push(decode(key, kv.value));
    } catch (err) {
      errors.push(`${key}: ${oneLine(err)}`);
    }
  }
  return { items, errors };
}

export const readNodes = (reader: ClusterReader) => readPrefix<SlimNode>(reader, reader.keys.prefix('nodes'), (_k, v) => decodeSlim('node', v));
export const readPods = (reader: ClusterReader) => readPrefix<SlimPod>(reader, reader.keys.prefix('pods'), (_k, v) => decodeSlim('pod', v));
export const readAgents = (reader: ClusterReader) =>
  readPrefix<AgentStatusRecord>(reader, reader.keys.prefix('agents'), (_k, v) => decodeRecord(agentStatusRecord, 'agent status', v));
/** The agents' health records (keys.health(node)): the nodes that are members of the health view. */
export const readHealthEndpoints = (reader: ClusterReader) =>
  readPrefix<HealthEndpointRecord>(reader, reader.keys.prefix('health'), (_k, v) => decodeRecord(healthEndpointRecord, 'health endpoint', v));

/** Counts keys under a prefix without fetching values (the pod count of a 100,000-pod cluster). */
export async function countPrefix(reader: ClusterReader, prefix: string): Promise<number> {
  return reader.client.getAll().prefix(prefix).count();
}

export const operatorHeartbeatSchema = z.object({ identity: z.string(), leaderSince: z.string(), term: z.number() });
export type OperatorHeartbeat = z.infer<typeof operatorHeartbeatSchema>;

export interface OperatorView {
  heartbeat?: OperatorHeartbeat;
  heartbeatError?: string;
  syncedKinds: string[];
  kinds: readonly string[];
}

export async function readOperator(reader: ClusterReader): Promise<OperatorView> {
  const [raw, synced] = await Promise.all([
    reader.client.get(reader.keys.operatorHeartbeat()).string(),
    reader.client.getAll().prefix(reader.keys.prefix('synced')).keys(),
  ]);
  const view: OperatorView = { syncedKinds: [], kinds: RESOURCE_KINDS };
  for (const key of synced) view.syncedKinds.push(key.slice(reader.keys.prefix('synced').length));
  view.syncedKinds.sort();
  if (raw !== null) {
    try {
      view.heartbeat = operatorHeartbeatSchema.parse(JSON.parse(raw));
    } catch (err) {
      view.heartbeatError = oneLine(err);
    }
  }
  return view;
}
