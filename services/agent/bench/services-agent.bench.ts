/**
 * The agent's side of services at Cilium 1.5's scale (20,000 services, 100,000 backends, 5 per service in slices
 * of their own), into real kernel maps (a bpffs pin directory of its own, removed afterwards): the time the services
 * reconciler takes from both lists to programmed maps (the cold pass: wall and CPU, user + system, since the
 * kernel's share of the batch writes is system time), a periodic full pass over the same 20,000 services (drift
 * check, nothing to write), one EndpointSlice change, and heap per backend of everything the agent keeps (the
 * Service and EndpointSlice records in the services table and its rows, the load-balancer programmer's state).
 * The cold pass builds its Maglev tables in the agent's worker pool (one worker per core, up to 4).
 * Wall time moves with the machine's load (other processes share its cores): the 1-minute load average at the
 * cold pass is reported beside it.
 */
import { randomBytes } from 'node:crypto';
import { availableParallelism, loadavg } from 'node:os';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { LbProgrammer, loadDatapath, MaglevPool, removePins } from '@sluice/datapath';
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
  const pinDir = `/sys/fs/bpf/sluice/sl-bench-svc-agent-${randomBytes(4).toString('hex')}`;
  const dp = loadDatapath({ pinDir });
  try {
    gc();
    const heapBefore = process.memoryUsage().heapUsed;
    const table = new ServicesTable('node-1');
    // As the agent does (reconcilers/services.ts): large batches' Maglev tables built by a worker pool.
    const maglevPool = new MaglevPool();
    const programmer = new LbProgrammer(dp, { maglevPool });
    programmer.seed();
    const reconciler = new Reconciler({ target: servicesTarget(programmer), desired: table, log: createLogger({ component: 'bench', level: 'silent' }), refreshIntervalMs: 0, batchMs: 0 });
    table.follow(reconciler);
    // Records made after the first reading: the agent keeps what it decoded from etcd.
    for (let i = 0; i < SERVICES; i++) {
      const [svc, slice] = records(i);
      table.upsertService(svc);
      table.upsertSlice(slice);
    }
    const load = loadavg()[0]!;
    const cpu0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    await reconciler.start();
    const coldMs = Number(process.hrtime.bigint() - t0) / 1e6;
    const cpu = process.cpuUsage(cpu0);
    const programmed = dp.maps.services.count();
    if (programmed !== SERVICES) throw new Error(`cold pass programmed ${programmed} frontends, not ${SERVICES}`);
    gc();
    const heapAfter = process.memoryUsage().heapUsed;
    const fullCpu0 = process.cpuUsage();
    const fullT0 = process.hrtime.bigint();
    await reconciler.fullPass();
    const fullMs = Number(process.hrtime.bigint() - fullT0) / 1e6;
    const fullCpu = process.cpuUsage(fullCpu0);
    const changeT0 = process.hrtime.bigint();
    table.upsertSlice(records(SERVICES - 1, 8081)[1]);
    await reconciler.flush();
    const changeMs = Number(process.hrtime.bigint() - changeT0) / 1e6;
    await reconciler.stop();
    maglevPool.close();
    const backends = SERVICES * PER;
    return [
      { metric: `services reconciler: cold pass, ${SERVICES} services / ${backends} backends into kernel maps (goal ≤ 2,000)`, value: Math.round(coldMs), unit: 'ms' },
      { metric: 'services reconciler: cold pass CPU time (user)', value: Math.round(cpu.user / 1000), unit: 'ms' },
      { metric: 'services reconciler: cold pass CPU time (system: the kernel\'s map writes)', value: Math.round(cpu.system / 1000), unit: 'ms' },
      { metric: `load average (1 min) at the cold pass, ${availableParallelism()} cores`, value: +load.toFixed(2), unit: 'load' },
      { metric: 'Maglev worker threads of the cold pass', value: maglevPool.size, unit: 'threads' },
      { metric: `services reconciler: periodic full pass over ${SERVICES} services (nothing to repair)`, value: Math.round(fullMs), unit: 'ms' },
      { metric: 'services reconciler: periodic full pass CPU time', value: Math.round((fullCpu.user + fullCpu.system) / 1000), unit: 'ms' },
      { metric: 'services reconciler: one EndpointSlice change to the maps', value: +changeMs.toFixed(2), unit: 'ms' },
      { metric: 'agent heap per backend (records + table rows + programmer; the maps are kernel memory)', value: Math.round((heapAfter - heapBefore) / backends), unit: 'bytes' },
    ];
  } finally {
    dp.close();
    removePins(pinDir);
  }
}
