/**
 * The agent's side of services at Cilium 1.5's scale (20,000 services, 100,000 backends, 5 per service in slices
 * of their own): heap per backend of everything the agent keeps (the Service and EndpointSlice records in the
 * services table, the load-balancer programmer's state), and the time the services reconciler takes from both lists
 * to programmed maps (in-memory maps: the agent's CPU, not the kernel's), plus one EndpointSlice change.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { LbProgrammer, memoryDatapath } from '@sluice/datapath';
import { createLogger } from '@sluice/log';
import { SCHEMA_VERSION, type SlimEndpointSlice, type SlimService } from '@sluice/slim';
import type { Figure } from '../../../bench/run.ts';
import { Reconciler } from '../src/reconciler.ts';
import { servicesTarget } from '../src/reconcilers/services.ts';
import { ServicesTable } from '../src/tables/services.ts';

const SERVICES = 20_000;
const PER = 5;
const ip = (i: number) => `10.${128 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;

function records(i: number, port = 8080): [SlimService, SlimEndpointSlice] {
  const name = `svc-${i}`;
  return [
    {
      v: SCHEMA_VERSION, namespace: 'default', name, type: 'ClusterIP', clusterIPs: [`10.96.${(i >> 8) & 255}.${i & 255}`], externalIPs: [], loadBalancerIPs: [],
      ports: [{ name: 'http', port: 80, targetPort: 'http', nodePort: 0, protocol: 'TCP' }],
      sessionAffinity: 'None', externalTrafficPolicy: 'Cluster', internalTrafficPolicy: 'Cluster',
    },
    {
      v: SCHEMA_VERSION, namespace: 'default', name: `${name}-abcde`, service: name, addressType: 'IPv4',
      endpoints: Array.from({ length: PER }, (_, b) => ({ addresses: [ip(i * PER + b)], ready: true, serving: true, terminating: false, nodeName: `node-${(i * PER + b) % 5000}` })),
      ports: [{ name: 'http', port, protocol: 'TCP' }],
    },
  ];
}

export default async function servicesAgentBench(): Promise<Figure[]> {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  gc();
  const heapBefore = process.memoryUsage().heapUsed;
  const dp = memoryDatapath();
  const table = new ServicesTable('node-1');
  const programmer = new LbProgrammer(dp);
  const reconciler = new Reconciler({ target: servicesTarget(programmer), desired: table, log: createLogger({ component: 'bench', level: 'silent' }), refreshIntervalMs: 0, batchMs: 0 });
  table.follow(reconciler);
  // Records made after the first reading: the agent keeps what it decoded from etcd.
  for (let i = 0; i < SERVICES; i++) {
    const [svc, slice] = records(i);
    table.upsertService(svc);
    table.upsertSlice(slice);
  }
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  await reconciler.start();
  const coldMs = Number(process.hrtime.bigint() - t0) / 1e6;
  const cpu = process.cpuUsage(cpu0);
  // The records themselves are the table's now; the maps are the kernel's on a real node (not the agent's heap).
  const mapBytes = [dp.maps.services, dp.maps.maglev, dp.maps.backends].reduce((sum, m) => sum + m.count() * (m.raw.keySize + m.raw.valueSize), 0);
  gc();
  const heapAfter = process.memoryUsage().heapUsed;
  const changeT0 = process.hrtime.bigint();
  table.upsertSlice(records(SERVICES - 1, 8081)[1]);
  await reconciler.flush();
  const changeMs = Number(process.hrtime.bigint() - changeT0) / 1e6;
  await reconciler.stop();
  const backends = SERVICES * PER;
  return [
    { metric: `services reconciler: first pass, ${SERVICES} services / ${backends} backends (in-memory maps)`, value: Math.round(coldMs), unit: 'ms' },
    { metric: 'services reconciler: first pass CPU time', value: Math.round((cpu.user + cpu.system) / 1000), unit: 'ms' },
    { metric: 'services reconciler: one EndpointSlice change to the maps', value: +changeMs.toFixed(2), unit: 'ms' },
    { metric: 'agent heap per backend (records + table + programmer, in-memory map bytes excluded)', value: Math.round((heapAfter - heapBefore - mapBytes) / backends), unit: 'bytes' },
    { metric: 'in-memory map bytes per backend (kernel memory on a real node)', value: Math.round(mapBytes / backends), unit: 'bytes' },
  ];
}
