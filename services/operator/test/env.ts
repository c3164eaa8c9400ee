/** A real etcd and an in-process kube-sim, plus what the operator tests compare etcd against. */
import type { KubernetesObject, V1EndpointSlice, V1Node, V1Pod, V1Service } from '@kubernetes/client-node';
import { startEtcd, type EtcdServer } from '@sluice/etcd-runner';
import type { Registry } from '@sluice/metrics';
import { createKvClient, keySchema, RESOURCE_KINDS, type Etcd3, type KeySchema } from '@sluice/kvstore';
import { startKubeSim, type KubeSim, type KubeSimOptions } from '@sluice/kube-sim';
import { encodeSlimString, isEndpoint, slimEndpointSlice, slimNode, slimPod, slimService } from '@sluice/slim';

export interface Env {
  etcd: EtcdServer;
  client: Etcd3;
  sim: KubeSim;
  keys: KeySchema;
  close(): Promise<void>;
}

export async function startEnv(sim: KubeSimOptions): Promise<Env> {
  const etcd = await startEtcd();
  const client = createKvClient({ endpoints: [etcd.endpoint] });
  const kubeSim = await startKubeSim({ heartbeats: false, ...sim });
  return {
    etcd,
    client,
    sim: kubeSim,
    keys: keySchema(),
    async close() {
      await kubeSim.close();
      client.close();
      await etcd.stop();
    },
  };
}

function objects<T extends KubernetesObject>(sim: KubeSim, plural: string): T[] {
  return sim.store.objectsIn(plural).map((o) => JSON.parse(o.json) as T);
}

/** What etcd must hold for the cluster kube-sim has right now: the contract of the operator. */
export function expectedRecords(sim: KubeSim, keys: KeySchema): Map<string, string> {
  const expected = new Map<string, string>();
  for (const node of objects<V1Node>(sim, 'nodes')) expected.set(keys.node(node.metadata!.name!), encodeSlimString('node', slimNode(node)));
  for (const pod of objects<V1Pod>(sim, 'pods')) {
    const slim = slimPod(pod);
    if (isEndpoint(slim)) expected.set(keys.pod(slim.namespace, slim.name), encodeSlimString('pod', slim));
  }
  for (const svc of objects<V1Service>(sim, 'services')) {
    expected.set(keys.service(svc.metadata!.namespace!, svc.metadata!.name!), encodeSlimString('service', slimService(svc)));
  }
  for (const slice of objects<V1EndpointSlice>(sim, 'endpointslices')) {
    expected.set(keys.endpointSlice(slice.metadata!.namespace!, slice.metadata!.name!), encodeSlimString('endpointSlice', slimEndpointSlice(slice)));
  }
  return expected;
}

export interface StoredRecord {
  value: string;
  modRevision: string;
}

/** Every record under the four resource prefixes. */
export async function etcdRecords(client: Etcd3, keys: KeySchema): Promise<Map<string, StoredRecord>> {
  const out = new Map<string, StoredRecord>();
  for (const kind of RESOURCE_KINDS) {
    const response = await client.getAll().prefix(keys.prefix(kind)).exec();
    for (const kv of response.kvs) out.set(kv.key.toString(), { value: kv.value.toString(), modRevision: kv.mod_revision });
  }
  return out;
}

/** Everything under the root prefix, whatever it is. */
export async function allKeys(client: Etcd3, keys: KeySchema): Promise<string[]> {
  return (await client.getAll().prefix(keys.root).keys()).sort();
}

export async function etcdRevision(client: Etcd3): Promise<number> {
  const response = await client.get('sluice-test/revision-probe').exec();
  return Number(response.header.revision);
}

export async function waitFor<T>(what: string, check: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const result = await check();
      if (result !== undefined && result !== false) return result;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Resolves once etcd holds exactly the expected records (no more, no fewer, same bytes). */
export async function waitForMirror(env: Env, timeoutMs = 30_000): Promise<Map<string, StoredRecord>> {
  return waitFor('etcd to mirror kube-sim', async () => {
    const expected = expectedRecords(env.sim, env.keys);
    const actual = await etcdRecords(env.client, env.keys);
    if (actual.size !== expected.size) return undefined;
    for (const [key, value] of expected) if (actual.get(key)?.value !== value) return undefined;
    return actual;
  }, timeoutMs);
}

/** A counter's value summed over the series whose labels include `labels`. */
export async function metricValue(registry: Registry, name: string, labels: Record<string, string> = {}): Promise<number> {
  const metric = (await registry.getMetricsAsJSON()).find((m) => m.name === name);
  const values = (metric?.values ?? []) as { value: number; labels: Record<string, string | number> }[];
  return values.filter((v) => Object.entries(labels).every(([k, l]) => String(v.labels[k]) === l)).reduce((sum, v) => sum + v.value, 0);
}

export { RESOURCE_KINDS };
