/**
 * Agent benchmarks at cluster scale: 100,000 pods on 1,000 nodes in a real etcd.
 * - cold start: a new AgentCore until its maps are programmed (both lists + the full reconcile), with the in-memory
 *   backend and with real BPF maps;
 * - memory per pod in the cluster: heap and RSS growth of the process holding a synced core (after GC), with real
 *   BPF maps (the maps live in the kernel) and with memoryDatapath (the maps on the heap too);
 * - delta propagation: a pod put in etcd until it is in the maps.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { loadDatapath, memoryDatapath, removePins, type Datapath } from '@sluice/datapath';
import { startEtcd } from '@sluice/etcd-runner';
import { createKvClient, keySchema, type Etcd3 } from '@sluice/kvstore';
import { createLogger } from '@sluice/log';
import { encodeSlimString, SCHEMA_VERSION } from '@sluice/slim';
import type { Figure } from '../../../bench/run.ts';
import { AgentCore } from '../src/index.ts';

const PODS = 100_000;
const NODES = 1_000;

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

function settle(): void {
  for (let i = 0; i < 3; i++) gc();
}

async function populate(client: Etcd3, keys: ReturnType<typeof keySchema>): Promise<void> {
  const ops: Array<[string, string]> = [];
  for (let n = 0; n < NODES; n++) {
    const name = `node-${String(n).padStart(5, '0')}`;
    ops.push([keys.node(name), encodeSlimString('node', {
      v: SCHEMA_VERSION, name, labels: { 'kubernetes.io/hostname': name }, addresses: [{ type: 'InternalIP', ip: `172.20.${n >> 8}.${n & 255}` }],
      podCIDRs: [`10.${128 + (n >> 8)}.${n & 255}.0/24`], ready: 'True', healthIPs: [],
    })]);
  }
  for (let p = 0; p < PODS; p++) {
    const n = p % NODES;
    const slot = 2 + Math.floor(p / NODES);
    const name = `app-${p.toString(36).padStart(6, '0')}-x7k2p`;
    ops.push([keys.pod(`ns-${p % 20}`, name), encodeSlimString('pod', {
      v: SCHEMA_VERSION, namespace: `ns-${p % 20}`, name, uid: `00000000-0000-4000-8000-${String(p).padStart(12, '0')}`, nodeName: `node-${String(n).padStart(5, '0')}`,
      hostIP: `172.20.${n >> 8}.${n & 255}`, podIPs: [`10.${128 + (n >> 8)}.${n & 255}.${slot}`], hostNetwork: false, phase: 'Running',
      labels: { app: `app-${p % 50}` }, deleting: false, ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    })]);
  }
  const BATCH = 128;
  let next = 0;
  await Promise.all(Array.from({ length: 8 }, async () => {
    while (next < ops.length) {
      const chunk = ops.slice(next, next + BATCH);
      next += BATCH;
      const txn = client.if(keys.node('node-00000'), 'Version', '>', -1);
      await txn.then(...chunk.map(([k, v]) => client.put(k).value(v))).commit();
    }
  }));
}

async function coldStart(client: Etcd3, keys: ReturnType<typeof keySchema>, dp: Datapath, log: ReturnType<typeof createLogger>): Promise<{ ms: number; core: AgentCore }> {
  const core = new AgentCore({ nodeName: 'node-00000', client, datapath: dp, keys, log, clusterSize: NODES });
  const t0 = performance.now();
  core.start();
  await core.synced();
  return { ms: performance.now() - t0, core };
}

export default async function agentBench(): Promise<Figure[]> {
  const figures: Figure[] = [];
  const etcd = await startEtcd({ quotaBackendBytes: 4 * 1024 ** 3, maxTxnOps: 1024 });
  const keys = keySchema('bench/');
  const log = createLogger({ component: 'agent-bench', level: 'warn' });
  const writer = createKvClient({ endpoints: [etcd.endpoint] });
  try {
    const tw = performance.now();
    await populate(writer, keys);
    figures.push({ metric: 'etcd populate (100,000 pods, 1,000 nodes; setup, not the agent)', value: Math.round(performance.now() - tw), unit: 'ms' });

    // Real BPF maps: the agent's own memory is what grows on the heap; the maps are kernel memory.
    {
      const pinDir = `/sys/fs/bpf/sluice/bench-agent-${process.pid}`;
      const client = createKvClient({ endpoints: [etcd.endpoint] });
      const dp = loadDatapath({ pinDir });
      try {
        settle();
        const base = process.memoryUsage();
        const { ms, core } = await coldStart(client, keys, dp, log);
        figures.push({ metric: 'cold start to programmed maps, 100,000 pods, real BPF maps', value: Math.round(ms), unit: 'ms' });
        const s = core.status();
        if (s.endpoints.cluster !== PODS || dp.maps.ipcacheHost.count() !== PODS) throw new Error(`programmed ${dp.maps.ipcacheHost.count()} of ${PODS} pods`);
        settle();
        const now = process.memoryUsage();
        figures.push({ metric: 'agent heap per pod in the cluster (real BPF maps)', value: Math.round((now.heapUsed - base.heapUsed) / PODS), unit: 'bytes' });
        figures.push({ metric: 'agent RSS growth per pod in the cluster (real BPF maps)', value: Math.round((now.rss - base.rss) / PODS), unit: 'bytes' });
        figures.push({ metric: 'agent heap used after sync (real BPF maps)', value: Math.round(now.heapUsed / 2 ** 20), unit: 'MiB' });

        // Delta propagation: put → in the maps, one at a time.
        const lat: number[] = [];
        for (let i = 0; i < 200; i++) {
          const name = `delta-${i}`;
          const t = performance.now();
          const put = await writer.put(keys.pod('ns-0', name)).value(encodeSlimString('pod', {
            v: SCHEMA_VERSION, namespace: 'ns-0', name, uid: name, nodeName: 'node-00001', hostIP: '172.20.0.1', podIPs: [`10.200.${i >> 8}.${i & 255}`],
            hostNetwork: false, phase: 'Running', labels: {}, deleting: false, ports: [],
          }));
          await core.whenProgrammed('pods', Number(put.header.revision));
          lat.push(performance.now() - t);
        }
        lat.sort((a, b) => a - b);
        figures.push({ metric: 'pod put → programmed, p50 (one agent, real maps)', value: Number(lat[100]!.toFixed(2)), unit: 'ms' });
        figures.push({ metric: 'pod put → programmed, p99 (one agent, real maps)', value: Number(lat[198]!.toFixed(2)), unit: 'ms' });
        await core.stop();
      } finally {
        dp.close();
        removePins(pinDir);
        client.close();
      }
    }

    // memoryDatapath: what the scale harness runs; the maps' memory is on the heap too.
    {
      const client = createKvClient({ endpoints: [etcd.endpoint] });
      settle();
      const base = process.memoryUsage();
      const dp = memoryDatapath();
      const { ms, core } = await coldStart(client, keys, dp, log);
      figures.push({ metric: 'cold start to programmed maps, 100,000 pods, memoryDatapath', value: Math.round(ms), unit: 'ms' });
      settle();
      const now = process.memoryUsage();
      figures.push({ metric: 'agent + in-memory maps heap per pod in the cluster (memoryDatapath)', value: Math.round((now.heapUsed + now.arrayBuffers - base.heapUsed - base.arrayBuffers) / PODS), unit: 'bytes' });
      await core.stop();
      client.close();
    }
  } finally {
    writer.close();
    await etcd.stop();
  }
  return figures;
}
